//! Wrapped key versions. The material is never stored in clear: `crypto` wraps it
//! under the master key before it reaches here.
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ConnectionTrait, EntityTrait, QueryOrder};

use super::StoreError;
use super::entity::keyring_key::{self, Entity as KeyringKey};

#[derive(Clone, Debug)]
pub struct WrappedKey {
    pub kind: String,
    pub version: i32,
    pub wrapped: Vec<u8>,
    pub public_key: Option<Vec<u8>>,
    pub created_at: i64,
    pub retired_at: Option<i64>,
}

impl From<keyring_key::Model> for WrappedKey {
    fn from(m: keyring_key::Model) -> Self {
        Self {
            kind: m.kind,
            version: m.version,
            wrapped: m.wrapped,
            public_key: m.public_key,
            created_at: m.created_at,
            retired_at: m.retired_at,
        }
    }
}

pub async fn all<C: ConnectionTrait>(c: &C) -> Result<Vec<WrappedKey>, StoreError> {
    let rows = KeyringKey::find()
        .order_by_asc(keyring_key::Column::Kind)
        .order_by_asc(keyring_key::Column::Version)
        .all(c)
        .await?;
    Ok(rows.into_iter().map(WrappedKey::from).collect())
}

pub async fn insert<C: ConnectionTrait>(c: &C, key: &WrappedKey) -> Result<(), StoreError> {
    keyring_key::ActiveModel {
        kind: Set(key.kind.clone()),
        version: Set(key.version),
        wrapped: Set(key.wrapped.clone()),
        public_key: Set(key.public_key.clone()),
        created_at: Set(key.created_at),
        retired_at: Set(key.retired_at),
    }
    .insert(c)
    .await?;
    Ok(())
}

/// Marks a version retired. Returns false when no such version exists.
pub async fn retire<C: ConnectionTrait>(
    c: &C,
    kind: &str,
    version: i32,
    at: i64,
) -> Result<bool, StoreError> {
    let Some(row) = KeyringKey::find_by_id((kind.to_owned(), version))
        .one(c)
        .await?
    else {
        return Ok(false);
    };
    let mut active: keyring_key::ActiveModel = row.into();
    active.retired_at = Set(Some(at));
    active.update(c).await?;
    Ok(true)
}
