//! API keys: only an argon2id hash of each secret is stored.
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, sea_query::Expr,
};

use super::StoreError;
use super::entity::api_key::{self, Entity as ApiKey};
use crate::domain::Role;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyRow {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub recipient: Option<String>,
    pub purposes: Vec<String>,
    pub secret_hash: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl TryFrom<api_key::Model> for ApiKeyRow {
    type Error = StoreError;

    fn try_from(m: api_key::Model) -> Result<Self, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt {
            table: "api_keys",
            reason,
        };
        Ok(Self {
            role: m.role.parse().map_err(|e| corrupt(format!("{e}")))?,
            purposes: serde_json::from_str(&m.purposes)
                .map_err(|e| corrupt(format!("purposes: {e}")))?,
            id: m.id,
            name: m.name,
            recipient: m.recipient,
            secret_hash: m.secret_hash,
            created_at: m.created_at,
            last_used_at: m.last_used_at,
            revoked_at: m.revoked_at,
        })
    }
}

pub async fn insert<C: ConnectionTrait>(c: &C, row: &ApiKeyRow) -> Result<(), StoreError> {
    api_key::ActiveModel {
        id: Set(row.id.clone()),
        name: Set(row.name.clone()),
        role: Set(row.role.as_str().to_owned()),
        recipient: Set(row.recipient.clone()),
        purposes: Set(serde_json::to_string(&row.purposes).unwrap_or_else(|_| "[]".into())),
        secret_hash: Set(row.secret_hash.clone()),
        created_at: Set(row.created_at),
        last_used_at: Set(row.last_used_at),
        revoked_at: Set(row.revoked_at),
    }
    .insert(c)
    .await?;
    Ok(())
}

pub async fn find<C: ConnectionTrait>(c: &C, id: &str) -> Result<Option<ApiKeyRow>, StoreError> {
    ApiKey::find_by_id(id.to_owned())
        .one(c)
        .await?
        .map(ApiKeyRow::try_from)
        .transpose()
}

pub async fn list<C: ConnectionTrait>(c: &C) -> Result<Vec<ApiKeyRow>, StoreError> {
    ApiKey::find()
        .order_by_asc(api_key::Column::CreatedAt)
        .order_by_asc(api_key::Column::Id)
        .all(c)
        .await?
        .into_iter()
        .map(ApiKeyRow::try_from)
        .collect()
}

pub async fn count<C: ConnectionTrait>(c: &C) -> Result<u64, StoreError> {
    Ok(ApiKey::find().count(c).await?)
}

/// Sets `revoked_at` once. Returns false if the key does not exist or was already revoked.
pub async fn revoke<C: ConnectionTrait>(c: &C, id: &str, at: i64) -> Result<bool, StoreError> {
    let res = ApiKey::update_many()
        .col_expr(api_key::Column::RevokedAt, Expr::value(at))
        .filter(api_key::Column::Id.eq(id))
        .filter(api_key::Column::RevokedAt.is_null())
        .exec(c)
        .await?;
    Ok(res.rows_affected == 1)
}

pub async fn touch<C: ConnectionTrait>(c: &C, id: &str, at: i64) -> Result<(), StoreError> {
    ApiKey::update_many()
        .col_expr(api_key::Column::LastUsedAt, Expr::value(at))
        .filter(api_key::Column::Id.eq(id))
        .exec(c)
        .await?;
    Ok(())
}
