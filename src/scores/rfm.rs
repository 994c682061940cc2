//! RFM: each buyer of the population gets `rfm.recency`, `rfm.frequency` and
//! `rfm.monetary`, 1 to 5, the quintile of their last purchase time, purchase count and
//! lifetime value among the population's buyers (5: the most recent, most frequent,
//! highest spending fifth; equal values share a score), and `rfm.score`, 0 to 100:
//! `(R + F + M - 3) / 12 * 100`, rounded. People who never bought get no RFM scores.
use sea_query::{Alias, Expr, ExprTrait, Order, Query};
use serde::Serialize;
use utoipa::ToSchema;

use super::{RFM, ScoreError, population};
use crate::audit::{AuditLog, NewEntry, Outcome};
use crate::domain::{Actor, Timestamp};
use crate::policy::Policies;
use crate::store::scores::{self, ScoreRow};
use crate::store::{Db, StoreError};

pub const MODEL_VERSION: &str = "rfm-quintiles-1";
const PAGE: u64 = 5000;

#[derive(Clone, Debug, Default, PartialEq, Serialize, ToSchema)]
pub struct RfmReport {
    /// Buyers scored.
    pub scored: u64,
    /// Scores dropped: people no longer in the population (or no longer buyers).
    pub dropped: u64,
    /// The upper bounds of the first four fifths: last purchase (RFC 3339), purchase
    /// count, lifetime value.
    pub recency_cuts: Vec<String>,
    pub frequency_cuts: Vec<f64>,
    pub monetary_cuts: Vec<f64>,
}

struct Buyer {
    id: String,
    last: i64,
    count: i64,
    value: f64,
}

async fn buyers(db: &Db, cond: &Expr, after: Option<&str>) -> Result<Vec<Buyer>, StoreError> {
    let a = |c: &str| Expr::col((Alias::new("a"), Alias::new(c)));
    let mut q = Query::select();
    q.column((Alias::new("s"), Alias::new("id")))
        .expr(a("last_purchase_at"))
        .expr(a("purchase_count"))
        .expr(a("lifetime_value"))
        .from_as(Alias::new("subjects"), Alias::new("s"))
        .join_as(
            sea_query::JoinType::InnerJoin,
            Alias::new("aggregates"),
            Alias::new("a"),
            a("subject_id").equals((Alias::new("s"), Alias::new("id"))),
        )
        .and_where(cond.clone())
        .and_where(a("purchase_count").gt(0))
        .and_where(a("last_purchase_at").is_not_null());
    if let Some(after) = after {
        q.and_where(Expr::col((Alias::new("s"), Alias::new("id"))).gt(after.to_owned()));
    }
    q.order_by((Alias::new("s"), Alias::new("id")), Order::Asc)
        .limit(PAGE);
    let rows = sea_orm::ConnectionTrait::query_all(db.conn(), &q).await?;
    rows.into_iter()
        .map(|r| {
            Ok(Buyer {
                id: r.try_get_by_index(0)?,
                last: r.try_get_by_index(1)?,
                count: r.try_get_by_index(2)?,
                value: r.try_get_by_index(3)?,
            })
        })
        .collect()
}

/// The upper bound of each of the first four fifths of `v` (sorted here).
fn cuts(mut v: Vec<f64>) -> Vec<f64> {
    if v.is_empty() {
        return Vec::new();
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    (1..5)
        .map(|i| v[((n * i).div_ceil(5)).saturating_sub(1).min(n - 1)])
        .collect()
}

/// 1 + how many cuts `x` is above.
fn quintile(x: f64, cuts: &[f64]) -> f64 {
    1.0 + cuts.iter().filter(|c| x > **c).count() as f64
}

/// Computes every buyer's RFM scores over the population now, replacing the last run's.
pub async fn compute(
    db: &Db,
    audit: &AuditLog,
    policies: &Policies,
    actor: Actor,
    now: Timestamp,
) -> Result<RfmReport, ScoreError> {
    let at = now.unix_micros();
    let mut report = RfmReport::default();
    if let Some(cond) = population(policies, db, at) {
        // Pass one: the cut points.
        let (mut last, mut count, mut value) = (Vec::new(), Vec::new(), Vec::new());
        let mut after: Option<String> = None;
        loop {
            let page = buyers(db, &cond, after.as_deref()).await?;
            let Some(b) = page.last() else { break };
            after = Some(b.id.clone());
            for b in page {
                last.push(b.last as f64);
                count.push(b.count as f64);
                value.push(b.value);
            }
        }
        let (r_cuts, f_cuts, m_cuts) = (cuts(last), cuts(count), cuts(value));
        // Pass two: the scores, a page per transaction.
        let mut after: Option<String> = None;
        loop {
            let page = buyers(db, &cond, after.as_deref()).await?;
            let Some(b) = page.last() else { break };
            after = Some(b.id.clone());
            let mut rows = Vec::with_capacity(page.len() * 4);
            for b in &page {
                let r = quintile(b.last as f64, &r_cuts);
                let f = quintile(b.count as f64, &f_cuts);
                let m = quintile(b.value, &m_cuts);
                let total = ((r + f + m - 3.0) / 12.0 * 100.0).round();
                for (name, v) in RFM.iter().zip([r, f, m, total]) {
                    rows.push(ScoreRow {
                        subject_id: b.id.clone(),
                        name: (*name).to_owned(),
                        value: v,
                        model_version: MODEL_VERSION.to_owned(),
                        source: "rfm".to_owned(),
                        computed_at: at,
                    });
                }
            }
            let txn = db.begin_write().await?;
            scores::upsert(&txn, &rows).await?;
            txn.commit().await.map_err(StoreError::from)?;
            report.scored += page.len() as u64;
        }
        report.recency_cuts = r_cuts
            .iter()
            .map(|t| Timestamp::from_unix_micros(*t as i64).to_rfc3339())
            .collect();
        report.frequency_cuts = f_cuts;
        report.monetary_cuts = m_cuts;
    }
    let txn = db.begin_write().await?;
    report.dropped = scores::drop_older(&txn, "rfm", at).await?;
    let entry = NewEntry::new(actor, "scores.rfm", Outcome::Ok).attributes(vec![
        format!("scored:{}", report.scored),
        format!("dropped:{}", report.dropped),
        format!("model:{MODEL_VERSION}"),
    ]);
    audit.append(&txn, entry).await?;
    txn.commit().await.map_err(StoreError::from)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quintiles_split_distinct_values_in_fifths_and_ties_share_a_score() {
        let c = cuts((1..=10).map(f64::from).collect());
        assert_eq!(c, vec![2.0, 4.0, 6.0, 8.0]);
        let scores: Vec<f64> = (1..=10).map(|x| quintile(f64::from(x), &c)).collect();
        assert_eq!(scores, vec![1., 1., 2., 2., 3., 3., 4., 4., 5., 5.]);
        let c = cuts(vec![1.0; 7].into_iter().chain([5.0, 9.0]).collect());
        assert_eq!(quintile(1.0, &c), 1.0);
        assert_eq!(c, vec![1.0, 1.0, 1.0, 5.0]);
        assert_eq!(quintile(5.0, &c), 4.0);
        assert_eq!(quintile(9.0, &c), 5.0);
        assert!(cuts(Vec::new()).is_empty());
        assert_eq!(quintile(3.0, &[]), 1.0);
    }
}
