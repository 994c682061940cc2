//! The consent ledger: inserts and reads only.
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
};

use super::StoreError;
use super::entity::consent::{self, Entity as Consent};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsentRow {
    pub id: String,
    pub subject_id: String,
    pub consent: String,
    pub status: String,
    pub method: String,
    pub source: String,
    pub notice_version: Option<String>,
    pub captured_at: i64,
    pub recorded_at: i64,
    pub recorded_by: String,
    pub proof: Option<String>,
}

impl From<consent::Model> for ConsentRow {
    fn from(m: consent::Model) -> Self {
        Self {
            id: m.id,
            subject_id: m.subject_id,
            consent: m.consent,
            status: m.status,
            method: m.method,
            source: m.source,
            notice_version: m.notice_version,
            captured_at: m.captured_at,
            recorded_at: m.recorded_at,
            recorded_by: m.recorded_by,
            proof: m.proof,
        }
    }
}

pub async fn insert<C: ConnectionTrait>(c: &C, r: &ConsentRow) -> Result<(), StoreError> {
    c.execute_raw(insert_statement(c.get_database_backend(), r))
        .await?;
    Ok(())
}

/// The insert of several records in one statement (SQLite and PostgreSQL alike count
/// one row each), to send with their audit entries
/// ([`crate::audit::AuditLog::append_batch_with`]).
pub fn insert_many_statement<'r>(
    backend: sea_orm::DbBackend,
    rows: impl IntoIterator<Item = &'r ConsentRow>,
) -> sea_orm::Statement {
    use sea_orm::QueryTrait;
    Consent::insert_many(rows.into_iter().map(active)).build(backend)
}

fn active(r: &ConsentRow) -> consent::ActiveModel {
    consent::ActiveModel {
        id: Set(r.id.clone()),
        subject_id: Set(r.subject_id.clone()),
        consent: Set(r.consent.clone()),
        status: Set(r.status.clone()),
        method: Set(r.method.clone()),
        source: Set(r.source.clone()),
        notice_version: Set(r.notice_version.clone()),
        captured_at: Set(r.captured_at),
        recorded_at: Set(r.recorded_at),
        recorded_by: Set(r.recorded_by.clone()),
        proof: Set(r.proof.clone()),
    }
}

/// The insert of one record, to send with its audit entry
/// ([`crate::audit::AuditLog::append_with`]).
pub fn insert_statement(backend: sea_orm::DbBackend, r: &ConsentRow) -> sea_orm::Statement {
    use sea_orm::QueryTrait;
    Consent::insert(active(r)).build(backend)
}

/// A subject's records, oldest capture first (ties in recording order).
pub async fn history<C: ConnectionTrait>(
    c: &C,
    subject_id: &str,
) -> Result<Vec<ConsentRow>, StoreError> {
    histories(c, &[subject_id.to_owned()]).await
}

/// The records of every subject in `ids`, each subject's in [`history`] order (one query);
/// only those on `names` when given.
pub async fn histories<C: ConnectionTrait>(
    c: &C,
    ids: &[String],
) -> Result<Vec<ConsentRow>, StoreError> {
    histories_of(c, ids, None).await
}

pub async fn histories_of<C: ConnectionTrait>(
    c: &C,
    ids: &[String],
    names: Option<&[String]>,
) -> Result<Vec<ConsentRow>, StoreError> {
    let mut q = Consent::find().filter(consent::Column::SubjectId.is_in(ids.iter().cloned()));
    if let Some(n) = names {
        q = q.filter(consent::Column::Consent.is_in(n.iter().cloned()));
    }
    Ok(q.order_by_asc(consent::Column::CapturedAt)
        .order_by_asc(consent::Column::RecordedAt)
        .order_by_asc(consent::Column::Id)
        .all(c)
        .await?
        .into_iter()
        .map(ConsentRow::from)
        .collect())
}

/// The subject's latest record for one consent (by capture, then recording time).
pub async fn latest<C: ConnectionTrait>(
    c: &C,
    subject_id: &str,
    consent_name: &str,
) -> Result<Option<ConsentRow>, StoreError> {
    Ok(Consent::find()
        .filter(consent::Column::SubjectId.eq(subject_id))
        .filter(consent::Column::Consent.eq(consent_name))
        .order_by_desc(consent::Column::CapturedAt)
        .order_by_desc(consent::Column::RecordedAt)
        .order_by_desc(consent::Column::Id)
        .one(c)
        .await?
        .map(ConsentRow::from))
}

/// Re-points a merged subject's records to the subject it was merged into.
pub async fn repoint<C: ConnectionTrait>(c: &C, from: &str, into: &str) -> Result<(), StoreError> {
    use sea_orm::sea_query::Expr;
    Consent::update_many()
        .col_expr(consent::Column::SubjectId, Expr::value(into.to_owned()))
        .filter(consent::Column::SubjectId.eq(from))
        .exec(c)
        .await?;
    Ok(())
}

pub async fn by_id<C: ConnectionTrait>(c: &C, id: &str) -> Result<Option<ConsentRow>, StoreError> {
    Ok(Consent::find_by_id(id.to_owned())
        .one(c)
        .await?
        .map(ConsentRow::from))
}
