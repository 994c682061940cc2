//! The tamper-evident audit log. Guarantees:
//! - an entry is appended inside the transaction of the change it records, so both commit
//!   or neither does (callers pass their transaction). It is appended as a pending row,
//!   which locks nothing shared: audited transactions commit side by side;
//! - a sequencer ([`AuditLog::settle`]) gives committed pending entries their place,
//!   oldest first among those committed when it runs (an entry whose transaction commits
//!   later is placed later), under the log's head lock: one gap-free sequence kept by the
//!   database, whatever the number of gateway nodes. Every node runs one
//!   ([`AuditLog::start_sequencer`]), and every reader of the log settles it first, so a
//!   committed entry is placed within moments and always before it could be read;
//! - entries are the leaves of an RFC 6962 Merkle tree; signed checkpoints (C2SP
//!   tlog-checkpoint, Ed25519) commit to its root every N entries or T seconds;
//! - subject references are keyed hashes under an audit-only key, never raw identifiers.
pub mod checkpoint;
mod entry;
pub mod merkle;
mod verify;

pub use entry::{Entry, NewEntry, Outcome};
pub use verify::{VerifyError, VerifyFailure, VerifyReport, verify};

use std::sync::Arc;
use std::time::Duration;

use sea_orm::ConnectionTrait;
use tokio::sync::Notify;

use crate::crypto::{KeyKind, KeyringError, SharedKeyring};
use crate::domain::Clock;
use crate::store::{self, Db, StoreError, audit::CheckpointRow};
use checkpoint::Checkpoint;
use merkle::{Frontier, Hash};

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("the audit log cannot be written: {0}")]
    Store(#[from] StoreError),
    #[error("the audit log cannot be signed: {0}")]
    Keyring(#[from] KeyringError),
    #[error("the stored audit head is corrupt")]
    CorruptHead,
    #[error("tree size {size} is beyond the log's {head} entries")]
    BeyondHead { size: u64, head: u64 },
    #[error("{0}")]
    BadRange(String),
}

/// The public half of a checkpoint key, for auditors who verify outside the gateway.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CheckpointKey {
    pub name: String,
    pub version: i32,
    pub public_key: Vec<u8>,
    pub verifier_key: String,
}

/// The most pending entries one sequencer transaction places.
const SETTLE_BATCH: u64 = 500;

/// How long the sequencer waits after an append before placing what is pending: time for
/// the appending transaction to commit, and under steady writes, a batch of entries a
/// transaction (at most 20 sequencer transactions a second).
const SETTLE_DELAY: Duration = Duration::from_millis(50);

#[derive(Clone, Debug)]
pub struct AuditLog {
    keyring: SharedKeyring,
    clock: Arc<dyn Clock>,
    origin: String,
    checkpoint_every: u64,
    /// Wakes this node's sequencer after an append.
    appended: Arc<Notify>,
}

impl AuditLog {
    pub fn new(
        keyring: SharedKeyring,
        clock: Arc<dyn Clock>,
        origin: String,
        checkpoint_every: u64,
    ) -> Self {
        Self {
            keyring,
            clock,
            origin,
            checkpoint_every: checkpoint_every.max(1),
            appended: Arc::new(Notify::new()),
        }
    }

    /// A keyed, versioned reference to a subject for the log: `as<version>.<hex>`.
    pub fn subject_ref(&self, subject_id: &str) -> Result<String, AuditError> {
        let keyring = self.keyring.get();
        let key = keyring.current(KeyKind::AuditSubject)?;
        let mac = crate::crypto::hmac_sha256(key.material(), subject_id.as_bytes());
        Ok(format!("as{}.{}", key.version, hex::encode(&mac[..16])))
    }

    /// Appends one entry inside the caller's transaction. It takes its place in the log
    /// once the transaction has committed (see [`AuditLog::settle`]).
    pub async fn append<C: ConnectionTrait>(&self, c: &C, new: NewEntry) -> Result<(), AuditError> {
        self.append_with(c, None, new).await
    }

    /// As [`AuditLog::append`], with the change the entry records (`change`: a statement
    /// that writes exactly one row) sent in the same round trip to the database.
    pub async fn append_with<C: ConnectionTrait>(
        &self,
        c: &C,
        change: Option<sea_orm::Statement>,
        new: NewEntry,
    ) -> Result<(), AuditError> {
        let row = new.into_pending(self.clock.now());
        store::audit::insert_pending_after(c, change.map(|s| (s, 1)), std::slice::from_ref(&row))
            .await?;
        self.appended(1);
        Ok(())
    }

    /// Appends `entries` in one call to the database together with `changes` (a statement
    /// and the number of rows it writes: what the entries record).
    pub async fn append_batch_with<C: ConnectionTrait>(
        &self,
        c: &C,
        changes: (sea_orm::Statement, u64),
        entries: Vec<NewEntry>,
    ) -> Result<(), AuditError> {
        let now = self.clock.now();
        let rows: Vec<_> = entries.into_iter().map(|e| e.into_pending(now)).collect();
        store::audit::insert_pending_after(c, Some(changes), &rows).await?;
        self.appended(rows.len() as u64);
        Ok(())
    }

    fn appended(&self, n: u64) {
        metrics::counter!("consentry_audit_entries_appended_total").increment(n);
        self.appended.notify_one();
    }

    /// Records an entry that goes with no other change (a refusal, a token issued), in a
    /// transaction of its own.
    pub async fn record(&self, db: &Db, new: NewEntry) -> Result<(), AuditError> {
        self.commit_alone(db, None, new).await
    }

    /// Commits `change` (a statement that writes exactly one row, if any) with its entry,
    /// on their own: on PostgreSQL one statement, which is its own transaction (one round
    /// trip); on SQLite a write transaction around the two.
    pub async fn commit_alone(
        &self,
        db: &Db,
        change: Option<sea_orm::Statement>,
        new: NewEntry,
    ) -> Result<(), AuditError> {
        if db.backend() == sea_orm::DbBackend::Postgres {
            return self.append_with(db.conn(), change, new).await;
        }
        let txn = db.begin_write().await?;
        self.append_with(&txn, change, new).await?;
        txn.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    /// Places every committed pending entry in the log, oldest first: each gets the next
    /// sequence number and its leaf, a checkpoint is signed at every multiple of N, and
    /// the pending rows go, all in one transaction a batch, under the head lock (so
    /// sequencers on several nodes take turns). Returns the log's size.
    pub async fn settle(&self, db: &Db) -> Result<u64, AuditError> {
        loop {
            let txn = db.begin_write().await?;
            let size = store::audit::lock_head(&txn).await?;
            let size = u64::try_from(size).map_err(|_| AuditError::CorruptHead)?;
            let pending = store::audit::pending(&txn, SETTLE_BATCH).await?;
            if pending.is_empty() {
                txn.rollback().await.map_err(StoreError::from)?;
                return Ok(size);
            }
            let n = pending.len() as u64;
            let mut ids = Vec::with_capacity(pending.len());
            let mut rows = Vec::with_capacity(pending.len());
            for ((id, p), seq) in pending.into_iter().zip(size..) {
                ids.push(id);
                rows.push(Entry::placed(seq, p).to_row());
            }
            store::audit::insert_entries(&txn, &rows).await?;
            store::audit::delete_pending(&txn, &ids).await?;
            for s in size + 1..=size + n {
                if s.is_multiple_of(self.checkpoint_every) {
                    self.insert_checkpoint(&txn, s).await?;
                }
            }
            txn.commit().await.map_err(StoreError::from)?;
            metrics::counter!("consentry_audit_entries_placed_total").increment(n);
            if n < SETTLE_BATCH {
                return Ok(size + n);
            }
        }
    }

    /// This node's sequencer: after an append (and at least every 250 ms, for entries
    /// other processes appended) it waits [`SETTLE_DELAY`] for the appending transaction
    /// to commit, then places what is pending, as long as entries keep arriving. It runs
    /// until the runtime stops.
    pub fn start_sequencer(&self, db: Db) -> tokio::task::JoinHandle<()> {
        let log = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tokio::select! {
                    () = log.appended.notified() => {}
                    _ = tick.tick() => {}
                }
                loop {
                    tokio::time::sleep(SETTLE_DELAY).await;
                    match store::audit::has_pending(db.conn()).await {
                        Ok(false) => break,
                        Ok(true) => {
                            if let Err(e) = log.settle(&db).await {
                                metrics::counter!("consentry_audit_settle_failures_total")
                                    .increment(1);
                                tracing::warn!(error = %e, "placing pending audit entries failed");
                                break;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "checking for pending audit entries failed");
                            break;
                        }
                    }
                }
            }
        })
    }

    /// Signs a checkpoint for the current size if entries were added since the last one.
    /// Returns the new checkpoint's size, if one was made.
    pub async fn checkpoint_if_behind(&self, db: &Db) -> Result<Option<u64>, AuditError> {
        self.settle(db).await?;
        let txn = db.begin_write().await?;
        let size = store::audit::lock_head(&txn).await?;
        let size = u64::try_from(size).map_err(|_| AuditError::CorruptHead)?;
        let latest = store::audit::latest_checkpoint(&txn).await?;
        if size == 0 || latest.is_some_and(|cp| cp.size as u64 == size) {
            return Ok(None);
        }
        self.insert_checkpoint(&txn, size).await?;
        txn.commit().await.map_err(StoreError::from)?;
        Ok(Some(size))
    }

    /// Signs the tree of `size` entries: the latest checkpoint's compact range extended
    /// by the leaves written since (at most N of them), never a scan of the whole log.
    async fn insert_checkpoint<C: ConnectionTrait>(
        &self,
        c: &C,
        size: u64,
    ) -> Result<(), AuditError> {
        let latest = store::audit::latest_checkpoint(c).await?;
        let mut frontier = match &latest {
            Some(cp) => {
                Frontier::from_bytes(cp.size as u64, &cp.frontier).ok_or(AuditError::CorruptHead)?
            }
            None => Frontier::new(),
        };
        if frontier.size() >= size {
            return Ok(());
        }
        let from = i64::try_from(frontier.size()).map_err(|_| AuditError::CorruptHead)?;
        let to = i64::try_from(size).map_err(|_| AuditError::CorruptHead)?;
        let leaves = store::audit::leaf_hashes(c, from, to).await?;
        if leaves.len() as u64 != size - frontier.size() {
            return Err(AuditError::CorruptHead);
        }
        for leaf in leaves {
            frontier.push(Hash::try_from(leaf.as_slice()).map_err(|_| AuditError::CorruptHead)?);
        }
        let keyring = self.keyring.get();
        let key = keyring.current(KeyKind::CheckpointSigning)?;
        let pair = key.ed25519(KeyKind::CheckpointSigning)?;
        let cp = Checkpoint {
            origin: self.origin.clone(),
            size,
            root: frontier.root(),
        };
        store::audit::insert_checkpoint(
            c,
            &CheckpointRow {
                size: to,
                root: cp.root.to_vec(),
                frontier: frontier.to_bytes(),
                key_version: key.version,
                note: cp.sign(&pair),
                created_at: self.clock.now().unix_micros(),
            },
        )
        .await?;
        Ok(())
    }

    /// Public keys of every checkpoint-signing version, retired ones included.
    pub fn checkpoint_keys(&self) -> Vec<CheckpointKey> {
        let keyring = self.keyring.get();
        keyring
            .versions(KeyKind::CheckpointSigning)
            .iter()
            .filter_map(|v| {
                let pk = v.public_key.clone()?;
                Some(CheckpointKey {
                    name: self.origin.clone(),
                    version: v.version,
                    verifier_key: checkpoint::verifier_key(&self.origin, &pk),
                    public_key: pk,
                })
            })
            .collect()
    }
}

/// A page of entries with `seq > after` (all from 0 when `after` is `None`).
pub async fn entries(db: &Db, after: Option<u64>, limit: u64) -> Result<Vec<Entry>, AuditError> {
    // Sequence numbers are int64 (as the OpenAPI document says): `after` beyond that is
    // refused; `after` at the very end is an empty page, as for any `after` past the head.
    let from = match after {
        None => 0,
        Some(a) if i64::try_from(a).is_err() => {
            return Err(AuditError::BadRange(format!(
                "after: at most {} (a sequence number)",
                i64::MAX
            )));
        }
        Some(a) => a + 1,
    };
    let Ok(from) = i64::try_from(from) else {
        return Ok(Vec::new());
    };
    store::audit::entries_from(db.conn(), from, limit)
        .await?
        .into_iter()
        .map(Entry::from_row)
        .collect()
}

pub async fn latest_checkpoint(db: &Db) -> Result<Option<CheckpointRow>, AuditError> {
    Ok(store::audit::latest_checkpoint(db.conn()).await?)
}

pub async fn head_size(db: &Db) -> Result<u64, AuditError> {
    let size = store::audit::head_size(db.conn()).await?;
    u64::try_from(size).map_err(|_| AuditError::CorruptHead)
}

async fn leaves(db: &Db, size: u64) -> Result<Vec<Hash>, AuditError> {
    let head = head_size(db).await?;
    if size > head {
        return Err(AuditError::BeyondHead { size, head });
    }
    let size_i = i64::try_from(size).map_err(|_| AuditError::CorruptHead)?;
    store::audit::leaf_hashes(db.conn(), 0, size_i)
        .await?
        .into_iter()
        .map(|h| Hash::try_from(h.as_slice()).map_err(|_| AuditError::CorruptHead))
        .collect()
}

/// An inclusion proof for entry `seq` in the tree of `size` entries.
#[derive(Clone, Debug, serde::Serialize)]
pub struct InclusionProof {
    pub seq: u64,
    pub tree_size: u64,
    pub leaf_hash: Hash,
    pub root: Hash,
    pub path: Vec<Hash>,
}

pub async fn inclusion_proof(db: &Db, seq: u64, size: u64) -> Result<InclusionProof, AuditError> {
    if seq >= size {
        return Err(AuditError::BadRange(format!(
            "seq {seq} is not inside a tree of size {size}: size must be greater than seq"
        )));
    }
    let leaves = leaves(db, size).await?;
    let m = usize::try_from(seq).map_err(|_| AuditError::CorruptHead)?;
    Ok(InclusionProof {
        seq,
        tree_size: size,
        leaf_hash: leaves[m],
        root: merkle::root(&leaves),
        path: merkle::inclusion_proof(m, &leaves),
    })
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct ConsistencyProof {
    pub from: u64,
    pub to: u64,
    pub from_root: Hash,
    pub to_root: Hash,
    pub path: Vec<Hash>,
}

pub async fn consistency_proof(
    db: &Db,
    from: u64,
    to: u64,
) -> Result<ConsistencyProof, AuditError> {
    if from > to {
        return Err(AuditError::BadRange(format!(
            "from ({from}) must not be greater than to ({to})"
        )));
    }
    let leaves = leaves(db, to).await?;
    let m = usize::try_from(from).map_err(|_| AuditError::CorruptHead)?;
    Ok(ConsistencyProof {
        from,
        to,
        from_root: merkle::root(&leaves[..m]),
        to_root: merkle::root(&leaves),
        path: merkle::consistency_proof(m, &leaves),
    })
}
