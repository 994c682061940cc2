//! One raw row to the messages it stands for: an `identify` with its identifiers and
//! traits, and an `Order Completed` when the mapping has purchase columns. Every problem
//! in the row is reported, each with its column.
use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::RowError;
use super::mapping::{Mapping, ValueType};
use super::rows::RawRow;
use crate::domain::Timestamp;
use crate::profiles::segment::{EARLIEST_US, Kind, Message};

/// A row ready to ingest.
pub struct Converted {
    pub line: u64,
    /// The row key, as written; message ids are derived from it and never hold it.
    pub key: String,
    pub messages: Vec<Message>,
    /// (kind, normalised value) of identifiers checked against the suppression list.
    pub suppressible: Vec<(String, String)>,
}

/// Appended to a row's message id for its `Order Completed`.
pub const ORDER_SUFFIX: &str = "#order";

pub struct Converter<'a> {
    mapping: &'a Mapping,
    index: HashMap<&'a str, usize>,
    now: Timestamp,
}

/// A cell as text: strings trimmed, numbers and booleans written out.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// RFC 3339, `YYYY-MM-DD HH:MM:SS` (UTC) or `YYYY-MM-DD` (midnight UTC).
fn parse_time(s: &str) -> Option<Timestamp> {
    if let Some(t) = Timestamp::parse_rfc3339(s) {
        return Some(t);
    }
    let s = s.trim();
    let full = if s.len() == 10 {
        format!("{s}T00:00:00Z")
    } else {
        format!("{}Z", s.replacen(' ', "T", 1))
    };
    Timestamp::parse_rfc3339(&full)
}

/// A non-negative decimal amount written with a `.`: `12.50`, `1200`.
fn parse_amount(s: &str) -> Option<f64> {
    let s = s.trim();
    let ok = !s.is_empty()
        && s.chars().all(|c| c.is_ascii_digit() || c == '.')
        && s.chars().filter(|c| *c == '.').count() <= 1;
    s.parse::<f64>()
        .ok()
        .filter(|v| ok && v.is_finite() && *v >= 0.0)
}

impl<'a> Converter<'a> {
    /// `columns` is the order of a [`RawRow`]'s values ([`Mapping::columns`]).
    pub fn new(mapping: &'a Mapping, columns: &[&'a str], now: Timestamp) -> Self {
        let index = columns.iter().enumerate().map(|(i, c)| (*c, i)).collect();
        Self {
            mapping,
            index,
            now,
        }
    }

    fn cell<'r>(&self, row: &'r RawRow, column: &str) -> Option<&'r Value> {
        self.index
            .get(column)
            .and_then(|i| row.values.get(*i))
            .and_then(Option::as_ref)
    }

    fn time(&self, row: &RawRow, column: &str, errors: &mut Vec<RowError>) -> Option<Timestamp> {
        let v = self.cell(row, column)?;
        let parsed = text(v).and_then(|s| parse_time(&s));
        let latest = self.now.plus_seconds(86_400).unix_micros();
        match parsed {
            Some(t) if (EARLIEST_US..=latest).contains(&t.unix_micros()) => Some(t),
            Some(_) => {
                errors.push(RowError::new(
                    row.line,
                    Some(column),
                    "is before 2000 or in the future",
                ));
                None
            }
            None => {
                errors.push(RowError::new(
                    row.line,
                    Some(column),
                    "is not a time (use 2026-11-30, 2026-11-30 14:05:00 or RFC 3339)",
                ));
                None
            }
        }
    }

    pub fn convert(&self, row: &RawRow) -> Result<Converted, Vec<RowError>> {
        let m = self.mapping;
        let mut errors = Vec::new();
        let line = row.line;
        let key = self
            .cell(row, &m.row_key)
            .and_then(text)
            .filter(|k| !k.is_empty());
        if key.is_none() {
            errors.push(RowError::new(
                line,
                Some(&m.row_key),
                "is empty: it is this row's key",
            ));
        }
        let mut identifiers = Vec::new();
        for (kind, col) in &m.identifiers {
            let Some(v) = self.cell(row, col) else {
                continue;
            };
            let Some(s) = text(v) else {
                errors.push(RowError::new(line, Some(col), "must be text or a number"));
                continue;
            };
            match crate::profiles::normalise_identifier(kind, &s, m.default_region.as_deref()) {
                Ok(n) => identifiers.push((kind.clone(), n)),
                Err(reason) => errors.push(RowError::new(line, Some(col), &reason)),
            }
        }
        if identifiers.is_empty() && errors.is_empty() {
            let cols: Vec<&str> = m.identifiers.iter().map(|(_, c)| c.as_str()).collect();
            errors.push(RowError::new(
                line,
                None,
                &format!("has no identifier: fill one of {}", cols.join(", ")),
            ));
        }
        let mut traits = Map::new();
        for (name, col, t) in &m.traits {
            let Some(v) = self.cell(row, col) else {
                continue;
            };
            let value = match (t, v) {
                (ValueType::String, Value::String(s)) => Some(Value::String(s.trim().to_owned())),
                (ValueType::String, v) => Some(v.clone()),
                (ValueType::Number, Value::Number(_)) => Some(v.clone()),
                (ValueType::Number, v) => text(v)
                    .and_then(|s| s.parse::<f64>().ok())
                    .filter(|f| f.is_finite())
                    .map(|f| json!(f)),
                (ValueType::Boolean, Value::Bool(_)) => Some(v.clone()),
                (ValueType::Boolean, v) => match text(v).map(|s| s.to_ascii_lowercase()).as_deref()
                {
                    Some("true" | "yes" | "y" | "1") => Some(Value::Bool(true)),
                    Some("false" | "no" | "n" | "0") => Some(Value::Bool(false)),
                    _ => None,
                },
            };
            match value {
                Some(v) => {
                    traits.insert(name.clone(), v);
                }
                None => errors.push(RowError::new(
                    line,
                    Some(col),
                    match t {
                        ValueType::Number => "is not a number",
                        _ => "is not true or false",
                    },
                )),
            }
        }
        let updated = m
            .updated_at
            .as_deref()
            .and_then(|c| self.time(row, c, &mut errors));
        let order = m.purchase.as_ref().map(|p| {
            let order_id = self
                .cell(row, &p.order_id)
                .and_then(text)
                .filter(|s| !s.is_empty());
            if order_id.is_none() {
                errors.push(RowError::new(line, Some(&p.order_id), "is empty"));
            }
            let amount = match self.cell(row, &p.amount) {
                None => {
                    errors.push(RowError::new(line, Some(&p.amount), "is empty"));
                    None
                }
                Some(v) => {
                    let a = text(v).and_then(|s| parse_amount(&s));
                    if a.is_none() {
                        errors.push(RowError::new(
                            line,
                            Some(&p.amount),
                            "is not an amount (a non-negative number such as 12.50)",
                        ));
                    }
                    a
                }
            };
            let currency = match p
                .currency
                .as_deref()
                .and_then(|c| self.cell(row, c).map(|v| (c, v)))
            {
                Some((col, v)) => {
                    let code = text(v).unwrap_or_default().to_ascii_uppercase();
                    if code.len() == 3 && code.chars().all(|c| c.is_ascii_uppercase()) {
                        Some(code)
                    } else {
                        errors.push(RowError::new(
                            line,
                            Some(col),
                            "is not an ISO 4217 code such as EUR",
                        ));
                        None
                    }
                }
                None => match &p.default_currency {
                    Some(d) => Some(d.clone()),
                    None => {
                        errors.push(RowError::new(
                            line,
                            p.currency.as_deref(),
                            "is empty and no default_currency is set",
                        ));
                        None
                    }
                },
            };
            let at = p
                .time
                .as_deref()
                .and_then(|c| self.time(row, c, &mut errors));
            let products: Vec<Value> = p
                .product_ids
                .as_deref()
                .and_then(|c| self.cell(row, c))
                .and_then(text)
                .map(|s| {
                    s.split(['|', ','])
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|id| json!({"product_id": id}))
                        .collect()
                })
                .unwrap_or_default();
            (order_id, amount, currency, at, products)
        });
        if !errors.is_empty() {
            return Err(errors);
        }
        let key = key.unwrap_or_default();
        let at = updated.unwrap_or(self.now);
        let suppressible = identifiers
            .iter()
            .filter(|(k, _)| k == "email" || k == "phone")
            .cloned()
            .collect();
        let mut messages = Vec::new();
        if !traits.is_empty() || m.purchase.is_none() {
            let mut id = Message::new(Kind::Identify, String::new(), at);
            id.traits = traits;
            id.identifiers = identifiers.clone();
            messages.push(id);
        }
        if let Some((Some(order_id), Some(amount), Some(currency), time, products)) = order {
            let mut o = Message::new(Kind::Track, ORDER_SUFFIX.into(), time.unwrap_or(at));
            o.event = Some("Order Completed".into());
            let mut props = Map::new();
            props.insert("order_id".into(), Value::String(order_id));
            props.insert("total".into(), json!(amount));
            props.insert("currency".into(), Value::String(currency));
            if !products.is_empty() {
                props.insert("products".into(), Value::Array(products));
            }
            o.properties = props;
            o.identifiers = identifiers;
            messages.push(o);
        }
        Ok(Converted {
            line,
            key,
            messages,
            suppressible,
        })
    }
}
