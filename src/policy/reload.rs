//! Replacing the policy set in force, whole or not at all: a set with any problem is
//! refused and the running one stays. Every attempt is audited.
//!
//! A set put in force on one node is published to all: its three texts are stored as the
//! next generation of `policy_sets`, in the transaction of its audit entry, and every
//! node's periodic [`sync`] puts the latest generation in force within
//! `policy_sync_interval_secs`. A node starting publishes its directory's set when it
//! differs from the latest one, so a start is a reload too (the last set loaded anywhere
//! is the one in force everywhere). Nothing of the set lives only in one node's memory.
use crate::audit::{AuditError, AuditLog, NewEntry, Outcome};
use crate::crypto::MasterKey;
use crate::domain::{Actor, Timestamp};
use crate::store::{self, Db, StoreError};

use super::{Policies, PolicyErrors, PolicyTexts, SharedPolicies};

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

/// What a reload put in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reloaded {
    pub summary: String,
    /// The published generation, the same on every node once they have synced.
    pub generation: i64,
    /// SHA-256 of the set's texts.
    pub digest: String,
}

pub struct Reload<'a> {
    pub db: &'a Db,
    pub master: &'a MasterKey,
    pub audit: &'a AuditLog,
    pub shared: &'a SharedPolicies,
    pub actor: Actor,
    pub request_id: Option<String>,
    pub now: Timestamp,
}

impl Reload<'_> {
    /// Loads the set from its directory again and publishes it to every node.
    pub async fn run(&self) -> Result<Reloaded, ReloadError> {
        let dir = self.shared.get().dir.clone();
        let loaded = Policies::load(&dir);
        let txn = self.db.begin_write().await?;
        let (outcome, attributes) = match &loaded {
            Ok(p) => (
                Outcome::Ok,
                vec![format!("policy_set:{}", p.texts.digest())],
            ),
            Err(_) => (Outcome::Failed, Vec::new()),
        };
        let entry = NewEntry::new(self.actor.clone(), "policy.reload", outcome)
            .request_id(self.request_id.clone())
            .attributes(attributes);
        self.audit.append(&txn, entry).await?;
        // After the append: the audit head's lock also orders concurrent publishers.
        let generation = match &loaded {
            Ok(p) => publish(&txn, &p.texts, self.now).await?,
            Err(_) => 0,
        };
        txn.commit().await.map_err(StoreError::from)?;
        let policies = loaded.map_err(ReloadError::Invalid)?;
        let reloaded = Reloaded {
            summary: policies.summary(),
            generation,
            digest: policies.texts.digest(),
        };
        crate::profiles::reclassify::reclassify(
            self.db,
            self.master,
            &policies.taxonomy,
            self.audit,
        )
        .await?;
        self.shared.replace(policies);
        self.shared.set_generation(generation);
        tracing::info!(summary = %reloaded.summary, generation, "policies reloaded and published");
        Ok(reloaded)
    }
}

/// The set as the latest generation: the latest itself if it holds the same texts.
async fn publish<C: sea_orm::ConnectionTrait>(
    c: &C,
    texts: &PolicyTexts,
    now: Timestamp,
) -> Result<i64, StoreError> {
    let digest = texts.digest();
    if let Some((g, d)) = store::policy_sets::latest(c).await?
        && d == digest
    {
        return Ok(g);
    }
    store::policy_sets::publish(
        c,
        &digest,
        [&texts.taxonomy, &texts.identifiers, &texts.purposes],
        now.unix_micros(),
    )
    .await
}

/// At start: the set loaded from this node's directory becomes the latest generation
/// unless it already is. Returns the generation in force.
pub async fn publish_at_start(
    db: &Db,
    shared: &SharedPolicies,
    now: Timestamp,
) -> Result<i64, StoreError> {
    let policies = shared.get();
    let txn = db.begin_write().await?;
    let generation = publish(&txn, &policies.texts, now).await?;
    txn.commit().await.map_err(StoreError::from)?;
    shared.set_generation(generation);
    Ok(generation)
}

/// Puts the latest published generation in force on this node if it has not yet.
/// Returns the generation newly put in force, if any. A published set this node cannot
/// compile (a node of another version) is logged and skipped; the old set stays.
pub async fn sync(
    db: &Db,
    master: &MasterKey,
    audit: &AuditLog,
    shared: &SharedPolicies,
) -> Result<Option<i64>, ReloadError> {
    let Some((generation, digest)) = store::policy_sets::latest(db.conn()).await? else {
        return Ok(None);
    };
    if generation <= shared.generation() {
        return Ok(None);
    }
    let current = shared.get();
    if current.texts.digest() == digest {
        shared.set_generation(generation);
        return Ok(None);
    }
    let Some(set) = store::policy_sets::get(db.conn(), generation).await? else {
        return Ok(None);
    };
    let compiled =
        Policies::from_texts(&current.dir, &set.taxonomy, &set.identifiers, &set.purposes);
    shared.set_generation(generation);
    let policies = match compiled {
        Ok(p) => p,
        Err(errors) => {
            tracing::error!(generation, problems = %errors, "a published policy set does not compile on this node; the old set stays in force");
            return Ok(None);
        }
    };
    // Traits this node stored under the old taxonomy since the publisher reclassified.
    crate::profiles::reclassify::reclassify(db, master, &policies.taxonomy, audit).await?;
    tracing::info!(summary = %policies.summary(), generation, "published policies put in force");
    shared.replace(policies);
    Ok(Some(generation))
}
