//! Audiences: a segment's condition (compiled by `segmentation`) run in the database with
//! the gate's own conditions in the same query — an active subject, not restricted, the
//! purpose's legal basis holding now (a current grant of its consent; no objection; no
//! GPC opt-out for a sale/share purpose). Members that leave go through
//! [`records_of_rows`] and [`minimise`] as well, so a view is never made from the
//! SQL's answer alone.
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use sea_query::{Alias, Expr, ExprTrait, Order, Query, SelectStatement};

use super::GateError;
use super::disclose::{Gate, disclosure};
use super::events::{MinimisedEvent, minimised_events};
use super::grant::PurposeGrant;
use super::load::{PageWants, records_of_rows};
use super::view::{MinimisedProfile, minimise};
use crate::audit::{NewEntry, Outcome};
use crate::policy::LegalBasis;
use crate::segmentation::sql::Dialect;
use crate::store::disclosures;
use crate::store::{StoreError, exports, pages, recipients};

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
    purpose_condition(&grant.purpose, d, now)
}

/// The conditions under which `p` may process a subject `s` at `now`: active, not
/// restricted, its legal basis holding (used for audiences and for who may be scored).
pub fn purpose_condition(p: &crate::policy::Purpose, d: Dialect, now: i64) -> Expr {
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

/// How many subject ids one member query looks at: the conditions are evaluated inside a
/// window of ids, so a page costs the same at any size on both databases (PostgreSQL
/// would otherwise evaluate them for every subject after `after` before its LIMIT).
const WINDOW: u64 = 2000;

/// The last id of the window of [`WINDOW`] subject ids after `after`; `None` when fewer
/// remain (the window reaches the end).
async fn window_end<C: ConnectionTrait>(
    c: &C,
    after: Option<&str>,
) -> Result<Option<String>, StoreError> {
    let mut q = Query::select();
    q.expr(col("s", "id"))
        .from_as(Alias::new("subjects"), Alias::new("s"));
    if let Some(a) = after {
        q.and_where(col("s", "id").gt(a.to_owned()));
    }
    q.order_by((Alias::new("s"), Alias::new("id")), Order::Asc)
        .limit(1)
        .offset(WINDOW - 1);
    match c.query_one_raw(build(c, &q)).await? {
        Some(r) => Ok(Some(r.try_get_by_index::<String>(0)?)),
        None => Ok(None),
    }
}

/// Up to `limit` members after `after`, in id order, each with what the tables hold
/// about it for `grant` (the columns of [`pages::select`]) read by the member query
/// itself; fewer only at the end.
async fn member_rows<C: ConnectionTrait>(
    c: &C,
    grant: &PurposeGrant,
    rule: Condition,
    now: i64,
    after: Option<&str>,
    limit: u64,
    what: &pages::PageQuery<'_>,
) -> Result<Vec<pages::PageRow>, StoreError> {
    let backend = c.get_database_backend();
    let d = dialect(backend);
    let mut rows: Vec<pages::PageRow> = Vec::new();
    let mut from = after.map(str::to_owned);
    loop {
        let end = window_end(c, from.as_deref()).await?;
        let joined = rule.aggregates;
        let mut q = base(grant, rule.clone(), d, now);
        pages::select(&mut q, backend, what, !joined);
        if let Some(a) = &from {
            q.and_where(col("s", "id").gt(a.clone()));
        }
        if let Some(e) = &end {
            q.and_where(col("s", "id").lte(e.clone()));
        }
        q.order_by((Alias::new("s"), Alias::new("id")), Order::Asc)
            .limit(limit - rows.len() as u64);
        rows.extend(pages::load_selected(c, &q, what).await?);
        match end {
            Some(e) if (rows.len() as u64) < limit => from = Some(e),
            _ => return Ok(rows),
        }
    }
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

/// Whether `s` has a date of birth or a stated age: for a purpose with a minimum age,
/// those are the members only the gate can judge (a date of birth is sealed).
pub(crate) fn age_data() -> Expr {
    let mut q = Query::select();
    q.expr(Expr::val(1))
        .from_as(Alias::new("traits"), Alias::new("t"))
        .and_where(col("t", "subject_id").equals((Alias::new("s"), Alias::new("id"))))
        .and_where(col("t", "category").is_in([
            "user.demographic.date_of_birth",
            "user.demographic.age_range",
        ]));
    Expr::exists(q)
}

/// One member of an audience: the view, and the events the purpose may read.
pub struct Member {
    pub view: MinimisedProfile,
    pub events: Vec<MinimisedEvent>,
    /// What else goes out with the view (e.g. `recommendations`), recorded with it.
    pub also_disclosed: Vec<String>,
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
        let wants = PageWants::of(grant);
        let rows = member_rows(conn, grant, rule, now, after, limit, &wants.query()).await?;
        let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
        let last = ids.last().cloned();
        let page = ids
            .iter()
            .map(|id| Ok((id.clone(), self.keyring.pseudonym(grant.recipient(), id)?)))
            .collect::<Result<Vec<_>, GateError>>()?;
        let records = records_of_rows(conn, self.master, self.keyring, grant, page, rows).await?;
        let mut out = Vec::with_capacity(ids.len());
        for (id, record) in ids.into_iter().zip(records) {
            let Some(record) = record else { continue };
            let Ok(view) = minimise(&record, grant, self.now) else {
                continue;
            };
            let events = if with_events {
                minimised_events(conn, grant, &id, &view).await?
            } else {
                Vec::new()
            };
            out.push((
                id,
                Member {
                    view,
                    events,
                    also_disclosed: Vec::new(),
                },
            ));
        }
        Ok((out, last))
    }

    /// How many subjects the condition selects for `grant` now, every gate condition
    /// applied. For a purpose with a minimum age, the members with a date of birth or a
    /// stated age are judged by the gate itself (a page at a time), the others in one
    /// query; otherwise one query counts all.
    pub async fn count(&self, grant: &PurposeGrant, rule: Condition) -> Result<u64, GateError> {
        let conn = self.db.conn();
        let now = self.now.unix_micros();
        if grant.purpose.minimum_age.is_none() {
            return Ok(count(conn, grant, rule, now).await?);
        }
        let without = Condition {
            expr: rule.expr.clone().and(age_data().not()),
            aggregates: rule.aggregates,
        };
        let mut n = count(conn, grant, without, now).await?;
        let with = Condition {
            expr: rule.expr.and(age_data()),
            aggregates: rule.aggregates,
        };
        let mut after: Option<String> = None;
        loop {
            let (page, last) = self
                .members(grant, with.clone(), after.as_deref(), 500, false)
                .await?;
            let Some(last) = last else { break };
            n += page.len() as u64;
            after = Some(last);
        }
        Ok(n)
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
        self.disclose_members_in(&txn, grant, members, action, attributes)
            .await?;
        txn.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    /// [`Gate::disclose_members`] in the caller's transaction, for a caller that records
    /// more with the page (a campaign's experiment exposures).
    pub async fn disclose_members_in(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        grant: &PurposeGrant,
        members: &[(String, Member)],
        action: &str,
        attributes: Vec<String>,
    ) -> Result<(), GateError> {
        let at = self.now.unix_micros();
        let all: Vec<&(String, Member)> = members.iter().collect();
        record_sent(txn, grant, &all, at).await?;
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
        self.audit.append(txn, entry).await?;
        Ok(())
    }
}

/// The remembered pseudonym and the disclosure record of each member sent.
async fn record_sent(
    txn: &sea_orm::DatabaseTransaction,
    grant: &PurposeGrant,
    sent: &[&(String, Member)],
    at: i64,
) -> Result<(), GateError> {
    let pseudonyms: Vec<(String, i32, String)> = sent
        .iter()
        .map(|(subject, m)| {
            let p = m.view.pseudonym();
            (p.as_ref().to_owned(), p.version(), subject.clone())
        })
        .collect();
    recipients::remember_pseudonyms(txn, grant.recipient(), &pseudonyms, at).await?;
    let records: Vec<_> = sent
        .iter()
        .map(|(subject, m)| {
            let mut attributes = m.view.disclosed();
            attributes.extend(m.also_disclosed.iter().cloned());
            disclosure(grant, subject, attributes, at)
        })
        .collect();
    disclosures::insert_many(txn, &records).await?;
    Ok(())
}

/// How an export ended, for its audit entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportEnd {
    Complete,
    Interrupted,
}

impl Gate<'_> {
    /// Records one page of an export, in one transaction: every member's pseudonym as
    /// held by the export, and, for each member sent (not in `already_held`, the
    /// pseudonyms of the `since` base), its remembered pseudonym and disclosure record;
    /// with the export's running totals. `Ok(false)`, with nothing recorded, when the
    /// export is no longer running (marked interrupted meanwhile): the producer stops.
    pub async fn record_export_page(
        &self,
        grant: &PurposeGrant,
        export_id: &str,
        page: &[(String, Member)],
        already_held: &std::collections::HashSet<String>,
        totals: (i64, i64),
    ) -> Result<bool, GateError> {
        let txn = self.db.begin_write().await?;
        let at = self.now.unix_micros();
        if !exports::progress(&txn, export_id, totals.0, totals.1, at).await? {
            txn.rollback().await.map_err(StoreError::from)?;
            return Ok(false);
        }
        let pseudonyms: Vec<String> = page
            .iter()
            .map(|(_, m)| m.view.pseudonym().as_ref().to_owned())
            .collect();
        exports::add_members(&txn, export_id, &pseudonyms).await?;
        let sent: Vec<&(String, Member)> = page
            .iter()
            .filter(|(_, m)| !already_held.contains(m.view.pseudonym().as_ref()))
            .collect();
        record_sent(&txn, grant, &sent, at).await?;
        txn.commit().await.map_err(StoreError::from)?;
        Ok(true)
    }

    /// Ends a running export with its one audit entry: its row and member counts as the
    /// ended row holds them, then `attributes` (the commitment, the reason ...); a
    /// complete export's member list becomes a `since` base and older lists beyond the
    /// newest `keep` are dropped. `Ok(false)` when it had already ended.
    ///
    /// The counts are read back in this transaction, after the update that ends the
    /// export has locked its row: a page recorded meanwhile (on PostgreSQL, a dead
    /// process's last commit, which the stale-export sweep waits for) is counted, so the
    /// audit entry always says how many disclosure records the export left.
    pub async fn finish_export(
        &self,
        export: &exports::ExportRow,
        end: ExportEnd,
        commitment: Option<&str>,
        keep: u64,
        attributes: Vec<String>,
    ) -> Result<bool, GateError> {
        let txn = self.db.begin_write().await?;
        let at = self.now.unix_micros();
        let status = match end {
            ExportEnd::Complete => exports::COMPLETE,
            ExportEnd::Interrupted => exports::INTERRUPTED,
        };
        if !exports::finish(&txn, &export.id, status, commitment, at).await? {
            txn.rollback().await.map_err(StoreError::from)?;
            return Ok(false);
        }
        let ended = exports::get(&txn, &export.id)
            .await?
            .ok_or(StoreError::Corrupt {
                table: "exports",
                reason: "an export ended as it was read".into(),
            })?;
        if end == ExportEnd::Complete {
            exports::prune(&txn, &export.segment_id, &export.recipient_id, keep).await?;
        }
        let mut audited = vec![
            format!("export:{}", export.id),
            format!("segment:{}", export.segment_id),
            format!("recipient:{}", export.recipient_id),
            format!("purpose:{}", export.purpose),
            format!("status:{status}"),
        ];
        if let Some(since) = &export.since_id {
            audited.push(format!("since:{since}"));
        }
        audited.push(format!("rows:{}", ended.rows));
        audited.push(format!("members:{}", ended.members));
        audited.extend(attributes);
        let outcome = match end {
            ExportEnd::Complete => Outcome::Ok,
            ExportEnd::Interrupted => Outcome::Failed,
        };
        let entry = NewEntry {
            purpose: Some(export.purpose.clone()),
            ..NewEntry::new(self.actor.clone(), "disclosure.segment_export", outcome)
                .request_id(self.request_id.clone())
                .attributes(audited)
        };
        self.audit.append(&txn, entry).await?;
        txn.commit().await.map_err(StoreError::from)?;
        Ok(true)
    }

    /// Marks interrupted every running export that made no progress since `before` (its
    /// process died, or its client stopped reading), each with its audit entry: the rows
    /// recorded so far, whose disclosure records say exactly who. Returns how many.
    pub async fn interrupt_stale_exports(&self, before: i64) -> Result<usize, GateError> {
        let stale = exports::stale(self.db.conn(), before).await?;
        let mut n = 0;
        for e in stale {
            let attributes = vec!["reason:stalled".to_owned()];
            if self
                .finish_export(&e, ExportEnd::Interrupted, None, 0, attributes)
                .await?
            {
                n += 1;
            }
        }
        Ok(n)
    }
}
