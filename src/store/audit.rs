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

/// Inserts `e` if and only if its sequence number is the head's current size, in one
/// statement; a trigger then advances the head. On PostgreSQL the head row is locked
/// (`FOR UPDATE`) until the transaction ends; on SQLite the `BEGIN IMMEDIATE` write lock
/// serialises appends. Returns false, changing nothing, when another append got there first.
pub async fn insert_entry_if_next<C: ConnectionTrait>(
    c: &C,
    e: &EntryRow,
) -> Result<bool, StoreError> {
    insert_entries_if_next_after(c, None, std::slice::from_ref(e)).await
}

/// As [`insert_entry_if_next`], sent in one round trip together with `before`: a statement
/// that writes exactly one row (the change the entry records). `before` is carried out
/// whether or not the entry goes in.
pub async fn insert_entry_if_next_after<C: ConnectionTrait>(
    c: &C,
    before: Option<Statement>,
    e: &EntryRow,
) -> Result<bool, StoreError> {
    insert_entries_if_next_after(c, before.map(|b| (b, 1)), std::slice::from_ref(e)).await
}

/// Inserts `es` (consecutive sequence numbers, the first of them the head's current
/// size) in one statement, sent in one round trip together with `before` (a statement
/// and the number of rows it writes: the changes the entries record). All of `es` go
/// in, or (another append got there first) none, and `false`; `before` is carried out
/// either way. SQLite runs the two statements in sequence; PostgreSQL runs `before` as a
/// data-modifying `WITH` of the entries' insert.
pub async fn insert_entries_if_next_after<C: ConnectionTrait>(
    c: &C,
    before: Option<(Statement, u64)>,
    es: &[EntryRow],
) -> Result<bool, StoreError> {
    const COLUMNS: &str = "INSERT INTO audit_entries (seq, at_us, actor_key_id, actor_role, \
        action, purpose, subject_ref, attributes, outcome, request_id, leaf_hash)";
    const NAMES: &str = "seq, at_us, actor_key_id, actor_role, action, purpose, subject_ref, \
        attributes, outcome, request_id, leaf_hash";
    let Some(first) = es.first() else {
        return Ok(true);
    };
    debug_assert!(es.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    let backend = c.get_database_backend();
    let pg = backend == DbBackend::Postgres;
    let before_rows = before.as_ref().map_or(0, |(_, n)| *n);
    let (before_sql, mut values) = match before {
        Some((b, _)) => (Some(b.sql), b.values.map(|v| v.0).unwrap_or_default()),
        None => (None, Vec::new()),
    };
    // Placeholders: `$n` numbered after `before`'s on PostgreSQL, `?` in order on SQLite.
    let mut next = values.len();
    let mut param = || {
        next += 1;
        if pg {
            format!("${next}")
        } else {
            "?".to_owned()
        }
    };
    let insert = if es.len() == 1 {
        let p: Vec<String> = (0..11).map(|_| param()).collect();
        let size = param();
        format!(
            "{COLUMNS} SELECT {} FROM audit_head WHERE id = 1 AND size = {size}{}",
            p.join(", "),
            if pg { " FOR UPDATE" } else { "" }
        )
    } else {
        let rows: Vec<String> = es
            .iter()
            .map(|_| {
                let p: Vec<String> = (0..11).map(|_| param()).collect();
                format!("({})", p.join(", "))
            })
            .collect();
        let size = param();
        if pg {
            format!(
                "{COLUMNS} SELECT v.* FROM (VALUES {}) AS v({NAMES}) CROSS JOIN audit_head h \
                 WHERE h.id = 1 AND h.size = {size} FOR UPDATE OF h",
                rows.join(", ")
            )
        } else {
            format!(
                "{COLUMNS} SELECT * FROM (VALUES {}) \
                 WHERE EXISTS (SELECT 1 FROM audit_head WHERE id = 1 AND size = {size})",
                rows.join(", ")
            )
        }
    };
    let sql = match (before_sql, pg) {
        (Some(b), true) => format!("WITH before AS ({b}) {insert}"),
        (Some(b), false) => format!("{b}; {insert}"),
        (None, _) => insert,
    };
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
    values.push(first.seq.into());
    let res = c
        .execute_raw(Statement::from_sql_and_values(backend, sql, values))
        .await?;
    // SQLite counts the rows of both statements; PostgreSQL those of the entries' insert.
    let counted_before = if pg { 0 } else { before_rows };
    match res.rows_affected().checked_sub(counted_before) {
        Some(0) => Ok(false),
        Some(n) if n == es.len() as u64 => Ok(true),
        _ => Err(StoreError::Corrupt {
            table: "audit_entries",
            reason: format!(
                "{} rows written, for {before_rows} changes and {} entries",
                res.rows_affected(),
                es.len()
            ),
        }),
    }
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
