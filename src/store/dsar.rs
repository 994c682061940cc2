//! Data-subject requests and their transitions.
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder,
};

use super::StoreError;
use super::entity::dsar_request::{self, Entity as Request};
use super::entity::dsar_transition::{self, Entity as Transition};

/// Statuses a request can no longer leave.
pub const FINAL: &[&str] = &[
    "completed",
    "completed_with_pending_notices",
    "rejected",
    "withdrawn",
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRow {
    pub id: String,
    pub kind: String,
    pub status: String,
    pub subject_id: Option<String>,
    pub identifier_kinds: Vec<String>,
    pub channel: String,
    pub received_at: i64,
    pub due_at: i64,
    pub extended_months: i32,
    pub extension_reason: Option<String>,
    pub verification_method: Option<String>,
    pub verification_note: Option<String>,
    pub duplicate_of: Option<String>,
    pub reject_reason: Option<String>,
    pub created_by: String,
    pub updated_at: i64,
    pub completed_at: Option<i64>,
    pub package_expires_at: Option<i64>,
    pub code_hash: Option<String>,
    pub code_expires_at: Option<i64>,
    pub code_attempts: i32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransitionRow {
    pub request_id: String,
    pub step: i32,
    pub from_status: Option<String>,
    pub to_status: String,
    pub actor: String,
    pub reason: String,
    pub at: i64,
}

fn corrupt(e: serde_json::Error) -> StoreError {
    StoreError::Corrupt {
        table: "dsar_requests",
        reason: e.to_string(),
    }
}

impl TryFrom<dsar_request::Model> for RequestRow {
    type Error = StoreError;

    fn try_from(m: dsar_request::Model) -> Result<Self, StoreError> {
        Ok(Self {
            identifier_kinds: serde_json::from_str(&m.identifier_kinds).map_err(corrupt)?,
            id: m.id,
            kind: m.kind,
            status: m.status,
            subject_id: m.subject_id,
            channel: m.channel,
            received_at: m.received_at,
            due_at: m.due_at,
            extended_months: m.extended_months,
            extension_reason: m.extension_reason,
            verification_method: m.verification_method,
            verification_note: m.verification_note,
            duplicate_of: m.duplicate_of,
            reject_reason: m.reject_reason,
            created_by: m.created_by,
            updated_at: m.updated_at,
            completed_at: m.completed_at,
            package_expires_at: m.package_expires_at,
            code_hash: m.code_hash,
            code_expires_at: m.code_expires_at,
            code_attempts: m.code_attempts,
        })
    }
}

fn model(r: &RequestRow) -> Result<dsar_request::ActiveModel, StoreError> {
    Ok(dsar_request::ActiveModel {
        id: Set(r.id.clone()),
        kind: Set(r.kind.clone()),
        status: Set(r.status.clone()),
        subject_id: Set(r.subject_id.clone()),
        identifier_kinds: Set(serde_json::to_string(&r.identifier_kinds).map_err(corrupt)?),
        channel: Set(r.channel.clone()),
        received_at: Set(r.received_at),
        due_at: Set(r.due_at),
        extended_months: Set(r.extended_months),
        extension_reason: Set(r.extension_reason.clone()),
        verification_method: Set(r.verification_method.clone()),
        verification_note: Set(r.verification_note.clone()),
        duplicate_of: Set(r.duplicate_of.clone()),
        reject_reason: Set(r.reject_reason.clone()),
        created_by: Set(r.created_by.clone()),
        updated_at: Set(r.updated_at),
        completed_at: Set(r.completed_at),
        package_expires_at: Set(r.package_expires_at),
        code_hash: Set(r.code_hash.clone()),
        code_expires_at: Set(r.code_expires_at),
        code_attempts: Set(r.code_attempts),
    })
}

pub async fn insert<C: ConnectionTrait>(c: &C, r: &RequestRow) -> Result<(), StoreError> {
    Request::insert(model(r)?).exec_without_returning(c).await?;
    Ok(())
}

pub async fn update<C: ConnectionTrait>(c: &C, r: &RequestRow) -> Result<(), StoreError> {
    model(r)?.update(c).await?;
    Ok(())
}

pub async fn get<C: ConnectionTrait>(c: &C, id: &str) -> Result<Option<RequestRow>, StoreError> {
    Request::find_by_id(id.to_owned())
        .one(c)
        .await?
        .map(RequestRow::try_from)
        .transpose()
}

/// The request, locked for the rest of the transaction (`SELECT ... FOR UPDATE` on
/// PostgreSQL; SQLite's write transactions are already exclusive), so two executions of the
/// same request run one after the other.
pub async fn lock<C: ConnectionTrait>(c: &C, id: &str) -> Result<Option<RequestRow>, StoreError> {
    use sea_orm::QuerySelect;
    let mut q = Request::find_by_id(id.to_owned());
    if c.get_database_backend() == sea_orm::DbBackend::Postgres {
        q = q.lock_exclusive();
    }
    q.one(c).await?.map(RequestRow::try_from).transpose()
}

/// The oldest open request of `kind` for `subject`, other than `except`.
pub async fn open_for<C: ConnectionTrait>(
    c: &C,
    subject: &str,
    kind: &str,
) -> Result<Option<RequestRow>, StoreError> {
    Request::find()
        .filter(dsar_request::Column::SubjectId.eq(subject))
        .filter(dsar_request::Column::Kind.eq(kind))
        .filter(dsar_request::Column::Status.is_not_in(FINAL.iter().copied()))
        .filter(dsar_request::Column::DuplicateOf.is_null())
        .order_by_asc(dsar_request::Column::ReceivedAt)
        .one(c)
        .await?
        .map(RequestRow::try_from)
        .transpose()
}

/// Requests by due date (then id), optionally of one status and due before a time.
pub async fn list<C: ConnectionTrait>(
    c: &C,
    status: Option<&str>,
    due_before: Option<i64>,
    limit: u64,
) -> Result<Vec<RequestRow>, StoreError> {
    use sea_orm::QuerySelect;
    let mut q = Request::find();
    if let Some(s) = status {
        q = q.filter(dsar_request::Column::Status.eq(s));
    }
    if let Some(t) = due_before {
        q = q.filter(dsar_request::Column::DueAt.lt(t));
    }
    q.order_by_asc(dsar_request::Column::DueAt)
        .order_by_asc(dsar_request::Column::Id)
        .limit(limit)
        .all(c)
        .await?
        .into_iter()
        .map(RequestRow::try_from)
        .collect()
}

/// Open requests past their due time.
pub async fn overdue<C: ConnectionTrait>(c: &C, now: i64) -> Result<u64, StoreError> {
    Ok(Request::find()
        .filter(dsar_request::Column::Status.is_not_in(FINAL.iter().copied()))
        .filter(dsar_request::Column::DueAt.lt(now))
        .count(c)
        .await?)
}

pub async fn insert_transition<C: ConnectionTrait>(
    c: &C,
    t: &TransitionRow,
) -> Result<(), StoreError> {
    Transition::insert(dsar_transition::ActiveModel {
        request_id: Set(t.request_id.clone()),
        step: Set(t.step),
        from_status: Set(t.from_status.clone()),
        to_status: Set(t.to_status.clone()),
        actor: Set(t.actor.clone()),
        reason: Set(t.reason.clone()),
        at: Set(t.at),
    })
    .exec_without_returning(c)
    .await?;
    Ok(())
}

pub async fn transitions<C: ConnectionTrait>(
    c: &C,
    request_id: &str,
) -> Result<Vec<TransitionRow>, StoreError> {
    Ok(Transition::find()
        .filter(dsar_transition::Column::RequestId.eq(request_id))
        .order_by_asc(dsar_transition::Column::Step)
        .all(c)
        .await?
        .into_iter()
        .map(|m| TransitionRow {
            request_id: m.request_id,
            step: m.step,
            from_status: m.from_status,
            to_status: m.to_status,
            actor: m.actor,
            reason: m.reason,
            at: m.at,
        })
        .collect())
}
