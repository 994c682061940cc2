//! Verifying a requester by a code sent to the email address on file. Guarantees:
//! - the code is six random digits, sent through the configured SMTP relay to the
//!   subject's own address (not to whatever the requester typed), valid for
//!   `dsar_code_ttl_secs`;
//! - only a keyed hash of it is stored (HMAC-SHA256 under the token-signing key);
//! - five wrong entries void it; a new one must be sent;
//! - sending, each wrong entry and the verification are audited; no address or code is
//!   ever logged or returned.
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::requests::{RequestError, RequestView, Requests};
use crate::audit::{NewEntry, Outcome};
use crate::crypto::{KeyKind, MasterKey, SubjectKey, hmac_sha256, random_bytes};
use crate::store::dsar as repo;
use crate::store::{StoreError, profiles};

/// Wrong entries after which a code is void.
pub const MAX_ATTEMPTS: i32 = 5;

/// The SMTP relay codes are sent through.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Mailer(..)")
    }
}

impl Mailer {
    /// From `smtp://host:port` (plain), `smtp://host:587?tls=required` (STARTTLS) or
    /// `smtps://user:password@host:465` (TLS), and the sender address.
    pub fn new(url: &str, from: &str) -> Result<Self, String> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| format!("smtp_url: {e}"))?
            .build();
        let from = from
            .parse::<Mailbox>()
            .map_err(|e| format!("smtp_from: {e}"))?;
        Ok(Self { transport, from })
    }

    async fn send(&self, to: &str, subject: &str, body: String) -> Result<(), String> {
        let to = to
            .parse::<Mailbox>()
            .map_err(|_| "the address on file cannot be mailed".to_owned())?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| format!("cannot build the message: {e}"))?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|_| "the SMTP relay refused or could not be reached".to_owned())
    }
}

fn equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub struct Codes<'a> {
    pub requests: Requests<'a>,
    pub master: &'a MasterKey,
    pub mailer: Option<&'a Mailer>,
    pub ttl_secs: i64,
}

impl Codes<'_> {
    fn hash(&self, id: &str, code: &str) -> Result<String, RequestError> {
        let key = self.requests.keyring.current(KeyKind::TokenSigning)?;
        Ok(hex::encode(hmac_sha256(
            key.material(),
            format!("dsar-code|{id}|{code}").as_bytes(),
        )))
    }

    /// Sends a new code to the subject's email address on file (voiding any earlier one).
    pub async fn send(&self, id: &str) -> Result<RequestView, RequestError> {
        let r = &self.requests;
        let Some(mailer) = self.mailer else {
            return Err(RequestError::Invalid(
                "method: email_code needs an SMTP relay (set smtp_url); use dpo_attested".into(),
            ));
        };
        let row = repo::get(r.db.conn(), id)
            .await?
            .ok_or(RequestError::NotFound)?;
        if row.status != "received" && row.status != "verifying" {
            return Err(RequestError::State(format!(
                "a request that is {} is not waiting for verification",
                row.status
            )));
        }
        let Some(subject) = row.subject_id.clone() else {
            return Err(RequestError::State(
                "no data is held for this request, so there is nobody to verify; reject it with no_data_held".into(),
            ));
        };
        let address = self.address(&subject).await?.ok_or_else(|| {
            RequestError::Invalid(
                "method: the subject has no email address on file; use dpo_attested".into(),
            )
        })?;
        let n = u32::from_be_bytes(random_bytes::<4>()?) % 1_000_000;
        let code = format!("{n:06}");
        let minutes = self.ttl_secs / 60;
        mailer
            .send(
                &address,
                "Your verification code",
                format!(
                    "Your code to confirm your data request {id} is {code}.\n\nIt expires in {minutes} minutes. If you did not make this request, ignore this message.\n"
                ),
            )
            .await
            .map_err(RequestError::Unavailable)?;
        let txn = r.db.begin_write().await?;
        let mut row = repo::get(&txn, id).await?.ok_or(RequestError::NotFound)?;
        row.verification_method = Some("email_code".into());
        row.code_hash = Some(self.hash(id, &code)?);
        row.code_expires_at = Some(r.now.plus_seconds(self.ttl_secs).unix_micros());
        row.code_attempts = 0;
        if row.status == "received" {
            r.move_in(
                &txn,
                &mut row,
                "verifying",
                "a code was sent to the address on file",
            )
            .await?;
        } else {
            repo::update(&txn, &row).await?;
            self.audited(&txn, &subject, id, "dsar.code_sent", Outcome::Ok)
                .await?;
        }
        txn.commit().await.map_err(StoreError::from)?;
        r.show(id).await
    }

    /// Checks an entered code; the right one verifies the request.
    pub async fn check(&self, id: &str, code: &str) -> Result<RequestView, RequestError> {
        let r = &self.requests;
        let txn = r.db.begin_write().await?;
        let mut row = repo::get(&txn, id).await?.ok_or(RequestError::NotFound)?;
        let (Some(hash), Some(expires)) = (row.code_hash.clone(), row.code_expires_at) else {
            return Err(RequestError::State(
                "no code was sent for this request; send one with {\"method\": \"email_code\"}"
                    .into(),
            ));
        };
        if row.status != "verifying" {
            return Err(RequestError::State(format!(
                "a request that is {} is not waiting for a code",
                row.status
            )));
        }
        if row.code_attempts >= MAX_ATTEMPTS {
            return Err(RequestError::State(
                "too many wrong codes; send a new one".into(),
            ));
        }
        if expires < r.now.unix_micros() {
            return Err(RequestError::Expired);
        }
        let subject = row.subject_id.clone().unwrap_or_default();
        let given = code.trim();
        let right = given.len() == 6
            && given.bytes().all(|b| b.is_ascii_digit())
            && equal(self.hash(id, given)?.as_bytes(), hash.as_bytes());
        if !right {
            row.code_attempts += 1;
            repo::update(&txn, &row).await?;
            self.audited(&txn, &subject, id, "dsar.code_wrong", Outcome::Denied)
                .await?;
            txn.commit().await.map_err(StoreError::from)?;
            let left = MAX_ATTEMPTS - row.code_attempts;
            return Err(RequestError::Invalid(format!(
                "code: wrong ({left} attempts left)"
            )));
        }
        row.code_hash = None;
        row.code_expires_at = None;
        row.verification_note = Some("code sent to the address on file was entered".into());
        r.move_in(
            &txn,
            &mut row,
            "verified",
            "the code sent to the address on file was entered",
        )
        .await?;
        txn.commit().await.map_err(StoreError::from)?;
        r.show(id).await
    }

    /// The subject's earliest email address, opened with its data key.
    async fn address(&self, subject: &str) -> Result<Option<String>, RequestError> {
        let c = self.requests.db.conn();
        let Some(wrapped) = profiles::subject_key(c, subject).await? else {
            return Ok(None);
        };
        let key = SubjectKey::unwrap(self.master, subject, &wrapped)?;
        let mut emails: Vec<_> = profiles::identifiers_of(c, subject)
            .await?
            .into_iter()
            .filter(|i| i.kind == "email")
            .collect();
        emails.sort_by_key(|i| i.created_at);
        match emails.first() {
            Some(i) => Ok(String::from_utf8(key.open("email", &i.sealed)?).ok()),
            None => Ok(None),
        }
    }

    async fn audited(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        subject: &str,
        id: &str,
        action: &str,
        outcome: Outcome,
    ) -> Result<(), RequestError> {
        let r = &self.requests;
        let entry = NewEntry {
            subject_ref: Some(r.audit.subject_ref(subject)?),
            ..NewEntry::new(r.actor.clone(), action, outcome)
                .request_id(r.request_id.clone())
                .attributes(vec![format!("dsar:{id}")])
        };
        r.audit.append(txn, entry).await?;
        Ok(())
    }
}
