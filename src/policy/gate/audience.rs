//! Audiences: a segment's condition (compiled by `segmentation`) run in the database with
//! the gate's own conditions in the same query — an active subject, not restricted, the
//! purpose's legal basis holding now (a current grant of its consent; no objection; no
//! GPC opt-out for a sale/share purpose). Members that leave go through
//! [`load_record`] and [`minimise`] one by one as well, so a view is never made from the
//! SQL's answer alone.
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use sea_query::{Alias, Expr, ExprTrait, Order, Query, SelectStatement};

use super::GateError;
use super::disclose::{Gate, disclosure};
use super::events::{MinimisedEvent, minimised_events};
use super::grant::PurposeGrant;
use super::load::load_record;
use super::view::{MinimisedProfile, minimise};
use crate::audit::{NewEntry, Outcome};
use crate::policy::LegalBasis;
use crate::segmentation::sql::Dialect;
use crate::store::disclosures;
use crate::store::{StoreError, recipients};

pub fn dialect(b: DbBackend) -> Dialect {
    match b {
        DbBackend::Postgres => Dialect::Postgres,
        _ => Dialect::Sqlite,
    }
}

fn col(table: &str, column: &str) -> Expr {
    Expr::col((Alias::new(table), Alias::new(column)))
}

/// The latest decision's `field` on `name` captured by `now`, as the ledger orders them.
fn latest(name: &str, field: &str, now: i64) -> Expr {
    let mut q = Query::select();
    q.expr(col("c", field))
        .from_as(Alias::new("consents"), Alias::new("c"))
        .and_where(col("c", "subject_id").equals((Alias::new("s"), Alias::new("id"))))
        .and_where(col("c", "consent").eq(name.to_owned()))
        .and_where(col("c", "captured_at").lte(now))
        .order_by((Alias::new("c"), Alias::new("captured_at")), Order::Desc)
        .order_by((Alias::new("c"), Alias::new("recorded_at")), Order::Desc)
        .order_by((Alias::new("c"), Alias::new("id")), Order::Desc)
        .limit(1);
    Expr::SubQuery(
        None,
        Box::new(sea_query::SubQueryStatement::SelectStatement(q)),
    )
}

/// The gate's conditions for `grant` at `now` (microseconds), on `s` (subjects).
pub fn gate_condition(grant: &PurposeGrant, d: Dialect, now: i64) -> Expr {
    let p = &grant.purpose;
    let coalesce = |e: Expr| crate::segmentation::sql::cust(d, "COALESCE({}, '')", vec![e]);
    let is_refused =
        |name: &str| coalesce(latest(name, "status", now)).is_in(["denied", "withdrawn"]);
    let is_gpc = |name: &str| coalesce(latest(name, "method", now)).eq("gpc");
    let mut restricted = Query::select();
    restricted
        .expr(Expr::val(1))
        .from_as(Alias::new("subject_flags"), Alias::new("f"))
        .and_where(col("f", "subject_id").equals((Alias::new("s"), Alias::new("id"))))
        .and_where(col("f", "flag").is_in([crate::store::subject_flags::RESTRICTED]));
    let mut cond = col("s", "status")
        .eq("active")
        .and(Expr::exists(restricted).not());
    let lawful = match p.legal_basis {
        LegalBasis::Consent => {
            let consent = p.consent.as_deref().unwrap_or_default();
            coalesce(latest(consent, "status", now)).eq("granted")
        }
        LegalBasis::LegitimateInterest => is_refused(&p.name).not(),
        LegalBasis::Contract | LegalBasis::LegalObligation => {
            if p.sale_or_share {
                is_refused(&p.name).and(is_gpc(&p.name)).not()
            } else {
                Expr::val(true)
            }
        }
    };
    cond = cond.and(lawful);
    cond
}

/// What a segment's condition needs: the expression, and whether it reads `a`
/// (aggregates), which is joined only then.
#[derive(Clone)]
pub struct Condition {
    pub expr: Expr,
    pub aggregates: bool,
}

fn base(grant: &PurposeGrant, rule: Condition, d: Dialect, now: i64) -> SelectStatement {
    let mut q = Query::select();
    q.from_as(Alias::new("subjects"), Alias::new("s"));
    if rule.aggregates {
        q.join_as(
            sea_query::JoinType::LeftJoin,
            Alias::new("aggregates"),
            Alias::new("a"),
            col("a", "subject_id").equals((Alias::new("s"), Alias::new("id"))),
        );
    }
    q.and_where(gate_condition(grant, d, now))
        .and_where(rule.expr);
    q
}

fn build(c: &impl ConnectionTrait, q: &SelectStatement) -> Statement {
    c.get_database_backend().build(q)
}

/// How many subjects the condition selects for `grant` at `now`.
pub async fn count<C: ConnectionTrait>(
    c: &C,
    grant: &PurposeGrant,
    rule: Condition,
    now: i64,
) -> Result<u64, StoreError> {
    let d = dialect(c.get_database_backend());
    let mut q = base(grant, rule, d, now);
    q.expr(Expr::cust("COUNT(*)"));
    let row = c.query_one_raw(build(c, &q)).await?;
    let n: i64 = match row {
        Some(r) => r.try_get_by_index(0)?,
        None => 0,
    };
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Up to `limit` member ids after `after` (by id), for the caller inside `policy` that
/// turns each into a view.
async fn member_ids<C: ConnectionTrait>(
    c: &C,
    grant: &PurposeGrant,
    rule: Condition,
    now: i64,
    after: Option<&str>,
    limit: u64,
) -> Result<Vec<String>, StoreError> {
    let d = dialect(c.get_database_backend());
    let mut q = base(grant, rule, d, now);
    q.expr(col("s", "id"));
    if let Some(a) = after {
        q.and_where(col("s", "id").gt(a.to_owned()));
    }
    q.order_by((Alias::new("s"), Alias::new("id")), Order::Asc)
        .limit(limit);
    let rows = c.query_all_raw(build(c, &q)).await?;
    rows.into_iter()
        .map(|r| r.try_get_by_index::<String>(0).map_err(StoreError::from))
        .collect()
}

/// Whether `subject` is in the audience the condition selects for `grant` now.
pub async fn is_member<C: ConnectionTrait>(
    c: &C,
    grant: &PurposeGrant,
    rule: Condition,
    subject: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let d = dialect(c.get_database_backend());
    let mut q = base(grant, rule, d, now);
    q.expr(Expr::val(1))
        .and_where(col("s", "id").eq(subject.to_owned()))
        .limit(1);
    Ok(c.query_one_raw(build(c, &q)).await?.is_some())
}

/// One member of an audience: the view, and the events the purpose may read.
pub struct Member {
    pub view: MinimisedProfile,
    pub events: Vec<MinimisedEvent>,
}

impl Gate<'_> {
    /// The members a condition selects (up to `limit`, after the subject id `after`), each
    /// made into its minimised view by the gate; those the gate refuses are left out.
    /// Reads only: the caller records the disclosure with [`Gate::disclose_members`].
    pub async fn members(
        &self,
        grant: &PurposeGrant,
        rule: Condition,
        after: Option<&str>,
        limit: u64,
        with_events: bool,
    ) -> Result<(Vec<(String, Member)>, Option<String>), GateError> {
        let conn = self.db.conn();
        let now = self.now.unix_micros();
        let ids = member_ids(conn, grant, rule, now, after, limit).await?;
        let last = ids.last().cloned();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let pseudonym = self.keyring.pseudonym(grant.recipient(), &id)?;
            let Some(record) =
                load_record(conn, self.master, self.keyring, grant, &id, pseudonym).await?
            else {
                continue;
            };
            let Ok(view) = minimise(&record, grant, self.now) else {
                continue;
            };
            let events = if with_events {
                minimised_events(conn, grant, &id, &view).await?
            } else {
                Vec::new()
            };
            out.push((id, Member { view, events }));
        }
        Ok((out, last))
    }

    /// Records that `members` were disclosed to the grant's recipient: a disclosure row
    /// and a remembered pseudonym per subject, and one audit entry for them all with
    /// `attributes` (e.g. the count and a hash of the pseudonyms), in one transaction.
    pub async fn disclose_members(
        &self,
        grant: &PurposeGrant,
        members: &[(String, Member)],
        action: &str,
        attributes: Vec<String>,
    ) -> Result<(), GateError> {
        let txn = self.db.begin_write().await?;
        let at = self.now.unix_micros();
        for (subject, m) in members {
            let p = m.view.pseudonym();
            recipients::remember_pseudonym(
                &txn,
                grant.recipient(),
                p.as_ref(),
                p.version(),
                subject,
                at,
            )
            .await?;
            disclosures::insert(&txn, &disclosure(grant, subject, m.view.disclosed(), at)).await?;
        }
        let mut audited = vec![
            format!("recipient:{}", grant.recipient()),
            format!("purpose:{}", grant.purpose().name),
            format!("rows:{}", members.len()),
        ];
        audited.extend(attributes);
        let entry = NewEntry {
            purpose: Some(grant.purpose().name.clone()),
            ..NewEntry::new(self.actor.clone(), action, Outcome::Ok)
                .request_id(self.request_id.clone())
                .attributes(audited)
        };
        self.audit.append(&txn, entry).await?;
        txn.commit().await.map_err(StoreError::from)?;
        Ok(())
    }
}
