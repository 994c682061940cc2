//! Legal holds (GDPR Art. 17(3)(e): data needed for legal claims). Guarantees: while a
//! subject is held, an erasure request is refused with the hold's reason and changes
//! nothing; placing and lifting each commit with their audit entry.
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::audit::{AuditError, AuditLog, NewEntry, Outcome};
use crate::domain::{Actor, Timestamp};
use crate::store::legal_holds::{self as repo, HoldRow};
use crate::store::{Db, StoreError, profiles};

#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    #[error("{0}")]
    Invalid(String),
    #[error("no subject has that id")]
    NoSubject,
    #[error("this subject is not under legal hold")]
    NotHeld,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// `PUT /v1/subjects/{subject_id}/legal-hold`.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewHold {
    /// Why, e.g. `litigation 2026-114`; no personal data.
    pub reason: String,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Hold {
    pub subject_id: String,
    pub reason: String,
    /// RFC 3339.
    pub placed_at: String,
    pub placed_by: String,
}

impl From<HoldRow> for Hold {
    fn from(r: HoldRow) -> Self {
        Self {
            subject_id: r.subject_id,
            reason: r.reason,
            placed_at: Timestamp::from_unix_micros(r.placed_at).to_rfc3339(),
            placed_by: r.placed_by,
        }
    }
}

pub struct Holds<'a> {
    pub db: &'a Db,
    pub audit: &'a AuditLog,
    pub actor: Actor,
    pub request_id: Option<String>,
    pub now: Timestamp,
}

impl Holds<'_> {
    /// Places a hold (a second call keeps the first hold and its reason).
    pub async fn place(&self, subject_id: &str, req: &NewHold) -> Result<Hold, HoldError> {
        let reason = req.reason.trim();
        if reason.is_empty() || reason.chars().count() > 200 || reason.chars().any(char::is_control)
        {
            return Err(HoldError::Invalid(
                "reason: 1-200 printable characters".into(),
            ));
        }
        let txn = self.db.begin_write().await?;
        if profiles::subject(&txn, subject_id).await?.is_none() {
            return Err(HoldError::NoSubject);
        }
        repo::insert(
            &txn,
            &HoldRow {
                subject_id: subject_id.to_owned(),
                reason: reason.to_owned(),
                placed_at: self.now.unix_micros(),
                placed_by: self.actor.key_id.clone(),
            },
        )
        .await?;
        self.audited(&txn, subject_id, "subject.legal_hold").await?;
        let row = repo::get(&txn, subject_id)
            .await?
            .ok_or(StoreError::Corrupt {
                table: "legal_holds",
                reason: "a hold just written cannot be read".into(),
            })?;
        txn.commit().await.map_err(StoreError::from)?;
        Ok(row.into())
    }

    pub async fn lift(&self, subject_id: &str) -> Result<(), HoldError> {
        let txn = self.db.begin_write().await?;
        if !repo::delete(&txn, subject_id).await? {
            return Err(HoldError::NotHeld);
        }
        self.audited(&txn, subject_id, "subject.legal_hold_lift")
            .await?;
        txn.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    pub async fn get(&self, subject_id: &str) -> Result<Hold, HoldError> {
        repo::get(self.db.conn(), subject_id)
            .await?
            .map(Hold::from)
            .ok_or(HoldError::NotHeld)
    }

    async fn audited(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        subject_id: &str,
        action: &str,
    ) -> Result<(), HoldError> {
        let entry = NewEntry {
            subject_ref: Some(self.audit.subject_ref(subject_id)?),
            ..NewEntry::new(self.actor.clone(), action, Outcome::Ok)
                .request_id(self.request_id.clone())
        };
        self.audit.append(txn, entry).await?;
        Ok(())
    }
}
