//! The outbox of recipient notices (Art. 19): written in the transaction of the change
//! they announce, delivered and retried by a worker.
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect,
};

use super::StoreError;
use super::entity::notice::{self, Entity as Notice};
use super::entity::pseudonym::{self, Entity as Pseudonym};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoticeRow {
    pub id: String,
    pub request_id: String,
    pub recipient_id: String,
    pub action: String,
    /// The JSON body sent; names the person only by the recipient's pseudonyms.
    pub body: String,
    /// `pending`, `delivered` or `no_webhook` (the recipient has none: the DPO tells it).
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub delivered_at: Option<i64>,
    pub created_at: i64,
}

impl From<notice::Model> for NoticeRow {
    fn from(m: notice::Model) -> Self {
        Self {
            id: m.id,
            request_id: m.request_id,
            recipient_id: m.recipient_id,
            action: m.action,
            body: m.body,
            status: m.status,
            attempts: m.attempts,
            next_attempt_at: m.next_attempt_at,
            last_error: m.last_error,
            delivered_at: m.delivered_at,
            created_at: m.created_at,
        }
    }
}

pub async fn insert<C: ConnectionTrait>(c: &C, n: &NoticeRow) -> Result<(), StoreError> {
    Notice::insert(notice::ActiveModel {
        id: Set(n.id.clone()),
        request_id: Set(n.request_id.clone()),
        recipient_id: Set(n.recipient_id.clone()),
        action: Set(n.action.clone()),
        body: Set(n.body.clone()),
        status: Set(n.status.clone()),
        attempts: Set(n.attempts),
        next_attempt_at: Set(n.next_attempt_at),
        last_error: Set(n.last_error.clone()),
        delivered_at: Set(n.delivered_at),
        created_at: Set(n.created_at),
    })
    .exec_without_returning(c)
    .await?;
    Ok(())
}

/// Pending notices whose next attempt is due, oldest first.
pub async fn due<C: ConnectionTrait>(
    c: &C,
    now: i64,
    limit: u64,
) -> Result<Vec<NoticeRow>, StoreError> {
    Ok(Notice::find()
        .filter(notice::Column::Status.eq("pending"))
        .filter(notice::Column::NextAttemptAt.lte(now))
        .order_by_asc(notice::Column::NextAttemptAt)
        .limit(limit)
        .all(c)
        .await?
        .into_iter()
        .map(NoticeRow::from)
        .collect())
}

/// Takes a due notice for one delivery attempt: moves its next attempt to `lease_until`
/// unless another worker took it first. Returns whether this caller has it.
pub async fn claim<C: ConnectionTrait>(
    c: &C,
    n: &NoticeRow,
    lease_until: i64,
) -> Result<bool, StoreError> {
    let r = Notice::update_many()
        .col_expr(notice::Column::NextAttemptAt, Expr::value(lease_until))
        .filter(notice::Column::Id.eq(n.id.clone()))
        .filter(notice::Column::Status.eq("pending"))
        .filter(notice::Column::NextAttemptAt.eq(n.next_attempt_at))
        .exec(c)
        .await?;
    Ok(r.rows_affected == 1)
}

pub async fn delivered<C: ConnectionTrait>(
    c: &C,
    id: &str,
    attempts: i32,
    at: i64,
) -> Result<(), StoreError> {
    Notice::update_many()
        .col_expr(notice::Column::Status, Expr::value("delivered"))
        .col_expr(notice::Column::Attempts, Expr::value(attempts))
        .col_expr(notice::Column::DeliveredAt, Expr::value(at))
        .col_expr(
            notice::Column::LastError,
            Expr::value(Option::<String>::None),
        )
        .filter(notice::Column::Id.eq(id))
        .exec(c)
        .await?;
    Ok(())
}

pub async fn failed<C: ConnectionTrait>(
    c: &C,
    id: &str,
    attempts: i32,
    next_attempt_at: i64,
    error: &str,
) -> Result<(), StoreError> {
    Notice::update_many()
        .col_expr(notice::Column::Attempts, Expr::value(attempts))
        .col_expr(notice::Column::NextAttemptAt, Expr::value(next_attempt_at))
        .col_expr(notice::Column::LastError, Expr::value(error.to_owned()))
        .filter(notice::Column::Id.eq(id))
        .exec(c)
        .await?;
    Ok(())
}

pub async fn of_request<C: ConnectionTrait>(
    c: &C,
    request_id: &str,
) -> Result<Vec<NoticeRow>, StoreError> {
    Ok(Notice::find()
        .filter(notice::Column::RequestId.eq(request_id))
        .order_by_asc(notice::Column::CreatedAt)
        .order_by_asc(notice::Column::Id)
        .all(c)
        .await?
        .into_iter()
        .map(NoticeRow::from)
        .collect())
}

pub async fn pending_for_request<C: ConnectionTrait>(
    c: &C,
    request_id: &str,
) -> Result<u64, StoreError> {
    Ok(Notice::find()
        .filter(notice::Column::RequestId.eq(request_id))
        .filter(notice::Column::Status.eq("pending"))
        .count(c)
        .await?)
}

/// The pseudonyms each recipient was given for a subject: (recipient, value, version).
pub async fn pseudonyms_of<C: ConnectionTrait>(
    c: &C,
    subject_id: &str,
) -> Result<Vec<(String, String, i32)>, StoreError> {
    Ok(Pseudonym::find()
        .select_only()
        .column(pseudonym::Column::RecipientId)
        .column(pseudonym::Column::Value)
        .column(pseudonym::Column::Version)
        .filter(pseudonym::Column::SubjectId.eq(subject_id))
        .order_by_asc(pseudonym::Column::RecipientId)
        .order_by_asc(pseudonym::Column::Version)
        .into_tuple()
        .all(c)
        .await?)
}
