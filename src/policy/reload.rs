//! Replacing the policy set in force, whole or not at all: a set with any problem is
//! refused and the running one stays. Every attempt is audited.
use crate::audit::{AuditError, AuditLog, NewEntry, Outcome};
use crate::crypto::MasterKey;
use crate::domain::Actor;
use crate::store::{Db, StoreError};

use super::{Policies, PolicyErrors, SharedPolicies};

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new set has problems; the old one is still in force.
    #[error("{0}")]
    Invalid(PolicyErrors),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Reclassify(#[from] crate::profiles::ingest::IngestError),
}

pub struct Reload<'a> {
    pub db: &'a Db,
    pub master: &'a MasterKey,
    pub audit: &'a AuditLog,
    pub shared: &'a SharedPolicies,
    pub actor: Actor,
    pub request_id: Option<String>,
}

impl Reload<'_> {
    /// Loads the set from its directory again; returns its summary.
    pub async fn run(&self) -> Result<String, ReloadError> {
        let dir = self.shared.get().dir.clone();
        let loaded = Policies::load(&dir);
        let outcome = if loaded.is_ok() {
            Outcome::Ok
        } else {
            Outcome::Failed
        };
        let entry = NewEntry::new(self.actor.clone(), "policy.reload", outcome)
            .request_id(self.request_id.clone());
        let txn = self.db.begin_write().await?;
        self.audit.append(&txn, entry).await?;
        txn.commit().await.map_err(StoreError::from)?;
        let policies = loaded.map_err(ReloadError::Invalid)?;
        let summary = policies.summary();
        crate::profiles::reclassify::reclassify(
            self.db,
            self.master,
            &policies.taxonomy,
            self.audit,
        )
        .await?;
        self.shared.replace(policies);
        tracing::info!(summary = %summary, "policies reloaded");
        Ok(summary)
    }
}
