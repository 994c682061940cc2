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
use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::postgres::PgConnectOptions;
use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, Database, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    RuntimeErr, SqliteTransactionMode, TransactionOptions, TransactionTrait,
};

pub use sea_orm::DatabaseTransaction as Txn;

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
        E::Database(e) => e.code().is_some_and(|c| is_unavailable_state(&c)),
        _ => false,
    }
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
}

/// How long [`Db::connect`] lets a request wait for a connection.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The database handle shared by every service.
#[derive(Clone, Debug)]
pub struct Db {
    conn: DatabaseConnection,
    /// The SQLite file, for the verifier's direct reader; `None` on PostgreSQL.
    sqlite_path: Option<std::path::PathBuf>,
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
            opts.map_sqlx_sqlite_opts(move |o: SqliteConnectOptions| {
                o.create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .foreign_keys(true)
                    .synchronous(sync)
                    .busy_timeout(Duration::from_secs(10))
                    // 16 MiB of page cache a connection (the default is 2 MiB): identifiers
                    // and subjects are keyed by random values, so inserts touch pages all
                    // over their indexes.
                    .pragma("cache_size", "-16384")
                    // Reads the first 256 MiB of the file through a memory map (the
                    // operating system's page cache, shared by every connection) instead
                    // of a read call per page: +70% export rows/s at 30,000 people. The
                    // mapped pages count in the process's RSS but are the kernel's to
                    // reclaim, not the gateway's heap.
                    .pragma("mmap_size", "268435456")
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
        Ok(Self { conn, sqlite_path })
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

    /// Begins a transaction that will write. On SQLite it takes the write lock up front
    /// (`BEGIN IMMEDIATE`), so a read-then-write transaction cannot fail to upgrade.
    pub async fn begin_write(&self) -> Result<DatabaseTransaction, StoreError> {
        let txn = self
            .conn
            .begin_with_options(TransactionOptions {
                isolation_level: None,
                access_mode: None,
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            })
            .await?;
        Ok(txn)
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
    use super::is_unavailable_state;

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
