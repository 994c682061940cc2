//! Per-subject flags a DPO sets: `restricted` (processing restricted, Art. 18) and
//! `legal_hold` (erasure blocked, Art. 17(3)(e)). One row per subject and flag.
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};

use super::StoreError;
use super::entity::subject_flag::{self, Entity as Flag};

pub const RESTRICTED: &str = "restricted";
pub const LEGAL_HOLD: &str = "legal_hold";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlagRow {
    pub subject_id: String,
    pub flag: String,
    pub reason: String,
    pub set_at: i64,
    pub set_by: String,
}

impl From<subject_flag::Model> for FlagRow {
    fn from(m: subject_flag::Model) -> Self {
        Self {
            subject_id: m.subject_id,
            flag: m.flag,
            reason: m.reason,
            set_at: m.set_at,
            set_by: m.set_by,
        }
    }
}

pub async fn get<C: ConnectionTrait>(
    c: &C,
    subject_id: &str,
    flag: &str,
) -> Result<Option<FlagRow>, StoreError> {
    Ok(Flag::find_by_id((subject_id.to_owned(), flag.to_owned()))
        .one(c)
        .await?
        .map(FlagRow::from))
}

/// Sets a flag; one already set is kept as it was (its reason and time).
pub async fn insert<C: ConnectionTrait>(c: &C, f: &FlagRow) -> Result<(), StoreError> {
    Flag::insert(subject_flag::ActiveModel {
        subject_id: Set(f.subject_id.clone()),
        flag: Set(f.flag.clone()),
        reason: Set(f.reason.clone()),
        set_at: Set(f.set_at),
        set_by: Set(f.set_by.clone()),
    })
    .on_conflict(
        OnConflict::columns([subject_flag::Column::SubjectId, subject_flag::Column::Flag])
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(c)
    .await?;
    Ok(())
}

/// Clears a flag; returns whether it was set.
pub async fn delete<C: ConnectionTrait>(
    c: &C,
    subject_id: &str,
    flag: &str,
) -> Result<bool, StoreError> {
    Ok(Flag::delete_many()
        .filter(subject_flag::Column::SubjectId.eq(subject_id))
        .filter(subject_flag::Column::Flag.eq(flag))
        .exec(c)
        .await?
        .rows_affected
        > 0)
}

/// A merged subject's flags carry over to the subject it was merged into.
pub async fn repoint<C: ConnectionTrait>(c: &C, from: &str, into: &str) -> Result<(), StoreError> {
    let flags = Flag::find()
        .filter(subject_flag::Column::SubjectId.eq(from))
        .all(c)
        .await?;
    for m in flags {
        let mut f = FlagRow::from(m);
        delete(c, from, &f.flag).await?;
        f.subject_id = into.to_owned();
        insert(c, &f).await?;
    }
    Ok(())
}
