//! The consent ledger. Guarantees:
//! - append-only: a record is never changed; a new record supersedes the old one;
//! - every record is written in one transaction with its audit entry;
//! - proof never holds a raw IP address: IPv4 is cut to its /24, IPv6 to its /48;
//! - a grant of a consent that needs double opt-in is recorded as `pending` (fail closed).
pub mod confirm;
pub mod receipt;
pub mod unsubscribe;
pub mod writer;

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::audit::{AuditError, AuditLog, NewEntry, Outcome};
use crate::crypto::Keyring;
use crate::domain::{Actor, Timestamp};
use crate::policy::{LegalBasis, Policies};
use crate::profiles::lookup::{LookupError, SubjectQuery};
use crate::store::consents::{self as repo, ConsentRow};
use crate::store::{Db, StoreError, profiles};

pub const STATUSES: &[&str] = &["granted", "denied", "withdrawn"];
pub const METHODS: &[&str] = &[
    "web_form",
    "checkbox",
    "double_opt_in",
    "api",
    "cmp",
    "gpc",
    "unsubscribe_link",
    "import",
];

/// `POST /v1/consents`.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewConsent {
    /// Exactly one identifier of the person, e.g. `{"email": "ann@example.com"}`
    /// (`user_id`, `anonymous_id`, `phone` or an external id kind work too).
    #[schema(value_type = Object)]
    pub subject: BTreeMap<String, String>,
    /// A consent from `policies/purposes.yaml` (`email_marketing`), or a consent-based
    /// purpose (`marketing.communications.email`), meaning the consent it needs.
    pub purpose: String,
    /// `granted`, `denied` or `withdrawn`.
    pub status: String,
    /// `web_form`, `checkbox`, `double_opt_in`, `api`, `cmp`, `gpc`, `unsubscribe_link` or `import`.
    pub method: String,
    /// Where it was captured: a site, form or system name.
    pub source: String,
    /// The version of the notice the person was shown.
    pub notice_version: Option<String>,
    /// RFC 3339; default: now. Not in the future.
    pub captured_at: Option<String>,
    pub proof: Option<Proof>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Proof {
    pub user_agent: Option<String>,
    pub form_id: Option<String>,
    /// Stored truncated (IPv4 /24, IPv6 /48), never as sent.
    pub ip: Option<String>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ConsentRecord {
    pub id: String,
    /// The consent (from `policies/purposes.yaml`).
    pub consent: String,
    /// `granted`, `denied`, `withdrawn`, or `pending` (a grant awaiting double opt-in;
    /// shown `expired` in a state once its link has lapsed).
    pub status: String,
    pub method: String,
    pub source: String,
    pub notice_version: Option<String>,
    pub captured_at: String,
    pub recorded_at: String,
    /// The key that recorded it (`subject` for a confirmation by the person).
    pub recorded_by: String,
    pub proof: Option<Proof>,
    /// For a `pending` grant: the token of the confirmation link
    /// `GET /v1/consents/confirm/{token}` to send the person.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirm_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirm_expires_at: Option<String>,
}

/// A consent's state at a moment: its latest record captured by then.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ConsentState {
    pub consent: String,
    pub status: String,
    pub since: String,
    pub record_id: String,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ConsentHistory {
    pub subject_id: String,
    /// The moment `state` describes.
    pub at: String,
    /// Every record, oldest capture first.
    pub records: Vec<ConsentRecord>,
    /// Each consent's state at `at`; a consent never recorded is absent (not granted).
    pub state: Vec<ConsentState>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConsentError {
    /// The request names something that does not exist or is malformed.
    #[error("{0}")]
    Invalid(String),
    /// Well-formed, but not allowed by the policies.
    #[error("{0}")]
    Refused(String),
    #[error("no subject has that id")]
    NoSubject,
    #[error("no consent record has that id")]
    NoRecord,
    #[error(
        "subject: this identifier is on the suppression list (an erased person); nothing was recorded"
    )]
    Suppressed,
    /// Not a confirmation link this gateway issued.
    #[error("this confirmation link is not valid")]
    BadLink,
    /// Expired, or the decision was superseded or already confirmed.
    #[error("this confirmation link has expired or was already used; sign up again")]
    LinkExpired,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Ingest(#[from] crate::profiles::ingest::IngestError),
}

impl From<LookupError> for ConsentError {
    fn from(e: LookupError) -> Self {
        match e {
            LookupError::Invalid(m) => Self::Invalid(format!("subject.{m}")),
            LookupError::Store(s) => Self::Store(s),
            LookupError::Audit(a) => Self::Audit(a),
        }
    }
}

fn invalid(m: impl Into<String>) -> ConsentError {
    ConsentError::Invalid(m.into())
}

/// The address with its host part cut: IPv4 /24, IPv6 /48.
pub fn truncate_ip(ip: &str) -> Result<String, ConsentError> {
    match ip.trim().parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => {
            let o = v4.octets();
            Ok(format!("{}.{}.{}.0/24", o[0], o[1], o[2]))
        }
        Ok(IpAddr::V6(v6)) => {
            let s = v6.segments();
            Ok(format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2]))
        }
        Err(_) => Err(invalid("proof.ip: not an IP address")),
    }
}

fn bounded(field: &str, v: &Option<String>, max: usize) -> Result<(), ConsentError> {
    match v {
        Some(s) if s.chars().count() > max => {
            Err(invalid(format!("{field}: at most {max} characters")))
        }
        _ => Ok(()),
    }
}

/// Which consent a request names: a consent, or a consent-based purpose's consent; or,
/// for a refusal of a legitimate-interest purpose, that purpose (an objection, Art. 21).
fn consent_named(
    policies: &Policies,
    name: &str,
    status: &str,
) -> Result<(String, bool), ConsentError> {
    let set = &policies.purposes;
    if let Some(c) = set.consents.iter().find(|c| c.name == name) {
        return Ok((c.name.clone(), c.double_opt_in));
    }
    match policies.purpose(name) {
        Some(p) if p.legal_basis == LegalBasis::Consent => {
            let c = p.consent.clone().unwrap_or_default();
            let double = set.consents.iter().any(|k| k.name == c && k.double_opt_in);
            Ok((c, double))
        }
        Some(p) if p.legal_basis == LegalBasis::LegitimateInterest && status != "granted" => {
            Ok((p.name.clone(), false))
        }
        Some(p) if p.legal_basis == LegalBasis::LegitimateInterest => {
            Err(ConsentError::Refused(format!(
                "purpose: `{name}` rests on legitimate interest, so there is nothing to grant; record `denied` or `withdrawn` to object to it (Art. 21)"
            )))
        }
        Some(p) => Err(ConsentError::Refused(format!(
            "purpose: `{name}` is not consent-based (its legal basis is {}); nothing to grant or object to",
            p.legal_basis.as_str()
        ))),
        None => Err(invalid(format!(
            "purpose: unknown; use one of the consents {}",
            set.consents
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// A `POST /v1/consents` body checked against the policies at `now`, before anything is
/// looked up or stored.
#[derive(Clone, Debug)]
pub struct CheckedConsent {
    consent: String,
    double_opt_in: bool,
    captured: Timestamp,
    proof: Option<Proof>,
    kind: String,
    value: String,
}

/// Checks `req` whole as [`Ledger::record`] does first: a pure function of the request,
/// the policies and the time (the fuzz targets drive it with untrusted bodies).
pub fn check(
    policies: &Policies,
    req: &NewConsent,
    now: Timestamp,
) -> Result<CheckedConsent, ConsentError> {
    let (consent, double_opt_in) = consent_named(policies, &req.purpose, &req.status)?;
    if !STATUSES.contains(&req.status.as_str()) {
        return Err(invalid("status: use granted, denied or withdrawn"));
    }
    if !METHODS.contains(&req.method.as_str()) {
        return Err(invalid(format!(
            "method: use one of {}",
            METHODS.join(", ")
        )));
    }
    if req.source.trim().is_empty() || req.source.chars().count() > 200 {
        return Err(invalid("source: 1 to 200 characters"));
    }
    bounded("notice_version", &req.notice_version, 100)?;
    let captured = match &req.captured_at {
        None => now,
        Some(s) => Timestamp::parse_rfc3339(s)
            .ok_or_else(|| invalid("captured_at: not an RFC 3339 time"))?,
    };
    if captured.unix_micros() > now.plus_seconds(300).unix_micros() {
        return Err(invalid("captured_at: is in the future"));
    }
    let proof = match &req.proof {
        None => None,
        Some(p) => {
            bounded("proof.user_agent", &p.user_agent, 512)?;
            bounded("proof.form_id", &p.form_id, 128)?;
            Some(Proof {
                user_agent: p.user_agent.clone(),
                form_id: p.form_id.clone(),
                ip: p.ip.as_deref().map(truncate_ip).transpose()?,
            })
        }
    };
    let (kind, value) = SubjectQuery(req.subject.clone()).identifier(policies)?;
    Ok(CheckedConsent {
        consent,
        double_opt_in,
        captured,
        proof,
        kind,
        value,
    })
}

pub struct Ledger<'a> {
    /// How long a pending grant can be confirmed.
    pub confirm_ttl_secs: i64,
    pub db: &'a Db,
    pub master: &'a crate::crypto::MasterKey,
    pub keyring: &'a Keyring,
    pub audit: &'a AuditLog,
    pub policies: &'a Policies,
    pub actor: Actor,
    pub request_id: Option<String>,
    pub now: Timestamp,
    /// The node's group-commit writer for new records ([`writer`]); without it each
    /// record is committed in a transaction of its own.
    pub writer: Option<&'a writer::Writer>,
}

impl Ledger<'_> {
    /// Checks `req` whole, finds (or makes) its subject, and appends the record with its
    /// audit entry.
    pub async fn record(&self, req: &NewConsent) -> Result<ConsentRecord, ConsentError> {
        let CheckedConsent {
            consent,
            double_opt_in,
            captured,
            proof,
            kind,
            value,
        } = check(self.policies, req, self.now)?;
        let status = if req.status == "granted" && double_opt_in && req.method != "double_opt_in" {
            "pending"
        } else {
            req.status.as_str()
        };
        let record = writer::Unplaced {
            kind: kind.clone(),
            indexes: self.keyring.blind_indexes(&kind, &value),
            // The subject is filled in once found, in the transaction that stores it.
            row: ConsentRow {
                id: uuid::Uuid::now_v7().simple().to_string(),
                subject_id: String::new(),
                consent: consent.clone(),
                status: status.to_owned(),
                method: req.method.clone(),
                source: req.source.trim().to_owned(),
                notice_version: req.notice_version.clone(),
                captured_at: captured.unix_micros(),
                recorded_at: self.now.unix_micros(),
                recorded_by: self.actor.key_id.clone(),
                proof: proof
                    .as_ref()
                    .map(serde_json::to_string)
                    .transpose()
                    .map_err(|e| invalid(format!("proof: {e}")))?,
            },
            entry: NewEntry::new(self.actor.clone(), "consent.record", Outcome::Ok)
                .request_id(self.request_id.clone())
                .attributes(vec![
                    format!("consent:{consent}"),
                    format!("status:{status}"),
                ]),
        };
        let mut stored = self.store(record.clone()).await?;
        if stored.is_none() {
            // Nobody has this identifier yet: the person is made first.
            self.create(&kind, &value).await?;
            stored = self.store(record).await?;
        }
        // The ingest path creates nobody whose identifier is on the suppression list.
        let row = stored.ok_or(ConsentError::Suppressed)?;
        let mut record = to_record(row);
        if status == "pending" {
            let expires = self.now.plus_seconds(self.confirm_ttl_secs);
            record.confirm_token = Some(
                confirm::issue(self.keyring, &record.id, expires).map_err(|e| {
                    StoreError::Corrupt {
                        table: "keyring_keys",
                        reason: e.to_string(),
                    }
                })?,
            );
            record.confirm_expires_at = Some(expires.to_rfc3339());
        }
        Ok(record)
    }

    /// Records that the subject withdrew `name` (a consent, or for a legitimate-interest
    /// purpose its name: an objection) by `method` from `source`, unless their latest
    /// decision on it already refuses it. Returns whether a record was appended.
    pub async fn withdraw_subject(
        &self,
        subject_id: &str,
        name: &str,
        method: &str,
        source: &str,
    ) -> Result<bool, ConsentError> {
        let txn = self.db.begin_write().await?;
        let latest = repo::latest(&txn, subject_id, name).await?;
        if latest.is_some_and(|r| r.status == "withdrawn" || r.status == "denied") {
            txn.rollback().await.map_err(StoreError::from)?;
            return Ok(false);
        }
        let row = ConsentRow {
            id: uuid::Uuid::now_v7().simple().to_string(),
            subject_id: subject_id.to_owned(),
            consent: name.to_owned(),
            status: "withdrawn".to_owned(),
            method: method.to_owned(),
            source: source.to_owned(),
            notice_version: None,
            captured_at: self.now.unix_micros(),
            recorded_at: self.now.unix_micros(),
            recorded_by: self.actor.key_id.clone(),
            proof: None,
        };
        let entry = NewEntry {
            subject_ref: Some(self.audit.subject_ref(subject_id)?),
            ..NewEntry::new(self.actor.clone(), "consent.record", Outcome::Ok)
                .request_id(self.request_id.clone())
                .attributes(vec![
                    format!("consent:{name}"),
                    "status:withdrawn".to_owned(),
                    format!("method:{method}"),
                ])
        };
        let insert = repo::insert_statement(self.db.backend(), &row);
        self.audit.append_with(&txn, Some(insert), entry).await?;
        txn.commit().await.map_err(StoreError::from)?;
        Ok(true)
    }

    /// Follows a confirmation link: the pending grant it names becomes a grant by
    /// `double_opt_in`, unless a later decision superseded it.
    pub async fn confirm(&self, token: &str) -> Result<ConsentRecord, ConsentError> {
        let id = confirm::verify(self.keyring, token, self.now).map_err(|e| match e {
            confirm::LinkError::Invalid => ConsentError::BadLink,
            confirm::LinkError::Expired => ConsentError::LinkExpired,
        })?;
        let txn = self.db.begin_write().await?;
        let pending = repo::by_id(&txn, &id).await?.ok_or(ConsentError::BadLink)?;
        let later = repo::history(&txn, &pending.subject_id)
            .await?
            .into_iter()
            // Any other decision on this consent since (a confirmation included).
            .any(|r| {
                r.consent == pending.consent
                    && r.id != pending.id
                    && (r.captured_at, r.recorded_at) >= (pending.captured_at, pending.recorded_at)
            });
        if pending.status != "pending" || later {
            return Err(ConsentError::LinkExpired);
        }
        let row = ConsentRow {
            id: uuid::Uuid::now_v7().simple().to_string(),
            status: "granted".into(),
            method: "double_opt_in".into(),
            source: "confirmation link".into(),
            captured_at: self.now.unix_micros(),
            recorded_at: self.now.unix_micros(),
            recorded_by: "subject".into(),
            proof: None,
            ..pending.clone()
        };
        let entry = NewEntry {
            subject_ref: Some(self.audit.subject_ref(&row.subject_id)?),
            ..NewEntry::new(self.actor.clone(), "consent.confirm", Outcome::Ok)
                .request_id(self.request_id.clone())
                .attributes(vec![format!("consent:{}", row.consent)])
        };
        let insert = repo::insert_statement(self.db.backend(), &row);
        self.audit.append_with(&txn, Some(insert), entry).await?;
        txn.commit().await.map_err(StoreError::from)?;
        Ok(to_record(row))
    }

    /// A person first seen through a consent, created by the ingest path (identity
    /// resolution, sealed identifier, its own audit entry).
    async fn create(&self, kind: &str, value: &str) -> Result<(), ConsentError> {
        use crate::profiles::ingest::{Ingest, Scope};
        use crate::profiles::segment::{Kind, Message};
        let id = format!("consent-{}", uuid::Uuid::new_v4().simple());
        let mut m = Message::new(Kind::Identify, id, self.now);
        m.identifiers = vec![(kind.to_owned(), value.to_owned())];
        let ingest = Ingest {
            db: self.db,
            master: self.master,
            keyring: self.keyring,
            audit: self.audit,
            policies: self.policies,
            source: self.actor.clone(),
            scope: Scope::Tracking,
            gpc: false,
            request_id: self.request_id.clone(),
            received_at: self.now,
        };
        ingest.run(&[m], false).await?;
        Ok(())
    }

    /// Stores `record` for the subject its identifier names, with its audit entry:
    /// through the node's writer, or else on its own. `None` when nobody has it.
    async fn store(&self, record: writer::Unplaced) -> Result<Option<ConsentRow>, ConsentError> {
        match self.writer {
            Some(w) => w.write(record).await,
            None => writer::commit_alone(self.db, self.audit, record).await,
        }
    }

    /// The signed receipt of one record; audited.
    pub async fn receipt(
        &self,
        id: &str,
        controller: &str,
    ) -> Result<receipt::SignedReceipt, ConsentError> {
        let txn = self.db.begin_write().await?;
        let row = repo::by_id(&txn, id).await?.ok_or(ConsentError::NoRecord)?;
        let subject_ref = self.audit.subject_ref(&row.subject_id)?;
        let signed = receipt::build(&row, &subject_ref, self.policies, controller, self.keyring)
            .map_err(|e| StoreError::Corrupt {
                table: "keyring_keys",
                reason: e.to_string(),
            })?;
        let entry = NewEntry {
            subject_ref: Some(subject_ref),
            ..NewEntry::new(self.actor.clone(), "consent.receipt", Outcome::Ok)
                .request_id(self.request_id.clone())
        };
        self.audit.append(&txn, entry).await?;
        txn.commit().await.map_err(StoreError::from)?;
        Ok(signed)
    }

    /// A subject's full history and its state at `at` (default: now); the read is audited.
    pub async fn history(
        &self,
        subject_id: &str,
        at: Option<&str>,
    ) -> Result<ConsentHistory, ConsentError> {
        let at = match at {
            None => self.now,
            Some(s) => {
                Timestamp::parse_rfc3339(s).ok_or_else(|| invalid("at: not an RFC 3339 time"))?
            }
        };
        let txn = self.db.begin_write().await?;
        if profiles::subject(&txn, subject_id).await?.is_none() {
            return Err(ConsentError::NoSubject);
        }
        let rows = repo::history(&txn, subject_id).await?;
        let entry = NewEntry {
            subject_ref: Some(self.audit.subject_ref(subject_id)?),
            ..NewEntry::new(self.actor.clone(), "consent.history", Outcome::Ok)
                .request_id(self.request_id.clone())
        };
        self.audit.append(&txn, entry).await?;
        txn.commit().await.map_err(StoreError::from)?;
        let mut latest: BTreeMap<&str, &ConsentRow> = BTreeMap::new();
        for r in rows.iter().filter(|r| r.captured_at <= at.unix_micros()) {
            latest.insert(r.consent.as_str(), r);
        }
        let ttl = self.confirm_ttl_secs.saturating_mul(1_000_000);
        let state = latest
            .values()
            .map(|r| ConsentState {
                consent: r.consent.clone(),
                // An unconfirmed grant lapses when its link does.
                status: if r.status == "pending"
                    && r.recorded_at.saturating_add(ttl) < at.unix_micros()
                {
                    "expired".to_owned()
                } else {
                    r.status.clone()
                },
                since: Timestamp::from_unix_micros(r.captured_at).to_rfc3339(),
                record_id: r.id.clone(),
            })
            .collect();
        Ok(ConsentHistory {
            subject_id: subject_id.to_owned(),
            at: at.to_rfc3339(),
            records: rows.into_iter().map(to_record).collect(),
            state,
        })
    }
}

fn to_record(r: ConsentRow) -> ConsentRecord {
    ConsentRecord {
        id: r.id,
        consent: r.consent,
        status: r.status,
        method: r.method,
        source: r.source,
        notice_version: r.notice_version,
        captured_at: Timestamp::from_unix_micros(r.captured_at).to_rfc3339(),
        recorded_at: Timestamp::from_unix_micros(r.recorded_at).to_rfc3339(),
        recorded_by: r.recorded_by,
        proof: r.proof.and_then(|p| serde_json::from_str(&p).ok()),
        confirm_token: None,
        confirm_expires_at: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_addresses_lose_their_host_part() {
        assert_eq!(truncate_ip("203.0.113.77").unwrap(), "203.0.113.0/24");
        assert_eq!(
            truncate_ip("2001:db8:85a3::8a2e:370:7334").unwrap(),
            "2001:db8:85a3::/48"
        );
        assert!(truncate_ip("not-an-ip").is_err());
    }
}
