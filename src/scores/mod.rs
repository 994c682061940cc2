//! Scores: RFM (quintiles of recency, frequency and monetary value over the population
//! that may be profiled) and purchase propensity (a logistic regression trained here on
//! the subjects' own history), both computed on a schedule and on demand; and scores an
//! external ML system posts. All are of the category `user.derived.score`, which only a
//! purpose marked `profiling` with a consent legal basis may read (Art. 22).
//!
//! The population is every active, unrestricted subject for whom at least one profiling
//! purpose that reads scores is lawful now (its consent granted, no objection); a
//! subject who leaves it loses the gateway's scores at the next run, and the gate's own
//! conditions apply again whenever a score is read.
pub mod external;
pub mod features;
pub mod propensity;
pub mod rfm;

use sea_query::{Alias, Expr, ExprTrait, Order, Query, SelectStatement};

use crate::audit::AuditError;
use crate::policy::gate::audience::{dialect, purpose_condition};
use crate::policy::{LegalBasis, Policies};
use crate::store::{Db, StoreError};

pub const CATEGORY: &str = crate::policy::gate::SCORE_CATEGORY;
pub const RFM: [&str; 4] = ["rfm.recency", "rfm.frequency", "rfm.monetary", "rfm.score"];
pub const PROPENSITY: &str = "propensity.purchase";

#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    #[error("{0}")]
    Invalid(String),
    /// Too little history to train on; the message says how much there is.
    #[error("{0}")]
    NotEnoughData(String),
    #[error("no subject has that identifier")]
    UnknownSubject,
    #[error("training failed: {0}")]
    Training(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

impl From<sea_orm::DbErr> for ScoreError {
    fn from(e: sea_orm::DbErr) -> Self {
        Self::Store(e.into())
    }
}

/// Whether `name` is a score the gateway computes itself (not postable).
pub fn computed_here(name: &str) -> bool {
    RFM.contains(&name) || name == PROPENSITY
}

/// The condition on `s` (subjects) for the population that may be scored at `now` (for
/// a purpose with a minimum age, only people with no age on record), or `None` when no
/// profiling purpose reads scores (then nobody is scored).
pub fn population(policies: &Policies, db: &Db, now: i64) -> Option<Expr> {
    let d = dialect(db.backend());
    policies
        .purposes
        .purposes
        .iter()
        .filter(|p| p.profiling && p.legal_basis == LegalBasis::Consent && p.may_read(CATEGORY))
        .map(|p| {
            let c = purpose_condition(p, d, now);
            // A date of birth is sealed, so only the gate can tell whether a person is
            // old enough for a purpose with a minimum age: such a purpose scores only the
            // people with no age on record, never a minor.
            if p.minimum_age.is_some() {
                c.and(crate::policy::gate::audience::age_data().not())
            } else {
                c
            }
        })
        .reduce(|a, b| a.or(b))
}

/// Up to `limit` ids of the population after `after`, in order.
pub(crate) async fn population_page(
    db: &Db,
    cond: &Expr,
    extra: Option<Expr>,
    after: Option<&str>,
    limit: u64,
) -> Result<Vec<String>, StoreError> {
    let mut q: SelectStatement = Query::select();
    q.column((Alias::new("s"), Alias::new("id")))
        .from_as(Alias::new("subjects"), Alias::new("s"))
        .and_where(cond.clone());
    if let Some(e) = extra {
        q.and_where(e);
    }
    if let Some(a) = after {
        q.and_where(Expr::col((Alias::new("s"), Alias::new("id"))).gt(a.to_owned()));
    }
    q.order_by((Alias::new("s"), Alias::new("id")), Order::Asc)
        .limit(limit);
    let c = db.conn();
    let rows = sea_orm::ConnectionTrait::query_all(c, &q).await?;
    rows.into_iter()
        .map(|r| r.try_get_by_index::<String>(0).map_err(StoreError::from))
        .collect()
}

/// What a scoring run did: RFM, and the propensity model trained (or, without enough
/// history, why not, and how many were scored with the last model instead).
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ComputeReport {
    pub rfm: rfm::RfmReport,
    pub propensity: Option<propensity::TrainReport>,
    /// Why no model was trained this time.
    pub propensity_skipped: Option<String>,
    /// Subjects scored with the last stored model when none was trained.
    pub rescored_with_last_model: Option<u64>,
}

/// RFM, then a fresh propensity model (or the last one when there is too little history).
pub async fn compute_all(
    db: &Db,
    audit: &crate::audit::AuditLog,
    policies: &Policies,
    actor: crate::domain::Actor,
    now: crate::domain::Timestamp,
) -> Result<ComputeReport, ScoreError> {
    let rfm = rfm::compute(db, audit, policies, actor.clone(), now).await?;
    let trained = propensity::train(db, audit, policies, actor.clone(), now, 30).await;
    let (propensity, skipped, rescored) = match trained {
        Ok(r) => (Some(r), None, None),
        Err(ScoreError::NotEnoughData(why)) => {
            let n = propensity::rescore(db, audit, policies, actor, now).await?;
            (None, Some(why), n)
        }
        Err(e) => return Err(e),
    };
    Ok(ComputeReport {
        rfm,
        propensity,
        propensity_skipped: skipped,
        rescored_with_last_model: rescored,
    })
}
