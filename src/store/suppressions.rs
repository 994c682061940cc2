//! The suppression list. Only keyed hashes are stored; the identifiers themselves are gone.
use sea_orm::sea_query::OnConflict;
use std::collections::HashSet;

use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect,
};

use super::StoreError;
use super::entity::suppression::{self, Entity as Suppression};

/// Which of `hashes` are on the list (hashes bind their kind, so none is needed here).
pub async fn present<C: ConnectionTrait>(
    c: &C,
    hashes: &[String],
) -> Result<HashSet<String>, StoreError> {
    let mut out = HashSet::new();
    for chunk in hashes.chunks(500) {
        let found: Vec<String> = Suppression::find()
            .select_only()
            .column(suppression::Column::Hash)
            .filter(suppression::Column::Hash.is_in(chunk.iter().cloned()))
            .into_tuple()
            .all(c)
            .await?;
        out.extend(found);
    }
    Ok(out)
}

pub async fn insert<C: ConnectionTrait>(
    c: &C,
    kind: &str,
    hash: &str,
    reason: &str,
    at: i64,
) -> Result<(), StoreError> {
    Suppression::insert(suppression::ActiveModel {
        kind: Set(kind.to_owned()),
        hash: Set(hash.to_owned()),
        reason: Set(reason.to_owned()),
        created_at: Set(at),
    })
    .on_conflict(
        OnConflict::columns([suppression::Column::Kind, suppression::Column::Hash])
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(c)
    .await?;
    Ok(())
}

/// Several entries (kind, hash) in one statement; ones already there are left as they are.
pub async fn insert_all<C: ConnectionTrait>(
    c: &C,
    entries: &[(String, String)],
    reason: &str,
    at: i64,
) -> Result<(), StoreError> {
    if entries.is_empty() {
        return Ok(());
    }
    Suppression::insert_many(entries.iter().map(|(kind, hash)| suppression::ActiveModel {
        kind: Set(kind.clone()),
        hash: Set(hash.clone()),
        reason: Set(reason.to_owned()),
        created_at: Set(at),
    }))
    .on_conflict(
        OnConflict::columns([suppression::Column::Kind, suppression::Column::Hash])
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(c)
    .await?;
    Ok(())
}
