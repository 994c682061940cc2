//! Finding a subject by one identifier, for DPOs answering requests. The look-up and
//! its audit entry commit together; nothing is answered if the entry cannot be written.
use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::audit::{AuditError, AuditLog, NewEntry, Outcome};
use crate::crypto::Keyring;
use crate::domain::{Actor, Timestamp};
use crate::policy::Policies;
use crate::store::profiles as repo;
use crate::store::{Db, StoreError};

/// The identifier to look for: the one query parameter given, named by its kind.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(transparent)]
pub struct SubjectQuery(pub BTreeMap<String, String>);

/// The query parameters of `GET /v1/subjects`, as documented; give exactly one.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct SubjectQueryDoc {
    email: Option<String>,
    user_id: Option<String>,
    /// E.164, e.g. `+442079460958`.
    phone: Option<String>,
    anonymous_id: Option<String>,
    /// An external id from `policies/identifiers.yaml`; the shipped ones are
    /// `customer_id`, `loyalty_id` and `device_id`, each its own parameter.
    customer_id: Option<String>,
    loyalty_id: Option<String>,
    device_id: Option<String>,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct TraitSummary {
    pub name: String,
    /// Data category (fideslang name), or `unclassified`.
    pub category: String,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct SubjectSummary {
    /// The internal id; it never leaves the gateway except to DPOs.
    pub subject_id: String,
    /// `active` or `merged`.
    pub status: String,
    /// The kinds of identifier held (`user_id`, `email`, `phone`, `anonymous_id`, external
    /// ids), never values.
    pub identifier_kinds: Vec<String>,
    pub event_count: u64,
    pub traits: Vec<TraitSummary>,
    pub first_seen_at: String,
    pub last_seen_at: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// The query does not name exactly one valid identifier.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

fn bad(field: &str, reason: impl std::fmt::Display) -> LookupError {
    LookupError::Invalid(format!("{field}: {reason}"))
}

impl SubjectQuery {
    /// (kind, normalised value) of the one identifier given.
    pub(crate) fn identifier(&self, policies: &Policies) -> Result<(String, String), LookupError> {
        let kinds = policies.identifier_kinds().join(", ");
        if let Some(unknown) = self.0.keys().find(|k| !policies.is_identifier_kind(k)) {
            return Err(bad(
                unknown,
                format!("not an identifier kind; give one of {kinds}"),
            ));
        }
        let mut given = self.0.iter();
        let (Some((kind, value)), None) = (given.next(), given.next()) else {
            return Err(bad("", format!("give exactly one of {kinds}")));
        };
        let value = super::normalise_identifier(kind, value, None).map_err(|r| bad(kind, r))?;
        Ok((kind.clone(), value))
    }
}

pub async fn find_subject(
    db: &Db,
    keyring: &Keyring,
    audit: &AuditLog,
    policies: &Policies,
    actor: Actor,
    request_id: Option<String>,
    query: &SubjectQuery,
) -> Result<Option<SubjectSummary>, LookupError> {
    let (kind, value) = query.identifier(policies)?;
    let txn = db.begin_write().await?;
    let found = repo::subject_for(&txn, &kind, &keyring.blind_indexes(&kind, &value)).await?;
    let mut entry = NewEntry::new(actor, "subject.lookup", Outcome::Ok)
        .request_id(request_id)
        .attributes(vec![format!("by:{kind}")]);
    let summary = match found {
        None => {
            entry.outcome = Outcome::Failed;
            None
        }
        Some(row) => {
            let s = repo::subject(&txn, &row.subject_id)
                .await?
                .ok_or(StoreError::Corrupt {
                    table: "subjects",
                    reason: "an identifier points at no subject".into(),
                })?;
            let kinds: BTreeSet<String> = repo::identifiers_of(&txn, &s.id)
                .await?
                .into_iter()
                .map(|i| i.kind)
                .collect();
            let traits = repo::traits_of(&txn, &s.id)
                .await?
                .into_iter()
                .map(|t| TraitSummary {
                    name: t.name,
                    category: t.category,
                })
                .collect();
            entry.subject_ref = Some(audit.subject_ref(&s.id)?);
            Some(SubjectSummary {
                event_count: repo::event_count(&txn, &s.id).await?,
                subject_id: s.id,
                status: s.status,
                identifier_kinds: kinds.into_iter().collect(),
                traits,
                first_seen_at: Timestamp::from_unix_micros(s.first_seen_at).to_rfc3339(),
                last_seen_at: Timestamp::from_unix_micros(s.last_seen_at).to_rfc3339(),
            })
        }
    };
    audit.append(&txn, entry).await?;
    txn.commit().await.map_err(StoreError::from)?;
    Ok(summary)
}
