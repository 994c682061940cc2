//! The record of disclosures: names of attributes, never their values.
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
};

use super::StoreError;
use super::entity::disclosure::{self, Entity as Disclosure};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DisclosureRow {
    pub id: String,
    pub recipient_id: String,
    pub subject_id: String,
    pub purpose: String,
    pub attributes: Vec<String>,
    pub disclosed_at: i64,
    pub key_id: String,
}

fn model(d: &DisclosureRow) -> Result<disclosure::ActiveModel, StoreError> {
    let attributes = serde_json::to_string(&d.attributes).map_err(|e| StoreError::Corrupt {
        table: "disclosures",
        reason: e.to_string(),
    })?;
    Ok(disclosure::ActiveModel {
        id: Set(d.id.clone()),
        recipient_id: Set(d.recipient_id.clone()),
        subject_id: Set(d.subject_id.clone()),
        purpose: Set(d.purpose.clone()),
        attributes: Set(attributes),
        disclosed_at: Set(d.disclosed_at),
        key_id: Set(d.key_id.clone()),
    })
}

pub async fn insert<C: ConnectionTrait>(c: &C, d: &DisclosureRow) -> Result<(), StoreError> {
    insert_many(c, std::slice::from_ref(d)).await
}

/// Many records, a few hundred per statement.
pub async fn insert_many<C: ConnectionTrait>(
    c: &C,
    rows: &[DisclosureRow],
) -> Result<(), StoreError> {
    for chunk in rows.chunks(200) {
        if chunk.is_empty() {
            continue;
        }
        let models = chunk.iter().map(model).collect::<Result<Vec<_>, _>>()?;
        Disclosure::insert_many(models)
            .exec_without_returning(c)
            .await?;
    }
    Ok(())
}

/// A subject's disclosures, oldest first.
pub async fn of_subject<C: ConnectionTrait>(
    c: &C,
    subject_id: &str,
) -> Result<Vec<DisclosureRow>, StoreError> {
    Disclosure::find()
        .filter(disclosure::Column::SubjectId.eq(subject_id))
        .order_by_asc(disclosure::Column::DisclosedAt)
        .order_by_asc(disclosure::Column::Id)
        .all(c)
        .await?
        .into_iter()
        .map(|m| {
            let attributes =
                serde_json::from_str(&m.attributes).map_err(|e| StoreError::Corrupt {
                    table: "disclosures",
                    reason: e.to_string(),
                })?;
            Ok(DisclosureRow {
                id: m.id,
                recipient_id: m.recipient_id,
                subject_id: m.subject_id,
                purpose: m.purpose,
                attributes,
                disclosed_at: m.disclosed_at,
                key_id: m.key_id,
            })
        })
        .collect()
}

pub async fn repoint<C: ConnectionTrait>(c: &C, from: &str, into: &str) -> Result<(), StoreError> {
    Disclosure::update_many()
        .col_expr(disclosure::Column::SubjectId, Expr::value(into.to_owned()))
        .filter(disclosure::Column::SubjectId.eq(from))
        .exec(c)
        .await?;
    Ok(())
}
