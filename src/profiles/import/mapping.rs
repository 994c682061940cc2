//! An import mapping (TOML): which columns of a CRM, POS or loyalty file are identifiers,
//! traits or purchase fields. Checked whole against the policies before any row is read.
use std::collections::BTreeMap;

use serde::Deserialize;

use crate::policy::Policies;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Csv,
    Ndjson,
}

impl Format {
    /// The format a file name implies (`.csv`, `.ndjson`, `.jsonl`), if any.
    pub fn from_file_name(name: &str) -> Option<Self> {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".csv") {
            Some(Self::Csv)
        } else if lower.ends_with(".ndjson") || lower.ends_with(".jsonl") {
            Some(Self::Ndjson)
        } else {
            None
        }
    }
}

/// How a trait's text is turned into a JSON value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    #[default]
    String,
    Number,
    Boolean,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TraitDef {
    Column(String),
    Typed {
        column: String,
        #[serde(rename = "type", default)]
        value_type: ValueType,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PurchaseDef {
    order_id: String,
    amount: String,
    currency: Option<String>,
    default_currency: Option<String>,
    time: Option<String>,
    product_ids: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MappingFile {
    format: Option<Format>,
    delimiter: Option<String>,
    row_key: Option<String>,
    default_region: Option<String>,
    /// The column with the time a row's traits were true; default: the import time.
    updated_at: Option<String>,
    #[serde(default)]
    identifiers: BTreeMap<String, String>,
    #[serde(default)]
    traits: BTreeMap<String, TraitDef>,
    purchase: Option<PurchaseDef>,
}

/// Purchase columns: each row is one `Order Completed`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Purchase {
    pub order_id: String,
    pub amount: String,
    pub currency: Option<String>,
    pub default_currency: Option<String>,
    pub time: Option<String>,
    /// Product ids, several separated by `|` or `,`.
    pub product_ids: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub format: Option<Format>,
    pub delimiter: u8,
    /// The column whose value is unique per row within the source (default: the order id).
    pub row_key: String,
    pub default_region: Option<String>,
    pub updated_at: Option<String>,
    /// (identifier kind, column), in mapping order.
    pub identifiers: Vec<(String, String)>,
    /// (trait name, column, type).
    pub traits: Vec<(String, String, ValueType)>,
    pub purchase: Option<Purchase>,
}

#[derive(Debug, thiserror::Error)]
#[error("mapping: {0}")]
pub struct MappingError(pub String);

fn bad(msg: impl Into<String>) -> MappingError {
    MappingError(msg.into())
}

fn column(field: &str, name: &str) -> Result<String, MappingError> {
    let c = name.trim();
    if c.is_empty() {
        return Err(bad(format!("{field}: names an empty column")));
    }
    Ok(c.to_owned())
}

fn currency(field: &str, code: &str) -> Result<String, MappingError> {
    let c = code.trim().to_ascii_uppercase();
    if c.len() == 3 && c.chars().all(|ch| ch.is_ascii_uppercase()) {
        Ok(c)
    } else {
        Err(bad(format!(
            "{field}: `{code}` is not an ISO 4217 code such as EUR"
        )))
    }
}

impl Mapping {
    pub fn parse(text: &str, policies: &Policies) -> Result<Self, MappingError> {
        let raw: MappingFile = toml::from_str(text).map_err(|e| bad(e.message().to_owned()))?;
        let delimiter = match raw.delimiter.as_deref() {
            None => b',',
            Some("\\t" | "tab") => b'\t',
            Some(d) if d.len() == 1 && d.is_ascii() => d.as_bytes()[0],
            Some(_) => return Err(bad("delimiter: give one ASCII character, or \"tab\"")),
        };
        if let Some(r) = &raw.default_region {
            crate::domain::Phone::parse("+442079460958", Some(r)).map_err(|_| {
                bad(format!(
                    "default_region: `{r}` is not a country code such as GB"
                ))
            })?;
        }
        let mut identifiers = Vec::new();
        for (kind, col) in &raw.identifiers {
            if !policies.is_identifier_kind(kind) {
                return Err(bad(format!(
                    "identifiers.{kind}: not an identifier kind; use one of {}",
                    policies.identifier_kinds().join(", ")
                )));
            }
            identifiers.push((kind.clone(), column(&format!("identifiers.{kind}"), col)?));
        }
        if identifiers.is_empty() {
            return Err(bad(
                "[identifiers] names no column: each row must say whose it is",
            ));
        }
        let mut traits = Vec::new();
        for (name, def) in raw.traits {
            let (col, t) = match def {
                TraitDef::Column(c) => (c, ValueType::String),
                TraitDef::Typed { column, value_type } => (column, value_type),
            };
            if name.trim().is_empty() || name.len() > 128 {
                return Err(bad("traits: a trait name must be 1 to 128 characters"));
            }
            traits.push((name.clone(), column(&format!("traits.{name}"), &col)?, t));
        }
        let purchase = match raw.purchase {
            None => None,
            Some(p) => {
                if p.currency.is_none() && p.default_currency.is_none() {
                    return Err(bad(
                        "purchase: give a currency column or a default_currency",
                    ));
                }
                Some(Purchase {
                    order_id: column("purchase.order_id", &p.order_id)?,
                    amount: column("purchase.amount", &p.amount)?,
                    currency: p
                        .currency
                        .map(|c| column("purchase.currency", &c))
                        .transpose()?,
                    default_currency: p
                        .default_currency
                        .map(|c| currency("purchase.default_currency", &c))
                        .transpose()?,
                    time: p.time.map(|c| column("purchase.time", &c)).transpose()?,
                    product_ids: p
                        .product_ids
                        .map(|c| column("purchase.product_ids", &c))
                        .transpose()?,
                })
            }
        };
        let row_key = match (&raw.row_key, &purchase) {
            (Some(k), _) => column("row_key", k)?,
            (None, Some(p)) => p.order_id.clone(),
            (None, None) => {
                return Err(bad(
                    "row_key: name the column that is unique per row in this source (e.g. the customer number)",
                ));
            }
        };
        Ok(Self {
            format: raw.format,
            delimiter,
            row_key,
            default_region: raw.default_region,
            updated_at: raw
                .updated_at
                .map(|c| column("updated_at", &c))
                .transpose()?,
            identifiers,
            traits,
            purchase,
        })
    }

    /// Every column a row is read for, each once.
    pub fn columns(&self) -> Vec<&str> {
        let mut out: Vec<&str> = vec![self.row_key.as_str()];
        out.extend(self.identifiers.iter().map(|(_, c)| c.as_str()));
        out.extend(self.traits.iter().map(|(_, c, _)| c.as_str()));
        out.extend(self.updated_at.as_deref());
        if let Some(p) = &self.purchase {
            out.extend([p.order_id.as_str(), p.amount.as_str()]);
            out.extend(p.currency.as_deref());
            out.extend(p.time.as_deref());
            out.extend(p.product_ids.as_deref());
        }
        let mut seen = std::collections::HashSet::new();
        out.retain(|c| seen.insert(*c));
        out
    }
}
