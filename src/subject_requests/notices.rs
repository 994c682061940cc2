//! Recipient notices (GDPR Art. 19). Guarantees:
//! - a notice is written in the same transaction as the erasure or restriction it
//!   announces, to every recipient the disclosure records say received the person's data;
//! - it names the person only by that recipient's own pseudonyms;
//! - it is signed: `Consentry-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
//!   "<t>.<body>")>` with the recipient's webhook secret;
//! - it is retried with exponential backoff (30 s doubling, at most an hour apart) until a
//!   2xx answer; every attempt is recorded on the notice and audited; a request whose
//!   notices are all delivered moves from `completed_with_pending_notices` to `completed`.
use std::time::Duration;

use sea_orm::DatabaseTransaction;
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::audit::{AuditLog, NewEntry, Outcome};
use crate::crypto::{MasterKey, hmac_sha256};
use crate::domain::{Actor, Timestamp};
use crate::store::notices::{self as repo, NoticeRow};
use crate::store::{Db, StoreError, disclosures, dsar, recipients};

/// A notice as the DPO sees it on the request.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct NoticeView {
    pub recipient: String,
    pub action: String,
    /// `pending`, `delivered`, or `no_webhook` (the recipient has none: tell it yourself).
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<String>,
    pub delivered_at: Option<String>,
}

impl From<NoticeRow> for NoticeView {
    fn from(n: NoticeRow) -> Self {
        let ts = |us: i64| Timestamp::from_unix_micros(us).to_rfc3339();
        Self {
            next_attempt_at: (n.status == "pending").then(|| ts(n.next_attempt_at)),
            delivered_at: n.delivered_at.map(ts),
            recipient: n.recipient_id,
            action: n.action,
            status: n.status,
            attempts: n.attempts,
            last_error: n.last_error,
        }
    }
}

/// Writes a notice of `action` for every recipient that received the subject's data.
/// Returns how many will be delivered by webhook.
pub async fn queue_in(
    txn: &DatabaseTransaction,
    request_id: &str,
    subject_id: &str,
    action: &str,
    now: Timestamp,
) -> Result<usize, StoreError> {
    let mut received: Vec<String> = disclosures::of_subject(txn, subject_id)
        .await?
        .into_iter()
        .map(|d| d.recipient_id)
        .collect();
    received.sort();
    received.dedup();
    let pseudonyms = repo::pseudonyms_of(txn, subject_id).await?;
    let mut webhooks = 0;
    for rid in received {
        let Some(r) = recipients::get(txn, &rid).await? else {
            continue;
        };
        let id = format!("ntc_{}", uuid::Uuid::now_v7().simple());
        let theirs: Vec<&str> = pseudonyms
            .iter()
            .filter(|(recipient, _, _)| *recipient == rid)
            .map(|(_, value, _)| value.as_str())
            .collect();
        let body = json!({
            "notice_id": id,
            "request_id": request_id,
            "action": action,
            "recipient": rid,
            "pseudonyms": theirs,
            "at": now.to_rfc3339(),
        })
        .to_string();
        let status = if r.webhook_url.is_some() && r.webhook_secret.is_some() {
            webhooks += 1;
            "pending"
        } else {
            "no_webhook"
        };
        repo::insert(
            txn,
            &NoticeRow {
                id,
                request_id: request_id.to_owned(),
                recipient_id: rid,
                action: action.to_owned(),
                body,
                status: status.to_owned(),
                attempts: 0,
                next_attempt_at: now.unix_micros(),
                last_error: None,
                delivered_at: None,
                created_at: now.unix_micros(),
            },
        )
        .await?;
    }
    Ok(webhooks)
}

pub async fn of_request(db: &Db, request_id: &str) -> Result<Vec<NoticeView>, StoreError> {
    Ok(repo::of_request(db.conn(), request_id)
        .await?
        .into_iter()
        .map(NoticeView::from)
        .collect())
}

/// How long after `attempts` failures the next attempt is made.
fn backoff(attempts: i32) -> i64 {
    let secs = 30i64.saturating_mul(1 << attempts.clamp(0, 7));
    secs.min(3600)
}

/// The signature header value for `body` at `t`.
pub fn signature(secret: &[u8], t: i64, body: &str) -> String {
    let mac = hmac_sha256(secret, format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac))
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delivery {
    pub delivered: usize,
    pub failed: usize,
}

/// The worker's one step: attempts every due notice once.
pub struct Outbox<'a> {
    pub db: &'a Db,
    pub master: &'a MasterKey,
    pub audit: &'a AuditLog,
    pub client: &'a reqwest::Client,
    pub now: Timestamp,
}

impl Outbox<'_> {
    pub async fn deliver_due(&self) -> Result<Delivery, StoreError> {
        let mut report = Delivery::default();
        let now = self.now.unix_micros();
        for n in repo::due(self.db.conn(), now, 50).await? {
            // A lease long enough for one attempt; another node skips it meanwhile.
            if !repo::claim(self.db.conn(), &n, now + 60_000_000).await? {
                continue;
            }
            let outcome = self.attempt(&n).await;
            let attempts = n.attempts.saturating_add(1);
            let txn = self.db.begin_write().await?;
            let (action, result) = match &outcome {
                Ok(()) => {
                    repo::delivered(&txn, &n.id, attempts, now).await?;
                    report.delivered += 1;
                    ("notice.delivered", Outcome::Ok)
                }
                Err(why) => {
                    let next = self.now.plus_seconds(backoff(attempts)).unix_micros();
                    repo::failed(&txn, &n.id, attempts, next, why).await?;
                    report.failed += 1;
                    ("notice.failed", Outcome::Failed)
                }
            };
            let entry = NewEntry::new(Actor::system(), action, result).attributes(vec![
                format!("notice:{}", n.id),
                format!("dsar:{}", n.request_id),
                format!("recipient:{}", n.recipient_id),
                format!("attempt:{attempts}"),
            ]);
            self.audit
                .append(&txn, entry)
                .await
                .map_err(|e| StoreError::Corrupt {
                    table: "audit_entries",
                    reason: e.to_string(),
                })?;
            if outcome.is_ok() {
                self.finish_request(&txn, &n.request_id).await?;
            }
            txn.commit().await.map_err(StoreError::from)?;
        }
        Ok(report)
    }

    /// One POST; `Err` holds a short reason with no personal data.
    async fn attempt(&self, n: &NoticeRow) -> Result<(), String> {
        let r = recipients::get(self.db.conn(), &n.recipient_id)
            .await
            .map_err(|_| "database unavailable".to_owned())?
            .ok_or("recipient removed")?;
        let (Some(url), Some(_)) = (&r.webhook_url, &r.webhook_secret) else {
            return Err("no webhook".into());
        };
        let secret = crate::policy::recipients::webhook_secret(self.master, &r)
            .map_err(|_| "webhook secret unreadable".to_owned())?
            .ok_or("no webhook secret")?;
        let t = self.now.unix_seconds();
        let resp = self
            .client
            .post(url)
            .timeout(Duration::from_secs(10))
            .header("content-type", "application/json")
            .header("consentry-notice-id", &n.id)
            .header("consentry-signature", signature(&secret, t, &n.body))
            .body(n.body.clone())
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    "timed out".to_owned()
                } else {
                    "could not connect".to_owned()
                }
            })?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("answered HTTP {}", resp.status().as_u16()))
        }
    }

    /// `completed_with_pending_notices` → `completed` once nothing is pending.
    async fn finish_request(
        &self,
        txn: &DatabaseTransaction,
        request_id: &str,
    ) -> Result<(), StoreError> {
        if repo::pending_for_request(txn, request_id).await? > 0 {
            return Ok(());
        }
        let Some(mut row) = dsar::get(txn, request_id).await? else {
            return Ok(());
        };
        if row.status != "completed_with_pending_notices" {
            return Ok(());
        }
        let step =
            i32::try_from(dsar::transitions(txn, request_id).await?.len()).unwrap_or(i32::MAX);
        row.status = "completed".into();
        row.updated_at = self.now.unix_micros();
        dsar::update(txn, &row).await?;
        dsar::insert_transition(
            txn,
            &dsar::TransitionRow {
                request_id: request_id.to_owned(),
                step,
                from_status: Some("completed_with_pending_notices".into()),
                to_status: "completed".into(),
                actor: "system".into(),
                reason: "every recipient acknowledged its notice".into(),
                at: self.now.unix_micros(),
            },
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_thirty_seconds_up_to_an_hour() {
        assert_eq!(backoff(1), 60);
        assert_eq!(backoff(2), 120);
        assert_eq!(backoff(6), 1920);
        assert_eq!(backoff(7), 3600);
        assert_eq!(backoff(40), 3600);
    }

    #[test]
    fn the_signature_covers_time_and_body() {
        let a = signature(b"secret", 1, "{}");
        assert!(a.starts_with("t=1,v1="));
        assert_ne!(a, signature(b"secret", 2, "{}"));
        assert_ne!(a, signature(b"secret", 1, "{ }"));
        assert_ne!(a, signature(b"other", 1, "{}"));
    }
}
