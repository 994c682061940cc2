//! The flags a DPO sets on a subject. Guarantees:
//! - restriction (Art. 18): while set, the gate discloses nothing about the subject for
//!   any purpose;
//! - legal hold (Art. 17(3)(e)): while set, an erasure request is refused with the hold's
//!   reason and changes nothing;
//! - setting and clearing each commit with their audit entry.
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::audit::{AuditError, AuditLog, NewEntry, Outcome};
use crate::domain::{Actor, Timestamp};
use crate::store::subject_flags::{self as repo, FlagRow, LEGAL_HOLD, RESTRICTED};
use crate::store::{Db, StoreError, profiles};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flag {
    Restriction,
    LegalHold,
}

impl Flag {
    pub fn stored(self) -> &'static str {
        match self {
            Self::Restriction => RESTRICTED,
            Self::LegalHold => LEGAL_HOLD,
        }
    }

    fn actions(self) -> (&'static str, &'static str) {
        match self {
            Self::Restriction => ("subject.restrict", "subject.restriction_lift"),
            Self::LegalHold => ("subject.legal_hold", "subject.legal_hold_lift"),
        }
    }

    fn not_set(self) -> &'static str {
        match self {
            Self::Restriction => "this subject is not restricted",
            Self::LegalHold => "this subject is not under legal hold",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FlagError {
    #[error("{0}")]
    Invalid(String),
    #[error("no subject has that id")]
    NoSubject,
    #[error("{}", .0.not_set())]
    NotSet(Flag),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// `PUT /v1/subjects/{subject_id}/restriction` and `.../legal-hold`.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewFlag {
    /// Why, e.g. `accuracy contested` or `litigation 2026-114`; no personal data.
    pub reason: String,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct FlagView {
    pub subject_id: String,
    pub reason: String,
    /// RFC 3339.
    pub since: String,
    /// The key id (or `cli`) that set it.
    pub set_by: String,
}

impl From<FlagRow> for FlagView {
    fn from(r: FlagRow) -> Self {
        Self {
            subject_id: r.subject_id,
            reason: r.reason,
            since: Timestamp::from_unix_micros(r.set_at).to_rfc3339(),
            set_by: r.set_by,
        }
    }
}

pub struct Flags<'a> {
    pub db: &'a Db,
    pub audit: &'a AuditLog,
    pub actor: Actor,
    pub request_id: Option<String>,
    pub now: Timestamp,
    pub flag: Flag,
}

impl Flags<'_> {
    /// Sets the flag (a second call keeps the first one and its reason).
    pub async fn set(&self, subject_id: &str, req: &NewFlag) -> Result<FlagView, FlagError> {
        let reason = req.reason.trim();
        if reason.is_empty() || reason.chars().count() > 200 || reason.chars().any(char::is_control)
        {
            return Err(FlagError::Invalid(
                "reason: 1-200 printable characters".into(),
            ));
        }
        let txn = self.db.begin_write().await?;
        if profiles::subject(&txn, subject_id).await?.is_none() {
            return Err(FlagError::NoSubject);
        }
        repo::insert(
            &txn,
            &FlagRow {
                subject_id: subject_id.to_owned(),
                flag: self.flag.stored().to_owned(),
                reason: reason.to_owned(),
                set_at: self.now.unix_micros(),
                set_by: self.actor.key_id.clone(),
            },
        )
        .await?;
        self.audited(&txn, subject_id, self.flag.actions().0)
            .await?;
        let row = repo::get(&txn, subject_id, self.flag.stored())
            .await?
            .ok_or(StoreError::Corrupt {
                table: "subject_flags",
                reason: "a flag just written cannot be read".into(),
            })?;
        txn.commit().await.map_err(StoreError::from)?;
        Ok(row.into())
    }

    pub async fn clear(&self, subject_id: &str) -> Result<(), FlagError> {
        let txn = self.db.begin_write().await?;
        if !repo::delete(&txn, subject_id, self.flag.stored()).await? {
            return Err(FlagError::NotSet(self.flag));
        }
        self.audited(&txn, subject_id, self.flag.actions().1)
            .await?;
        txn.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    pub async fn get(&self, subject_id: &str) -> Result<FlagView, FlagError> {
        repo::get(self.db.conn(), subject_id, self.flag.stored())
            .await?
            .map(FlagView::from)
            .ok_or(FlagError::NotSet(self.flag))
    }

    async fn audited(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        subject_id: &str,
        action: &str,
    ) -> Result<(), FlagError> {
        let entry = NewEntry {
            subject_ref: Some(self.audit.subject_ref(subject_id)?),
            ..NewEntry::new(self.actor.clone(), action, Outcome::Ok)
                .request_id(self.request_id.clone())
        };
        self.audit.append(txn, entry).await?;
        Ok(())
    }
}
