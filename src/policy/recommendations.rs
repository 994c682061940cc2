//! Recommendation blocks through the gate, and the models behind them.
//!
//! Guarantees:
//! - a block is made only for a person the gate lets through for the grant's purpose, and
//!   only from the events of categories that purpose reads; a purpose that reads neither
//!   browsing nor purchase history gets no block at all;
//! - a purpose's model (pairs bought by the same people, popularity) is trained only
//!   from the subjects that purpose may process now (for a purpose with a minimum age,
//!   only those with no age on record: the gate alone can read a date of birth), holds
//!   counts and product ids only,
//!   keeps a pair only when at least two people bought both, and replaces the previous
//!   model in one transaction, audited;
//! - only available catalogue products are recommended.
use std::collections::{HashMap, HashSet};

use serde::Serialize;
use utoipa::ToSchema;

use crate::audit::{AuditError, AuditLog, NewEntry, Outcome};
use crate::crypto::{Keyring, MasterKey};
use crate::domain::{Actor, Timestamp};
use crate::policy::gate::audience::{dialect, purpose_condition};
use crate::policy::gate::{Gate, GateError, MinimisedProfile, PurposeGrant, minimised_events_of};
use crate::policy::{Policies, Purpose};
use crate::rendering::recommend::{
    self, CoOccurrence, INTEREST_EVENTS, ORDER_EVENT, Reason, Recommendation, Strategy,
};
use crate::store::catalog::{self, ModelRow, ProductRow};
use crate::store::{Db, StoreError, profiles};
use sea_query::ExprTrait;

#[derive(Debug, thiserror::Error)]
pub enum RecommendError {
    #[error("{0}")]
    Invalid(String),
    /// The purpose reads neither browsing nor purchase history.
    #[error(
        "purpose {0} reads neither browsing nor purchase history, so it may not have recommendations; use a purpose that reads user.behavior.browsing_history or user.behavior.purchase_history"
    )]
    NotBehavioural(String),
    #[error(transparent)]
    Gate(#[from] GateError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

impl From<sea_orm::DbErr> for RecommendError {
    fn from(e: sea_orm::DbErr) -> Self {
        Self::Store(e.into())
    }
}

const BROWSING: &str = "user.behavior.browsing_history";
const PURCHASE: &str = "user.behavior.purchase_history";
/// Bestsellers kept in memory per block maker.
const POPULAR: u64 = 200;

/// Whether recommendations may be made for `p`: it reads browsing or purchase history.
pub fn behavioural(p: &Purpose) -> bool {
    p.may_read(BROWSING) || p.may_read(PURCHASE)
}

/// The event names a block reads for `p`.
fn names(p: &Purpose) -> Vec<&'static str> {
    let mut n = Vec::new();
    if p.may_read(BROWSING) {
        n.extend(INTEREST_EVENTS);
    }
    if p.may_read(PURCHASE) {
        n.push(ORDER_EVENT);
    }
    n
}

/// What a block discloses about the person, for the disclosure record.
pub const DISCLOSED: &str = "recommendations";

fn recommendation(p: &ProductRow, reason: Reason) -> Recommendation {
    Recommendation {
        id: p.id.clone(),
        name: p.name.clone(),
        product_name: p.name.clone(),
        url: p.url.clone(),
        image_url: p.image_url.clone(),
        price: p.price,
        currency: p.currency.clone(),
        reason,
    }
}

/// Makes blocks for one grant: the purpose's bestsellers loaded once.
pub struct Recommender<'a> {
    db: &'a Db,
    grant: &'a PurposeGrant,
    popular: Vec<String>,
    products: HashMap<String, ProductRow>,
}

impl<'a> Recommender<'a> {
    pub async fn new(db: &'a Db, grant: &'a PurposeGrant) -> Result<Self, StoreError> {
        let c = db.conn();
        let (popular, products) = if behavioural(grant.purpose()) {
            let ids: Vec<String> = catalog::popular(c, &grant.purpose().name, POPULAR)
                .await?
                .into_iter()
                .map(|(id, _)| id)
                .collect();
            let products = catalog::available(c, &ids).await?;
            let popular = ids
                .into_iter()
                .filter(|i| products.contains_key(i))
                .collect();
            (popular, products)
        } else {
            (Vec::new(), HashMap::new())
        };
        Ok(Self {
            db,
            grant,
            popular,
            products,
        })
    }

    /// A block of at most `limit` products for each member (subject id and its view for
    /// the same grant), by subject id; empty for a purpose that is not behavioural.
    pub async fn for_members(
        &self,
        members: &[(&str, &MinimisedProfile)],
        strategy: Strategy,
        limit: usize,
    ) -> Result<HashMap<String, Vec<Recommendation>>, StoreError> {
        let mut out = HashMap::with_capacity(members.len());
        let p = self.grant.purpose();
        let limit = limit.min(recommend::MAX_LIMIT);
        if !behavioural(p) || strategy == Strategy::None || limit == 0 {
            return Ok(out);
        }
        let c = self.db.conn();
        let wanted = names(p);
        // Even bestsellers need the events: what the person bought is left out.
        let events = minimised_events_of(c, self.grant, members, &wanted).await?;
        let signals: HashMap<&str, recommend::Signals> = members
            .iter()
            .map(|(s, _)| {
                let sig = events
                    .get(*s)
                    .map(|e| recommend::signals(e))
                    .unwrap_or_default();
                (*s, sig)
            })
            .collect();
        let bought: Vec<String> = signals
            .values()
            .flat_map(|s| s.bought.iter().cloned())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let mut pairs: HashMap<String, Vec<(String, i64)>> = HashMap::new();
        if !bought.is_empty() && p.may_read(PURCHASE) {
            for (a, b, w) in catalog::pairs_of(c, &p.name, &bought).await? {
                pairs.entry(a).or_default().push((b, w));
            }
        }
        // Enough candidates per person that unavailable ones can be skipped.
        let keep = limit * 4 + 8;
        let candidates: HashMap<&str, Vec<(String, Reason)>> = signals
            .iter()
            .map(|(s, sig)| {
                let mut c = recommend::candidates(sig, &pairs, &self.popular, strategy);
                c.truncate(keep + self.popular.len().min(limit));
                (*s, c)
            })
            .collect();
        let unknown: Vec<String> = candidates
            .values()
            .flatten()
            .map(|(id, _)| id)
            .filter(|id| !self.products.contains_key(*id))
            .cloned()
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let fetched = catalog::available(c, &unknown).await?;
        for (subject, list) in candidates {
            let block: Vec<Recommendation> = list
                .iter()
                .filter_map(|(id, reason)| {
                    self.products
                        .get(id)
                        .or_else(|| fetched.get(id))
                        .map(|p| recommendation(p, *reason))
                })
                .take(limit)
                .collect();
            out.insert(subject.to_owned(), block);
        }
        Ok(out)
    }
}

/// One person's block, for the recipient that knows them by a pseudonym.
pub struct Recommendations<'a> {
    pub db: &'a Db,
    pub master: &'a MasterKey,
    pub keyring: &'a Keyring,
    pub audit: &'a AuditLog,
    pub actor: Actor,
    pub request_id: Option<String>,
    pub now: Timestamp,
}

impl Recommendations<'_> {
    /// At most `limit` products for the person the grant's recipient knows by
    /// `pseudonym`: the gate's 404 for a person who may not be disclosed; recorded as a
    /// disclosure (`recommendations`) before it is returned.
    pub async fn for_pseudonym(
        &self,
        grant: &PurposeGrant,
        pseudonym: &str,
        strategy: Strategy,
        limit: usize,
    ) -> Result<Vec<Recommendation>, RecommendError> {
        if !behavioural(grant.purpose()) {
            return Err(RecommendError::NotBehavioural(grant.purpose().name.clone()));
        }
        if limit == 0 || limit > recommend::MAX_LIMIT {
            return Err(RecommendError::Invalid(format!(
                "limit: 1 to {}",
                recommend::MAX_LIMIT
            )));
        }
        let gate = Gate {
            db: self.db,
            master: self.master,
            keyring: self.keyring,
            audit: self.audit,
            actor: self.actor.clone(),
            request_id: self.request_id.clone(),
            now: self.now,
        };
        let action = "disclosure.recommendations";
        let (subject, view) = gate.admit(grant, pseudonym, action).await?;
        let mut blocks = Recommender::new(self.db, grant)
            .await?
            .for_members(&[(subject.as_str(), &view)], strategy, limit)
            .await?;
        let block = blocks.remove(&subject).unwrap_or_default();
        gate.recorded(grant, &subject, vec![DISCLOSED.to_owned()], action)
            .await?;
        Ok(block)
    }
}

/// What training did for one purpose.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ModelReport {
    pub purpose: String,
    /// People whose history was counted.
    pub subjects: i64,
    /// Products counted.
    pub products: i64,
    /// Pairs kept (each product's top neighbours, each bought by at least two people).
    pub pairs: i64,
    pub trained_at: String,
}

impl From<ModelRow> for ModelReport {
    fn from(m: ModelRow) -> Self {
        Self {
            purpose: m.purpose,
            subjects: m.subjects,
            products: m.products,
            pairs: m.pairs,
            trained_at: Timestamp::from_unix_micros(m.trained_at).to_rfc3339(),
        }
    }
}

/// Trains the model of every behavioural purpose from the subjects it may process now.
pub async fn train_all(
    db: &Db,
    audit: &AuditLog,
    policies: &Policies,
    actor: Actor,
    now: Timestamp,
) -> Result<Vec<ModelReport>, RecommendError> {
    let mut out = Vec::new();
    for p in policies.purposes.purposes.iter().filter(|p| behavioural(p)) {
        out.push(train(db, audit, p, actor.clone(), now).await?);
    }
    Ok(out)
}

async fn train(
    db: &Db,
    audit: &AuditLog,
    p: &Purpose,
    actor: Actor,
    now: Timestamp,
) -> Result<ModelReport, RecommendError> {
    let mut cond = purpose_condition(p, dialect(db.backend()), now.unix_micros());
    // A date of birth is sealed, so only the gate can tell whether a person is old
    // enough for a purpose with a minimum age: for such a purpose the people whose age is
    // on record are left out of its model rather than opened one by one.
    if p.minimum_age.is_some() {
        cond = cond.and(crate::policy::gate::audience::age_data().not());
    }
    // Pairs from purchases; a purpose that reads only browsing counts views.
    let purchases = p.may_read(PURCHASE);
    let wanted: Vec<&str> = if purchases {
        vec![ORDER_EVENT]
    } else {
        INTEREST_EVENTS.to_vec()
    };
    let mut counter = CoOccurrence::default();
    let mut after: Option<String> = None;
    loop {
        let ids = crate::scores::population_page(db, &cond, None, after.as_deref(), 2_000).await?;
        let Some(last) = ids.last().cloned() else {
            break;
        };
        after = Some(last);
        let mut by_subject: HashMap<String, Vec<(i64, Vec<String>)>> = HashMap::new();
        for (subject, _name, properties, at) in
            profiles::named_events_of_many(db.conn(), &ids, &wanted).await?
        {
            let props: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&properties).unwrap_or_default();
            let products = if purchases {
                recommend::ordered(&props)
            } else {
                recommend::product_id(&props).into_iter().collect()
            };
            by_subject.entry(subject).or_default().push((at, products));
        }
        for (_, mut events) in by_subject {
            events.sort_by_key(|e| std::cmp::Reverse(e.0));
            let products: Vec<String> = events.into_iter().flat_map(|(_, p)| p).collect();
            counter.add_person(&products, purchases);
        }
    }
    let trained = counter.finish();
    let row = ModelRow {
        purpose: p.name.clone(),
        subjects: i64::try_from(trained.subjects).unwrap_or(i64::MAX),
        products: i64::try_from(trained.popularity.len()).unwrap_or(i64::MAX),
        pairs: i64::try_from(trained.pairs.len()).unwrap_or(i64::MAX),
        trained_at: now.unix_micros(),
    };
    let txn = db.begin_write().await?;
    catalog::replace_model(&txn, &row, &trained.pairs, &trained.popularity).await?;
    let entry = NewEntry {
        purpose: Some(p.name.clone()),
        ..NewEntry::new(actor, "recommendations.train", Outcome::Ok).attributes(vec![
            format!("subjects:{}", row.subjects),
            format!("products:{}", row.products),
            format!("pairs:{}", row.pairs),
        ])
    };
    audit.append(&txn, entry).await?;
    txn.commit().await.map_err(StoreError::from)?;
    Ok(row.into())
}
