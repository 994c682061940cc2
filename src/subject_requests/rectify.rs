//! Rectification (GDPR Art. 16). Guarantees: a corrected trait or identifier replaces the
//! old value, which is not kept anywhere (no history row, the old sealed value deleted);
//! sealed categories stay sealed under the person's key; recipients that received the
//! data are sent a notice; all of it, with the transitions and audit entries, in one
//! transaction.
use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::requests::{RequestError, RequestView, Requests};
use crate::audit::{NewEntry, Outcome};
use crate::crypto::{MasterKey, SubjectKey};
use crate::policy::taxonomy_squash as squash;
use crate::store::StoreError;
use crate::store::dsar as repo;
use crate::store::profiles::{self, IdentifierRow, TraitRow};

/// `POST /v1/dsar/{id}/rectify`: the corrected values.
#[derive(Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rectification {
    /// Trait name → corrected value; `null` removes the trait.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub traits: serde_json::Map<String, Value>,
    /// Identifier kind → the corrected value, replacing every identifier of that kind.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub identifiers: BTreeMap<String, String>,
}

impl std::fmt::Debug for Rectification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rectification").finish_non_exhaustive()
    }
}

fn invalid(m: impl Into<String>) -> RequestError {
    RequestError::Invalid(m.into())
}

pub struct Rectifier<'a> {
    pub requests: Requests<'a>,
    pub master: &'a MasterKey,
}

impl Rectifier<'_> {
    pub async fn rectify(
        &self,
        id: &str,
        fix: &Rectification,
    ) -> Result<RequestView, RequestError> {
        let r = &self.requests;
        if fix.traits.is_empty() && fix.identifiers.is_empty() {
            return Err(invalid("give the corrected `traits` or `identifiers`"));
        }
        let mut ids = Vec::new();
        for (kind, value) in &fix.identifiers {
            if kind == "anonymous_id" || !r.policies.is_identifier_kind(kind) {
                return Err(invalid(format!(
                    "identifiers.{kind}: not an identifier kind that can be corrected"
                )));
            }
            let v = crate::profiles::normalise_identifier(kind, value, None)
                .map_err(|why| invalid(format!("identifiers.{kind}: {why}")))?;
            ids.push((kind.clone(), v));
        }
        for name in fix.traits.keys() {
            if name.trim().is_empty() || name.chars().count() > 100 {
                return Err(invalid("traits: names of 1-100 characters"));
            }
            if r.policies
                .identifier_kinds()
                .iter()
                .any(|k| squash(k) == squash(name))
            {
                return Err(invalid(format!(
                    "traits.{name}: an identifier; correct it under `identifiers`"
                )));
            }
        }
        let txn = r.db.begin_write().await?;
        let mut row = repo::get(&txn, id).await?.ok_or(RequestError::NotFound)?;
        if row.kind != "rectification" {
            return Err(RequestError::State(format!(
                "a request of kind {} is executed with POST /v1/dsar/{{id}}/execute",
                row.kind
            )));
        }
        if let Some(first) = &row.duplicate_of {
            return Err(RequestError::State(format!(
                "this request is a duplicate of {first}; rectify through that one"
            )));
        }
        if row.status != "verified" && row.status != "in_progress" {
            return Err(RequestError::State(format!(
                "a request that is {} cannot be executed; it must be verified",
                row.status
            )));
        }
        let Some(subject) = row.subject_id.clone() else {
            return Err(RequestError::State(
                "no data is held for this request; reject it with reason no_data_held".into(),
            ));
        };
        let wrapped = profiles::subject_key(&txn, &subject)
            .await?
            .ok_or(StoreError::Corrupt {
                table: "subject_keys",
                reason: "an active subject has no data key".into(),
            })?;
        let key = SubjectKey::unwrap(self.master, &subject, &wrapped)?;
        if row.status == "verified" {
            r.move_in(&txn, &mut row, "in_progress", "rectification started")
                .await?;
        }
        let now = r.now.unix_micros();
        for (kind, value) in &ids {
            let indexes = r.keyring.blind_indexes(kind, value);
            if let Some(other) = profiles::subject_for(&txn, kind, &indexes).await?
                && other.subject_id != subject
            {
                return Err(RequestError::State(format!(
                    "the corrected {kind} belongs to another person; resolve that first"
                )));
            }
            profiles::delete_identifiers_of_kind(&txn, &subject, kind).await?;
            profiles::insert_identifiers(
                &txn,
                &[IdentifierRow {
                    kind: kind.clone(),
                    blind_index: r.keyring.blind_index(kind, value)?,
                    subject_id: subject.clone(),
                    sealed: key.seal(kind, value.as_bytes())?,
                    created_at: now,
                }],
            )
            .await?;
        }
        let existing = profiles::traits_of(&txn, &subject).await?;
        // A trait holding a corrected identifier (`email`, `email_address`, `phone` ...)
        // takes the corrected value too; otherwise the old one would survive there.
        for (kind, value) in &ids {
            let category = match kind.as_str() {
                "email" => Some("user.contact.email"),
                "phone" => Some("user.contact.phone_number"),
                _ => None,
            };
            for old in existing.iter().filter(|t| {
                category.is_some_and(|c| t.category == c) || squash(&t.name) == squash(kind)
            }) {
                let aad = format!("trait:{}", old.name);
                let json = Value::String(value.clone()).to_string();
                let (clear, sealed) = if old.sealed.is_some() {
                    (None, Some(key.seal(&aad, json.as_bytes())?))
                } else {
                    (Some(json), None)
                };
                profiles::upsert_trait(
                    &txn,
                    &TraitRow {
                        value: clear,
                        sealed,
                        updated_at: now,
                        ..old.clone()
                    },
                )
                .await?;
            }
        }
        for (name, value) in &fix.traits {
            // Every spelling of the name goes: `firstName` is `first_name`.
            for old in existing.iter().filter(|t| squash(&t.name) == squash(name)) {
                profiles::delete_trait(&txn, &subject, &old.name).await?;
            }
            if value.is_null() {
                continue;
            }
            let class = r.policies.taxonomy.classify(name);
            let (clear, sealed) = if class.sealed {
                let aad = format!("trait:{name}");
                (None, Some(key.seal(&aad, value.to_string().as_bytes())?))
            } else {
                (Some(value.to_string()), None)
            };
            profiles::upsert_trait(
                &txn,
                &TraitRow {
                    subject_id: subject.clone(),
                    name: name.clone(),
                    value: clear,
                    sealed,
                    category: class.category.to_owned(),
                    updated_at: now,
                },
            )
            .await?;
        }
        let webhooks =
            super::notices::queue_in(&txn, &row.id, &subject, "rectification", r.now).await?;
        let entry = NewEntry {
            subject_ref: Some(r.audit.subject_ref(&subject)?),
            ..NewEntry::new(r.actor.clone(), "subject.rectify", Outcome::Ok)
                .request_id(r.request_id.clone())
                .attributes(
                    std::iter::once(format!("dsar:{id}"))
                        .chain(ids.iter().map(|(k, _)| format!("identifier:{k}")))
                        .chain(fix.traits.keys().map(|k| format!("trait:{k}")))
                        .collect(),
                )
        };
        r.audit.append(&txn, entry).await?;
        let end = if webhooks > 0 {
            "completed_with_pending_notices"
        } else {
            "completed"
        };
        let what = format!(
            "rectified {} identifier(s) and {} trait(s); old values deleted",
            ids.len(),
            fix.traits.len()
        );
        r.move_in(&txn, &mut row, end, &what).await?;
        txn.commit().await.map_err(StoreError::from)?;
        r.show(id).await
    }
}
