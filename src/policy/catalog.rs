//! The product catalogue recommendations draw from, loaded as NDJSON (`POST /v1/catalog`)
//! or NDJSON/CSV (`consentry catalog FILE`): one product per line, upserted by id.
//!
//! Guarantees: a load is all or nothing (one bad line: every bad line reported, nothing
//! written); URLs are absolute http(s); a product can be marked unavailable (never
//! recommended) or deleted. Products are not personal data: nothing here is disclosed.
use std::collections::HashSet;

use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::audit::{AuditError, AuditLog, NewEntry, Outcome};
use crate::domain::{Actor, Timestamp};
use crate::store::catalog::{self, ProductRow};
use crate::store::{Db, StoreError};

/// At most this many products in one load.
pub const MAX_PRODUCTS: usize = 1_000_000;
/// At most this many bad lines listed in the error (all are counted).
const LISTED: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{count} bad line(s), nothing loaded: {}", .errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Rejected {
        count: usize,
        errors: Vec<LineError>,
    },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// A bad line: where, which field, why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineError {
    pub line: u64,
    pub field: Option<String>,
    pub reason: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.field {
            Some(c) => write!(f, "line {}: {c}: {}", self.line, self.reason),
            None => write!(f, "line {}: {}", self.line, self.reason),
        }
    }
}

/// What a load did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct CatalogReport {
    /// Product lines read.
    pub read: u64,
    pub created: u64,
    pub updated: u64,
    pub deleted: u64,
    /// Products in the catalogue after the load.
    pub products: u64,
}

/// One line of a catalogue.
enum Line {
    Upsert(ProductRow),
    Delete(String),
}

const FIELDS: [&str; 10] = [
    "id",
    "product_id",
    "sku",
    "name",
    "url",
    "image_url",
    "price",
    "currency",
    "category",
    "available",
];

fn http_url(v: &str) -> bool {
    url::Url::parse(v).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
}

fn text<'v>(o: &'v Map<String, Value>, k: &str) -> Option<&'v str> {
    o.get(k)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// Reads one product object; every problem of the line is reported.
fn parse(o: &Map<String, Value>, line: u64, now: i64) -> Result<Line, Vec<LineError>> {
    let mut errors = Vec::new();
    let err = |field: &str, reason: &str| LineError {
        line,
        field: Some(field.to_owned()),
        reason: reason.to_owned(),
    };
    for k in o.keys() {
        if !FIELDS.contains(&k.as_str()) && k != "deleted" {
            errors.push(err(
                k,
                &format!(
                    "not a catalogue field; known: {}, deleted",
                    FIELDS.join(", ")
                ),
            ));
        }
    }
    let id = ["id", "product_id", "sku"]
        .iter()
        .find_map(|k| match o.get(*k) {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        });
    let Some(id) = id else {
        errors.push(err(
            "id",
            "a product id (`id`, `product_id` or `sku`) is required",
        ));
        return Err(errors);
    };
    if id.len() > 128 {
        errors.push(err("id", "at most 128 characters"));
    }
    match o.get("deleted") {
        None | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) => {
            return if errors.is_empty() {
                Ok(Line::Delete(id))
            } else {
                Err(errors)
            };
        }
        Some(_) => errors.push(err("deleted", "true or false")),
    }
    let name = text(o, "name");
    match name {
        None => errors.push(err("name", "required")),
        Some(n) if n.len() > 500 => errors.push(err("name", "at most 500 characters")),
        Some(_) => {}
    }
    let url = text(o, "url");
    match url {
        None => errors.push(err("url", "required: the product page")),
        Some(u) if !http_url(u) => errors.push(err("url", "an absolute http(s) URL")),
        Some(_) => {}
    }
    let image_url = text(o, "image_url");
    if o.get("image_url").is_some_and(|v| !v.is_null()) && !image_url.is_some_and(http_url) {
        errors.push(err("image_url", "an absolute http(s) URL"));
    }
    let price = match o.get("price") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let p = match v {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.trim().parse::<f64>().ok(),
                _ => None,
            };
            let valid = p.filter(|p| p.is_finite() && *p >= 0.0);
            if valid.is_none() {
                errors.push(err("price", "a number, 0 or more"));
            }
            valid
        }
    };
    let currency = text(o, "currency").map(str::to_ascii_uppercase);
    if let Some(c) = &currency
        && !(c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()))
    {
        errors.push(err("currency", "an ISO 4217 code such as EUR"));
    }
    let category = text(o, "category");
    if category.is_some_and(|c| c.len() > 200) {
        errors.push(err("category", "at most 200 characters"));
    }
    let available = match o.get("available") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) if s == "true" => true,
        Some(Value::String(s)) if s == "false" => false,
        Some(_) => {
            errors.push(err("available", "true or false"));
            true
        }
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Line::Upsert(ProductRow {
        id,
        name: name.unwrap_or_default().to_owned(),
        url: url.unwrap_or_default().to_owned(),
        image_url: image_url.map(str::to_owned),
        price,
        currency,
        category: category.map(str::to_owned),
        available,
        updated_at: now,
    }))
}

/// A catalogue being read: lines are checked as they come, written at `finish`.
pub struct CatalogLoad {
    now: i64,
    rows: Vec<ProductRow>,
    deletes: Vec<String>,
    seen: HashSet<String>,
    errors: Vec<LineError>,
    bad: usize,
    read: u64,
}

impl CatalogLoad {
    pub fn new(now: Timestamp) -> Self {
        Self {
            now: now.unix_micros(),
            rows: Vec::new(),
            deletes: Vec::new(),
            seen: HashSet::new(),
            errors: Vec::new(),
            bad: 0,
            read: 0,
        }
    }

    fn reject(&mut self, e: LineError) {
        self.bad += 1;
        if self.errors.len() < LISTED {
            self.errors.push(e);
        }
    }

    /// One NDJSON line (blank lines are skipped).
    pub fn json_line(&mut self, line: u64, text: &str) {
        let t = text.trim();
        if t.is_empty() {
            return;
        }
        self.read += 1;
        match serde_json::from_str::<Value>(t) {
            Ok(Value::Object(o)) => self.product(line, &o),
            Ok(_) => self.reject(LineError {
                line,
                field: None,
                reason: "not a JSON object".into(),
            }),
            Err(e) => self.reject(LineError {
                line,
                field: None,
                reason: format!("not JSON: {e}"),
            }),
        }
    }

    /// One product as an object (a CSV row becomes one by its header).
    pub fn object(&mut self, line: u64, o: &Map<String, Value>) {
        self.read += 1;
        self.product(line, o);
    }

    fn product(&mut self, line: u64, o: &Map<String, Value>) {
        if self.read > MAX_PRODUCTS as u64 {
            if self.read == MAX_PRODUCTS as u64 + 1 {
                self.reject(LineError {
                    line,
                    field: None,
                    reason: format!("over {MAX_PRODUCTS} products in one load; split the file"),
                });
            }
            return;
        }
        match parse(o, line, self.now) {
            Ok(l) => {
                let id = match &l {
                    Line::Upsert(r) => r.id.clone(),
                    Line::Delete(id) => id.clone(),
                };
                if !self.seen.insert(id) {
                    self.reject(LineError {
                        line,
                        field: Some("id".into()),
                        reason: "the same product twice in one load".into(),
                    });
                    return;
                }
                match l {
                    Line::Upsert(r) => self.rows.push(r),
                    Line::Delete(id) => self.deletes.push(id),
                }
            }
            Err(es) => {
                for e in es {
                    self.reject(e);
                }
            }
        }
    }

    /// Writes the load in one transaction, audited, or rejects it whole.
    pub async fn finish(
        self,
        db: &Db,
        audit: &AuditLog,
        actor: Actor,
        request_id: Option<String>,
    ) -> Result<CatalogReport, CatalogError> {
        if self.bad > 0 {
            return Err(CatalogError::Rejected {
                count: self.bad,
                errors: self.errors,
            });
        }
        if self.read == 0 {
            return Err(CatalogError::Invalid(
                "the catalogue is empty: send one product per line".into(),
            ));
        }
        let ids: Vec<String> = self.rows.iter().map(|r| r.id.clone()).collect();
        let existing = catalog::existing(db.conn(), &ids).await?.len() as u64;
        let txn = db.begin_write().await?;
        catalog::upsert(&txn, &self.rows).await?;
        let deleted = catalog::delete(&txn, &self.deletes).await?;
        let report = CatalogReport {
            read: self.read,
            created: self.rows.len() as u64 - existing,
            updated: existing,
            deleted,
            products: catalog::count(&txn).await?,
        };
        let entry = NewEntry::new(actor, "catalog.load", Outcome::Ok)
            .request_id(request_id)
            .attributes(vec![
                format!("read:{}", report.read),
                format!("created:{}", report.created),
                format!("updated:{}", report.updated),
                format!("deleted:{}", report.deleted),
            ]);
        audit.append(&txn, entry).await?;
        txn.commit().await.map_err(StoreError::from)?;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(lines: &[&str]) -> CatalogLoad {
        let mut l = CatalogLoad::new(Timestamp::from_unix_micros(0));
        for (i, t) in lines.iter().enumerate() {
            l.json_line(i as u64 + 1, t);
        }
        l
    }

    #[test]
    fn every_bad_field_of_every_line_is_reported() {
        let l = load(&[
            r#"{"id":"p1","name":"Mug","url":"https://shop.example/p1","price":12.5,"currency":"eur"}"#,
            r#"{"id":"p2","name":"","url":"ftp://x","price":-1,"colour":"red"}"#,
            r#"not json"#,
            r#"{"id":"p1","name":"Mug","url":"https://shop.example/p1"}"#,
            "",
        ]);
        assert_eq!(l.read, 4);
        assert_eq!(l.rows.len(), 1);
        assert_eq!(l.rows[0].currency.as_deref(), Some("EUR"));
        let text: Vec<String> = l.errors.iter().map(ToString::to_string).collect();
        assert!(
            text.iter().any(|e| e.starts_with("line 2: colour:")),
            "{text:?}"
        );
        assert!(
            text.iter().any(|e| e == "line 2: name: required"),
            "{text:?}"
        );
        assert!(
            text.iter().any(|e| e.starts_with("line 2: url:")),
            "{text:?}"
        );
        assert!(
            text.iter().any(|e| e.starts_with("line 2: price:")),
            "{text:?}"
        );
        assert!(
            text.iter().any(|e| e.starts_with("line 3: not JSON")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|e| e.starts_with("line 4: id: the same product twice")),
            "{text:?}"
        );
    }

    #[test]
    fn deletions_need_only_the_id() {
        let l = load(&[r#"{"sku":"p9","deleted":true}"#]);
        assert_eq!(l.deletes, vec!["p9".to_owned()]);
        assert_eq!(l.bad, 0);
    }
}
