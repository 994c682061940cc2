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
