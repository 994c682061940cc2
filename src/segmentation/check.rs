//! The static check of a rule against the purpose it serves: every trait, aggregate and
//! event it reads must be of a category the purpose may read, and a sealed value (a
//! direct identifier) can only be tested for presence.
use serde::Serialize;
use utoipa::ToSchema;

use super::rule::{Rule, Test};
use crate::policy::gate::{AGGREGATE_CATEGORIES, PurposeGrant};

/// One reference the purpose may not read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Offence {
    /// The rule path of the condition, e.g. `all[1].event`.
    pub path: String,
    /// What it reads: `attribute:country`, `aggregate:lifetime_value`, `event:Order Completed`.
    pub reference: String,
    pub category: String,
    pub message: String,
}

/// Every reference of `rule` that `grant`'s purpose may not read; empty when it may run.
pub fn check(rule: &Rule, grant: &PurposeGrant) -> Vec<Offence> {
    let purpose = grant.purpose();
    let taxonomy = &grant.policies().taxonomy;
    let mut out = Vec::new();
    for (leaf, path) in rule.leaves() {
        let (reference, category, sealed) = match leaf {
            Rule::Attribute { name, test } => {
                let c = taxonomy.classify(name);
                (
                    format!("attribute:{name}"),
                    c.category.to_owned(),
                    c.sealed && !matches!(test, Test::Exists(_)),
                )
            }
            Rule::Aggregate { name, .. } => (
                format!("aggregate:{}", name.name()),
                AGGREGATE_CATEGORIES
                    .iter()
                    .find(|(n, _)| *n == name.name())
                    .map_or(crate::policy::UNCLASSIFIED, |(_, c)| c)
                    .to_owned(),
                false,
            ),
            Rule::Event(e) => (
                format!(
                    "event:{}{}",
                    if e.kind == "track" {
                        String::new()
                    } else {
                        format!("{}:", e.kind)
                    },
                    e.name.as_deref().unwrap_or("*")
                ),
                crate::domain::events::category(&e.kind, e.name.as_deref()).to_owned(),
                false,
            ),
            Rule::Score { name, .. } => (
                format!("score:{name}"),
                crate::policy::gate::SCORE_CATEGORY.to_owned(),
                false,
            ),
            Rule::All(_) | Rule::Any(_) | Rule::Not(_) => continue,
        };
        let profiling_ok =
            purpose.profiling && purpose.legal_basis == crate::policy::LegalBasis::Consent;
        let message = if category == crate::policy::gate::SCORE_CATEGORY && !profiling_ok {
            Some(format!(
                "{reference} is profiling (GDPR Art. 22): only a purpose marked profiling, on consent, may use scores; {} is not",
                purpose.name
            ))
        } else if category == crate::policy::UNCLASSIFIED {
            Some(format!(
                "{reference} is not classified; give it a category in taxonomy.yaml"
            ))
        } else if !purpose.may_read(&category) {
            Some(format!("purpose {} may not read {category}", purpose.name))
        } else if sealed {
            Some(format!(
                "{category} is a direct identifier, stored sealed: a rule can only test whether it exists"
            ))
        } else {
            None
        };
        if let Some(message) = message {
            out.push(Offence {
                path,
                reference,
                category,
                message,
            });
        }
    }
    out
}
