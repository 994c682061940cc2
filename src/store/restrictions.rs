//! Restriction of processing (GDPR Art. 18): one row per restricted subject.
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};

use super::StoreError;
use super::entity::restriction::{self, Entity as Restriction};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestrictionRow {
    pub subject_id: String,
    pub reason: String,
    pub restricted_at: i64,
    pub recorded_by: String,
}

pub async fn get<C: ConnectionTrait>(
    c: &C,
    subject_id: &str,
) -> Result<Option<RestrictionRow>, StoreError> {
    Ok(Restriction::find_by_id(subject_id.to_owned())
        .one(c)
        .await?
        .map(|m| RestrictionRow {
            subject_id: m.subject_id,
            reason: m.reason,
            restricted_at: m.restricted_at,
            recorded_by: m.recorded_by,
        }))
}

/// Restricts a subject; an existing restriction is kept as it was.
pub async fn insert<C: ConnectionTrait>(c: &C, r: &RestrictionRow) -> Result<(), StoreError> {
    Restriction::insert(restriction::ActiveModel {
        subject_id: Set(r.subject_id.clone()),
        reason: Set(r.reason.clone()),
        restricted_at: Set(r.restricted_at),
        recorded_by: Set(r.recorded_by.clone()),
    })
    .on_conflict(
        OnConflict::column(restriction::Column::SubjectId)
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(c)
    .await?;
    Ok(())
}

/// Lifts a restriction; returns whether there was one.
pub async fn delete<C: ConnectionTrait>(c: &C, subject_id: &str) -> Result<bool, StoreError> {
    let r = Restriction::delete_many()
        .filter(restriction::Column::SubjectId.eq(subject_id))
        .exec(c)
        .await?;
    Ok(r.rows_affected > 0)
}

/// A merged subject's restriction carries over to the subject it was merged into.
pub async fn repoint<C: ConnectionTrait>(c: &C, from: &str, into: &str) -> Result<(), StoreError> {
    if let Some(mut r) = get(c, from).await? {
        delete(c, from).await?;
        r.subject_id = into.to_owned();
        insert(c, &r).await?;
    }
    Ok(())
}
