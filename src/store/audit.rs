//! Rows of the audit log. The hashing and signing live in `audit`; this file only
//! moves rows, always inside the caller's transaction when writing.
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, RuntimeErr, Statement,
};

use super::StoreError;
use super::entity::audit_checkpoint::{self, Entity as Checkpoint};
use super::entity::audit_entry::{self, Entity as Entry};
use super::entity::audit_head::Entity as Head;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryRow {
    pub seq: i64,
    pub at_us: i64,
    pub actor_key_id: String,
    pub actor_role: String,
    pub action: String,
    pub purpose: Option<String>,
    pub subject_ref: Option<String>,
    /// JSON array text, exactly as stored.
    pub attributes: String,
    pub outcome: String,
    pub request_id: Option<String>,
    pub leaf_hash: Vec<u8>,
}

impl From<audit_entry::Model> for EntryRow {
    fn from(m: audit_entry::Model) -> Self {
        Self {
            seq: m.seq,
            at_us: m.at_us,
            actor_key_id: m.actor_key_id,
            actor_role: m.actor_role,
            action: m.action,
            purpose: m.purpose,
            subject_ref: m.subject_ref,
            attributes: m.attributes,
            outcome: m.outcome,
            request_id: m.request_id,
            leaf_hash: m.leaf_hash,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointRow {
    pub size: i64,
    pub root: Vec<u8>,
    pub frontier: Vec<u8>,
    pub key_version: i32,
    pub note: String,
    pub created_at: i64,
}

impl From<audit_checkpoint::Model> for CheckpointRow {
    fn from(m: audit_checkpoint::Model) -> Self {
        Self {
            size: m.size,
            root: m.root,
            frontier: m.frontier,
            key_version: m.key_version,
            note: m.note,
            created_at: m.created_at,
        }
    }
}

async fn update_head<C: ConnectionTrait>(c: &C, sql: &str) -> Result<i64, StoreError> {
    let row = c
        .query_one_raw(Statement::from_string(
            c.get_database_backend(),
            sql.to_owned(),
        ))
        .await?
        .ok_or(StoreError::Corrupt {
            table: "audit_head",
            reason: "the head row is missing".into(),
        })?;
    Ok(row.try_get_by_index::<i64>(0)?)
}

/// Locks the head without appending and returns the current size.
pub async fn lock_head<C: ConnectionTrait>(c: &C) -> Result<i64, StoreError> {
    update_head(
        c,
        "UPDATE audit_head SET size = size WHERE id = 1 RETURNING size",
    )
    .await
}

pub async fn head_size<C: ConnectionTrait>(c: &C) -> Result<i64, StoreError> {
    let row = Head::find_by_id(1).one(c).await?;
    let row = row.ok_or(StoreError::Corrupt {
        table: "audit_head",
        reason: "the head row is missing".into(),
    })?;
    Ok(row.size)
}

/// An entry waiting for its place in the log: everything but the sequence number (and
/// so the leaf hash), which the sequencer gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingRow {
    pub at_us: i64,
    pub actor_key_id: String,
    pub actor_role: String,
    pub action: String,
    pub purpose: Option<String>,
    pub subject_ref: Option<String>,
    /// JSON array text, exactly as it will be stored.
    pub attributes: String,
    pub outcome: String,
    pub request_id: Option<String>,
}

const PENDING_NAMES: &str = "at_us, actor_key_id, actor_role, action, purpose, subject_ref, \
    attributes, outcome, request_id";

/// Inserts `rows` as pending entries in one statement, sent in one round trip together
/// with `before` (a statement and the number of rows it writes: the change the entries
/// record). SQLite runs the two statements in sequence; PostgreSQL runs `before` as a
/// data-modifying `WITH` of the entries' insert. Nothing is locked beyond the new rows.
pub async fn insert_pending_after<C: ConnectionTrait>(
    c: &C,
    before: Option<(Statement, u64)>,
    rows: &[PendingRow],
) -> Result<(), StoreError> {
    if rows.is_empty() {
        if let Some((b, _)) = before {
            c.execute_raw(b).await?;
        }
        return Ok(());
    }
    let backend = c.get_database_backend();
    let pg = backend == DbBackend::Postgres;
    let before_rows = before.as_ref().map_or(0, |(_, n)| *n);
    let (before_sql, mut values) = match before {
        Some((b, _)) => (Some(b.sql), b.values.map(|v| v.0).unwrap_or_default()),
        None => (None, Vec::new()),
    };
    let placeholders = placeholder_rows(pg, values.len(), rows.len(), 9);
    let insert = format!("INSERT INTO audit_pending ({PENDING_NAMES}) VALUES {placeholders}");
    let sql = match (before_sql, pg) {
        (Some(b), true) => format!("WITH before AS ({b}) {insert}"),
        (Some(b), false) => format!("{b}; {insert}"),
        (None, _) => insert,
    };
    for r in rows {
        values.extend([
            r.at_us.into(),
            r.actor_key_id.clone().into(),
            r.actor_role.clone().into(),
            r.action.clone().into(),
            r.purpose.clone().into(),
            r.subject_ref.clone().into(),
            r.attributes.clone().into(),
            r.outcome.clone().into(),
            r.request_id.clone().into(),
        ]);
    }
    let res = c
        .execute_raw(Statement::from_sql_and_values(backend, sql, values))
        .await?;
    // SQLite counts the rows of both statements; PostgreSQL those of the entries' insert.
    let expected = rows.len() as u64 + if pg { 0 } else { before_rows };
    if res.rows_affected() != expected {
        return Err(StoreError::Corrupt {
            table: "audit_pending",
            reason: format!(
                "{} rows written, for {before_rows} changes and {} entries",
                res.rows_affected(),
                rows.len()
            ),
        });
    }
    Ok(())
}

/// `n` rows of `width` placeholders each: `$k` numbered after `first` on PostgreSQL,
/// `?` on SQLite.
fn placeholder_rows(pg: bool, first: usize, n: usize, width: usize) -> String {
    let mut next = first;
    let mut out = String::with_capacity(n * width * 5);
    for i in 0..n {
        if i > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for j in 0..width {
            if j > 0 {
                out.push_str(", ");
            }
            next += 1;
            if pg {
                out.push('$');
                out.push_str(&next.to_string());
            } else {
                out.push('?');
            }
        }
        out.push(')');
    }
    out
}

/// The oldest pending entries, at most `limit`, in order of arrival, with their ids.
pub async fn pending<C: ConnectionTrait>(
    c: &C,
    limit: u64,
) -> Result<Vec<(i64, PendingRow)>, StoreError> {
    let sql = format!("SELECT id, {PENDING_NAMES} FROM audit_pending ORDER BY id LIMIT {limit}");
    let rows = c
        .query_all_raw(Statement::from_string(c.get_database_backend(), sql))
        .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get_by_index(0)?,
                PendingRow {
                    at_us: r.try_get_by_index(1)?,
                    actor_key_id: r.try_get_by_index(2)?,
                    actor_role: r.try_get_by_index(3)?,
                    action: r.try_get_by_index(4)?,
                    purpose: r.try_get_by_index(5)?,
                    subject_ref: r.try_get_by_index(6)?,
                    attributes: r.try_get_by_index(7)?,
                    outcome: r.try_get_by_index(8)?,
                    request_id: r.try_get_by_index(9)?,
                },
            ))
        })
        .collect()
}

/// Whether any entry is waiting for its place.
pub async fn has_pending<C: ConnectionTrait>(c: &C) -> Result<bool, StoreError> {
    let sql = "SELECT 1 FROM audit_pending LIMIT 1".to_owned();
    Ok(
        c.query_one_raw(Statement::from_string(c.get_database_backend(), sql))
            .await?
            .is_some(),
    )
}

/// Removes the pending entries `ids` (those just placed), exactly these: a lower id that
/// was not yet committed when they were read stays for the next round.
pub async fn delete_pending<C: ConnectionTrait>(c: &C, ids: &[i64]) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    let backend = c.get_database_backend();
    let list = placeholder_rows(backend == DbBackend::Postgres, 0, 1, ids.len());
    let sql = format!("DELETE FROM audit_pending WHERE id IN {list}");
    let values: Vec<sea_orm::Value> = ids.iter().map(|&id| id.into()).collect();
    let res = c
        .execute_raw(Statement::from_sql_and_values(backend, sql, values))
        .await?;
    if res.rows_affected() != ids.len() as u64 {
        return Err(StoreError::Corrupt {
            table: "audit_pending",
            reason: format!(
                "{} of {} pending entries removed: another sequencer placed them",
                res.rows_affected(),
                ids.len()
            ),
        });
    }
    Ok(())
}

/// Inserts `es` (consecutive sequence numbers, the first the head's current size, with
/// the head locked by the caller) in one statement; the database advances the head.
pub async fn insert_entries<C: ConnectionTrait>(c: &C, es: &[EntryRow]) -> Result<(), StoreError> {
    if es.is_empty() {
        return Ok(());
    }
    debug_assert!(es.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    let backend = c.get_database_backend();
    let placeholders = placeholder_rows(backend == DbBackend::Postgres, 0, es.len(), 11);
    let sql = format!(
        "INSERT INTO audit_entries (seq, at_us, actor_key_id, actor_role, action, purpose, \
         subject_ref, attributes, outcome, request_id, leaf_hash) VALUES {placeholders}"
    );
    let mut values: Vec<sea_orm::Value> = Vec::with_capacity(es.len() * 11);
    for e in es {
        values.extend([
            e.seq.into(),
            e.at_us.into(),
            e.actor_key_id.clone().into(),
            e.actor_role.clone().into(),
            e.action.clone().into(),
            e.purpose.clone().into(),
            e.subject_ref.clone().into(),
            e.attributes.clone().into(),
            e.outcome.clone().into(),
            e.request_id.clone().into(),
            e.leaf_hash.clone().into(),
        ]);
    }
    c.execute_raw(Statement::from_sql_and_values(backend, sql, values))
        .await?;
    Ok(())
}

/// Entries with `seq >= from`, in order, at most `limit`.
pub async fn entries_from<C: ConnectionTrait>(
    c: &C,
    from: i64,
    limit: u64,
) -> Result<Vec<EntryRow>, StoreError> {
    let rows = Entry::find()
        .filter(audit_entry::Column::Seq.gte(from))
        .order_by_asc(audit_entry::Column::Seq)
        .limit(limit)
        .all(c)
        .await?;
    Ok(rows.into_iter().map(EntryRow::from).collect())
}

/// The stored leaf hashes of entries `[from, to)`, in order.
pub async fn leaf_hashes<C: ConnectionTrait>(
    c: &C,
    from: i64,
    to: i64,
) -> Result<Vec<Vec<u8>>, StoreError> {
    let hashes: Vec<Vec<u8>> = Entry::find()
        .select_only()
        .column(audit_entry::Column::LeafHash)
        .filter(audit_entry::Column::Seq.gte(from))
        .filter(audit_entry::Column::Seq.lt(to))
        .order_by_asc(audit_entry::Column::Seq)
        .into_tuple()
        .all(c)
        .await?;
    Ok(hashes)
}

pub async fn insert_checkpoint<C: ConnectionTrait>(
    c: &C,
    cp: &CheckpointRow,
) -> Result<(), StoreError> {
    let row = audit_checkpoint::ActiveModel {
        size: Set(cp.size),
        root: Set(cp.root.clone()),
        frontier: Set(cp.frontier.clone()),
        key_version: Set(cp.key_version),
        note: Set(cp.note.clone()),
        created_at: Set(cp.created_at),
    };
    Checkpoint::insert(row).exec_without_returning(c).await?;
    Ok(())
}

pub async fn latest_checkpoint<C: ConnectionTrait>(
    c: &C,
) -> Result<Option<CheckpointRow>, StoreError> {
    Ok(Checkpoint::find()
        .order_by_desc(audit_checkpoint::Column::Size)
        .one(c)
        .await?
        .map(CheckpointRow::from))
}

pub async fn checkpoints<C: ConnectionTrait>(c: &C) -> Result<Vec<CheckpointRow>, StoreError> {
    Ok(Checkpoint::find()
        .order_by_asc(audit_checkpoint::Column::Size)
        .all(c)
        .await?
        .into_iter()
        .map(CheckpointRow::from)
        .collect())
}

type EntryTuple = (
    i64,
    i64,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    String,
    String,
    Option<String>,
    Vec<u8>,
);

const SCAN_SQL: &str = "SELECT seq, at_us, actor_key_id, actor_role, action, purpose, subject_ref, \
    attributes, outcome, request_id, leaf_hash FROM audit_entries ORDER BY seq";

fn from_tuple(t: EntryTuple) -> EntryRow {
    EntryRow {
        seq: t.0,
        at_us: t.1,
        actor_key_id: t.2,
        actor_role: t.3,
        action: t.4,
        purpose: t.5,
        subject_ref: t.6,
        attributes: t.7,
        outcome: t.8,
        request_id: t.9,
        leaf_hash: t.10,
    }
}

/// Why a scan stopped: the database, or the visitor.
#[derive(Debug)]
pub enum ScanError<E> {
    Store(StoreError),
    Visitor(E),
}

macro_rules! scan_pool {
    ($pool:expr, $visit:expr) => {{
        use futures_util::TryStreamExt;
        let mut rows = sea_orm::sqlx::query_as::<_, EntryTuple>(SCAN_SQL).fetch($pool);
        while let Some(t) = rows.try_next().await.map_err(|e| {
            ScanError::Store(StoreError::from(DbErr::Query(RuntimeErr::SqlxError(
                e.into(),
            ))))
        })? {
            $visit(from_tuple(t)).map_err(ScanError::Visitor)?;
        }
        Ok(())
    }};
}

/// Streams every entry in sequence order to `visit`, without holding the log in memory.
/// This is the verifier's hot path, so it reads through the drivers directly: on SQLite
/// a read-only rusqlite connection (sqlx hands each row across threads, which caps a scan
/// near 110,000 rows/s), on PostgreSQL one streamed query. On SQLite the scan runs on the
/// calling thread: verification is a batch job, not a request handler.
pub async fn scan_entries<E>(
    db: &super::Db,
    mut visit: impl FnMut(EntryRow) -> Result<(), E>,
) -> Result<(), ScanError<E>> {
    match (db.backend(), db.sqlite_path()) {
        (DbBackend::Postgres, _) => scan_pool!(db.conn().get_postgres_connection_pool(), visit),
        (_, Some(path)) => scan_sqlite_file(path, visit),
        (_, None) => scan_pool!(db.conn().get_sqlite_connection_pool(), visit),
    }
}

fn scan_sqlite_file<E>(
    path: &std::path::Path,
    mut visit: impl FnMut(EntryRow) -> Result<(), E>,
) -> Result<(), ScanError<E>> {
    use rusqlite::{Connection, OpenFlags};
    let fail = |e: rusqlite::Error| {
        ScanError::Store(StoreError::Corrupt {
            table: "audit_entries",
            reason: format!("direct read failed: {e}"),
        })
    };
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(fail)?;
    let mut stmt = conn.prepare(SCAN_SQL).map_err(fail)?;
    let mut rows = stmt.query([]).map_err(fail)?;
    while let Some(r) = rows.next().map_err(fail)? {
        let row = EntryRow {
            seq: r.get(0).map_err(fail)?,
            at_us: r.get(1).map_err(fail)?,
            actor_key_id: r.get(2).map_err(fail)?,
            actor_role: r.get(3).map_err(fail)?,
            action: r.get(4).map_err(fail)?,
            purpose: r.get(5).map_err(fail)?,
            subject_ref: r.get(6).map_err(fail)?,
            attributes: r.get(7).map_err(fail)?,
            outcome: r.get(8).map_err(fail)?,
            request_id: r.get(9).map_err(fail)?,
            leaf_hash: r.get(10).map_err(fail)?,
        };
        visit(row).map_err(ScanError::Visitor)?;
    }
    Ok(())
}
