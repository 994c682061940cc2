//! Erasing a subject: one statement per table, never one per row, in the caller's
//! transaction. The audit log is not touched: it holds only keyed references.
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect};

use super::StoreError;
use super::entity::{
    aggregate, consent, disclosure, event, identifier, identity_conflict, pseudonym, subject,
    subject_flag, subject_key, subject_trait,
};

/// Rows removed, by table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Erased {
    pub events: u64,
    pub traits: u64,
    pub identifiers: u64,
    pub consents: u64,
    pub disclosures: u64,
    pub pseudonyms: u64,
    pub subjects: u64,
}

/// On PostgreSQL the whole erasure is one statement (data-modifying CTEs: one round
/// trip instead of one per table) over the same tables as the other branch of [`erase`],
/// with one bound parameter per id of the subject and those merged into it.
fn erase_pg(ids: usize) -> String {
    let list = (1..=ids)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "WITH e AS (DELETE FROM events WHERE subject_id IN ({list}) RETURNING 1), \
         t AS (DELETE FROM traits WHERE subject_id IN ({list}) RETURNING 1), \
         i AS (DELETE FROM identifiers WHERE subject_id IN ({list}) RETURNING 1), \
         c AS (DELETE FROM consents WHERE subject_id IN ({list}) RETURNING 1), \
         d AS (DELETE FROM disclosures WHERE subject_id IN ({list}) RETURNING 1), \
         p AS (DELETE FROM pseudonyms WHERE subject_id IN ({list}) RETURNING 1), \
         a AS (DELETE FROM aggregates WHERE subject_id IN ({list})), \
         f AS (DELETE FROM subject_flags WHERE subject_id IN ({list})), \
         x AS (DELETE FROM identity_conflicts WHERE subject_a IN ({list}) OR subject_b IN ({list})), \
         k AS (DELETE FROM subject_keys WHERE subject_id IN ({list})), \
         s AS (DELETE FROM subjects WHERE id IN ({list}) RETURNING 1) \
         SELECT (SELECT COUNT(*) FROM e), (SELECT COUNT(*) FROM t), (SELECT COUNT(*) FROM i), \
                (SELECT COUNT(*) FROM c), (SELECT COUNT(*) FROM d), (SELECT COUNT(*) FROM p), \
                (SELECT COUNT(*) FROM s)"
    )
}

/// Deletes everything held about `subject_id` (and the merged-away subjects that point
/// at it), its data key included.
pub async fn erase<C: ConnectionTrait>(c: &C, subject_id: &str) -> Result<Erased, StoreError> {
    let mut ids: Vec<String> = subject::Entity::find()
        .select_only()
        .column(subject::Column::Id)
        .filter(subject::Column::MergedInto.eq(subject_id))
        .into_tuple()
        .all(c)
        .await?;
    ids.push(subject_id.to_owned());
    if c.get_database_backend() == sea_orm::DbBackend::Postgres && ids.len() <= 1000 {
        let row = c
            .query_one_raw(sea_orm::Statement::from_sql_and_values(
                sea_orm::DbBackend::Postgres,
                erase_pg(ids.len()),
                ids.iter().map(|id| sea_orm::Value::from(id.as_str())),
            ))
            .await?
            .ok_or(StoreError::Corrupt {
                table: "subjects",
                reason: "the erasure returned no counts".into(),
            })?;
        let n = |i: usize| -> Result<u64, StoreError> {
            let v: i64 = row.try_get_by_index(i)?;
            Ok(u64::try_from(v).unwrap_or(0))
        };
        return Ok(Erased {
            events: n(0)?,
            traits: n(1)?,
            identifiers: n(2)?,
            consents: n(3)?,
            disclosures: n(4)?,
            pseudonyms: n(5)?,
            subjects: n(6)?,
        });
    }
    let mut out = Erased {
        events: event::Entity::delete_many()
            .filter(event::Column::SubjectId.is_in(ids.clone()))
            .exec(c)
            .await?
            .rows_affected,
        traits: subject_trait::Entity::delete_many()
            .filter(subject_trait::Column::SubjectId.is_in(ids.clone()))
            .exec(c)
            .await?
            .rows_affected,
        identifiers: identifier::Entity::delete_many()
            .filter(identifier::Column::SubjectId.is_in(ids.clone()))
            .exec(c)
            .await?
            .rows_affected,
        consents: consent::Entity::delete_many()
            .filter(consent::Column::SubjectId.is_in(ids.clone()))
            .exec(c)
            .await?
            .rows_affected,
        disclosures: disclosure::Entity::delete_many()
            .filter(disclosure::Column::SubjectId.is_in(ids.clone()))
            .exec(c)
            .await?
            .rows_affected,
        pseudonyms: pseudonym::Entity::delete_many()
            .filter(pseudonym::Column::SubjectId.is_in(ids.clone()))
            .exec(c)
            .await?
            .rows_affected,
        subjects: 0,
    };
    aggregate::Entity::delete_many()
        .filter(aggregate::Column::SubjectId.is_in(ids.clone()))
        .exec(c)
        .await?;
    subject_flag::Entity::delete_many()
        .filter(subject_flag::Column::SubjectId.is_in(ids.clone()))
        .exec(c)
        .await?;
    identity_conflict::Entity::delete_many()
        .filter(
            sea_orm::Condition::any()
                .add(identity_conflict::Column::SubjectA.is_in(ids.clone()))
                .add(identity_conflict::Column::SubjectB.is_in(ids.clone())),
        )
        .exec(c)
        .await?;
    // Crypto-shredding: without the data key, sealed copies anywhere (backups) are noise.
    subject_key::Entity::delete_many()
        .filter(subject_key::Column::SubjectId.is_in(ids.clone()))
        .exec(c)
        .await?;
    out.subjects = subject::Entity::delete_many()
        .filter(subject::Column::Id.is_in(ids))
        .exec(c)
        .await?
        .rows_affected;
    Ok(out)
}
