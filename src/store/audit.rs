//! Rows of the audit log. The hashing and signing live in `audit`; this file only
//! moves rows, always inside the caller's transaction when writing.
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Statement,
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

/// Takes the next sequence number. The update locks the head row (PostgreSQL) or the
/// database (SQLite) until the transaction ends, so sequence numbers never repeat or skip.
pub async fn next_seq<C: ConnectionTrait>(c: &C) -> Result<i64, StoreError> {
    let size = update_head(
        c,
        "UPDATE audit_head SET size = size + 1 WHERE id = 1 RETURNING size",
    )
    .await?;
    Ok(size - 1)
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

pub async fn insert_entry<C: ConnectionTrait>(c: &C, e: &EntryRow) -> Result<(), StoreError> {
    let row = audit_entry::ActiveModel {
        seq: Set(e.seq),
        at_us: Set(e.at_us),
        actor_key_id: Set(e.actor_key_id.clone()),
        actor_role: Set(e.actor_role.clone()),
        action: Set(e.action.clone()),
        purpose: Set(e.purpose.clone()),
        subject_ref: Set(e.subject_ref.clone()),
        attributes: Set(e.attributes.clone()),
        outcome: Set(e.outcome.clone()),
        request_id: Set(e.request_id.clone()),
        leaf_hash: Set(e.leaf_hash.clone()),
    };
    Entry::insert(row).exec_without_returning(c).await?;
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

pub async fn entry<C: ConnectionTrait>(c: &C, seq: i64) -> Result<Option<EntryRow>, StoreError> {
    Ok(Entry::find_by_id(seq).one(c).await?.map(EntryRow::from))
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
