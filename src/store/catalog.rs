//! The product catalogue and the per-purpose recommendation models (pair and popularity
//! counts; no row names a subject).
use std::collections::HashMap;

use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect,
};

use super::StoreError;
use super::entity::product::{self, Entity as Product};
use super::entity::product_pair::{self, Entity as Pair};
use super::entity::product_popularity::{self, Entity as Popularity};
use super::entity::recommendation_model::{self, Entity as Model};

const CHUNK: usize = 500;

#[derive(Clone, Debug, PartialEq)]
pub struct ProductRow {
    pub id: String,
    pub name: String,
    pub url: String,
    pub image_url: Option<String>,
    pub price: Option<f64>,
    pub currency: Option<String>,
    pub category: Option<String>,
    pub available: bool,
    pub updated_at: i64,
}

impl From<product::Model> for ProductRow {
    fn from(m: product::Model) -> Self {
        Self {
            id: m.id,
            name: m.name,
            url: m.url,
            image_url: m.image_url,
            price: m.price,
            currency: m.currency,
            category: m.category,
            available: m.available,
            updated_at: m.updated_at,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelRow {
    pub purpose: String,
    pub subjects: i64,
    pub products: i64,
    pub pairs: i64,
    pub trained_at: i64,
}

/// Which of `ids` the catalogue holds already.
pub async fn existing<C: ConnectionTrait>(
    c: &C,
    ids: &[String],
) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    for chunk in ids.chunks(CHUNK) {
        let found: Vec<String> = Product::find()
            .select_only()
            .column(product::Column::Id)
            .filter(product::Column::Id.is_in(chunk.iter().cloned()))
            .into_tuple()
            .all(c)
            .await?;
        out.extend(found);
    }
    Ok(out)
}

/// Inserts or replaces products by id.
pub async fn upsert<C: ConnectionTrait>(c: &C, rows: &[ProductRow]) -> Result<(), StoreError> {
    for chunk in rows.chunks(CHUNK) {
        if chunk.is_empty() {
            continue;
        }
        Product::insert_many(chunk.iter().map(|r| product::ActiveModel {
            id: Set(r.id.clone()),
            name: Set(r.name.clone()),
            url: Set(r.url.clone()),
            image_url: Set(r.image_url.clone()),
            price: Set(r.price),
            currency: Set(r.currency.clone()),
            category: Set(r.category.clone()),
            available: Set(r.available),
            updated_at: Set(r.updated_at),
        }))
        .on_conflict(
            OnConflict::column(product::Column::Id)
                .update_columns([
                    product::Column::Name,
                    product::Column::Url,
                    product::Column::ImageUrl,
                    product::Column::Price,
                    product::Column::Currency,
                    product::Column::Category,
                    product::Column::Available,
                    product::Column::UpdatedAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(c)
        .await?;
    }
    Ok(())
}

/// Deletes products by id; returns how many there were.
pub async fn delete<C: ConnectionTrait>(c: &C, ids: &[String]) -> Result<u64, StoreError> {
    let mut n = 0;
    for chunk in ids.chunks(CHUNK) {
        n += Product::delete_many()
            .filter(product::Column::Id.is_in(chunk.iter().cloned()))
            .exec(c)
            .await?
            .rows_affected;
    }
    Ok(n)
}

pub async fn count<C: ConnectionTrait>(c: &C) -> Result<u64, StoreError> {
    Ok(Product::find().count(c).await?)
}

pub async fn get<C: ConnectionTrait>(c: &C, id: &str) -> Result<Option<ProductRow>, StoreError> {
    Ok(Product::find_by_id(id.to_owned())
        .one(c)
        .await?
        .map(ProductRow::from))
}

/// The available products among `ids`, by id.
pub async fn available<C: ConnectionTrait>(
    c: &C,
    ids: &[String],
) -> Result<HashMap<String, ProductRow>, StoreError> {
    let mut out = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(CHUNK) {
        let rows = Product::find()
            .filter(product::Column::Id.is_in(chunk.iter().cloned()))
            .filter(product::Column::Available.eq(true))
            .all(c)
            .await?;
        out.extend(
            rows.into_iter()
                .map(|m| (m.id.clone(), ProductRow::from(m))),
        );
    }
    Ok(out)
}

/// The pairs of `purpose`'s model whose first product is one of `ids`.
pub async fn pairs_of<C: ConnectionTrait>(
    c: &C,
    purpose: &str,
    ids: &[String],
) -> Result<Vec<(String, String, i64)>, StoreError> {
    let mut out = Vec::new();
    for chunk in ids.chunks(CHUNK) {
        let rows: Vec<(String, String, i64)> = Pair::find()
            .select_only()
            .column(product_pair::Column::ProductId)
            .column(product_pair::Column::OtherId)
            .column(product_pair::Column::Weight)
            .filter(product_pair::Column::Purpose.eq(purpose))
            .filter(product_pair::Column::ProductId.is_in(chunk.iter().cloned()))
            .into_tuple()
            .all(c)
            .await?;
        out.extend(rows);
    }
    Ok(out)
}

/// The `limit` most popular products of `purpose`'s model, most popular first (ties by
/// id), with how many people.
pub async fn popular<C: ConnectionTrait>(
    c: &C,
    purpose: &str,
    limit: u64,
) -> Result<Vec<(String, i64)>, StoreError> {
    Ok(Popularity::find()
        .select_only()
        .column(product_popularity::Column::ProductId)
        .column(product_popularity::Column::People)
        .filter(product_popularity::Column::Purpose.eq(purpose))
        .order_by_desc(product_popularity::Column::People)
        .order_by_asc(product_popularity::Column::ProductId)
        .limit(limit)
        .into_tuple()
        .all(c)
        .await?)
}

pub async fn model<C: ConnectionTrait>(
    c: &C,
    purpose: &str,
) -> Result<Option<ModelRow>, StoreError> {
    Ok(Model::find_by_id(purpose.to_owned())
        .one(c)
        .await?
        .map(|m| ModelRow {
            purpose: m.purpose,
            subjects: m.subjects,
            products: m.products,
            pairs: m.pairs,
            trained_at: m.trained_at,
        }))
}

/// Replaces `purpose`'s model: its pairs, its popularity counts and its summary.
pub async fn replace_model<C: ConnectionTrait>(
    c: &C,
    m: &ModelRow,
    pairs: &[(String, String, i64)],
    popularity: &[(String, i64)],
) -> Result<(), StoreError> {
    Pair::delete_many()
        .filter(product_pair::Column::Purpose.eq(&m.purpose))
        .exec(c)
        .await?;
    Popularity::delete_many()
        .filter(product_popularity::Column::Purpose.eq(&m.purpose))
        .exec(c)
        .await?;
    for chunk in pairs.chunks(CHUNK) {
        if chunk.is_empty() {
            continue;
        }
        Pair::insert_many(chunk.iter().map(|(a, b, w)| product_pair::ActiveModel {
            purpose: Set(m.purpose.clone()),
            product_id: Set(a.clone()),
            other_id: Set(b.clone()),
            weight: Set(*w),
        }))
        .exec_without_returning(c)
        .await?;
    }
    for chunk in popularity.chunks(CHUNK) {
        if chunk.is_empty() {
            continue;
        }
        Popularity::insert_many(chunk.iter().map(|(id, n)| product_popularity::ActiveModel {
            purpose: Set(m.purpose.clone()),
            product_id: Set(id.clone()),
            people: Set(*n),
        }))
        .exec_without_returning(c)
        .await?;
    }
    Model::insert(recommendation_model::ActiveModel {
        purpose: Set(m.purpose.clone()),
        subjects: Set(m.subjects),
        products: Set(m.products),
        pairs: Set(m.pairs),
        trained_at: Set(m.trained_at),
    })
    .on_conflict(
        OnConflict::column(recommendation_model::Column::Purpose)
            .update_columns([
                recommendation_model::Column::Subjects,
                recommendation_model::Column::Products,
                recommendation_model::Column::Pairs,
                recommendation_model::Column::TrainedAt,
            ])
            .to_owned(),
    )
    .exec_without_returning(c)
    .await?;
    Ok(())
}
