//! Saved segments: a rule checked against the purpose it serves, for one recipient; its
//! count and a preview of its members through the gate.
//!
//! Guarantees:
//! - a segment is saved only if its rule parses and every reference is one the purpose
//!   may read (checked again, against the policies in force, at every use);
//! - an `esp` key sees and makes only its own recipient's segments, for its purposes;
//! - a preview is a disclosure: each row recorded, one audit entry for the whole.
use std::sync::Arc;

use ring::digest;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::audit::{AuditError, AuditLog, NewEntry, Outcome};
use crate::auth::Caller;
use crate::crypto::{Keyring, MasterKey};
use crate::domain::Clock;
use crate::domain::{Actor, Timestamp};
use crate::policy::Policies;
use crate::policy::gate::audience::ExportEnd;
use crate::policy::gate::audience::{self, Member};
use crate::policy::gate::{
    AuthorizeError, Gate, GateError, MinimisedProfile, PurposeGrant, grant_for,
};
use crate::segmentation::export::{Encoder, Format};
use crate::segmentation::{Offence, Rule, RuleError, check, sql};
use crate::store::exports::{self, ExportRow};
use crate::store::segments::{self as repo, SegmentRow};
use crate::store::{Db, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("{0}")]
    Rule(RuleError),
    #[error("{}", offences(.0))]
    Purpose(Vec<Offence>),
    #[error("{0}")]
    Invalid(String),
    #[error("no segment has that id")]
    NotFound,
    #[error("{0}")]
    Since(String),
    #[error(transparent)]
    Authorize(#[from] AuthorizeError),
    #[error(transparent)]
    Gate(#[from] GateError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

fn offences(o: &[Offence]) -> String {
    o.iter()
        .map(|o| format!("{} ({}): {}", o.path, o.reference, o.message))
        .collect::<Vec<_>>()
        .join("; ")
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSegment {
    #[schema(example = "Engaged & Recent Buyers")]
    pub name: String,
    /// The purpose the segment serves; every reference of the rule must be readable by it.
    #[schema(example = "marketing.communications.email")]
    pub purpose: String,
    /// The recipient it is built for (an `esp` key: its own, the default).
    pub recipient: Option<String>,
    /// The rule: one condition per JSON object, combined with `{"all": [...]}`,
    /// `{"any": [...]}` and `{"not": {...}}` (at most 12 levels, 256 conditions).
    /// Conditions: `{"attribute": "country", "eq": "DE"}` (a trait; `eq`, `ne`, `gt`,
    /// `gte`, `lt`, `lte`, `in`, `contains`, `exists`); `{"aggregate": "lifetime_value",
    /// "gt": 500}` or `{"aggregate": "last_purchase_at", "within": "48h"}` (times take
    /// `within`/`older_than`: a whole number of m, h, d or w); `{"event": "Order
    /// Completed", "within": "30d", "count": {"gte": 1}, "where": [{"property": "total",
    /// "gt": 100}]}` (`type`: track, page or screen; `"event": "*"` for any name);
    /// `{"score": "propensity.purchase", "gt": 0.7}` (rfm.recency, rfm.frequency,
    /// rfm.monetary, rfm.score, propensity.purchase or a posted score; only for a
    /// purpose marked profiling, on consent). The README's "Segments" section has the
    /// seed's segments written out.
    #[schema(value_type = Object, example = json!({"all": [{"event": "Email Opened", "within": "7d"}, {"event": "Order Completed", "within": "30d", "count": {"gte": 1}}]}))]
    pub rule: Value,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SegmentView {
    pub id: String,
    pub name: String,
    pub purpose: String,
    pub recipient: String,
    #[schema(value_type = Object)]
    pub rule: Value,
    pub created_by: String,
    pub created_at: String,
}

impl From<SegmentRow> for SegmentView {
    fn from(r: SegmentRow) -> Self {
        Self {
            rule: serde_json::from_str(&r.rule).unwrap_or(Value::Null),
            id: r.id,
            name: r.name,
            purpose: r.purpose,
            recipient: r.recipient_id,
            created_by: r.created_by,
            created_at: Timestamp::from_unix_micros(r.created_at).to_rfc3339(),
        }
    }
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Preview {
    pub segment: String,
    /// The members shown (at most `limit`), each the minimised view for the purpose.
    pub rows: Vec<MinimisedProfile>,
}

pub struct Segments<'a> {
    pub db: &'a Db,
    pub master: &'a MasterKey,
    pub keyring: &'a Keyring,
    pub audit: &'a AuditLog,
    pub policies: Arc<Policies>,
    pub caller: &'a Caller,
    pub actor: Actor,
    pub request_id: Option<String>,
    pub now: Timestamp,
}

/// A parsed rule with the grant it runs under, checked against the purpose.
pub struct Compiled {
    pub row: SegmentRow,
    pub rule: Rule,
    pub grant: PurposeGrant,
}

impl Segments<'_> {
    async fn grant(&self, recipient: &str, purpose: &str) -> Result<PurposeGrant, SegmentError> {
        Ok(grant_for(
            self.db,
            self.caller,
            recipient,
            purpose,
            Arc::clone(&self.policies),
        )
        .await?)
    }

    fn checked(rule: &Value, grant: &PurposeGrant) -> Result<Rule, SegmentError> {
        let rule = Rule::parse(rule).map_err(SegmentError::Rule)?;
        let found = check(&rule, grant);
        if !found.is_empty() {
            return Err(SegmentError::Purpose(found));
        }
        Ok(rule)
    }

    pub async fn create(&self, new: &NewSegment) -> Result<SegmentView, SegmentError> {
        let name = new.name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err(SegmentError::Invalid("name: 1 to 200 characters".into()));
        }
        let Some(recipient) = self.caller.recipient_or_own(new.recipient.as_deref()) else {
            return Err(SegmentError::Invalid(
                "recipient: the recipient the segment is built for".into(),
            ));
        };
        let grant = self.grant(&recipient, &new.purpose).await?;
        Self::checked(&new.rule, &grant)?;
        let row = SegmentRow {
            id: uuid::Uuid::now_v7().simple().to_string(),
            name: name.to_owned(),
            purpose: new.purpose.clone(),
            recipient_id: recipient,
            rule: new.rule.to_string(),
            created_by: self.actor.key_id.clone(),
            created_at: self.now.unix_micros(),
        };
        let txn = self.db.begin_write().await?;
        repo::insert(&txn, &row).await?;
        self.audited(&txn, "segment.create", &row, vec![]).await?;
        txn.commit().await.map_err(StoreError::from)?;
        Ok(row.into())
    }

    async fn audited(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        action: &str,
        row: &SegmentRow,
        mut attributes: Vec<String>,
    ) -> Result<(), SegmentError> {
        attributes.insert(0, format!("segment:{}", row.id));
        attributes.insert(1, format!("recipient:{}", row.recipient_id));
        let entry = NewEntry {
            purpose: Some(row.purpose.clone()),
            ..NewEntry::new(self.actor.clone(), action, Outcome::Ok)
                .request_id(self.request_id.clone())
                .attributes(attributes)
        };
        self.audit.append(txn, entry).await?;
        Ok(())
    }

    pub async fn list(&self) -> Result<Vec<SegmentView>, SegmentError> {
        let Some(scope) = self.caller.listing() else {
            return Ok(Vec::new());
        };
        Ok(repo::list(self.db.conn(), scope)
            .await?
            .into_iter()
            .map(SegmentView::from)
            .collect())
    }

    async fn row(&self, id: &str) -> Result<SegmentRow, SegmentError> {
        match repo::get(self.db.conn(), id).await? {
            Some(r) if self.caller.sees(&r.recipient_id) => Ok(r),
            _ => Err(SegmentError::NotFound),
        }
    }

    pub async fn get(&self, id: &str) -> Result<SegmentView, SegmentError> {
        Ok(self.row(id).await?.into())
    }

    pub async fn delete(&self, id: &str) -> Result<(), SegmentError> {
        let row = self.row(id).await?;
        let txn = self.db.begin_write().await?;
        repo::delete(&txn, id).await?;
        // Its exports stay on record; their member lists can no longer be a base.
        exports::prune(&txn, id, &row.recipient_id, 0).await?;
        self.audited(&txn, "segment.delete", &row, vec![]).await?;
        txn.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    /// The segment, authorized and checked again under the policies in force.
    pub async fn compiled(&self, id: &str) -> Result<Compiled, SegmentError> {
        let row = self.row(id).await?;
        let grant = self.grant(&row.recipient_id, &row.purpose).await?;
        let value: Value = serde_json::from_str(&row.rule).map_err(|e| StoreError::Corrupt {
            table: "segments",
            reason: e.to_string(),
        })?;
        let rule = Self::checked(&value, &grant)?;
        Ok(Compiled { row, rule, grant })
    }

    /// The segment's compiled condition, for a caller that reads its members (campaigns).
    pub fn condition_of(&self, c: &Compiled) -> audience::Condition {
        self.condition(c)
    }

    /// The gate, as of `now`.
    pub fn gate_now(&self, now: Timestamp) -> Gate<'_> {
        Gate { now, ..self.gate() }
    }

    fn condition(&self, c: &Compiled) -> audience::Condition {
        audience::Condition {
            expr: sql::condition(
                &c.rule,
                audience::dialect(self.db.backend()),
                self.now.unix_micros(),
            ),
            aggregates: c.rule.reads_aggregates(),
        }
    }

    /// How many people are in the segment now, with every gate condition applied.
    pub async fn count(&self, id: &str) -> Result<u64, SegmentError> {
        let c = self.compiled(id).await?;
        Ok(self.gate().count(&c.grant, self.condition(&c)).await?)
    }

    fn gate(&self) -> Gate<'_> {
        Gate {
            db: self.db,
            master: self.master,
            keyring: self.keyring,
            audit: self.audit,
            actor: self.actor.clone(),
            request_id: self.request_id.clone(),
            now: self.now,
        }
    }

    /// The first `limit` members (by internal order), as minimised views; a recorded
    /// disclosure to the segment's recipient.
    pub async fn preview(&self, id: &str, limit: u64) -> Result<Preview, SegmentError> {
        if !(1..=100).contains(&limit) {
            return Err(SegmentError::Invalid("limit: 1 to 100".into()));
        }
        let c = self.compiled(id).await?;
        let gate = self.gate();
        let (members, _) = gate
            .members(&c.grant, self.condition(&c), None, limit, false)
            .await?;
        gate.disclose_members(
            &c.grant,
            &members,
            "disclosure.segment_preview",
            vec![format!("segment:{}", c.row.id), commitment(&members)],
        )
        .await?;
        Ok(Preview {
            segment: c.row.id,
            rows: members.into_iter().map(|(_, m)| m.view).collect(),
        })
    }
}

/// `pseudonyms:<hex SHA-256 of the sorted pseudonyms, one per line>`: commits the audit
/// entry to exactly who was disclosed, without naming anyone.
pub fn commitment(members: &[(String, Member)]) -> String {
    let mut ps: Vec<&str> = members
        .iter()
        .map(|(_, m)| m.view.pseudonym().as_ref())
        .collect();
    ps.sort_unstable();
    let mut ctx = digest::Context::new(&digest::SHA256);
    for p in ps {
        ctx.update(p.as_bytes());
        ctx.update(b"\n");
    }
    format!("pseudonyms:{}", hex::encode(ctx.finish().as_ref()))
}

/// One export, as recorded.
#[derive(Serialize, ToSchema)]
pub struct ExportView {
    pub id: String,
    pub segment: String,
    pub recipient: String,
    pub purpose: String,
    pub format: String,
    /// The base of a delta export.
    pub since: Option<String>,
    /// `running`, `complete` or `interrupted`.
    pub status: String,
    /// Rows recorded and sent (a delta: joined and left rows).
    pub rows: i64,
    /// Members of the segment read so far (all of them, once complete).
    pub members: i64,
    /// `pseudonyms:<hex>`, SHA-256 over each row's pseudonym and a newline, in row order.
    pub commitment: Option<String>,
    /// Whether it can be the `since` of a later export.
    pub usable_as_since: bool,
    pub started_at: String,
    pub finished_at: Option<String>,
}

impl From<ExportRow> for ExportView {
    fn from(e: ExportRow) -> Self {
        let time = |t: i64| crate::domain::Timestamp::from_unix_micros(t).to_rfc3339();
        Self {
            usable_as_since: e.status == exports::COMPLETE && e.members_kept,
            id: e.id,
            segment: e.segment_id,
            recipient: e.recipient_id,
            purpose: e.purpose,
            format: e.format,
            since: e.since_id,
            status: e.status,
            rows: e.rows,
            members: e.members,
            commitment: e.commitment,
            started_at: time(e.started_at),
            finished_at: e.finished_at.map(time),
        }
    }
}

/// Members read, recorded and sent per page of an export.
pub const EXPORT_PAGE: u64 = 500;
/// Complete exports of a segment (per recipient) whose member lists are kept as `since`
/// bases; older lists are dropped.
pub const EXPORT_BASES_KEPT: u64 = 3;

/// An export, started: its row (running) and what its producer needs.
pub struct ExportPlan {
    pub export: ExportRow,
    compiled: Compiled,
    encoder: Encoder,
}

/// Why an export's stream stopped early; the HTTP body is cut, so the client sees an
/// incomplete transfer rather than a short file that looks whole.
#[derive(Debug)]
pub struct ExportAborted;

impl std::fmt::Display for ExportAborted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the export stopped before its end; it is recorded as interrupted")
    }
}

impl std::error::Error for ExportAborted {}

/// The chunks of an export's body.
pub type ExportSink = tokio::sync::mpsc::Sender<Result<Vec<u8>, ExportAborted>>;

/// SHA-256 over the pseudonym of every row, in the order of the rows, each followed by a
/// newline: the export's commitment (the recipient can recompute it from the file).
struct Commitment(digest::Context);

impl Default for Commitment {
    fn default() -> Self {
        Self(digest::Context::new(&digest::SHA256))
    }
}

impl Commitment {
    fn add(&mut self, pseudonym: &str) {
        self.0.update(pseudonym.as_bytes());
        self.0.update(b"\n");
    }

    fn value(&self) -> String {
        format!(
            "pseudonyms:{}",
            hex::encode(self.0.clone().finish().as_ref())
        )
    }
}

impl Segments<'_> {
    /// Checks an export request and records the export as running. Nothing is disclosed
    /// yet; [`Segments::run_export`] produces the rows.
    pub async fn start_export(
        &self,
        id: &str,
        recipient: &str,
        format: Format,
        since: Option<&str>,
    ) -> Result<ExportPlan, SegmentError> {
        let compiled = self.compiled(id).await?;
        if compiled.row.recipient_id != recipient {
            return Err(SegmentError::Invalid(format!(
                "recipient: this segment is built for recipient `{}`; export it to that recipient",
                compiled.row.recipient_id
            )));
        }
        if let Some(base) = since {
            let found = exports::get(self.db.conn(), base).await?;
            let Some(b) = found.filter(|b| b.segment_id == id && b.recipient_id == recipient)
            else {
                return Err(SegmentError::Since(
                    "since: no export of this segment to this recipient has that id".into(),
                ));
            };
            if b.status != exports::COMPLETE {
                return Err(SegmentError::Since(format!(
                    "since: that export is {}, not complete; give the id of a complete export, or export in full",
                    b.status
                )));
            }
            if !b.members_kept {
                return Err(SegmentError::Since(format!(
                    "since: only the newest {EXPORT_BASES_KEPT} complete exports can be a base; export in full"
                )));
            }
        }
        let now = self.now.unix_micros();
        let export = ExportRow {
            id: uuid::Uuid::now_v7().simple().to_string(),
            segment_id: compiled.row.id.clone(),
            recipient_id: recipient.to_owned(),
            purpose: compiled.row.purpose.clone(),
            format: format.as_str().to_owned(),
            since_id: since.map(str::to_owned),
            status: exports::RUNNING.to_owned(),
            rows: 0,
            members: 0,
            commitment: None,
            members_kept: true,
            created_by: self.actor.key_id.clone(),
            started_at: now,
            updated_at: now,
            finished_at: None,
        };
        exports::insert(self.db.conn(), &export).await?;
        let encoder = Encoder::new(&compiled.grant, format, since.is_some());
        Ok(ExportPlan {
            export,
            compiled,
            encoder,
        })
    }

    /// Produces an export's rows into `sink`, a page at a time: each page's members are
    /// read and minimised by the gate, recorded (held pseudonyms, disclosure records,
    /// progress) in one transaction, and only then sent. Consent and the other gate
    /// conditions are evaluated as each page is read. When the client goes away or a
    /// step fails, the export is recorded as interrupted, with the rows recorded so far.
    pub async fn run_export(&self, plan: ExportPlan, clock: &dyn Clock, sink: ExportSink) {
        let mut state = Progress::default();
        let end = self.produce(&plan, clock, &sink, &mut state).await;
        let (end, reason) = match end {
            Ok(Produced::Whole) => (ExportEnd::Complete, None),
            Ok(Produced::ClientGone) => (ExportEnd::Interrupted, Some("client_gone")),
            Ok(Produced::Stopped) => {
                // Ended elsewhere (the stale-export sweep of this or another node): the
                // client must not take what it got for the whole file.
                let _ = sink.send(Err(ExportAborted)).await;
                (ExportEnd::Interrupted, Some("stopped"))
            }
            Err(e) => {
                tracing::error!(error = %e, export = %plan.export.id, "export failed");
                let _ = sink.send(Err(ExportAborted)).await;
                (ExportEnd::Interrupted, Some("failed"))
            }
        };
        let mut attributes = vec![state.commitment.value()];
        if let Some(r) = reason {
            attributes.push(format!("reason:{r}"));
        }
        let gate = Gate {
            now: clock.now(),
            ..self.gate()
        };
        let commitment = state.commitment.value();
        let finished = gate
            .finish_export(
                &plan.export,
                end,
                Some(&commitment),
                EXPORT_BASES_KEPT,
                attributes,
            )
            .await;
        let recorded = match finished {
            Ok(recorded) => recorded,
            Err(e) => {
                // The stale-export sweep records it later.
                tracing::error!(error = %e, export = %plan.export.id, "recording the end of an export failed");
                false
            }
        };
        // Every row was sent, but the export is not recorded complete: the body (open
        // until `sink` is dropped) is cut rather than ended cleanly.
        if end == ExportEnd::Complete && !recorded {
            let _ = sink.send(Err(ExportAborted)).await;
        }
    }

    async fn produce(
        &self,
        plan: &ExportPlan,
        clock: &dyn Clock,
        sink: &ExportSink,
        state: &mut Progress,
    ) -> Result<Produced, SegmentError> {
        let c = &plan.compiled;
        let condition = self.condition(c);
        let header = plan.encoder.header();
        if !header.is_empty() && sink.send(Ok(header.into_bytes())).await.is_err() {
            return Ok(Produced::ClientGone);
        }
        let base = plan.export.since_id.as_deref();
        // Consent and the other gate conditions are evaluated as each page is read.
        let fetch = |after: Option<String>| {
            let gate = Gate {
                now: clock.now(),
                ..self.gate()
            };
            let (grant, condition) = (&c.grant, condition.clone());
            async move {
                gate.members(grant, condition, after.as_deref(), EXPORT_PAGE, false)
                    .await
            }
        };
        let mut next = fetch(None).await?;
        loop {
            let (page, last) = next;
            let Some(last) = last else { break };
            let gate = Gate {
                now: clock.now(),
                ..self.gate()
            };
            let held = match base {
                Some(b) => {
                    let ps: Vec<String> = page
                        .iter()
                        .map(|(_, m)| m.view.pseudonym().as_ref().to_owned())
                        .collect();
                    exports::held(self.db.conn(), b, &ps).await?
                }
                None => Default::default(),
            };
            let mut body = String::new();
            let mut sent = Vec::new();
            for (_, m) in &page {
                let p = m.view.pseudonym().as_ref();
                if held.contains(p) {
                    continue;
                }
                plan.encoder.member(&m.view, &mut body);
                sent.push(p);
            }
            let rows = sent.len() as i64;
            let totals = (state.rows + rows, state.members + page.len() as i64);
            // The page is recorded while the next one is read (a write and a read on two
            // connections at once); it is sent only once its records are committed.
            let (recorded, fetched) = tokio::join!(
                gate.record_export_page(&c.grant, &plan.export.id, &page, &held, totals),
                fetch(Some(last))
            );
            if !recorded? {
                return Ok(Produced::Stopped);
            }
            // The commitment covers the rows recorded, whether or not the rest follows.
            for p in sent {
                state.commitment.add(p);
            }
            (state.rows, state.members) = totals;
            next = fetched?;
            if !body.is_empty() && sink.send(Ok(body.into_bytes())).await.is_err() {
                return Ok(Produced::ClientGone);
            }
        }
        let Some(base) = base else {
            return Ok(Produced::Whole);
        };
        let mut after: Option<String> = None;
        loop {
            let left = exports::left(
                self.db.conn(),
                base,
                &plan.export.id,
                after.as_deref(),
                EXPORT_PAGE,
            )
            .await?;
            let Some(last) = left.last().cloned() else {
                break;
            };
            after = Some(last);
            let mut body = String::new();
            for p in &left {
                plan.encoder.left(p, &mut body);
            }
            let rows = state.rows + left.len() as i64;
            let txn = self.db.begin_write().await?;
            let running = exports::progress(
                &txn,
                &plan.export.id,
                rows,
                state.members,
                clock.now().unix_micros(),
            )
            .await?;
            txn.commit().await.map_err(StoreError::from)?;
            if !running {
                return Ok(Produced::Stopped);
            }
            for p in &left {
                state.commitment.add(p);
            }
            state.rows = rows;
            if sink.send(Ok(body.into_bytes())).await.is_err() {
                return Ok(Produced::ClientGone);
            }
        }
        Ok(Produced::Whole)
    }

    /// An export of one of the caller's segments.
    pub async fn export(&self, export_id: &str) -> Result<ExportView, SegmentError> {
        let Some(e) = exports::get(self.db.conn(), export_id).await? else {
            return Err(SegmentError::NotFound);
        };
        self.row(&e.segment_id).await?;
        Ok(e.into())
    }

    /// A segment's exports, newest first.
    pub async fn exports(&self, id: &str) -> Result<Vec<ExportView>, SegmentError> {
        self.row(id).await?;
        Ok(exports::of_segment(self.db.conn(), id, 100)
            .await?
            .into_iter()
            .map(ExportView::from)
            .collect())
    }
}

/// How an export's production ended.
enum Produced {
    /// Every row was recorded and sent.
    Whole,
    /// The client went away.
    ClientGone,
    /// The export was ended meanwhile (marked interrupted as stalled).
    Stopped,
}

#[derive(Default)]
struct Progress {
    rows: i64,
    members: i64,
    commitment: Commitment,
}
