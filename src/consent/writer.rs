//! How consent records are committed. On SQLite, where writers take turns, a node's
//! `POST /v1/consents` requests hand their checked record and its audit entry to one
//! writer task, which commits whatever has queued meanwhile (at most [`MAX_BATCH`]) in one
//! transaction, each record with its own entry, and only then answers each request: one
//! `COMMIT` is shared by several records instead of paid by each. A lone request waits
//! for nobody: the writer takes what is there and commits at once. If a batch fails, its
//! records are committed again one to a transaction, so one bad record fails only its own
//! request.
//!
//! On PostgreSQL each request commits its own record and entry, as one statement: there
//! concurrent transactions commit side by side and share their WAL flushes.
use tokio::sync::{mpsc, oneshot};

use super::ConsentError;
use crate::audit::{AuditLog, NewEntry};
use crate::store::consents::{self as repo, ConsentRow};
use crate::store::{Db, StoreError};

/// The most records one transaction takes.
pub const MAX_BATCH: usize = 32;

/// Requests waiting for the writer beyond this wait to hand theirs over.
const QUEUE: usize = 1024;

struct Job {
    row: ConsentRow,
    entry: NewEntry,
    done: oneshot::Sender<Result<(), ConsentError>>,
}

/// The handle requests write through; cloning it shares the one writer task.
#[derive(Clone, Debug)]
pub struct Writer {
    /// The writer task's queue; `None` on PostgreSQL, where each record commits on its own.
    jobs: Option<mpsc::Sender<Job>>,
    db: Db,
    audit: AuditLog,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("id", &self.row.id).finish()
    }
}

impl Writer {
    /// Starts the writer task on the current runtime (on SQLite; it ends when every handle
    /// is dropped). On PostgreSQL, where concurrent commits share WAL flushes and an audit
    /// entry locks nothing shared, a record and its entry go as one statement, its own
    /// transaction, from the request itself: one round trip, no queue.
    pub fn start(db: Db, audit: AuditLog) -> Self {
        let jobs = (db.backend() != sea_orm::DbBackend::Postgres).then(|| {
            let (jobs, rx) = mpsc::channel(QUEUE);
            tokio::spawn(run(db.clone(), audit.clone(), rx));
            jobs
        });
        Self { jobs, db, audit }
    }

    /// Commits `row` with `entry`; returns once both are committed (or refused).
    pub async fn write(&self, row: ConsentRow, entry: NewEntry) -> Result<(), ConsentError> {
        let Some(jobs) = &self.jobs else {
            let insert = repo::insert_statement(self.db.backend(), &row);
            self.audit
                .commit_alone(&self.db, Some(insert), entry)
                .await?;
            return Ok(());
        };
        let (done, answer) = oneshot::channel();
        jobs.send(Job { row, entry, done })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// The writer task is gone (the runtime is shutting down): nothing was written.
fn stopped() -> ConsentError {
    ConsentError::Store(StoreError::Unavailable(sea_orm::DbErr::Custom(
        "the consent writer has stopped".into(),
    )))
}

async fn run(db: Db, audit: AuditLog, mut rx: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        metrics::histogram!("consentry_consent_batch_records").record(batch.len() as f64);
        let jobs = std::mem::take(&mut batch);
        if jobs.len() > 1 {
            match commit(&db, &audit, &jobs).await {
                Ok(()) => {
                    for job in jobs {
                        let _ = job.done.send(Ok(()));
                    }
                    continue;
                }
                Err(e) => tracing::warn!(
                    records = jobs.len(),
                    error = %e,
                    "a batch of consent records failed; committing them one at a time"
                ),
            }
        }
        // One record (or a batch that failed): each in a transaction of its own.
        for job in jobs {
            let result = commit(&db, &audit, std::slice::from_ref(&job)).await;
            let _ = job.done.send(result);
        }
    }
}

/// One transaction with every job's record and entry, all of them in one call to the
/// database.
async fn commit(db: &Db, audit: &AuditLog, jobs: &[Job]) -> Result<(), ConsentError> {
    let txn = db.begin_write().await?;
    let records = repo::insert_many_statement(db.backend(), jobs.iter().map(|j| &j.row));
    let entries = jobs.iter().map(|j| j.entry.clone()).collect();
    audit
        .append_batch_with(&txn, (records, jobs.len() as u64), entries)
        .await?;
    txn.commit().await.map_err(StoreError::from)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::audit::Outcome;
    use crate::domain::{Actor, SystemClock};

    async fn ledger_db() -> (
        tempfile::TempDir,
        Db,
        AuditLog,
        crate::crypto::SharedKeyring,
    ) {
        let dir = tempfile::tempdir().expect("tmp");
        let url = format!("sqlite://{}", dir.path().join("w.db").display());
        let options = crate::store::DbOptions {
            max_connections: 4,
            sqlite_synchronous: crate::store::SqliteSync::Normal,
            sqlite_mmap_bytes: 0,
        };
        let db = Db::connect(&url, &options).await.expect("db");
        db.migrate().await.expect("migrate");
        let master = crate::crypto::MasterKey::from_bytes(&[7u8; 32]).expect("master");
        let clock: Arc<dyn crate::domain::Clock> = Arc::new(SystemClock);
        let keyring = crate::admin::ensure_keyring(&db, &master, clock.now())
            .await
            .expect("keyring");
        let keyring = crate::crypto::SharedKeyring::new(keyring);
        // A checkpoint every 7 entries, so that batches cross checkpoint sizes.
        let audit = AuditLog::new(keyring.clone(), clock, "test".into(), 7);
        (dir, db, audit, keyring)
    }

    fn row(id: &str) -> ConsentRow {
        ConsentRow {
            id: id.into(),
            subject_id: "s1".into(),
            consent: "email_marketing".into(),
            status: "granted".into(),
            method: "api".into(),
            source: "test".into(),
            notice_version: None,
            captured_at: 1,
            recorded_at: 1,
            recorded_by: "k".into(),
            proof: None,
        }
    }

    fn entry() -> NewEntry {
        NewEntry::new(Actor::anonymous(), "consent.record", Outcome::Ok)
    }

    #[tokio::test]
    async fn one_bad_record_fails_only_its_own_request() {
        let (_dir, db, audit, keyring) = ledger_db().await;
        let writer = Writer::start(db.clone(), audit.clone());
        // Twenty at once; one repeats an id already written, so its insert fails.
        writer.write(row("r-dup"), entry()).await.expect("first");
        let results = futures_util::future::join_all((0..20).map(|i| {
            let id = if i == 7 {
                "r-dup".to_owned()
            } else {
                format!("r{i}")
            };
            writer.write(row(&id), entry())
        }))
        .await;
        for (i, r) in results.iter().enumerate() {
            assert_eq!(r.is_err(), i == 7, "record {i}: {r:?}");
        }
        // And a batch with nothing wrong in it commits whole.
        let results = futures_util::future::join_all(
            (0..10).map(|i| writer.write(row(&format!("ok{i}")), entry())),
        )
        .await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        // Another node appends to the log meanwhile: every entry still finds its place.
        let other = AuditLog::new(keyring.clone(), Arc::new(SystemClock), "test".into(), 7);
        other
            .record(
                &db,
                NewEntry::new(Actor::anonymous(), "test.other", Outcome::Ok),
            )
            .await
            .expect("other node");
        let results = futures_util::future::join_all(
            (0..5).map(|i| writer.write(row(&format!("late{i}")), entry())),
        )
        .await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        let count = |sql: &'static str| {
            let db = db.clone();
            async move {
                use sea_orm::ConnectionTrait;
                db.conn()
                    .query_one_raw(sea_orm::Statement::from_string(db.backend(), sql))
                    .await
                    .expect("query")
                    .expect("row")
                    .try_get_by_index::<i64>(0)
                    .expect("count")
            }
        };
        assert_eq!(count("SELECT COUNT(*) FROM consents").await, 35);
        audit.settle(&db).await.expect("settle");
        assert_eq!(
            count("SELECT COUNT(*) FROM audit_entries WHERE action = 'consent.record'").await,
            35,
            "an entry for each stored record, none for the refused one"
        );
        assert_eq!(
            count("SELECT size FROM audit_head").await,
            count("SELECT COUNT(*) FROM audit_entries").await
        );
        let report = crate::audit::verify(&db, &keyring.get())
            .await
            .expect("the log verifies, checkpoints included");
        assert!(report.checkpoints >= 5, "{report:?}");
    }
}
