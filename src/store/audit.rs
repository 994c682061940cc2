//! Rows of the audit log. The hashing and signing live in `audit`; this file only
//! moves rows, always inside the caller's transaction when writing.
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect,
};

use super::StoreError;
use super::entity::audit_checkpoint::{self, Entity as Checkpoint};
use super::entity::audit_entry::{self, Entity as Entry};
use super::entity::audit_head::{self, Entity as Head};

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
pub struct HeadRow {
    pub size: i64,
    pub frontier: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointRow {
    pub size: i64,
    pub root: Vec<u8>,
    pub key_version: i32,
    pub note: String,
    pub created_at: i64,
}

impl From<audit_checkpoint::Model> for CheckpointRow {
    fn from(m: audit_checkpoint::Model) -> Self {
        Self {
            size: m.size,
            root: m.root,
            key_version: m.key_version,
            note: m.note,
            created_at: m.created_at,
        }
    }
}

/// Reads the head row, locking it until the transaction ends (`FOR UPDATE` on
/// PostgreSQL; on SQLite the `BEGIN IMMEDIATE` write lock already serialises appends).
pub async fn lock_head<C: ConnectionTrait>(c: &C) -> Result<HeadRow, StoreError> {
    let row = Head::find_by_id(1).lock_exclusive().one(c).await?;
    let row = row.ok_or(StoreError::Corrupt {
        table: "audit_head",
        reason: "the head row is missing".into(),
    })?;
    Ok(HeadRow {
        size: row.size,
        frontier: row.frontier,
    })
}

pub async fn head<C: ConnectionTrait>(c: &C) -> Result<HeadRow, StoreError> {
    let row = Head::find_by_id(1).one(c).await?;
    let row = row.ok_or(StoreError::Corrupt {
        table: "audit_head",
        reason: "the head row is missing".into(),
    })?;
    Ok(HeadRow {
        size: row.size,
        frontier: row.frontier,
    })
}

pub async fn set_head<C: ConnectionTrait>(c: &C, head: &HeadRow) -> Result<(), StoreError> {
    audit_head::ActiveModel {
        id: Set(1),
        size: Set(head.size),
        frontier: Set(head.frontier.clone()),
    }
    .update(c)
    .await?;
    Ok(())
}

pub async fn insert_entry<C: ConnectionTrait>(c: &C, e: &EntryRow) -> Result<(), StoreError> {
    audit_entry::ActiveModel {
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
    }
    .insert(c)
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

pub async fn entry<C: ConnectionTrait>(c: &C, seq: i64) -> Result<Option<EntryRow>, StoreError> {
    Ok(Entry::find_by_id(seq).one(c).await?.map(EntryRow::from))
}

/// The stored leaf hashes of entries `[0, size)`, in order.
pub async fn leaf_hashes<C: ConnectionTrait>(c: &C, size: i64) -> Result<Vec<Vec<u8>>, StoreError> {
    let hashes: Vec<Vec<u8>> = Entry::find()
        .select_only()
        .column(audit_entry::Column::LeafHash)
        .filter(audit_entry::Column::Seq.lt(size))
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
    audit_checkpoint::ActiveModel {
        size: Set(cp.size),
        root: Set(cp.root.clone()),
        key_version: Set(cp.key_version),
        note: Set(cp.note.clone()),
        created_at: Set(cp.created_at),
    }
    .insert(c)
    .await?;
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
