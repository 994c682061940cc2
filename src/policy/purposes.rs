//! Purposes, the consents they need and the recipient kinds they may disclose to.
use std::collections::BTreeMap;

use serde::Deserialize;

use super::source::{Entries, File, PolicyErrors};
use super::taxonomy::{Taxonomy, UNCLASSIFIED};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LegalBasis {
    Consent,
    LegitimateInterest,
    Contract,
    LegalObligation,
}

impl LegalBasis {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Consent => "consent",
            Self::LegitimateInterest => "legitimate_interest",
            Self::Contract => "contract",
            Self::LegalObligation => "legal_obligation",
        }
    }

    /// The GDPR article that makes processing lawful on this basis.
    pub fn article(self) -> &'static str {
        match self {
            Self::Consent => "Art. 6(1)(a)",
            Self::Contract => "Art. 6(1)(b)",
            Self::LegalObligation => "Art. 6(1)(c)",
            Self::LegitimateInterest => "Art. 6(1)(f)",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsentDef {
    #[serde(default)]
    description: String,
    #[serde(default)]
    double_opt_in: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecipientDef {
    #[serde(default)]
    description: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PurposeDef {
    #[serde(default)]
    description: String,
    legal_basis: LegalBasis,
    consent: Option<String>,
    reads: Vec<String>,
    #[serde(default)]
    profiling: bool,
    #[serde(default)]
    sale_or_share: bool,
    minimum_age: Option<u8>,
    retention: String,
    #[serde(default)]
    recipients: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PurposesFile {
    consents: Entries<ConsentDef>,
    #[serde(default)]
    segment_categories: Option<Entries<String>>,
    recipients: Entries<RecipientDef>,
    purposes: Entries<PurposeDef>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsentPurpose {
    pub name: String,
    pub description: String,
    /// A grant stays pending until the person follows the confirmation link.
    pub double_opt_in: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecipientKind {
    pub name: String,
    pub description: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Purpose {
    pub name: String,
    pub description: String,
    pub legal_basis: LegalBasis,
    pub consent: Option<String>,
    /// Categories read, each with everything under it.
    pub reads: Vec<String>,
    pub profiling: bool,
    pub sale_or_share: bool,
    pub minimum_age: Option<u8>,
    pub retention_days: u32,
    pub recipients: Vec<String>,
}

impl Purpose {
    /// Whether this purpose may read `category` (a category it reads, or one under it).
    pub fn may_read(&self, category: &str) -> bool {
        category != UNCLASSIFIED
            && self.reads.iter().any(|r| {
                category == r
                    || category
                        .strip_prefix(r.as_str())
                        .is_some_and(|rest| rest.starts_with('.'))
            })
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PurposeSet {
    pub consents: Vec<ConsentPurpose>,
    /// Segment consent category → consent purpose.
    pub segment_categories: BTreeMap<String, String>,
    pub recipients: Vec<RecipientKind>,
    pub purposes: Vec<Purpose>,
}

/// `730d`, `26w`, `24m` (30-day months) or `2y` (365 days) → days.
fn retention_days(s: &str) -> Option<u32> {
    let s = s.trim();
    let (n, unit) = s.split_at(s.len().checked_sub(1)?);
    let n: u32 = n.parse().ok().filter(|n| *n > 0)?;
    n.checked_mul(match unit {
        "d" => 1,
        "w" => 7,
        "m" => 30,
        "y" => 365,
        _ => return None,
    })
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 80
        && name.split('.').all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
}

pub(super) fn compile(
    file: &File,
    taxonomy: &Taxonomy,
    errors: &mut PolicyErrors,
) -> Option<PurposeSet> {
    let raw: PurposesFile = file.parse(errors)?;
    let before = errors.0.len();
    let f = &file.name;
    let mut set = PurposeSet::default();
    for (name, def) in raw.consents.0 {
        if !valid_name(&name) {
            errors.push(
                f,
                file.line_of("consents", &name),
                format!("consent `{name}`: use lower-case letters, digits and `_`"),
            );
        }
        set.consents.push(ConsentPurpose {
            name,
            description: def.description,
            double_opt_in: def.double_opt_in,
        });
    }
    for (category, consent) in raw.segment_categories.map(|e| e.0).unwrap_or_default() {
        if !set.consents.iter().any(|c| c.name == consent) {
            errors.push(
                f,
                file.line_of("segment_categories", &category),
                format!("segment category `{category}`: undefined consent `{consent}`"),
            );
        }
        set.segment_categories.insert(category, consent);
    }
    for (name, def) in raw.recipients.0 {
        if !valid_name(&name) {
            errors.push(
                f,
                file.line_of("recipients", &name),
                format!("recipient `{name}`: use lower-case letters, digits and `_`"),
            );
        }
        set.recipients.push(RecipientKind {
            name,
            description: def.description,
        });
    }
    for (name, def) in raw.purposes.0 {
        let line = file.line_of("purposes", &name);
        let what = format!("purpose `{name}`");
        if !valid_name(&name) {
            errors.push(
                f,
                line,
                format!("{what}: use lower-case dotted names, e.g. marketing.communications.email"),
            );
        }
        match (&def.legal_basis, &def.consent) {
            (LegalBasis::Consent, None) => {
                errors.push(
                    f,
                    line,
                    format!("{what}: a consent-based purpose must name its `consent`"),
                );
            }
            (LegalBasis::Consent, Some(c)) if !set.consents.iter().any(|k| k.name == *c) => {
                errors.push(f, line, format!("{what}: undefined consent `{c}`"));
            }
            (basis, Some(_)) if *basis != LegalBasis::Consent => {
                errors.push(
                    f,
                    line,
                    format!(
                        "{what}: `consent` is only for legal_basis consent (this one is {})",
                        basis.as_str()
                    ),
                );
            }
            _ => {}
        }
        if def.sale_or_share
            && matches!(
                def.legal_basis,
                LegalBasis::Contract | LegalBasis::LegalObligation
            )
        {
            errors.push(
                f,
                line,
                format!(
                    "{what}: a sale or share cannot rest on {} (a GPC opt-out must be able to stop it); use consent or legitimate_interest",
                    def.legal_basis.as_str()
                ),
            );
        }
        if def.reads.is_empty() {
            errors.push(f, line, format!("{what}: `reads` names no category"));
        }
        for category in &def.reads {
            if category == UNCLASSIFIED {
                errors.push(f, line, format!("{what}: may not read `{UNCLASSIFIED}`: classify the traits in taxonomy.yaml"));
            } else if taxonomy.category(category).is_none() {
                errors.push(f, line, format!("{what}: unknown category `{category}`"));
            }
        }
        let retention = retention_days(&def.retention);
        if retention.is_none() {
            errors.push(
                f,
                line,
                format!(
                    "{what}: retention `{}` is not like 730d, 26w, 24m or 2y",
                    def.retention
                ),
            );
        }
        if def.minimum_age.is_some_and(|a| !(13..=21).contains(&a)) {
            errors.push(f, line, format!("{what}: minimum_age must be 13 to 21"));
        }
        for r in &def.recipients {
            if !set.recipients.iter().any(|k| k.name == *r) {
                errors.push(f, line, format!("{what}: undefined recipient `{r}`"));
            }
        }
        set.purposes.push(Purpose {
            name,
            description: def.description,
            legal_basis: def.legal_basis,
            consent: def.consent,
            reads: def.reads,
            profiling: def.profiling,
            sale_or_share: def.sale_or_share,
            minimum_age: def.minimum_age,
            retention_days: retention.unwrap_or(0),
            recipients: def.recipients,
        });
    }
    for r in &set.recipients {
        if !set.purposes.iter().any(|p| p.recipients.contains(&r.name)) {
            errors.push(
                f,
                file.line_of("recipients", &r.name),
                format!(
                    "recipient `{}`: unreachable, no purpose may disclose to it",
                    r.name
                ),
            );
        }
    }
    for c in &set.consents {
        if !set
            .purposes
            .iter()
            .any(|p| p.consent.as_deref() == Some(c.name.as_str()))
        {
            errors.push(
                f,
                file.line_of("consents", &c.name),
                format!("consent `{}`: no purpose uses it", c.name),
            );
        }
    }
    (errors.0.len() == before).then_some(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_reads_days_weeks_months_and_years() {
        assert_eq!(retention_days("730d"), Some(730));
        assert_eq!(retention_days("26w"), Some(182));
        assert_eq!(retention_days("24m"), Some(720));
        assert_eq!(retention_days("2y"), Some(730));
        assert_eq!(retention_days("0d"), None);
        assert_eq!(retention_days("forever"), None);
        assert_eq!(retention_days(""), None);
    }

    #[test]
    fn a_purpose_reads_its_categories_and_what_is_under_them_never_unclassified() {
        let p = Purpose {
            name: "x".into(),
            description: String::new(),
            legal_basis: LegalBasis::Contract,
            consent: None,
            reads: vec!["user.name".into()],
            profiling: false,
            sale_or_share: false,
            minimum_age: None,
            retention_days: 1,
            recipients: vec![],
        };
        assert!(p.may_read("user.name"));
        assert!(p.may_read("user.name.first"));
        assert!(!p.may_read("user.names"));
        assert!(!p.may_read("user"));
        assert!(!p.may_read(UNCLASSIFIED));
    }
}
