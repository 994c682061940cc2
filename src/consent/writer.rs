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
use std::collections::HashMap;

use tokio::sync::{mpsc, oneshot};

use super::ConsentError;
use crate::audit::{AuditError, AuditLog, NewEntry};
use crate::store::consents::{self as repo, ConsentRow};
use crate::store::{Db, StoreError, profiles};

/// The most records one transaction takes.
pub const MAX_BATCH: usize = 32;

/// Requests waiting for the writer beyond this wait to hand theirs over.
const QUEUE: usize = 1024;

/// A checked record and its audit entry, waiting for the subject its identifier names
/// (the record's `subject_id` and the entry's subject reference are filled in then).
#[derive(Clone, Debug)]
pub struct Unplaced {
    pub kind: String,
    /// The identifier's blind indexes, one per key version.
    pub indexes: Vec<String>,
    pub row: ConsentRow,
    pub entry: NewEntry,
}

impl Unplaced {
    /// The record and entry for `subject`.
    fn about(
        mut self,
        audit: &AuditLog,
        subject: String,
    ) -> Result<(ConsentRow, NewEntry), ConsentError> {
        self.entry.subject_ref = Some(audit.subject_ref(&subject)?);
        self.row.subject_id = subject;
        Ok((self.row, self.entry))
    }
}

/// What a write answers: the stored record, or `None` when nobody has the identifier.
type Answer = Result<Option<ConsentRow>, ConsentError>;

struct Job {
    record: Unplaced,
    done: oneshot::Sender<Answer>,
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
        f.debug_struct("Job")
            .field("id", &self.record.row.id)
            .finish()
    }
}

impl Writer {
    /// Starts the writer task on the current runtime (on SQLite; it ends when every handle
    /// is dropped). On PostgreSQL, where concurrent commits share WAL flushes and an audit
    /// entry locks nothing shared, each request looks its subject up and commits its record
    /// and entry as one statement itself: two round trips, no queue.
    pub fn start(db: Db, audit: AuditLog) -> Self {
        let jobs = (db.backend() != sea_orm::DbBackend::Postgres).then(|| {
            let (jobs, rx) = mpsc::channel(QUEUE);
            tokio::spawn(run(db.clone(), audit.clone(), rx));
            jobs
        });
        Self { jobs, db, audit }
    }

    /// Stores `record` for the subject its identifier names, with its entry; returns once
    /// both are committed (or refused), or `None` when nobody has the identifier.
    pub async fn write(&self, record: Unplaced) -> Answer {
        let Some(jobs) = &self.jobs else {
            return commit_alone(&self.db, &self.audit, record).await;
        };
        let (done, answer) = oneshot::channel();
        jobs.send(Job { record, done })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// Looks the subject up, then commits the record with its entry on their own
/// ([`AuditLog::commit_alone`]).
pub async fn commit_alone(db: &Db, audit: &AuditLog, record: Unplaced) -> Answer {
    let Some(found) = profiles::subject_for(db.conn(), &record.kind, &record.indexes).await? else {
        return Ok(None);
    };
    let (row, entry) = record.about(audit, found.subject_id)?;
    let insert = repo::insert_statement(db.backend(), &row);
    match audit.commit_alone(db, Some(insert), entry).await {
        Ok(()) => Ok(Some(row)),
        // The subject was erased after the look-up (PostgreSQL: the record's foreign key,
        // migration 19): nothing was stored, and the request answers as for a person not
        // found, which the suppression list then refuses.
        Err(AuditError::Store(e)) if e.is_missing_reference() => Ok(None),
        Err(e) => Err(e.into()),
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
                Ok(answers) => {
                    for (job, answer) in jobs.into_iter().zip(answers) {
                        let _ = job.done.send(Ok(answer));
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
            let result = commit(&db, &audit, std::slice::from_ref(&job))
                .await
                .map(|mut a| a.pop().flatten());
            let _ = job.done.send(result);
        }
    }
}

/// One transaction for every job: their subjects looked up (one query an identifier kind),
/// then the records found a subject for, with their entries, in one call to the database.
/// Returns each job's answer, in order.
async fn commit(
    db: &Db,
    audit: &AuditLog,
    jobs: &[Job],
) -> Result<Vec<Option<ConsentRow>>, ConsentError> {
    let txn = db.begin_write().await?;
    let mut by_kind: HashMap<&str, Vec<String>> = HashMap::new();
    for job in jobs {
        let r = &job.record;
        by_kind
            .entry(&r.kind)
            .or_default()
            .extend(r.indexes.iter().cloned());
    }
    let mut subjects: HashMap<(String, String), String> = HashMap::new();
    for (kind, indexes) in by_kind {
        for (index, subject) in profiles::subjects_for(&txn, kind, &indexes).await? {
            subjects.insert((kind.to_owned(), index), subject);
        }
    }
    let mut answers = Vec::with_capacity(jobs.len());
    let (mut rows, mut entries) = (Vec::new(), Vec::new());
    for job in jobs {
        let r = &job.record;
        let subject = r
            .indexes
            .iter()
            .find_map(|i| subjects.get(&(r.kind.clone(), i.clone())));
        match subject {
            Some(s) => {
                let (row, entry) = r.clone().about(audit, s.clone())?;
                answers.push(Some(row.clone()));
                rows.push(row);
                entries.push(entry);
            }
            None => answers.push(None),
        }
    }
    if !rows.is_empty() {
        let n = rows.len() as u64;
        let records = repo::insert_many_statement(db.backend(), rows.iter());
        audit.append_batch_with(&txn, (records, n), entries).await?;
    }
    txn.commit().await.map_err(StoreError::from)?;
    Ok(answers)
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
        // The one person the records are about, known by one identifier.
        use sea_orm::ConnectionTrait;
        db.conn()
            .execute_unprepared(
                "INSERT INTO identifiers (kind, blind_index, subject_id, sealed, created_at) \
                 VALUES ('email', 'bi-1', 's1', X'00', 1)",
            )
            .await
            .expect("identifier");
        (dir, db, audit, keyring)
    }

    /// A record about the person known by `bi-1`, or by nobody's identifier.
    fn about(index: &str, id: &str) -> Unplaced {
        Unplaced {
            kind: "email".into(),
            indexes: vec![index.into()],
            row: row(id),
            entry: NewEntry::new(Actor::anonymous(), "consent.record", Outcome::Ok),
        }
    }

    fn record(id: &str) -> Unplaced {
        about("bi-1", id)
    }

    fn row(id: &str) -> ConsentRow {
        ConsentRow {
            id: id.into(),
            subject_id: String::new(),
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

    #[tokio::test]
    async fn one_bad_record_fails_only_its_own_request_and_one_about_nobody_is_not_stored() {
        let (_dir, db, audit, keyring) = ledger_db().await;
        let writer = Writer::start(db.clone(), audit.clone());
        // Twenty at once; one repeats an id already written, so its insert fails.
        writer.write(record("r-dup")).await.expect("first");
        // One repeats an id already written, so its insert fails; one names nobody.
        let results = futures_util::future::join_all((0..20).map(|i| match i {
            7 => writer.write(record("r-dup")),
            11 => writer.write(about("bi-nobody", "r-nobody")),
            _ => writer.write(record(&format!("r{i}"))),
        }))
        .await;
        for (i, r) in results.iter().enumerate() {
            assert_eq!(r.is_err(), i == 7, "record {i}: {r:?}");
            if let Ok(stored) = r {
                assert_eq!(stored.is_none(), i == 11, "record {i}: {r:?}");
                assert!(stored.iter().all(|row| row.subject_id == "s1"));
            }
        }
        // And a batch with nothing wrong in it commits whole.
        let results = futures_util::future::join_all(
            (0..10).map(|i| writer.write(record(&format!("ok{i}")))),
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
            (0..5).map(|i| writer.write(record(&format!("late{i}")))),
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
        // 1 + 18 of the twenty + 10 + 5.
        assert_eq!(count("SELECT COUNT(*) FROM consents").await, 34);
        audit.settle(&db).await.expect("settle");
        assert_eq!(
            count("SELECT COUNT(*) FROM audit_entries WHERE action = 'consent.record'").await,
            34,
            "an entry for each stored record, none for the refused one or the one about nobody"
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
