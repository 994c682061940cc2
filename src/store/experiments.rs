//! Experiments and their exposures.
use sea_orm::sea_query::{Alias, Expr, ExprTrait, JoinType, OnConflict, Query};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

use super::StoreError;
use super::entity::campaign;
use super::entity::experiment::{self, Entity as Experiment};
use super::entity::experiment_exposure::{self, Entity as Exposure};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExperimentRow {
    pub id: String,
    pub name: String,
    pub purpose: String,
    pub recipient_id: String,
    /// JSON array of variants.
    pub variants: String,
    pub holdout: i32,
    pub control: String,
    pub key_version: i32,
    pub created_by: String,
    pub created_at: i64,
}

impl From<experiment::Model> for ExperimentRow {
    fn from(m: experiment::Model) -> Self {
        Self {
            id: m.id,
            name: m.name,
            purpose: m.purpose,
            recipient_id: m.recipient_id,
            variants: m.variants,
            holdout: m.holdout,
            control: m.control,
            key_version: m.key_version,
            created_by: m.created_by,
            created_at: m.created_at,
        }
    }
}

/// One subject's exposure: the variant shown (or `holdout`), by which campaign, when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExposureRow {
    pub experiment_id: String,
    pub subject_id: String,
    pub variant: String,
    pub campaign_id: String,
    pub exposed_at: i64,
}

impl From<experiment_exposure::Model> for ExposureRow {
    fn from(m: experiment_exposure::Model) -> Self {
        Self {
            experiment_id: m.experiment_id,
            subject_id: m.subject_id,
            variant: m.variant,
            campaign_id: m.campaign_id,
            exposed_at: m.exposed_at,
        }
    }
}

/// An event of an exposed subject that happened at or after their exposure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub subject_id: String,
    pub variant: String,
    pub event: String,
    /// The stored JSON properties.
    pub properties: String,
}

pub async fn insert<C: ConnectionTrait>(c: &C, r: &ExperimentRow) -> Result<(), StoreError> {
    Experiment::insert(experiment::ActiveModel {
        id: Set(r.id.clone()),
        name: Set(r.name.clone()),
        purpose: Set(r.purpose.clone()),
        recipient_id: Set(r.recipient_id.clone()),
        variants: Set(r.variants.clone()),
        holdout: Set(r.holdout),
        control: Set(r.control.clone()),
        key_version: Set(r.key_version),
        created_by: Set(r.created_by.clone()),
        created_at: Set(r.created_at),
    })
    .exec_without_returning(c)
    .await?;
    Ok(())
}

pub async fn get<C: ConnectionTrait>(c: &C, id: &str) -> Result<Option<ExperimentRow>, StoreError> {
    Ok(Experiment::find_by_id(id.to_owned())
        .one(c)
        .await?
        .map(ExperimentRow::from))
}

/// Records exposures; a subject already exposed to the experiment keeps their first one.
pub async fn expose<C: ConnectionTrait>(c: &C, rows: &[ExposureRow]) -> Result<(), StoreError> {
    for chunk in rows.chunks(200) {
        if chunk.is_empty() {
            continue;
        }
        Exposure::insert_many(chunk.iter().map(|r| experiment_exposure::ActiveModel {
            experiment_id: Set(r.experiment_id.clone()),
            subject_id: Set(r.subject_id.clone()),
            variant: Set(r.variant.clone()),
            campaign_id: Set(r.campaign_id.clone()),
            exposed_at: Set(r.exposed_at),
        }))
        .on_conflict(
            OnConflict::columns([
                experiment_exposure::Column::ExperimentId,
                experiment_exposure::Column::SubjectId,
            ])
            .do_nothing()
            .to_owned(),
        )
        .exec_without_returning(c)
        .await?;
    }
    Ok(())
}

/// How many subjects were exposed to each variant (and `holdout`).
pub async fn exposure_counts<C: ConnectionTrait>(
    c: &C,
    experiment_id: &str,
) -> Result<Vec<(String, i64)>, StoreError> {
    Ok(Exposure::find()
        .select_only()
        .column(experiment_exposure::Column::Variant)
        .column_as(experiment_exposure::Column::SubjectId.count(), "n")
        .filter(experiment_exposure::Column::ExperimentId.eq(experiment_id))
        .group_by(experiment_exposure::Column::Variant)
        .into_tuple()
        .all(c)
        .await?)
}

/// The campaigns that run the experiment.
pub async fn campaigns_of<C: ConnectionTrait>(
    c: &C,
    experiment_id: &str,
) -> Result<Vec<String>, StoreError> {
    Ok(campaign::Entity::find()
        .select_only()
        .column(campaign::Column::Id)
        .filter(campaign::Column::ExperimentId.eq(experiment_id))
        .into_tuple()
        .all(c)
        .await?)
}

/// Every `events` row named one of `names` of a subject exposed to the experiment, at or
/// after their exposure, with the variant they were shown.
pub async fn outcomes<C: ConnectionTrait>(
    c: &C,
    experiment_id: &str,
    names: &[&str],
) -> Result<Vec<Outcome>, StoreError> {
    let x = Alias::new("x");
    let e = Alias::new("e");
    let col = |t: &Alias, n: &str| (t.clone(), Alias::new(n));
    let mut q = Query::select();
    q.column(col(&x, "subject_id"))
        .column(col(&x, "variant"))
        .column(col(&e, "name"))
        .column(col(&e, "properties"))
        .from_as(Alias::new("experiment_exposures"), x.clone())
        .join_as(
            JoinType::InnerJoin,
            Alias::new("events"),
            e.clone(),
            Expr::col(col(&e, "subject_id")).equals(col(&x, "subject_id")),
        )
        .and_where(Expr::col(col(&x, "experiment_id")).eq(experiment_id.to_owned()))
        .and_where(Expr::col(col(&e, "name")).is_in(names.iter().map(|n| (*n).to_owned())))
        .and_where(Expr::col(col(&e, "occurred_at")).gte(Expr::col(col(&x, "exposed_at"))));
    let rows = c.query_all(&q).await?;
    rows.into_iter()
        .map(|r| {
            Ok(Outcome {
                subject_id: r.try_get_by_index(0)?,
                variant: r.try_get_by_index(1)?,
                event: r.try_get_by_index(2)?,
                properties: r.try_get_by_index(3)?,
            })
        })
        .collect::<Result<Vec<_>, sea_orm::DbErr>>()
        .map_err(StoreError::from)
}

/// A subject's exposures, oldest first (for access requests).
pub async fn of_subject<C: ConnectionTrait>(
    c: &C,
    subject_id: &str,
) -> Result<Vec<ExposureRow>, StoreError> {
    Ok(Exposure::find()
        .filter(experiment_exposure::Column::SubjectId.eq(subject_id))
        .order_by_asc(experiment_exposure::Column::ExposedAt)
        .all(c)
        .await?
        .into_iter()
        .map(ExposureRow::from)
        .collect())
}

/// Moves `from`'s exposures to `into` when two subjects merge (their events move too);
/// where `into` was already exposed to the same experiment, its own exposure stays.
pub async fn repoint<C: ConnectionTrait>(c: &C, from: &str, into: &str) -> Result<(), StoreError> {
    let moved: Vec<ExposureRow> = of_subject(c, from)
        .await?
        .into_iter()
        .map(|r| ExposureRow {
            subject_id: into.to_owned(),
            ..r
        })
        .collect();
    if moved.is_empty() {
        return Ok(());
    }
    Exposure::delete_many()
        .filter(experiment_exposure::Column::SubjectId.eq(from))
        .exec(c)
        .await?;
    expose(c, &moved).await
}
