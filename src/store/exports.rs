//! Audience exports and the pseudonyms each held. An export is `running` while its rows
//! are produced, then `complete` or `interrupted`; only a running export is updated.
use std::collections::HashSet;

use sea_orm::sea_query::{Alias, Expr, ExprTrait, OnConflict, Query};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

use super::StoreError;
use super::entity::export::{self, Entity as Export};
use super::entity::export_member::{self, Entity as Member};

pub const RUNNING: &str = "running";
pub const COMPLETE: &str = "complete";
pub const INTERRUPTED: &str = "interrupted";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportRow {
    pub id: String,
    pub segment_id: String,
    pub recipient_id: String,
    pub purpose: String,
    pub format: String,
    pub since_id: Option<String>,
    pub status: String,
    /// Rows sent (for a delta: joined and left rows).
    pub rows: i64,
    /// The segment's members at export time (for a full export, the same as `rows`).
    pub members: i64,
    pub commitment: Option<String>,
    /// Whether the member pseudonyms are still held (a `since` base needs them).
    pub members_kept: bool,
    pub created_by: String,
    pub started_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
}

impl From<export::Model> for ExportRow {
    fn from(m: export::Model) -> Self {
        Self {
            id: m.id,
            segment_id: m.segment_id,
            recipient_id: m.recipient_id,
            purpose: m.purpose,
            format: m.format,
            since_id: m.since_id,
            status: m.status,
            rows: m.rows,
            members: m.members,
            commitment: m.commitment,
            members_kept: m.members_kept,
            created_by: m.created_by,
            started_at: m.started_at,
            updated_at: m.updated_at,
            finished_at: m.finished_at,
        }
    }
}

pub async fn insert<C: ConnectionTrait>(c: &C, r: &ExportRow) -> Result<(), StoreError> {
    Export::insert(export::ActiveModel {
        id: Set(r.id.clone()),
        segment_id: Set(r.segment_id.clone()),
        recipient_id: Set(r.recipient_id.clone()),
        purpose: Set(r.purpose.clone()),
        format: Set(r.format.clone()),
        since_id: Set(r.since_id.clone()),
        status: Set(r.status.clone()),
        rows: Set(r.rows),
        members: Set(r.members),
        commitment: Set(r.commitment.clone()),
        members_kept: Set(r.members_kept),
        created_by: Set(r.created_by.clone()),
        started_at: Set(r.started_at),
        updated_at: Set(r.updated_at),
        finished_at: Set(r.finished_at),
    })
    .exec_without_returning(c)
    .await?;
    Ok(())
}

pub async fn get<C: ConnectionTrait>(c: &C, id: &str) -> Result<Option<ExportRow>, StoreError> {
    Ok(Export::find_by_id(id.to_owned())
        .one(c)
        .await?
        .map(ExportRow::from))
}

/// A segment's exports, newest first (at most `limit`).
pub async fn of_segment<C: ConnectionTrait>(
    c: &C,
    segment_id: &str,
    limit: u64,
) -> Result<Vec<ExportRow>, StoreError> {
    Ok(Export::find()
        .filter(export::Column::SegmentId.eq(segment_id))
        .order_by_desc(export::Column::StartedAt)
        .order_by_desc(export::Column::Id)
        .limit(limit)
        .all(c)
        .await?
        .into_iter()
        .map(ExportRow::from)
        .collect())
}

/// Records that `pseudonyms` were members of the export.
pub async fn add_members<C: ConnectionTrait>(
    c: &C,
    export_id: &str,
    pseudonyms: &[String],
) -> Result<(), StoreError> {
    for chunk in pseudonyms.chunks(500) {
        if chunk.is_empty() {
            continue;
        }
        Member::insert_many(chunk.iter().map(|p| export_member::ActiveModel {
            export_id: Set(export_id.to_owned()),
            pseudonym: Set(p.clone()),
        }))
        .on_conflict(
            OnConflict::columns([
                export_member::Column::ExportId,
                export_member::Column::Pseudonym,
            ])
            .do_nothing()
            .to_owned(),
        )
        .exec_without_returning(c)
        .await?;
    }
    Ok(())
}

/// Which of `pseudonyms` the export held.
pub async fn held<C: ConnectionTrait>(
    c: &C,
    export_id: &str,
    pseudonyms: &[String],
) -> Result<HashSet<String>, StoreError> {
    let mut out = HashSet::new();
    for chunk in pseudonyms.chunks(500) {
        let found: Vec<String> = Member::find()
            .select_only()
            .column(export_member::Column::Pseudonym)
            .filter(export_member::Column::ExportId.eq(export_id))
            .filter(export_member::Column::Pseudonym.is_in(chunk.iter().cloned()))
            .into_tuple()
            .all(c)
            .await?;
        out.extend(found);
    }
    Ok(out)
}

/// Up to `limit` pseudonyms (after `after`, in order) that `since` held and `current`
/// does not: the members that left.
pub async fn left<C: ConnectionTrait>(
    c: &C,
    since: &str,
    current: &str,
    after: Option<&str>,
    limit: u64,
) -> Result<Vec<String>, StoreError> {
    let e = Alias::new("e");
    let n = Alias::new("n");
    let mut still = Query::select();
    still
        .expr(Expr::val(1))
        .from_as(Alias::new("export_members"), n.clone())
        .and_where(Expr::col((n.clone(), Alias::new("export_id"))).eq(current.to_owned()))
        .and_where(
            Expr::col((n, Alias::new("pseudonym"))).equals((e.clone(), Alias::new("pseudonym"))),
        );
    let mut q = Query::select();
    q.column((e.clone(), Alias::new("pseudonym")))
        .from_as(Alias::new("export_members"), e.clone())
        .and_where(Expr::col((e.clone(), Alias::new("export_id"))).eq(since.to_owned()))
        .and_where(Expr::exists(still).not());
    if let Some(a) = after {
        q.and_where(Expr::col((e.clone(), Alias::new("pseudonym"))).gt(a.to_owned()));
    }
    q.order_by((e, Alias::new("pseudonym")), sea_orm::Order::Asc)
        .limit(limit);
    let rows = c.query_all(&q).await?;
    rows.into_iter()
        .map(|r| r.try_get_by_index::<String>(0).map_err(StoreError::from))
        .collect()
}

/// Progress of a running export; `false` when it is no longer running (another process
/// marked it interrupted), and the producer must stop.
pub async fn progress<C: ConnectionTrait>(
    c: &C,
    id: &str,
    rows: i64,
    members: i64,
    now: i64,
) -> Result<bool, StoreError> {
    let r = Export::update_many()
        .col_expr(export::Column::Rows, Expr::value(rows))
        .col_expr(export::Column::Members, Expr::value(members))
        .col_expr(export::Column::UpdatedAt, Expr::value(now))
        .filter(export::Column::Id.eq(id))
        .filter(export::Column::Status.eq(RUNNING))
        .exec(c)
        .await?;
    Ok(r.rows_affected == 1)
}

/// Ends a running export with `status`; `false` when it was not running.
pub async fn finish<C: ConnectionTrait>(
    c: &C,
    id: &str,
    status: &str,
    commitment: Option<&str>,
    now: i64,
) -> Result<bool, StoreError> {
    let r = Export::update_many()
        .col_expr(export::Column::Status, Expr::value(status.to_owned()))
        .col_expr(
            export::Column::Commitment,
            Expr::value(commitment.map(str::to_owned)),
        )
        .col_expr(export::Column::UpdatedAt, Expr::value(now))
        .col_expr(export::Column::FinishedAt, Expr::value(now))
        .filter(export::Column::Id.eq(id))
        .filter(export::Column::Status.eq(RUNNING))
        .exec(c)
        .await?;
    Ok(r.rows_affected == 1)
}

/// Running exports not updated since `before`: their producer is gone.
pub async fn stale<C: ConnectionTrait>(c: &C, before: i64) -> Result<Vec<ExportRow>, StoreError> {
    Ok(Export::find()
        .filter(export::Column::Status.eq(RUNNING))
        .filter(export::Column::UpdatedAt.lt(before))
        .all(c)
        .await?
        .into_iter()
        .map(ExportRow::from)
        .collect())
}

/// Keeps the member lists of the newest `keep` complete exports of the segment for the
/// recipient and drops the others' (an interrupted export's list is never a base).
pub async fn prune<C: ConnectionTrait>(
    c: &C,
    segment_id: &str,
    recipient_id: &str,
    keep: u64,
) -> Result<(), StoreError> {
    let kept: Vec<String> = Export::find()
        .select_only()
        .column(export::Column::Id)
        .filter(export::Column::SegmentId.eq(segment_id))
        .filter(export::Column::RecipientId.eq(recipient_id))
        .filter(export::Column::Status.eq(COMPLETE))
        .order_by_desc(export::Column::StartedAt)
        .order_by_desc(export::Column::Id)
        .limit(keep)
        .into_tuple()
        .all(c)
        .await?;
    let dropped: Vec<String> = Export::find()
        .select_only()
        .column(export::Column::Id)
        .filter(export::Column::SegmentId.eq(segment_id))
        .filter(export::Column::RecipientId.eq(recipient_id))
        .filter(export::Column::Status.ne(RUNNING))
        .filter(export::Column::MembersKept.eq(true))
        .filter(export::Column::Id.is_not_in(kept))
        .into_tuple()
        .all(c)
        .await?;
    if dropped.is_empty() {
        return Ok(());
    }
    Member::delete_many()
        .filter(export_member::Column::ExportId.is_in(dropped.clone()))
        .exec(c)
        .await?;
    Export::update_many()
        .col_expr(export::Column::MembersKept, Expr::value(false))
        .filter(export::Column::Id.is_in(dropped))
        .exec(c)
        .await?;
    Ok(())
}
