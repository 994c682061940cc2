//! The rows of an audience export, as NDJSON or CSV. A row is the member's minimised view
//! and nothing else; a CSV's columns depend only on the purpose and the policies, never on
//! the data, so every export of a segment has the same header:
//!
//! `pseudonym`, then `email` and `phone` when the purpose reads their categories, then
//! each attribute of `policies/taxonomy.yaml` the purpose reads (in the file's order,
//! under the name listed there, whatever spelling the trait arrived with), then each
//! aggregate the purpose reads (in [`AGGREGATE_CATEGORIES`] order), then, for a
//! profiling purpose on consent that reads scores, `rfm.recency`, `rfm.frequency`,
//! `rfm.monetary`, `rfm.score` and `propensity.purchase`. A delta export
//! (`?since=`) puts `change` (`joined` or `left`) first; a left row holds only its
//! pseudonym.
use std::fmt::Write as _;

use serde_json::Value;

use crate::policy::gate::{AGGREGATE_CATEGORIES, MinimisedProfile, PurposeGrant, SCORE_CATEGORY};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Ndjson,
    Csv,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ndjson => "ndjson",
            Self::Csv => "csv",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Ndjson => "application/x-ndjson",
            Self::Csv => "text/csv; charset=utf-8",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Column {
    Pseudonym,
    Email,
    Phone,
    Trait(String),
    Aggregate(&'static str),
    Score(&'static str),
}

/// The scores the gateway computes, the CSV columns of a profiling purpose that reads
/// them (posted scores, whose names vary, are in the NDJSON rows only).
const SCORE_COLUMNS: [&str; 5] = [
    "rfm.recency",
    "rfm.frequency",
    "rfm.monetary",
    "rfm.score",
    "propensity.purchase",
];

/// How rows are written for one export.
#[derive(Clone, Debug)]
pub struct Encoder {
    format: Format,
    delta: bool,
    columns: Vec<Column>,
    grant: PurposeGrant,
}

fn csv_field(out: &mut String, v: &str) {
    if v.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&v.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(v);
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Encoder {
    pub fn new(grant: &PurposeGrant, format: Format, delta: bool) -> Self {
        let purpose = grant.purpose();
        let mut columns = vec![Column::Pseudonym];
        if purpose.may_read("user.contact.email") {
            columns.push(Column::Email);
        }
        if purpose.may_read("user.contact.phone_number") {
            columns.push(Column::Phone);
        }
        for (name, category) in grant.policies().taxonomy.attributes() {
            let contact =
                category == "user.contact.email" || category == "user.contact.phone_number";
            if !contact && purpose.may_read(category) {
                columns.push(Column::Trait(name.to_owned()));
            }
        }
        for (name, category) in AGGREGATE_CATEGORIES {
            if purpose.may_read(category) {
                columns.push(Column::Aggregate(name));
            }
        }
        if purpose.profiling
            && purpose.legal_basis == crate::policy::LegalBasis::Consent
            && purpose.may_read(SCORE_CATEGORY)
        {
            columns.extend(SCORE_COLUMNS.map(Column::Score));
        }
        Self {
            format,
            delta,
            columns,
            grant: grant.clone(),
        }
    }

    /// The CSV header line (empty for NDJSON).
    pub fn header(&self) -> String {
        if self.format != Format::Csv {
            return String::new();
        }
        let mut names: Vec<&str> = Vec::with_capacity(self.columns.len() + 1);
        if self.delta {
            names.push("change");
        }
        for c in &self.columns {
            names.push(match c {
                Column::Pseudonym => "pseudonym",
                Column::Email => "email",
                Column::Phone => "phone",
                Column::Trait(n) => n,
                Column::Aggregate(n) | Column::Score(n) => n,
            });
        }
        let mut out = String::new();
        for (i, n) in names.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            csv_field(&mut out, n);
        }
        out.push_str("\r\n");
        out
    }

    fn trait_of<'v>(&self, view: &'v MinimisedProfile, column: &str) -> Option<&'v Value> {
        let taxonomy = &self.grant.policies().taxonomy;
        view.traits()
            .find(|(name, _)| taxonomy.canonical(name) == Some(column))
            .map(|(_, v)| v)
    }

    /// A member's row (a joined row in a delta), appended to `out`.
    pub fn member(&self, view: &MinimisedProfile, out: &mut String) {
        match self.format {
            Format::Ndjson => {
                let json = serde_json::to_string(view).unwrap_or_else(|_| "{}".into());
                if self.delta {
                    out.push_str("{\"change\":\"joined\",");
                    out.push_str(json.get(1..).unwrap_or("}"));
                } else {
                    out.push_str(&json);
                }
                out.push('\n');
            }
            Format::Csv => {
                if self.delta {
                    out.push_str("joined,");
                }
                for (i, c) in self.columns.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let v = match c {
                        Column::Pseudonym => view.pseudonym().as_ref().to_owned(),
                        Column::Email => view.email().unwrap_or_default().to_owned(),
                        Column::Phone => view.phone().unwrap_or_default().to_owned(),
                        Column::Trait(n) => self.trait_of(view, n).map(text).unwrap_or_default(),
                        Column::Aggregate(n) => view.aggregate(n).map(text).unwrap_or_default(),
                        Column::Score(n) => {
                            view.score(n).map(|v| v.to_string()).unwrap_or_default()
                        }
                    };
                    csv_field(out, &v);
                }
                out.push_str("\r\n");
            }
        }
    }

    /// The row saying that `pseudonym` left the segment since the base export.
    pub fn left(&self, pseudonym: &str, out: &mut String) {
        match self.format {
            Format::Ndjson => {
                let _ = writeln!(
                    out,
                    "{{\"change\":\"left\",\"pseudonym\":{}}}",
                    Value::from(pseudonym)
                );
            }
            Format::Csv => {
                out.push_str("left,");
                csv_field(out, pseudonym);
                for _ in 1..self.columns.len() {
                    out.push(',');
                }
                out.push_str("\r\n");
            }
        }
    }
}
