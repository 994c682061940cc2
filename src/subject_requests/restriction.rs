//! Restriction of processing (GDPR Art. 18). Guarantees: while a subject is restricted the
//! gate discloses nothing about them for any purpose; restricting and lifting each commit
//! with their audit entry.
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::audit::{AuditError, AuditLog, NewEntry, Outcome};
use crate::domain::{Actor, Timestamp};
use crate::store::restrictions::{self as repo, RestrictionRow};
use crate::store::{Db, StoreError, profiles};

#[derive(Debug, thiserror::Error)]
pub enum RestrictionError {
    #[error("{0}")]
    Invalid(String),
    #[error("no subject has that id")]
    NoSubject,
    #[error("this subject is not restricted")]
    NotRestricted,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// `PUT /v1/subjects/{subject_id}/restriction`.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRestriction {
    /// Why (Art. 18(1)(a)-(d)), e.g. `accuracy contested`; no personal data.
    pub reason: String,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Restriction {
    pub subject_id: String,
    pub reason: String,
    /// RFC 3339.
    pub restricted_at: String,
    pub recorded_by: String,
}

impl From<RestrictionRow> for Restriction {
    fn from(r: RestrictionRow) -> Self {
        Self {
            subject_id: r.subject_id,
            reason: r.reason,
            restricted_at: Timestamp::from_unix_micros(r.restricted_at).to_rfc3339(),
            recorded_by: r.recorded_by,
        }
    }
}

pub struct Restrictions<'a> {
    pub db: &'a Db,
    pub audit: &'a AuditLog,
    pub actor: Actor,
    pub request_id: Option<String>,
    pub now: Timestamp,
}

impl Restrictions<'_> {
    /// Restricts a subject (a second call keeps the first restriction and its reason).
    pub async fn restrict(
        &self,
        subject_id: &str,
        req: &NewRestriction,
    ) -> Result<Restriction, RestrictionError> {
        let reason = req.reason.trim();
        if reason.is_empty() || reason.chars().count() > 200 || reason.chars().any(char::is_control)
        {
            return Err(RestrictionError::Invalid(
                "reason: 1-200 printable characters".into(),
            ));
        }
        let txn = self.db.begin_write().await?;
        if profiles::subject(&txn, subject_id).await?.is_none() {
            return Err(RestrictionError::NoSubject);
        }
        repo::insert(
            &txn,
            &RestrictionRow {
                subject_id: subject_id.to_owned(),
                reason: reason.to_owned(),
                restricted_at: self.now.unix_micros(),
                recorded_by: self.actor.key_id.clone(),
            },
        )
        .await?;
        self.audited(&txn, subject_id, "subject.restrict").await?;
        let row = repo::get(&txn, subject_id)
            .await?
            .ok_or(StoreError::Corrupt {
                table: "restrictions",
                reason: "a restriction just written cannot be read".into(),
            })?;
        txn.commit().await.map_err(StoreError::from)?;
        Ok(row.into())
    }

    pub async fn lift(&self, subject_id: &str) -> Result<(), RestrictionError> {
        let txn = self.db.begin_write().await?;
        if !repo::delete(&txn, subject_id).await? {
            return Err(RestrictionError::NotRestricted);
        }
        self.audited(&txn, subject_id, "subject.restriction_lift")
            .await?;
        txn.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    pub async fn get(&self, subject_id: &str) -> Result<Restriction, RestrictionError> {
        repo::get(self.db.conn(), subject_id)
            .await?
            .map(Restriction::from)
            .ok_or(RestrictionError::NotRestricted)
    }

    async fn audited(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        subject_id: &str,
        action: &str,
    ) -> Result<(), RestrictionError> {
        let entry = NewEntry {
            subject_ref: Some(self.audit.subject_ref(subject_id)?),
            ..NewEntry::new(self.actor.clone(), action, Outcome::Ok)
                .request_id(self.request_id.clone())
        };
        self.audit.append(txn, entry).await?;
        Ok(())
    }
}
