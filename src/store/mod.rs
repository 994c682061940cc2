//! Storage: one `Db` handle over SQLite or PostgreSQL, and repository functions that
//! return domain types. Entities never leave this module.
pub mod aggregates;
pub mod api_keys;
pub mod audit;
pub mod campaigns;
pub mod catalog;
pub mod consents;
pub mod disclosures;
pub mod dsar;
mod entity;
pub mod erasure;
pub mod experiments;
pub mod exports;
pub mod keyring;
pub mod notices;
pub mod pages;
pub mod policy_sets;
pub mod profiles;
pub mod recipients;
pub mod retention;
pub mod scores;
pub mod segments;
pub mod subject_flags;
pub mod suppressions;
pub mod templates;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::postgres::PgConnectOptions;
use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnAcquireErr, ConnectOptions, ConnectionTrait, Database, DatabaseConnection,
    DatabaseTransaction, DbBackend, DbErr, ExecResult, QueryResult, RuntimeErr,
    SqliteTransactionMode, Statement, TransactionOptions, TransactionTrait,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or refused the connection.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] DbErr),
    #[error("database error: {0}")]
    Db(#[source] DbErr),
    /// Stored data that does not decode (a corrupt or tampered row).
    #[error("corrupt row in {table}: {reason}")]
    Corrupt { table: &'static str, reason: String },
}

impl StoreError {
    /// The database gave this transaction up in favour of a concurrent one (PostgreSQL
    /// 40P01 deadlock_detected, 40001 serialization_failure): it changed nothing, and
    /// running it again can succeed.
    pub fn is_transaction_conflict(&self) -> bool {
        self.has_code(&["40P01", "40001"])
    }

    /// A row named a row of another table that does not exist (PostgreSQL 23503
    /// foreign_key_violation): e.g. a consent record whose subject was erased meanwhile.
    pub fn is_missing_reference(&self) -> bool {
        self.has_code(&["23503"])
    }

    /// The database refused the statement with one of these SQLSTATE codes.
    fn has_code(&self, codes: &[&str]) -> bool {
        let StoreError::Db(
            DbErr::Exec(RuntimeErr::SqlxError(err)) | DbErr::Query(RuntimeErr::SqlxError(err)),
        ) = self
        else {
            return false;
        };
        matches!(err.as_ref(), sea_orm::sqlx::Error::Database(e)
            if e.code().is_some_and(|c| codes.contains(&c.as_ref())))
    }
}

impl From<DbErr> for StoreError {
    fn from(e: DbErr) -> Self {
        match &e {
            DbErr::Conn(_) | DbErr::ConnectionAcquire(_) => StoreError::Unavailable(e),
            DbErr::Exec(RuntimeErr::SqlxError(err)) | DbErr::Query(RuntimeErr::SqlxError(err))
                if is_connection_error(err) =>
            {
                StoreError::Unavailable(e)
            }
            _ => StoreError::Db(e),
        }
    }
}

fn is_connection_error(err: &sea_orm::sqlx::Error) -> bool {
    use sea_orm::sqlx::Error as E;
    match err {
        E::Io(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed | E::Tls(_) => true,
        E::Database(e) => e
            .code()
            .is_some_and(|c| is_unavailable_state(&c) || is_sqlite_busy(&c)),
        _ => false,
    }
}

/// SQLite's extended result codes for a lock it could not get within the busy timeout
/// (SQLITE_BUSY 5, BUSY_RECOVERY 261, BUSY_SNAPSHOT 517, BUSY_TIMEOUT 773; SQLITE_LOCKED
/// 6): the database is busy, the request did nothing and can be retried.
fn is_sqlite_busy(code: &str) -> bool {
    matches!(code, "5" | "261" | "517" | "773" | "6")
}

/// PostgreSQL SQLSTATEs that say the server is going away or not there yet, not that
/// the statement is wrong: a connection exception (class 08), a server shutting down or
/// starting up (57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now),
/// too many connections (53300).
fn is_unavailable_state(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300")
}

/// How the SQLite file is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSync {
    Normal,
    Full,
}

#[derive(Clone, Debug)]
pub struct DbOptions {
    pub max_connections: u32,
    pub sqlite_synchronous: SqliteSync,
    /// How much of the file SQLite reads through a memory map (`mmap_size`), in bytes.
    pub sqlite_mmap_bytes: u64,
}

/// How long [`Db::connect`] lets a request wait for a connection.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a request waits for SQLite's write lock: its turn among this process's
/// writers, then (against other processes) SQLite's busy timeout. Past it the request
/// fails with [`StoreError::Unavailable`] and writes nothing.
pub const SQLITE_WRITE_WAIT: Duration = Duration::from_secs(10);

/// The database handle shared by every service.
#[derive(Clone, Debug)]
pub struct Db {
    conn: DatabaseConnection,
    /// The SQLite file, for the verifier's direct reader; `None` on PostgreSQL.
    sqlite_path: Option<std::path::PathBuf>,
    /// On SQLite, the one writer turn of this process, handed out first come first
    /// served. SQLite lets one connection write at a time and has the others poll for the
    /// lock, which is not fair: under steady writes a waiting request could lose every
    /// poll until its busy timeout ran out. `None` on PostgreSQL, whose writers do not
    /// exclude each other.
    writer: Option<Arc<tokio::sync::Semaphore>>,
}

/// A write transaction from [`Db::begin_write`]: a [`DatabaseTransaction`] that, on SQLite,
/// also holds this process's writer turn until it commits, rolls back or is dropped.
pub struct WriteTxn {
    txn: DatabaseTransaction,
    _turn: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl WriteTxn {
    pub async fn commit(self) -> Result<(), DbErr> {
        self.txn.commit().await
    }

    pub async fn rollback(self) -> Result<(), DbErr> {
        self.txn.rollback().await
    }
}

impl std::ops::Deref for WriteTxn {
    type Target = DatabaseTransaction;

    fn deref(&self) -> &DatabaseTransaction {
        &self.txn
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for WriteTxn {
    fn get_database_backend(&self) -> DbBackend {
        self.txn.get_database_backend()
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        self.txn.execute_raw(stmt).await
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        self.txn.execute_unprepared(sql).await
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        self.txn.query_one_raw(stmt).await
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        self.txn.query_all_raw(stmt).await
    }

    fn support_returning(&self) -> bool {
        self.txn.support_returning()
    }
}

impl Db {
    /// Connects to `sqlite://PATH` (created if missing, WAL, foreign keys on) or `postgres://...`.
    pub async fn connect(url: &str, options: &DbOptions) -> Result<Self, StoreError> {
        Self::connect_timed(url, options, DEFAULT_ACQUIRE_TIMEOUT).await
    }

    /// [`Db::connect`], waiting at most `acquire_timeout` for a connection: while the
    /// database is down or every connection is busy, a request fails after that long
    /// with [`StoreError::Unavailable`] (503 `database_unavailable`) rather than waiting on.
    pub async fn connect_timed(
        url: &str,
        options: &DbOptions,
        acquire_timeout: Duration,
    ) -> Result<Self, StoreError> {
        let sqlite_path = sqlite_file(url);
        let mut opts = ConnectOptions::new(url.to_owned());
        opts.max_connections(options.max_connections)
            .min_connections(1)
            .acquire_timeout(acquire_timeout)
            // Ping only connections idle long enough to have been dropped, not every checkout.
            .test_before_acquire_if_idle_for(Duration::from_secs(30))
            .sqlx_logging(false);
        if url.starts_with("sqlite:") {
            let sync = match options.sqlite_synchronous {
                SqliteSync::Normal => SqliteSynchronous::Normal,
                SqliteSync::Full => SqliteSynchronous::Full,
            };
            let mmap = options.sqlite_mmap_bytes.to_string();
            opts.map_sqlx_sqlite_opts(move |o: SqliteConnectOptions| {
                o.create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .foreign_keys(true)
                    .synchronous(sync)
                    .busy_timeout(SQLITE_WRITE_WAIT)
                    // 16 MiB of page cache a connection (the default is 2 MiB): identifiers
                    // and subjects are keyed by random values, so inserts touch pages all
                    // over their indexes.
                    .pragma("cache_size", "-16384")
                    // Reads the first part of the file (256 MiB by default) through a
                    // memory map (the operating system's page cache, shared by every
                    // connection) instead of a read call per page: +70% export rows/s at
                    // 30,000 people. The mapped pages count in the process's RSS but are
                    // the kernel's to reclaim, not the gateway's heap.
                    .pragma("mmap_size", mmap.clone())
            });
        }
        if url.starts_with("postgres") {
            // Plan every execution for its parameters. With PostgreSQL's default, a
            // prepared statement switches to a generic plan after five runs; planned while
            // a table was still small, that plan can be a sequential scan that stays
            // cached as the table grows (measured: a 500-value identifier look-up at 1.7 s).
            opts.map_sqlx_postgres_opts(|o: PgConnectOptions| {
                o.options([("plan_cache_mode", "force_custom_plan")])
            });
        }
        let conn = Database::connect(opts).await?;
        // An in-memory database has no file another connection could read.
        let sqlite_path = sqlite_path.filter(|p| p.is_file());
        let writer = url
            .starts_with("sqlite:")
            .then(|| Arc::new(tokio::sync::Semaphore::new(1)));
        Ok(Self {
            conn,
            sqlite_path,
            writer,
        })
    }

    /// The URL used when none is configured: `sqlite://DATA_DIR/consentry.db`.
    pub fn default_sqlite_url(data_dir: &Path) -> String {
        format!("sqlite://{}", data_dir.join("consentry.db").display())
    }

    pub fn conn(&self) -> &DatabaseConnection {
        &self.conn
    }

    pub(crate) fn sqlite_path(&self) -> Option<&Path> {
        self.sqlite_path.as_deref()
    }

    pub fn backend(&self) -> DbBackend {
        self.conn.get_database_backend()
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        Migrator::up(&self.conn, None).await?;
        Ok(())
    }

    /// Number of migrations not yet applied.
    pub async fn pending_migrations(&self) -> Result<usize, StoreError> {
        Ok(Migrator::get_pending_migrations(&self.conn).await?.len())
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.conn.ping().await?;
        Ok(())
    }

    /// Begins a transaction that will write. On SQLite it first waits for this process's
    /// writer turn (first come, first served; at most [`SQLITE_WRITE_WAIT`]), then takes
    /// the write lock up front (`BEGIN IMMEDIATE`), so a read-then-write transaction
    /// cannot fail to upgrade.
    pub async fn begin_write(&self) -> Result<WriteTxn, StoreError> {
        let turn = match &self.writer {
            Some(writer) => Some(
                tokio::time::timeout(SQLITE_WRITE_WAIT, writer.clone().acquire_owned())
                    .await
                    .map_err(|_| {
                        StoreError::Unavailable(DbErr::ConnectionAcquire(ConnAcquireErr::Timeout))
                    })?
                    .map_err(|_| {
                        StoreError::Unavailable(DbErr::ConnectionAcquire(
                            ConnAcquireErr::ConnectionClosed,
                        ))
                    })?,
            ),
            None => None,
        };
        let txn = self
            .conn
            .begin_with_options(TransactionOptions {
                isolation_level: None,
                access_mode: None,
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            })
            .await?;
        Ok(WriteTxn { txn, _turn: turn })
    }

    pub async fn close(self) -> Result<(), StoreError> {
        self.conn.close().await?;
        Ok(())
    }
}

/// Checks that a `sqlite:`/`postgres:` URL is one we can open, without opening it.
/// The file a `sqlite:` URL names; `None` for PostgreSQL or an unparsable URL.
pub fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    if !url.starts_with("sqlite:") {
        return None;
    }
    SqliteConnectOptions::from_str(url)
        .ok()
        .map(|o| o.get_filename().to_path_buf())
}

pub fn check_url(url: &str) -> Result<(), String> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(());
    }
    if url.starts_with("sqlite:") {
        return SqliteConnectOptions::from_str(url)
            .map(|_| ())
            .map_err(|_| "the SQLite URL does not parse: use sqlite://PATH".to_owned());
    }
    Err("database_url must start with sqlite:// or postgres://".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sqlite_lock_not_granted_in_time_is_unavailable() {
        for code in ["5", "261", "517", "773", "6"] {
            assert!(is_sqlite_busy(code), "{code}");
        }
        // Constraint violations, a full disk, a corrupt file: not something to retry.
        for code in ["19", "2067", "13", "11", "1"] {
            assert!(!is_sqlite_busy(code), "{code}");
        }
    }

    #[tokio::test]
    async fn sqlite_writers_of_one_process_get_the_lock_in_the_order_they_asked() {
        let dir = tempfile::tempdir().expect("tmp");
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let options = DbOptions {
            max_connections: 8,
            sqlite_synchronous: SqliteSync::Normal,
            sqlite_mmap_bytes: 0,
        };
        let db = Db::connect(&url, &options).await.expect("connect");
        db.conn()
            .execute_unprepared("CREATE TABLE turns (n INTEGER NOT NULL)")
            .await
            .expect("table");
        let first = db.begin_write().await.expect("first writer");
        let mut waiting = Vec::new();
        for n in 0..6 {
            let db = db.clone();
            waiting.push(tokio::spawn(async move {
                let txn = db.begin_write().await.expect("writer");
                txn.execute_unprepared(&format!("INSERT INTO turns (n) VALUES ({n})"))
                    .await
                    .expect("insert");
                txn.commit().await.expect("commit");
            }));
            // Each asks for its turn before the next one does.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        first.commit().await.expect("commit");
        for w in waiting {
            w.await.expect("writer task");
        }
        let rows = db
            .conn()
            .query_all_raw(Statement::from_string(
                DbBackend::Sqlite,
                "SELECT n FROM turns ORDER BY rowid",
            ))
            .await
            .expect("rows");
        let order: Vec<i64> = rows
            .iter()
            .map(|r| r.try_get::<i64>("", "n").expect("n"))
            .collect();
        assert_eq!(order, vec![0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_server_going_away_is_unavailable_and_a_bad_statement_is_not() {
        for code in ["08006", "08001", "57P01", "57P02", "57P03", "53300"] {
            assert!(is_unavailable_state(code), "{code}");
        }
        for code in ["23505", "42P01", "40001", "22P02"] {
            assert!(!is_unavailable_state(code), "{code}");
        }
    }
}
