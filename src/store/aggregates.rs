//! Per-subject aggregates, one row each.
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};

use super::StoreError;
use super::entity::aggregate::{self, Entity as Aggregate};
use crate::domain::aggregates::Aggregates;

pub async fn load<C: ConnectionTrait>(
    c: &C,
    subject_id: &str,
) -> Result<Option<Aggregates>, StoreError> {
    Aggregate::find_by_id(subject_id.to_owned())
        .one(c)
        .await?
        .map(from_model)
        .transpose()
}

/// The aggregates of the subjects in `ids` that have them, by subject (one query per
/// 500 subjects).
pub async fn load_in<C: ConnectionTrait>(
    c: &C,
    ids: &[String],
) -> Result<Vec<(String, Aggregates)>, StoreError> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        for m in Aggregate::find()
            .filter(aggregate::Column::SubjectId.is_in(chunk.iter().cloned()))
            .all(c)
            .await?
        {
            out.push((m.subject_id.clone(), from_model(m)?));
        }
    }
    Ok(out)
}

fn from_model(m: aggregate::Model) -> Result<Aggregates, StoreError> {
    let list = |s: &str| -> Result<Vec<String>, StoreError> {
        serde_json::from_str(s).map_err(|e| StoreError::Corrupt {
            table: "aggregates",
            reason: e.to_string(),
        })
    };
    Ok(Aggregates {
        last_page_view_at: m.last_page_view_at,
        last_email_open_at: m.last_email_open_at,
        last_email_click_at: m.last_email_click_at,
        last_purchase_at: m.last_purchase_at,
        last_search_at: m.last_search_at,
        purchase_count: m.purchase_count,
        lifetime_value: m.lifetime_value,
        recently_viewed: list(&m.recently_viewed)?,
        cart: list(&m.cart)?,
        cart_updated_at: m.cart_updated_at,
        cart_abandoned_at: m.cart_abandoned_at,
    })
}

fn model(subject_id: &str, a: &Aggregates, now: i64) -> aggregate::ActiveModel {
    let json = |v: &Vec<String>| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
    aggregate::ActiveModel {
        subject_id: Set(subject_id.to_owned()),
        last_page_view_at: Set(a.last_page_view_at),
        last_email_open_at: Set(a.last_email_open_at),
        last_email_click_at: Set(a.last_email_click_at),
        last_purchase_at: Set(a.last_purchase_at),
        last_search_at: Set(a.last_search_at),
        purchase_count: Set(a.purchase_count),
        lifetime_value: Set(a.lifetime_value),
        average_order_value: Set(a.average_order_value()),
        recently_viewed: Set(json(&a.recently_viewed)),
        cart: Set(json(&a.cart)),
        cart_updated_at: Set(a.cart_updated_at),
        cart_abandoned_at: Set(a.cart_abandoned_at),
        updated_at: Set(now),
    }
}

pub async fn save<C: ConnectionTrait>(
    c: &C,
    subject_id: &str,
    a: &Aggregates,
    now: i64,
) -> Result<(), StoreError> {
    save_many(c, &[(subject_id, a)], now).await
}

/// Inserts or replaces the aggregates of several subjects (each at most once).
pub async fn save_many<C: ConnectionTrait>(
    c: &C,
    rows: &[(&str, &Aggregates)],
    now: i64,
) -> Result<(), StoreError> {
    use aggregate::Column as Col;
    for chunk in rows.chunks(500) {
        Aggregate::insert_many(chunk.iter().map(|(s, a)| model(s, a, now)))
            .on_conflict(
                OnConflict::column(Col::SubjectId)
                    .update_columns([
                        Col::LastPageViewAt,
                        Col::LastEmailOpenAt,
                        Col::LastEmailClickAt,
                        Col::LastPurchaseAt,
                        Col::LastSearchAt,
                        Col::PurchaseCount,
                        Col::LifetimeValue,
                        Col::AverageOrderValue,
                        Col::RecentlyViewed,
                        Col::Cart,
                        Col::CartUpdatedAt,
                        Col::CartAbandonedAt,
                        Col::UpdatedAt,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(c)
            .await?;
    }
    Ok(())
}

pub async fn delete<C: ConnectionTrait>(c: &C, subject_id: &str) -> Result<(), StoreError> {
    Aggregate::delete_by_id(subject_id.to_owned())
        .exec(c)
        .await?;
    Ok(())
}

/// Marks abandoned every non-empty cart untouched since `cutoff`. Returns how many.
pub async fn mark_abandoned<C: ConnectionTrait>(
    c: &C,
    cutoff: i64,
    now: i64,
) -> Result<u64, StoreError> {
    let res = Aggregate::update_many()
        .col_expr(aggregate::Column::CartAbandonedAt, Expr::value(now))
        .filter(aggregate::Column::Cart.ne("[]"))
        .filter(aggregate::Column::CartAbandonedAt.is_null())
        .filter(aggregate::Column::CartUpdatedAt.lte(cutoff))
        .exec(c)
        .await?;
    Ok(res.rows_affected)
}
