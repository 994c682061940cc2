//! Saved segments.
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
};

use super::StoreError;
use super::entity::segment::{self, Entity as Segment};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentRow {
    pub id: String,
    pub name: String,
    pub purpose: String,
    pub recipient_id: String,
    /// The rule as JSON text.
    pub rule: String,
    pub created_by: String,
    pub created_at: i64,
}

impl From<segment::Model> for SegmentRow {
    fn from(m: segment::Model) -> Self {
        Self {
            id: m.id,
            name: m.name,
            purpose: m.purpose,
            recipient_id: m.recipient_id,
            rule: m.rule,
            created_by: m.created_by,
            created_at: m.created_at,
        }
    }
}

pub async fn insert<C: ConnectionTrait>(c: &C, r: &SegmentRow) -> Result<(), StoreError> {
    Segment::insert(segment::ActiveModel {
        id: Set(r.id.clone()),
        name: Set(r.name.clone()),
        purpose: Set(r.purpose.clone()),
        recipient_id: Set(r.recipient_id.clone()),
        rule: Set(r.rule.clone()),
        created_by: Set(r.created_by.clone()),
        created_at: Set(r.created_at),
    })
    .exec_without_returning(c)
    .await?;
    Ok(())
}

pub async fn get<C: ConnectionTrait>(c: &C, id: &str) -> Result<Option<SegmentRow>, StoreError> {
    Ok(Segment::find_by_id(id.to_owned())
        .one(c)
        .await?
        .map(SegmentRow::from))
}

/// All segments, or those of one recipient, oldest first.
pub async fn list<C: ConnectionTrait>(
    c: &C,
    recipient: Option<&str>,
) -> Result<Vec<SegmentRow>, StoreError> {
    let mut q = Segment::find();
    if let Some(r) = recipient {
        q = q.filter(segment::Column::RecipientId.eq(r));
    }
    Ok(q.order_by_asc(segment::Column::CreatedAt)
        .order_by_asc(segment::Column::Id)
        .all(c)
        .await?
        .into_iter()
        .map(SegmentRow::from)
        .collect())
}

pub async fn delete<C: ConnectionTrait>(c: &C, id: &str) -> Result<bool, StoreError> {
    Ok(Segment::delete_by_id(id.to_owned())
        .exec(c)
        .await?
        .rows_affected
        > 0)
}
