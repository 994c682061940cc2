//! Scores per subject (`rfm.*`, `propensity.purchase`, and those an external system
//! posts) and the models the gateway trained.
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
};

use super::StoreError;
use super::entity::score::{self, Entity as Score};
use super::entity::score_model::{self, Entity as ScoreModel};

#[derive(Clone, Debug, PartialEq)]
pub struct ScoreRow {
    pub subject_id: String,
    pub name: String,
    pub value: f64,
    pub model_version: String,
    /// `rfm`, `propensity`, or `external:<key id>`.
    pub source: String,
    pub computed_at: i64,
}

impl From<score::Model> for ScoreRow {
    fn from(m: score::Model) -> Self {
        Self {
            subject_id: m.subject_id,
            name: m.name,
            value: m.value,
            model_version: m.model_version,
            source: m.source,
            computed_at: m.computed_at,
        }
    }
}

/// Inserts or replaces each (subject, name).
pub async fn upsert<C: ConnectionTrait>(c: &C, rows: &[ScoreRow]) -> Result<(), StoreError> {
    for chunk in rows.chunks(500) {
        if chunk.is_empty() {
            continue;
        }
        Score::insert_many(chunk.iter().map(|r| score::ActiveModel {
            subject_id: Set(r.subject_id.clone()),
            name: Set(r.name.clone()),
            value: Set(r.value),
            model_version: Set(r.model_version.clone()),
            source: Set(r.source.clone()),
            computed_at: Set(r.computed_at),
        }))
        .on_conflict(
            OnConflict::columns([score::Column::SubjectId, score::Column::Name])
                .update_columns([
                    score::Column::Value,
                    score::Column::ModelVersion,
                    score::Column::Source,
                    score::Column::ComputedAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(c)
        .await?;
    }
    Ok(())
}

/// The scores of the subjects in `ids` (one query).
pub async fn of_subjects<C: ConnectionTrait>(
    c: &C,
    ids: &[String],
) -> Result<Vec<ScoreRow>, StoreError> {
    Ok(Score::find()
        .filter(score::Column::SubjectId.is_in(ids.iter().cloned()))
        .order_by_asc(score::Column::Name)
        .all(c)
        .await?
        .into_iter()
        .map(ScoreRow::from)
        .collect())
}

/// Drops the scores of `source` computed before `before` (a run's leftovers: people who
/// left the population since).
pub async fn drop_older<C: ConnectionTrait>(
    c: &C,
    source: &str,
    before: i64,
) -> Result<u64, StoreError> {
    Ok(Score::delete_many()
        .filter(score::Column::Source.eq(source))
        .filter(score::Column::ComputedAt.lt(before))
        .exec(c)
        .await?
        .rows_affected)
}

/// Re-points a merged subject's scores: they were computed for another person's
/// history, so they are dropped (the next run scores the merged subject).
pub async fn drop_of<C: ConnectionTrait>(c: &C, subject_id: &str) -> Result<(), StoreError> {
    Score::delete_many()
        .filter(score::Column::SubjectId.eq(subject_id))
        .exec(c)
        .await?;
    Ok(())
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelRow {
    pub version: String,
    pub kind: String,
    /// JSON list of feature names.
    pub features: String,
    /// JSON of the fitted parameters.
    pub parameters: String,
    pub auc: Option<f64>,
    pub training_rows: i64,
    pub trained_at: i64,
}

pub async fn insert_model<C: ConnectionTrait>(c: &C, m: &ModelRow) -> Result<(), StoreError> {
    ScoreModel::insert(score_model::ActiveModel {
        version: Set(m.version.clone()),
        kind: Set(m.kind.clone()),
        features: Set(m.features.clone()),
        parameters: Set(m.parameters.clone()),
        auc: Set(m.auc),
        training_rows: Set(m.training_rows),
        trained_at: Set(m.trained_at),
    })
    .exec_without_returning(c)
    .await?;
    Ok(())
}

/// The newest model of `kind`.
pub async fn latest_model<C: ConnectionTrait>(
    c: &C,
    kind: &str,
) -> Result<Option<ModelRow>, StoreError> {
    Ok(ScoreModel::find()
        .filter(score_model::Column::Kind.eq(kind))
        .order_by_desc(score_model::Column::TrainedAt)
        .order_by_desc(score_model::Column::Version)
        .one(c)
        .await?
        .map(|m| ModelRow {
            version: m.version,
            kind: m.kind,
            features: m.features,
            parameters: m.parameters,
            auc: m.auc,
            training_rows: m.training_rows,
            trained_at: m.trained_at,
        }))
}
