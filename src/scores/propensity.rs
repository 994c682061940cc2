//! Purchase propensity: the probability, in [0, 1], that a subject places an order in
//! the next `horizon` days. A logistic regression (`linfa-logistic`, L2-regularised) on
//! the features of [`super::features`], trained on the population's own history: the
//! features as they stood `horizon` days ago, labelled by whether an order followed in
//! the `horizon` days since. A fifth of the subjects (chosen by a hash of their id, so
//! the same fifth every time) is held out, and the model's AUC on them is reported and
//! stored with the model version, its features and its parameters. Every subject of the
//! population is then scored on its features now.
use linfa::prelude::*;
use linfa_logistic::LogisticRegression;
use ndarray::{Array1, Array2};
use ring::digest;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::features::{self, NAMES};
use super::{PROPENSITY, ScoreError, population, population_page};
use crate::audit::{AuditLog, NewEntry, Outcome};
use crate::domain::{Actor, Timestamp};
use crate::policy::Policies;
use crate::store::scores::{self, ModelRow, ScoreRow};
use crate::store::{Db, StoreError};

pub const KIND: &str = "propensity.purchase";
const PAGE: u64 = 1000;
/// At most this many subjects are trained on (a hash-chosen sample of a larger population).
const MAX_TRAINING: u64 = 200_000;
/// Each class needs at least this many training subjects.
const MIN_PER_CLASS: usize = 20;
const DAY_US: i64 = 86_400_000_000;

/// A trained model, as stored: scoring needs nothing else.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Model {
    pub horizon_days: u32,
    pub intercept: f64,
    pub coefficients: Vec<f64>,
    /// The training mean and standard deviation of each feature (inputs are standardised).
    pub means: Vec<f64>,
    pub stds: Vec<f64>,
}

impl Model {
    pub fn probability(&self, x: &[f64]) -> f64 {
        let z = self.intercept
            + x.iter()
                .zip(&self.coefficients)
                .zip(self.means.iter().zip(&self.stds))
                .map(|((x, w), (m, s))| w * (x - m) / s)
                .sum::<f64>();
        1.0 / (1.0 + (-z).exp())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct TrainReport {
    pub model_version: String,
    pub features: Vec<String>,
    pub coefficients: Vec<f64>,
    /// Area under the ROC curve on the held-out fifth (0.5: no better than chance).
    pub auc: f64,
    pub training_rows: u64,
    pub held_out_rows: u64,
    /// Share of training subjects who ordered in the window.
    pub base_rate: f64,
    /// Subjects scored with the new model.
    pub scored: u64,
}

/// A number in [0, 1) from the subject id, the same every time.
fn fraction(id: &str) -> f64 {
    let d = digest::digest(&digest::SHA256, id.as_bytes());
    let b = d.as_ref();
    f64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])) / (f64::from(u32::MAX) + 1.0)
}

fn held_out(id: &str) -> bool {
    let d = digest::digest(&digest::SHA256, id.as_bytes());
    d.as_ref()[31] % 5 == 0
}

/// The AUC of `scored` (score, label): the chance that a random positive scores above a
/// random negative, ties counting half (Mann-Whitney).
pub fn auc(scored: &mut [(f64, bool)]) -> f64 {
    scored.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut rank_sum, mut pos) = (0.0, 0.0);
    let mut i = 0;
    while i < scored.len() {
        let mut j = i;
        while j + 1 < scored.len() && scored[j + 1].0 == scored[i].0 {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for s in &scored[i..=j] {
            if s.1 {
                rank_sum += rank;
                pos += 1.0;
            }
        }
        i = j + 1;
    }
    let neg = scored.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return 0.5;
    }
    (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

async fn population_size(db: &Db, cond: &sea_query::Expr) -> Result<u64, StoreError> {
    use sea_query::{Alias, Query};
    let mut q = Query::select();
    q.expr(sea_query::Expr::cust("COUNT(*)"))
        .from_as(Alias::new("subjects"), Alias::new("s"))
        .and_where(cond.clone());
    let row = sea_orm::ConnectionTrait::query_one(db.conn(), &q).await?;
    let n: i64 = match row {
        Some(r) => r.try_get_by_index(0)?,
        None => 0,
    };
    Ok(u64::try_from(n).unwrap_or(0))
}

fn standardise(rows: &[[f64; 7]]) -> (Vec<f64>, Vec<f64>) {
    let n = rows.len().max(1) as f64;
    let means: Vec<f64> = (0..7)
        .map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / n)
        .collect();
    let stds = (0..7)
        .map(|j| {
            let var = rows.iter().map(|r| (r[j] - means[j]).powi(2)).sum::<f64>() / n;
            if var > 1e-12 { var.sqrt() } else { 1.0 }
        })
        .collect();
    (means, stds)
}

fn matrix(rows: &[[f64; 7]], means: &[f64], stds: &[f64]) -> Result<Array2<f64>, ScoreError> {
    let flat: Vec<f64> = rows
        .iter()
        .flat_map(|r| (0..7).map(move |j| (r[j] - means[j]) / stds[j]))
        .collect();
    Array2::from_shape_vec((rows.len(), 7), flat).map_err(|e| ScoreError::Training(e.to_string()))
}

/// Trains a model on the population's history, stores it, and scores everyone with it.
pub async fn train(
    db: &Db,
    audit: &AuditLog,
    policies: &Policies,
    actor: Actor,
    now: Timestamp,
    horizon_days: u32,
) -> Result<TrainReport, ScoreError> {
    if !(1..=365).contains(&horizon_days) {
        return Err(ScoreError::Invalid("horizon: 1 to 365 days".into()));
    }
    let at = now.unix_micros();
    let horizon = i64::from(horizon_days) * DAY_US;
    let Some(cond) = population(policies, db, at) else {
        return Err(ScoreError::NotEnoughData(
            "no purpose marked profiling with a consent basis reads user.derived.score, so nobody may be scored".into(),
        ));
    };
    let size = population_size(db, &cond).await?;
    let rate = if size > MAX_TRAINING {
        MAX_TRAINING as f64 / size as f64
    } else {
        1.0
    };
    let (mut train_x, mut train_y, mut test_x, mut test_y) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut after: Option<String> = None;
    loop {
        let ids = population_page(db, &cond, None, after.as_deref(), PAGE).await?;
        let Some(last) = ids.last().cloned() else {
            break;
        };
        after = Some(last);
        let ids: Vec<String> = ids.into_iter().filter(|id| fraction(id) < rate).collect();
        let rows = features::page(db, &ids, at - horizon, horizon).await?;
        for id in &ids {
            let Some(r) = rows.get(id) else { continue };
            if held_out(id) {
                test_x.push(r.x);
                test_y.push(r.ordered_after);
            } else {
                train_x.push(r.x);
                train_y.push(r.ordered_after);
            }
        }
    }
    let positives = train_y.iter().filter(|y| **y).count();
    let negatives = train_y.len() - positives;
    let test_pos = test_y.iter().filter(|y| **y).count();
    if positives < MIN_PER_CLASS
        || negatives < MIN_PER_CLASS
        || test_pos == 0
        || test_pos == test_y.len()
    {
        return Err(ScoreError::NotEnoughData(format!(
            "{} subjects to learn from, {positives} of them ordered in the last {horizon_days} days; need at least {MIN_PER_CLASS} who did and {MIN_PER_CLASS} who did not, and some of each held out",
            train_y.len() + test_y.len()
        )));
    }
    let (means, stds) = standardise(&train_x);
    let x = matrix(&train_x, &means, &stds)?;
    let fitted = LogisticRegression::default()
        .max_iterations(200)
        .fit(&Dataset::new(x, Array1::from(train_y.clone())))
        .map_err(|e| ScoreError::Training(e.to_string()))?;
    // linfa's probability is of its "positive" class, the more frequent one: when that
    // is "did not order", the signs flip so the stored model gives P(order).
    let sign = if fitted.labels().pos.class { 1.0 } else { -1.0 };
    let model = Model {
        horizon_days,
        intercept: sign * fitted.intercept(),
        coefficients: fitted.params().iter().map(|w| sign * w).collect(),
        means,
        stds,
    };
    // The stored parameters must give what the fitted model gives.
    let tx = matrix(&test_x, &model.means, &model.stds)?;
    let by_linfa = fitted.predict_probabilities(&tx);
    let mut scored: Vec<(f64, bool)> = Vec::with_capacity(test_x.len());
    for ((row, p), y) in test_x.iter().zip(by_linfa.iter()).zip(&test_y) {
        let mine = model.probability(row);
        let p = if sign > 0.0 { *p } else { 1.0 - p };
        if (mine - p).abs() > 1e-9 {
            return Err(ScoreError::Training(format!(
                "the stored parameters give {mine}, the fitted model {p}"
            )));
        }
        scored.push((mine, *y));
    }
    let auc = auc(&mut scored);
    let version = format!(
        "propensity-{}",
        &uuid::Uuid::now_v7().simple().to_string()[..16]
    );
    let parameters =
        serde_json::to_string(&model).map_err(|e| ScoreError::Training(e.to_string()))?;
    let txn = db.begin_write().await?;
    scores::insert_model(
        &txn,
        &ModelRow {
            version: version.clone(),
            kind: KIND.to_owned(),
            features: serde_json::to_string(&NAMES).unwrap_or_default(),
            parameters,
            auc: Some(auc),
            training_rows: train_x.len() as i64,
            trained_at: at,
        },
    )
    .await?;
    let entry = NewEntry::new(actor.clone(), "scores.train", Outcome::Ok).attributes(vec![
        format!("model:{version}"),
        format!("auc:{auc:.4}"),
        format!("training_rows:{}", train_x.len()),
        format!("held_out_rows:{}", test_x.len()),
    ]);
    audit.append(&txn, entry).await?;
    txn.commit().await.map_err(StoreError::from)?;
    let scored = score_all(db, audit, policies, actor, now, &version, &model).await?;
    Ok(TrainReport {
        model_version: version,
        features: NAMES.iter().map(|n| (*n).to_owned()).collect(),
        coefficients: model.coefficients,
        auc,
        training_rows: train_x.len() as u64,
        held_out_rows: test_x.len() as u64,
        base_rate: positives as f64 / train_x.len() as f64,
        scored,
    })
}

/// Scores the population with the newest stored model; `Ok(None)` when none is trained.
pub async fn rescore(
    db: &Db,
    audit: &AuditLog,
    policies: &Policies,
    actor: Actor,
    now: Timestamp,
) -> Result<Option<u64>, ScoreError> {
    let Some(row) = scores::latest_model(db.conn(), KIND).await? else {
        return Ok(None);
    };
    let model: Model = serde_json::from_str(&row.parameters).map_err(|e| StoreError::Corrupt {
        table: "score_models",
        reason: e.to_string(),
    })?;
    Ok(Some(
        score_all(db, audit, policies, actor, now, &row.version, &model).await?,
    ))
}

async fn score_all(
    db: &Db,
    audit: &AuditLog,
    policies: &Policies,
    actor: Actor,
    now: Timestamp,
    version: &str,
    model: &Model,
) -> Result<u64, ScoreError> {
    let at = now.unix_micros();
    let mut n = 0;
    if let Some(cond) = population(policies, db, at) {
        let mut after: Option<String> = None;
        loop {
            let ids = population_page(db, &cond, None, after.as_deref(), PAGE).await?;
            let Some(last) = ids.last().cloned() else {
                break;
            };
            after = Some(last);
            let rows = features::page(db, &ids, at, 0).await?;
            let out: Vec<ScoreRow> = ids
                .iter()
                .filter_map(|id| rows.get(id).map(|r| (id, r)))
                .map(|(id, r)| ScoreRow {
                    subject_id: id.clone(),
                    name: PROPENSITY.to_owned(),
                    value: model.probability(&r.x),
                    model_version: version.to_owned(),
                    source: "propensity".to_owned(),
                    computed_at: at,
                })
                .collect();
            let txn = db.begin_write().await?;
            scores::upsert(&txn, &out).await?;
            txn.commit().await.map_err(StoreError::from)?;
            n += out.len() as u64;
        }
    }
    let txn = db.begin_write().await?;
    let dropped = scores::drop_older(&txn, "propensity", at).await?;
    let entry = NewEntry::new(actor, "scores.propensity", Outcome::Ok).attributes(vec![
        format!("model:{version}"),
        format!("scored:{n}"),
        format!("dropped:{dropped}"),
    ]);
    audit.append(&txn, entry).await?;
    txn.commit().await.map_err(StoreError::from)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_is_one_for_a_perfect_ranking_a_half_for_ties_and_zero_reversed() {
        let mut perfect = vec![(0.1, false), (0.2, false), (0.8, true), (0.9, true)];
        assert_eq!(auc(&mut perfect), 1.0);
        let mut ties = vec![(0.5, false), (0.5, true), (0.5, false), (0.5, true)];
        assert_eq!(auc(&mut ties), 0.5);
        let mut reversed = vec![(0.9, false), (0.1, true)];
        assert_eq!(auc(&mut reversed), 0.0);
        let mut mixed = vec![(0.1, false), (0.4, true), (0.35, false), (0.8, true)];
        assert_eq!(auc(&mut mixed), 1.0);
        let mut one_wrong = vec![(0.1, false), (0.4, true), (0.5, false), (0.8, true)];
        assert_eq!(auc(&mut one_wrong), 0.75);
    }
}
