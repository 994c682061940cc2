//! Deleting what no purpose may keep any longer: events of a kind/name group and traits
//! of a category, older than a cutoff. One statement each, never one per row.
use sea_orm::{ColumnTrait, Condition, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter};

use super::StoreError;
use super::entity::event::{self, Entity as Event};
use super::entity::subject_trait::{self, Entity as Trait};

/// Which events a group holds: these call kinds, and (for `track`) these event names, or
/// every name not in `exclude`.
#[derive(Clone, Debug)]
pub struct EventFilter {
    pub kinds: Vec<String>,
    pub names: Option<Vec<String>>,
    pub exclude: Vec<String>,
}

fn events_older(f: &EventFilter, cutoff: i64) -> Condition {
    let mut c = Condition::all()
        .add(event::Column::OccurredAt.lt(cutoff))
        .add(event::Column::Kind.is_in(f.kinds.clone()));
    if let Some(names) = &f.names {
        c = c.add(event::Column::Name.is_in(names.clone()));
    }
    if !f.exclude.is_empty() {
        c = c.add(
            Condition::any()
                .add(event::Column::Name.is_null())
                .add(event::Column::Name.is_not_in(f.exclude.clone())),
        );
    }
    c
}

pub async fn count_events<C: ConnectionTrait>(
    c: &C,
    f: &EventFilter,
    cutoff: i64,
) -> Result<u64, StoreError> {
    Ok(Event::find()
        .filter(events_older(f, cutoff))
        .count(c)
        .await?)
}

pub async fn delete_events<C: ConnectionTrait>(
    c: &C,
    f: &EventFilter,
    cutoff: i64,
) -> Result<u64, StoreError> {
    Ok(Event::delete_many()
        .filter(events_older(f, cutoff))
        .exec(c)
        .await?
        .rows_affected)
}

fn traits_older(category: &str, cutoff: i64) -> Condition {
    Condition::all()
        .add(subject_trait::Column::Category.eq(category))
        .add(subject_trait::Column::UpdatedAt.lt(cutoff))
}

pub async fn count_traits<C: ConnectionTrait>(
    c: &C,
    category: &str,
    cutoff: i64,
) -> Result<u64, StoreError> {
    Ok(Trait::find()
        .filter(traits_older(category, cutoff))
        .count(c)
        .await?)
}

pub async fn delete_traits<C: ConnectionTrait>(
    c: &C,
    category: &str,
    cutoff: i64,
) -> Result<u64, StoreError> {
    Ok(Trait::delete_many()
        .filter(traits_older(category, cutoff))
        .exec(c)
        .await?
        .rows_affected)
}
