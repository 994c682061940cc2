//! Legal holds: one row per subject whose data must be kept; erasure refuses them.
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};

use super::StoreError;
use super::entity::legal_hold::{self, Entity as Hold};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldRow {
    pub subject_id: String,
    pub reason: String,
    pub placed_at: i64,
    pub placed_by: String,
}

pub async fn get<C: ConnectionTrait>(
    c: &C,
    subject_id: &str,
) -> Result<Option<HoldRow>, StoreError> {
    Ok(Hold::find_by_id(subject_id.to_owned())
        .one(c)
        .await?
        .map(|m| HoldRow {
            subject_id: m.subject_id,
            reason: m.reason,
            placed_at: m.placed_at,
            placed_by: m.placed_by,
        }))
}

/// Places a hold; an existing one is kept as it was.
pub async fn insert<C: ConnectionTrait>(c: &C, h: &HoldRow) -> Result<(), StoreError> {
    Hold::insert(legal_hold::ActiveModel {
        subject_id: Set(h.subject_id.clone()),
        reason: Set(h.reason.clone()),
        placed_at: Set(h.placed_at),
        placed_by: Set(h.placed_by.clone()),
    })
    .on_conflict(
        OnConflict::column(legal_hold::Column::SubjectId)
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(c)
    .await?;
    Ok(())
}

pub async fn delete<C: ConnectionTrait>(c: &C, subject_id: &str) -> Result<bool, StoreError> {
    Ok(Hold::delete_many()
        .filter(legal_hold::Column::SubjectId.eq(subject_id))
        .exec(c)
        .await?
        .rows_affected
        > 0)
}

/// A merged subject's hold carries over to the subject it was merged into.
pub async fn repoint<C: ConnectionTrait>(c: &C, from: &str, into: &str) -> Result<(), StoreError> {
    if let Some(mut h) = get(c, from).await? {
        delete(c, from).await?;
        h.subject_id = into.to_owned();
        insert(c, &h).await?;
    }
    Ok(())
}
