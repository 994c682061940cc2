//! Scores an external ML system posts (`POST /v1/scores`, role `ingest`): churn risk, a
//! propensity from another model ... stored beside the gateway's own under the same
//! category and the same Art. 22 rule, with the poster's model version.
use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use utoipa::ToSchema;

use super::{ScoreError, computed_here};
use crate::audit::{AuditLog, NewEntry, Outcome};
use crate::crypto::Keyring;
use crate::domain::{Actor, Timestamp};
use crate::policy::Policies;
use crate::profiles::lookup::{LookupError, SubjectQuery};
use crate::store::scores::{self, ScoreRow};
use crate::store::{Db, StoreError, profiles};

/// `{"subject": {"user_id": "u1"}, "scores": [{"name": "churn.risk", "value": 0.42, "model_version": "xgb-2026-11"}]}`
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostedScores {
    /// Exactly one identifier: `email`, `phone`, `user_id`, `anonymous_id` or an external id kind.
    #[schema(example = json!({"user_id": "u1"}))]
    pub subject: BTreeMap<String, String>,
    /// 1 to 100 scores.
    pub scores: Vec<PostedScore>,
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostedScore {
    /// Dotted lower-case words, e.g. `churn.risk` (`rfm.*` and `propensity.purchase` are
    /// the gateway's own).
    #[schema(example = "churn.risk")]
    pub name: String,
    #[schema(example = 0.42)]
    pub value: f64,
    #[schema(example = "xgb-2026-11")]
    pub model_version: String,
}

fn valid_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('.').collect();
    name.len() <= 64
        && parts.len() >= 2
        && parts.iter().all(|p| {
            p.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
}

fn check(body: &PostedScores) -> Result<(), ScoreError> {
    if body.scores.is_empty() || body.scores.len() > 100 {
        return Err(ScoreError::Invalid("scores: 1 to 100 scores".into()));
    }
    let mut seen = BTreeSet::new();
    for (i, s) in body.scores.iter().enumerate() {
        let at = format!("scores[{i}]");
        if !valid_name(&s.name) {
            return Err(ScoreError::Invalid(format!(
                "{at}.name: dotted lower-case words such as `churn.risk` (letters, digits, `_`; at most 64 characters)"
            )));
        }
        if computed_here(&s.name) {
            return Err(ScoreError::Invalid(format!(
                "{at}.name: `{}` is computed by the gateway; post your own under another name",
                s.name
            )));
        }
        if !seen.insert(s.name.as_str()) {
            return Err(ScoreError::Invalid(format!("{at}.name: given twice")));
        }
        if !s.value.is_finite() {
            return Err(ScoreError::Invalid(format!("{at}.value: a finite number")));
        }
        let v = s.model_version.trim();
        if v.is_empty() || v.len() > 100 || v.chars().any(char::is_control) {
            return Err(ScoreError::Invalid(format!(
                "{at}.model_version: 1 to 100 printable characters"
            )));
        }
    }
    Ok(())
}

pub struct Poster<'a> {
    pub db: &'a Db,
    pub keyring: &'a Keyring,
    pub audit: &'a AuditLog,
    pub policies: &'a Policies,
    pub actor: Actor,
    pub request_id: Option<String>,
    pub now: Timestamp,
}

impl Poster<'_> {
    /// Stores the scores of one subject (replacing earlier values of the same names).
    pub async fn post(&self, body: &PostedScores) -> Result<usize, ScoreError> {
        check(body)?;
        let (kind, value) = SubjectQuery(body.subject.clone())
            .identifier(self.policies)
            .map_err(|e| match e {
                LookupError::Invalid(m) => ScoreError::Invalid(format!("subject.{m}")),
                LookupError::Store(s) => ScoreError::Store(s),
                LookupError::Audit(a) => ScoreError::Audit(a),
            })?;
        let txn = self.db.begin_write().await?;
        let found =
            profiles::subject_for(&txn, &kind, &self.keyring.blind_indexes(&kind, &value)).await?;
        let Some(found) = found else {
            return Err(ScoreError::UnknownSubject);
        };
        match profiles::subject(&txn, &found.subject_id).await? {
            Some(s) if s.status == "active" => {}
            _ => return Err(ScoreError::UnknownSubject),
        }
        let at = self.now.unix_micros();
        let rows: Vec<ScoreRow> = body
            .scores
            .iter()
            .map(|s| ScoreRow {
                subject_id: found.subject_id.clone(),
                name: s.name.clone(),
                value: s.value,
                model_version: s.model_version.trim().to_owned(),
                source: format!("external:{}", self.actor.key_id),
                computed_at: at,
            })
            .collect();
        scores::upsert(&txn, &rows).await?;
        let mut attributes = vec![format!("by:{kind}")];
        attributes.extend(body.scores.iter().map(|s| format!("score:{}", s.name)));
        let entry = NewEntry {
            subject_ref: Some(self.audit.subject_ref(&found.subject_id)?),
            ..NewEntry::new(self.actor.clone(), "scores.post", Outcome::Ok)
                .request_id(self.request_id.clone())
                .attributes(attributes)
        };
        self.audit.append(&txn, entry).await?;
        txn.commit().await.map_err(StoreError::from)?;
        Ok(rows.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_names_are_dotted_lower_case_words() {
        for ok in ["churn.risk", "ltv.predicted_12m", "a.b.c"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "churn",
            "Churn.risk",
            "churn..risk",
            ".risk",
            "churn.1risk",
            "churn.risk!",
            "",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
