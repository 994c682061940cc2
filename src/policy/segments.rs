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
use crate::domain::{Actor, Role, Timestamp};
use crate::policy::Policies;
use crate::policy::gate::audience::{self, Member};
use crate::policy::gate::{
    AuthorizeError, Gate, GateError, MinimisedProfile, PurposeGrant, grant_for,
};
use crate::segmentation::{Offence, Rule, RuleError, check, sql};
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
    /// The rule (see the README's "Segments" section).
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

    fn visible(&self, row: &SegmentRow) -> bool {
        self.caller.role != Role::Esp || self.caller.recipient.as_deref() == Some(&row.recipient_id)
    }

    pub async fn create(&self, new: &NewSegment) -> Result<SegmentView, SegmentError> {
        let name = new.name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err(SegmentError::Invalid("name: 1 to 200 characters".into()));
        }
        let recipient = match (&new.recipient, &self.caller.recipient) {
            (Some(r), _) => r.clone(),
            (None, Some(own)) => own.clone(),
            (None, None) => {
                return Err(SegmentError::Invalid(
                    "recipient: the recipient the segment is built for".into(),
                ));
            }
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
        let own = (self.caller.role == Role::Esp)
            .then(|| self.caller.recipient.clone())
            .flatten();
        if self.caller.role == Role::Esp && own.is_none() {
            return Ok(Vec::new());
        }
        Ok(repo::list(self.db.conn(), own.as_deref())
            .await?
            .into_iter()
            .map(SegmentView::from)
            .collect())
    }

    async fn row(&self, id: &str) -> Result<SegmentRow, SegmentError> {
        match repo::get(self.db.conn(), id).await? {
            Some(r) if self.visible(&r) => Ok(r),
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
        let n = audience::count(
            self.db.conn(),
            &c.grant,
            self.condition(&c),
            self.now.unix_micros(),
        )
        .await?;
        Ok(n)
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
