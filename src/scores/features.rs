//! The features of the purchase-propensity model, computed from a subject's events as
//! they stood at a cut-off time (training uses a cut-off in the past and labels what
//! happened after it; scoring uses now). One grouped query per page of subjects.
use std::collections::HashMap;

use sea_query::{Alias, Expr, ExprTrait, Func, Query};

use crate::store::{Db, StoreError};

/// The model's inputs, in order (the stored model lists them under these names).
pub const NAMES: [&str; 7] = [
    "days_since_last_order",
    "log_orders",
    "orders_90d",
    "days_since_last_email_open",
    "days_since_last_email_click",
    "days_since_last_view",
    "log_views_30d",
];

/// A gap longer than this (days), or none at all, counts as this.
const CAP_DAYS: f64 = 365.0;
const DAY_US: i64 = 86_400_000_000;

/// One subject's features at the cut-off, and whether it ordered in the window after it.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub x: [f64; 7],
    pub ordered_after: bool,
}

fn col(c: &str) -> Expr {
    Expr::col((Alias::new("e"), Alias::new(c)))
}

fn named(name: &str) -> Expr {
    col("name").eq(name.to_owned())
}

fn viewed() -> Expr {
    col("kind").eq("page").or(named("Product Viewed"))
}

fn when(cond: Expr, then: Expr) -> Expr {
    Expr::case(cond, then)
        .finally(Expr::Value(sea_query::Value::BigInt(None)))
        .into()
}

/// How many events meet `cond` (COUNT, which is an integer on both databases, where
/// SUM of a bigint is a numeric on PostgreSQL).
fn count_if(cond: Expr) -> Expr {
    Func::count(when(cond, Expr::val(1i64))).into()
}

/// The features of `ids` at `cut` (µs), with the label for the window `(cut, cut + horizon]`.
pub async fn page(
    db: &Db,
    ids: &[String],
    cut: i64,
    horizon_us: i64,
) -> Result<HashMap<String, Row>, StoreError> {
    let at = col("occurred_at");
    let before = at.clone().lte(cut);
    let mut q = Query::select();
    q.column((Alias::new("e"), Alias::new("subject_id")))
        .expr(Func::max(when(
            named("Order Completed").and(before.clone()),
            at.clone(),
        )))
        .expr(count_if(named("Order Completed").and(before.clone())))
        .expr(count_if(
            named("Order Completed")
                .and(before.clone())
                .and(at.clone().gt(cut - 90 * DAY_US)),
        ))
        .expr(Func::max(when(
            named("Email Opened").and(before.clone()),
            at.clone(),
        )))
        .expr(Func::max(when(
            named("Email Link Clicked").and(before.clone()),
            at.clone(),
        )))
        .expr(Func::max(when(viewed().and(before.clone()), at.clone())))
        .expr(count_if(
            viewed()
                .and(before.clone())
                .and(at.clone().gt(cut - 30 * DAY_US)),
        ))
        .expr(count_if(
            named("Order Completed")
                .and(at.clone().gt(cut))
                .and(at.lte(cut.saturating_add(horizon_us))),
        ))
        .from_as(Alias::new("events"), Alias::new("e"))
        .and_where(col("subject_id").is_in(ids.iter().cloned()))
        .group_by_col((Alias::new("e"), Alias::new("subject_id")));
    let rows = sea_orm::ConnectionTrait::query_all(db.conn(), &q).await?;
    let days = |t: Option<i64>| -> f64 {
        t.map_or(CAP_DAYS, |t| {
            ((cut - t) as f64 / DAY_US as f64).clamp(0.0, CAP_DAYS)
        })
    };
    let mut out = HashMap::with_capacity(ids.len());
    for r in rows {
        let id: String = r.try_get_by_index(0)?;
        let n = |i: usize| -> Result<f64, StoreError> {
            Ok(r.try_get_by_index::<Option<i64>>(i)?.unwrap_or(0) as f64)
        };
        let t = |i: usize| -> Result<Option<i64>, StoreError> { Ok(r.try_get_by_index(i)?) };
        let x = [
            days(t(1)?),
            n(2)?.ln_1p(),
            n(3)?,
            days(t(4)?),
            days(t(5)?),
            days(t(6)?),
            n(7)?.ln_1p(),
        ];
        out.insert(
            id,
            Row {
                x,
                ordered_after: n(8)? > 0.0,
            },
        );
    }
    // Subjects without events: no history at all.
    for id in ids {
        out.entry(id.clone()).or_insert(Row {
            x: [CAP_DAYS, 0.0, 0.0, CAP_DAYS, CAP_DAYS, CAP_DAYS, 0.0],
            ordered_after: false,
        });
    }
    Ok(out)
}
