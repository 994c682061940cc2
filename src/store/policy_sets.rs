//! Rows of `policy_sets`: the policy texts published to every node, one generation each.
use sea_orm::{ConnectionTrait, DbBackend, Statement, Value};

use super::StoreError;

/// A published generation's texts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedSet {
    pub generation: i64,
    pub digest: String,
    pub taxonomy: String,
    pub identifiers: String,
    pub purposes: String,
}

/// The latest generation and its digest, if any set was published.
pub async fn latest<C: ConnectionTrait>(c: &C) -> Result<Option<(i64, String)>, StoreError> {
    let row = c
        .query_one_raw(Statement::from_string(
            c.get_database_backend(),
            "SELECT generation, digest FROM policy_sets ORDER BY generation DESC LIMIT 1",
        ))
        .await?;
    match row {
        Some(r) => Ok(Some((r.try_get_by_index(0)?, r.try_get_by_index(1)?))),
        None => Ok(None),
    }
}

pub async fn get<C: ConnectionTrait>(
    c: &C,
    generation: i64,
) -> Result<Option<PublishedSet>, StoreError> {
    let backend = c.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => {
            "SELECT generation, digest, taxonomy, identifiers, purposes FROM policy_sets \
             WHERE generation = $1"
        }
        _ => {
            "SELECT generation, digest, taxonomy, identifiers, purposes FROM policy_sets \
             WHERE generation = ?"
        }
    };
    let row = c
        .query_one_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [generation.into()],
        ))
        .await?;
    match row {
        Some(r) => Ok(Some(PublishedSet {
            generation: r.try_get_by_index(0)?,
            digest: r.try_get_by_index(1)?,
            taxonomy: r.try_get_by_index(2)?,
            identifiers: r.try_get_by_index(3)?,
            purposes: r.try_get_by_index(4)?,
        })),
        None => Ok(None),
    }
}

/// Adds the next generation inside the caller's write transaction and returns it. On
/// PostgreSQL the table is locked against other publishers until the transaction ends (on
/// SQLite the write transaction already is), so generations never collide.
pub async fn publish<C: ConnectionTrait>(
    c: &C,
    digest: &str,
    texts: [&str; 3],
    now_us: i64,
) -> Result<i64, StoreError> {
    let backend = c.get_database_backend();
    if backend == DbBackend::Postgres {
        c.execute_unprepared("LOCK TABLE policy_sets IN SHARE ROW EXCLUSIVE MODE")
            .await?;
    }
    let next = latest(c).await?.map_or(1, |(g, _)| g + 1);
    let sql = match backend {
        DbBackend::Postgres => {
            "INSERT INTO policy_sets (generation, digest, taxonomy, identifiers, purposes, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6)"
        }
        _ => {
            "INSERT INTO policy_sets (generation, digest, taxonomy, identifiers, purposes, \
             created_at) VALUES (?, ?, ?, ?, ?, ?)"
        }
    };
    let values: Vec<Value> = vec![
        next.into(),
        digest.into(),
        texts[0].into(),
        texts[1].into(),
        texts[2].into(),
        now_us.into(),
    ];
    c.execute_raw(Statement::from_sql_and_values(backend, sql, values))
        .await?;
    Ok(next)
}
