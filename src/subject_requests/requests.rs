//! Data-subject requests as a state machine. Guarantees:
//! - a request is `received → verifying → verified → in_progress → completed`, or ends
//!   `rejected` (with a reason) or `withdrawn`; no other move is accepted;
//! - every transition is stored with who and why and audited, in one transaction;
//! - `due_at` is the received time plus one calendar month (Art. 12(3)); it can be
//!   extended once, by one or two further months, with a reason;
//! - a second open request of the same kind for the same person is linked to the first;
//! - a request never stores an identifier value: only the kinds given, and the subject
//!   they led to.
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::audit::{AuditError, AuditLog, NewEntry, Outcome};
use crate::crypto::Keyring;
use crate::domain::{Actor, Timestamp};
use crate::policy::Policies;
use crate::store::dsar::{self as repo, FINAL, RequestRow, TransitionRow};
use crate::store::{Db, StoreError, profiles};

pub const KINDS: &[&str] = &[
    "access",
    "portability",
    "erasure",
    "rectification",
    "restriction",
    "objection",
];

pub const REJECT_REASONS: &[&str] = &[
    "identity_not_verified",
    "manifestly_unfounded",
    "no_data_held",
];

const DAY_US: i64 = 86_400_000_000;

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("{0}")]
    Invalid(String),
    #[error("no request has that id")]
    NotFound,
    /// A move the state machine does not allow.
    #[error("{0}")]
    State(String),
    #[error("this has expired: the package (file a new request) or the code (send a new one)")]
    Expired,
    /// The mail relay could not take the message; nothing changed.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Keyring(#[from] crate::crypto::KeyringError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

impl RequestError {
    /// The database rolled the transaction back in favour of a concurrent one; running
    /// it again can succeed (see [`StoreError::is_transaction_conflict`]).
    pub fn is_transaction_conflict(&self) -> bool {
        match self {
            RequestError::Store(e) | RequestError::Audit(AuditError::Store(e)) => {
                e.is_transaction_conflict()
            }
            _ => false,
        }
    }
}

fn invalid(m: impl Into<String>) -> RequestError {
    RequestError::Invalid(m.into())
}

/// `POST /v1/dsar`.
#[derive(Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRequest {
    /// `access`, `portability`, `erasure`, `rectification`, `restriction` or `objection`.
    pub kind: String,
    /// The identifiers the requester gave, e.g. `{"email": "ann@example.com"}`: one or
    /// more of `email`, `phone`, `user_id`, `anonymous_id` or an external id kind.
    pub identifiers: BTreeMap<String, String>,
    /// How it arrived: `email`, `web_form`, `letter`, `phone`, `in_person` ...
    pub channel: String,
    /// RFC 3339; default now. The deadline runs from here.
    pub received_at: Option<String>,
}

impl std::fmt::Debug for NewRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewRequest")
            .field("kind", &self.kind)
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

/// `POST /v1/dsar/{id}/verify`.
#[derive(Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Verification {
    /// `dpo_attested` (with `note`), or `email_code`: without `code`, sends a six-digit
    /// code to the subject's email address on file; with `code`, checks it.
    pub method: String,
    /// `dpo_attested`: how identity was checked, e.g. `replied from the account's
    /// address`; no personal data.
    pub note: Option<String>,
    /// `email_code`: the code the requester received.
    pub code: Option<String>,
}

impl std::fmt::Debug for Verification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verification")
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

/// `POST /v1/dsar/{id}/extend`.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Extension {
    /// 1 or 2 further months (Art. 12(3)); once per request.
    #[schema(minimum = 1, maximum = 2)]
    pub months: i32,
    pub reason: String,
}

/// `POST /v1/dsar/{id}/reject`.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rejection {
    /// `identity_not_verified`, `manifestly_unfounded` or `no_data_held`.
    pub reason: String,
    pub note: Option<String>,
}

/// `POST /v1/dsar/{id}/withdraw`.
#[derive(Clone, Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Withdrawal {
    pub note: Option<String>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct TransitionView {
    pub from: Option<String>,
    pub to: String,
    /// The key id (or `cli`) that made the move.
    pub by: String,
    pub reason: String,
    pub at: String,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct RequestView {
    pub id: String,
    pub kind: String,
    pub status: String,
    /// The subject the identifiers led to; absent when the gateway holds nothing.
    pub subject_id: Option<String>,
    pub identifier_kinds: Vec<String>,
    pub channel: String,
    pub received_at: String,
    pub due_at: String,
    /// Whole days until `due_at` (negative once overdue).
    pub days_left: i64,
    pub overdue: bool,
    pub extended_months: i32,
    pub extension_reason: Option<String>,
    pub verification_method: Option<String>,
    pub verification_note: Option<String>,
    /// The open request of the same kind for the same person this one was linked to;
    /// it is not executed separately.
    pub duplicate_of: Option<String>,
    pub reject_reason: Option<String>,
    pub created_by: String,
    pub completed_at: Option<String>,
    /// Every move, oldest first (in `GET /v1/dsar/{id}` only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub transitions: Vec<TransitionView>,
    /// The notices to recipients (Art. 19) and where each stands (in `GET /v1/dsar/{id}` only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notices: Vec<super::notices::NoticeView>,
}

/// What a public form (an ingest key) learns of the request it filed.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct RequestReceipt {
    pub id: String,
    pub kind: String,
    pub status: String,
    pub received_at: String,
    pub due_at: String,
}

impl From<&RequestView> for RequestReceipt {
    fn from(v: &RequestView) -> Self {
        Self {
            id: v.id.clone(),
            kind: v.kind.clone(),
            status: v.status.clone(),
            received_at: v.received_at.clone(),
            due_at: v.due_at.clone(),
        }
    }
}

/// `t` plus `months` calendar months, the day clamped to the month's last day
/// (31 January + 1 month = 28 or 29 February).
pub fn add_months(t: Timestamp, months: i32) -> Timestamp {
    let dt = t.to_datetime();
    let index = dt.year() * 12 + i32::from(u8::from(dt.month())) - 1 + months;
    let (year, month0) = (index.div_euclid(12), index.rem_euclid(12));
    let month = u8::try_from(month0 + 1)
        .ok()
        .and_then(|m| time::Month::try_from(m).ok())
        .unwrap_or(dt.month());
    let day = dt.day().min(time::util::days_in_month(month, year));
    match time::Date::from_calendar_date(year, month, day) {
        Ok(date) => Timestamp::from_datetime(dt.replace_date(date)),
        Err(_) => t,
    }
}

/// Moves the state machine allows.
fn allowed(from: &str, to: &str) -> bool {
    matches!(
        (from, to),
        ("received", "verifying" | "verified")
            | ("verifying", "verified")
            | ("verified", "in_progress")
            | (
                "in_progress",
                "completed" | "completed_with_pending_notices"
            )
            | ("completed_with_pending_notices", "completed")
    ) || (!FINAL.contains(&from) && matches!(to, "rejected" | "withdrawn"))
}

fn bounded(field: &str, v: &str, max: usize) -> Result<String, RequestError> {
    let v = v.trim();
    if v.is_empty() || v.chars().count() > max || v.chars().any(char::is_control) {
        return Err(invalid(format!(
            "{field}: 1-{max} printable characters, no personal data"
        )));
    }
    Ok(v.to_owned())
}

pub struct Requests<'a> {
    pub db: &'a Db,
    pub keyring: &'a Keyring,
    pub audit: &'a AuditLog,
    pub policies: &'a Policies,
    pub actor: Actor,
    pub request_id: Option<String>,
    pub now: Timestamp,
}

impl Requests<'_> {
    fn view(&self, r: RequestRow, transitions: Vec<TransitionRow>) -> RequestView {
        let ts = |us: i64| Timestamp::from_unix_micros(us).to_rfc3339();
        let now = self.now.unix_micros();
        RequestView {
            days_left: (r.due_at - now).div_euclid(DAY_US),
            overdue: !FINAL.contains(&r.status.as_str()) && r.due_at < now,
            received_at: ts(r.received_at),
            due_at: ts(r.due_at),
            completed_at: r.completed_at.map(ts),
            transitions: transitions
                .into_iter()
                .map(|t| TransitionView {
                    from: t.from_status,
                    to: t.to_status,
                    by: t.actor,
                    reason: t.reason,
                    at: ts(t.at),
                })
                .collect(),
            notices: Vec::new(),
            id: r.id,
            kind: r.kind,
            status: r.status,
            subject_id: r.subject_id,
            identifier_kinds: r.identifier_kinds,
            channel: r.channel,
            extended_months: r.extended_months,
            extension_reason: r.extension_reason,
            verification_method: r.verification_method,
            verification_note: r.verification_note,
            duplicate_of: r.duplicate_of,
            reject_reason: r.reject_reason,
            created_by: r.created_by,
        }
    }

    /// Records a new request: checks it whole, finds the person, links a duplicate.
    pub async fn create(&self, new: &NewRequest) -> Result<RequestView, RequestError> {
        if !KINDS.contains(&new.kind.as_str()) {
            return Err(invalid(format!("kind: use one of {}", KINDS.join(", "))));
        }
        if new.identifiers.is_empty() {
            return Err(invalid(format!(
                "identifiers: give at least one of {}",
                self.policies.identifier_kinds().join(", ")
            )));
        }
        let channel = bounded("channel", &new.channel, 64)?;
        let received = match &new.received_at {
            None => self.now,
            Some(s) => Timestamp::parse_rfc3339(s)
                .ok_or_else(|| invalid("received_at: not an RFC 3339 time"))?,
        };
        if received.unix_micros() > self.now.plus_seconds(300).unix_micros() {
            return Err(invalid("received_at: is in the future"));
        }
        let mut subjects = BTreeSet::new();
        for (kind, value) in &new.identifiers {
            if !self.policies.is_identifier_kind(kind) {
                return Err(invalid(format!(
                    "identifiers.{kind}: not an identifier kind; use {}",
                    self.policies.identifier_kinds().join(", ")
                )));
            }
            let value = crate::profiles::normalise_identifier(kind, value, None)
                .map_err(|r| invalid(format!("identifiers.{kind}: {r}")))?;
            if let Some(row) = profiles::subject_for(
                self.db.conn(),
                kind,
                &self.keyring.blind_indexes(kind, &value),
            )
            .await?
            {
                subjects.insert(row.subject_id);
            }
        }
        if subjects.len() > 1 {
            return Err(invalid(
                "identifiers: they belong to different people; file one request per person",
            ));
        }
        let subject_id = subjects.into_iter().next();
        let txn = self.db.begin_write().await?;
        let duplicate_of = match &subject_id {
            Some(s) => repo::open_for(&txn, s, &new.kind).await?.map(|r| r.id),
            None => None,
        };
        let row = RequestRow {
            id: format!("dsar_{}", uuid::Uuid::now_v7().simple()),
            kind: new.kind.clone(),
            status: "received".into(),
            subject_id,
            identifier_kinds: new.identifiers.keys().cloned().collect(),
            channel: channel.clone(),
            received_at: received.unix_micros(),
            due_at: add_months(received, 1).unix_micros(),
            extended_months: 0,
            extension_reason: None,
            verification_method: None,
            verification_note: None,
            duplicate_of,
            reject_reason: None,
            created_by: self.actor.key_id.clone(),
            updated_at: self.now.unix_micros(),
            completed_at: None,
            package_expires_at: None,
            code_hash: None,
            code_expires_at: None,
            code_attempts: 0,
        };
        repo::insert(&txn, &row).await?;
        let reason = match &row.duplicate_of {
            Some(first) => format!("received by {channel}; a duplicate of {first}"),
            None => format!("received by {channel}"),
        };
        self.record(&txn, &row, None, &reason).await?;
        txn.commit().await.map_err(StoreError::from)?;
        self.show(&row.id).await
    }

    pub async fn show(&self, id: &str) -> Result<RequestView, RequestError> {
        let row = repo::get(self.db.conn(), id)
            .await?
            .ok_or(RequestError::NotFound)?;
        let transitions = repo::transitions(self.db.conn(), id).await?;
        let mut view = self.view(row, transitions);
        view.notices = super::notices::of_request(self.db, id).await?;
        Ok(view)
    }

    /// The queue, by due date.
    pub async fn list(
        &self,
        status: Option<&str>,
        due_before: Option<&str>,
    ) -> Result<Vec<RequestView>, RequestError> {
        const STATUSES: &[&str] = &[
            "received",
            "verifying",
            "verified",
            "in_progress",
            "completed",
            "completed_with_pending_notices",
            "rejected",
            "withdrawn",
        ];
        if let Some(s) = status
            && !STATUSES.contains(&s)
        {
            return Err(invalid(format!(
                "status: use one of {}",
                STATUSES.join(", ")
            )));
        }
        let due_before = due_before
            .map(|s| {
                Timestamp::parse_rfc3339(s)
                    .map(Timestamp::unix_micros)
                    .ok_or_else(|| invalid("due_before: not an RFC 3339 time"))
            })
            .transpose()?;
        let rows = repo::list(self.db.conn(), status, due_before, 1000).await?;
        Ok(rows.into_iter().map(|r| self.view(r, Vec::new())).collect())
    }

    /// Identity checked: nothing is executed before this.
    pub async fn verify(&self, id: &str, v: &Verification) -> Result<RequestView, RequestError> {
        if v.method != "dpo_attested" {
            return Err(invalid("method: dpo_attested or email_code"));
        }
        let note = bounded("note", v.note.as_deref().unwrap_or_default(), 500)?;
        self.change(id, "verified", &note, |r| {
            r.verification_method = Some(v.method.clone());
            r.verification_note = Some(note.clone());
            Ok(())
        })
        .await
    }

    /// Extends the deadline once, by one or two further months.
    pub async fn extend(&self, id: &str, e: &Extension) -> Result<RequestView, RequestError> {
        if !(1..=2).contains(&e.months) {
            return Err(invalid(
                "months: 1 or 2 (a deadline extends by at most two further months)",
            ));
        }
        let reason = bounded("reason", &e.reason, 500)?;
        let txn = self.db.begin_write().await?;
        let mut row = repo::get(&txn, id).await?.ok_or(RequestError::NotFound)?;
        if FINAL.contains(&row.status.as_str()) {
            return Err(RequestError::State(format!(
                "the request is {}; there is no deadline left to extend",
                row.status
            )));
        }
        if row.extended_months > 0 {
            return Err(RequestError::State(
                "the deadline was already extended once".into(),
            ));
        }
        row.due_at = add_months(Timestamp::from_unix_micros(row.due_at), e.months).unix_micros();
        row.extended_months = e.months;
        row.extension_reason = Some(reason.clone());
        row.updated_at = self.now.unix_micros();
        repo::update(&txn, &row).await?;
        let entry = NewEntry {
            subject_ref: self.subject_ref(&row)?,
            ..NewEntry::new(self.actor.clone(), "dsar.extend", Outcome::Ok)
                .request_id(self.request_id.clone())
                .attributes(vec![
                    format!("dsar:{}", row.id),
                    format!("months:{}", e.months),
                ])
        };
        self.audit.append(&txn, entry).await?;
        txn.commit().await.map_err(StoreError::from)?;
        self.show(id).await
    }

    pub async fn reject(&self, id: &str, r: &Rejection) -> Result<RequestView, RequestError> {
        if !REJECT_REASONS.contains(&r.reason.as_str()) {
            return Err(invalid(format!(
                "reason: use one of {}",
                REJECT_REASONS.join(", ")
            )));
        }
        let why = match &r.note {
            Some(n) => format!("{}: {}", r.reason, bounded("note", n, 500)?),
            None => r.reason.clone(),
        };
        self.change(id, "rejected", &why, |row| {
            row.reject_reason = Some(r.reason.clone());
            Ok(())
        })
        .await
    }

    pub async fn withdraw(&self, id: &str, w: &Withdrawal) -> Result<RequestView, RequestError> {
        let why = match &w.note {
            Some(n) => bounded("note", n, 500)?,
            None => "withdrawn by the requester".into(),
        };
        self.change(id, "withdrawn", &why, |_| Ok(())).await
    }

    /// One move inside the caller's transaction (used by execution).
    pub(super) async fn move_in(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        row: &mut RequestRow,
        to: &str,
        reason: &str,
    ) -> Result<(), RequestError> {
        let from = row.status.clone();
        if !allowed(&from, to) {
            return Err(RequestError::State(format!(
                "a request that is {from} cannot become {to}"
            )));
        }
        row.status = to.to_owned();
        row.updated_at = self.now.unix_micros();
        if to.starts_with("completed") {
            row.completed_at = Some(self.now.unix_micros());
        }
        repo::update(txn, row).await?;
        self.record(txn, row, Some(&from), reason).await
    }

    /// One move of the state machine, with `edit` applied to the row, in one transaction.
    async fn change(
        &self,
        id: &str,
        to: &str,
        reason: &str,
        edit: impl FnOnce(&mut RequestRow) -> Result<(), RequestError>,
    ) -> Result<RequestView, RequestError> {
        let txn = self.db.begin_write().await?;
        let mut row = repo::get(&txn, id).await?.ok_or(RequestError::NotFound)?;
        let from = row.status.clone();
        if !allowed(&from, to) {
            return Err(RequestError::State(format!(
                "a request that is {from} cannot become {to}"
            )));
        }
        edit(&mut row)?;
        row.status = to.to_owned();
        row.updated_at = self.now.unix_micros();
        if to == "completed" {
            row.completed_at = Some(self.now.unix_micros());
        }
        repo::update(&txn, &row).await?;
        self.record(&txn, &row, Some(&from), reason).await?;
        txn.commit().await.map_err(StoreError::from)?;
        self.show(id).await
    }

    fn subject_ref(&self, row: &RequestRow) -> Result<Option<String>, RequestError> {
        Ok(row
            .subject_id
            .as_deref()
            .map(|s| self.audit.subject_ref(s))
            .transpose()?)
    }

    /// The transition row and its audit entry.
    async fn record(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        row: &RequestRow,
        from: Option<&str>,
        reason: &str,
    ) -> Result<(), RequestError> {
        let step = i32::try_from(repo::transitions(txn, &row.id).await?.len()).unwrap_or(i32::MAX);
        repo::insert_transition(
            txn,
            &TransitionRow {
                request_id: row.id.clone(),
                step,
                from_status: from.map(str::to_owned),
                to_status: row.status.clone(),
                actor: self.actor.key_id.clone(),
                reason: reason.to_owned(),
                at: self.now.unix_micros(),
            },
        )
        .await?;
        let entry = NewEntry {
            subject_ref: self.subject_ref(row)?,
            ..NewEntry::new(self.actor.clone(), "dsar.transition", Outcome::Ok)
                .request_id(self.request_id.clone())
                .attributes(vec![
                    format!("dsar:{}", row.id),
                    format!("kind:{}", row.kind),
                    format!("from:{}", from.unwrap_or("none")),
                    format!("to:{}", row.status),
                ])
        };
        self.audit.append(txn, entry).await?;
        Ok(())
    }
}

/// Open requests past their deadline.
pub async fn overdue(db: &Db, now: Timestamp) -> Result<u64, StoreError> {
    repo::overdue(db.conn(), now.unix_micros()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        Timestamp::parse_rfc3339(s).unwrap()
    }

    #[test]
    fn one_calendar_month_clamps_to_the_last_day() {
        let cases = [
            ("2026-01-31T10:00:00Z", 1, "2026-02-28T10:00:00"),
            ("2028-01-31T10:00:00Z", 1, "2028-02-29T10:00:00"),
            ("2026-03-15T08:30:00Z", 1, "2026-04-15T08:30:00"),
            ("2026-12-20T00:00:00Z", 1, "2027-01-20T00:00:00"),
            ("2026-11-30T00:00:00Z", 3, "2027-02-28T00:00:00"),
        ];
        for (from, months, to) in cases {
            let got = add_months(t(from), months).to_rfc3339();
            assert!(got.starts_with(to), "{from} + {months} = {got}");
        }
    }

    #[test]
    fn the_state_machine_allows_only_its_moves() {
        assert!(allowed("received", "verified"));
        assert!(allowed("verified", "in_progress"));
        assert!(allowed("in_progress", "withdrawn"));
        assert!(
            !allowed("received", "in_progress"),
            "nothing before verified"
        );
        assert!(!allowed("received", "completed"));
        assert!(!allowed("completed", "rejected"));
        assert!(!allowed("rejected", "verified"));
        assert!(!allowed("withdrawn", "withdrawn"));
    }
}
