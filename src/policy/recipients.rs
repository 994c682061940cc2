//! Recipients: the processors and third parties data may be disclosed to. Guarantees:
//! - a recipient exists only with a kind and purposes the policies allow together;
//! - each recipient gets its own random pseudonym key (version 1 at creation), so two
//!   recipients' pseudonyms for one person cannot be linked;
//! - the webhook secret is stored only wrapped under the master key and never shown again;
//! - creation, rotation and retirement commit with their audit entry.
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Policies;
use crate::audit::{AuditError, AuditLog, NewEntry, Outcome};
use crate::crypto::{self, KeyringError, MasterKey};
use crate::domain::{Actor, RecipientId, Timestamp};
use crate::store::recipients::{self as repo, RecipientRow};
use crate::store::{Db, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum RecipientError {
    #[error("{0}")]
    Invalid(String),
    #[error("a recipient with id `{0}` already exists")]
    Exists(String),
    #[error("no recipient has that id")]
    NotFound,
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// `POST /v1/recipients`.
#[derive(Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRecipient {
    /// Used in URLs and keys: 1-64 of `a-z 0-9 _ . -`, starting with a letter.
    #[schema(example = "acme-esp")]
    pub id: String,
    /// For people, e.g. `Acme Mail (EU)`.
    pub name: String,
    /// A recipient kind from `policies/purposes.yaml` (`esp`, `analytics_tool` ...).
    #[schema(example = "esp")]
    pub kind: String,
    /// The purposes it may receive data for; each must allow this kind of recipient.
    pub purposes: Vec<String>,
    /// Where erasure and rectification notices are sent (HTTPS; HTTP only to localhost).
    pub webhook_url: Option<String>,
    /// Signs those notices (HMAC-SHA256); 16-256 characters. Required with a webhook URL.
    pub webhook_secret: Option<String>,
}

impl std::fmt::Debug for NewRecipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewRecipient")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// What anyone allowed to see a recipient sees: never its webhook secret.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Recipient {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub purposes: Vec<String>,
    pub webhook_url: Option<String>,
    pub has_webhook_secret: bool,
    /// RFC 3339.
    pub created_at: String,
    /// Its pseudonym key versions; pseudonyms of a retired version no longer resolve.
    pub pseudonym_keys: Vec<PseudonymKey>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct PseudonymKey {
    pub version: i32,
    pub created_at: String,
    pub retired: bool,
}

impl Recipient {
    fn new(row: &RecipientRow, keyring: &crypto::Keyring) -> Self {
        Self {
            id: row.id.clone(),
            name: row.name.clone(),
            kind: row.kind.clone(),
            purposes: row.purposes.clone(),
            webhook_url: row.webhook_url.clone(),
            has_webhook_secret: row.webhook_secret.is_some(),
            created_at: Timestamp::from_unix_micros(row.created_at).to_rfc3339(),
            pseudonym_keys: keyring
                .recipient_versions(&row.id)
                .iter()
                .map(|v| PseudonymKey {
                    version: v.version,
                    created_at: v.created_at.to_rfc3339(),
                    retired: v.retired,
                })
                .collect(),
        }
    }
}

fn invalid(m: impl Into<String>) -> RecipientError {
    RecipientError::Invalid(m.into())
}

/// The purposes of `purposes` that do not exist or do not allow recipients of `kind`.
pub fn check_purposes(policies: &Policies, kind: &str, purposes: &[String]) -> Vec<String> {
    purposes
        .iter()
        .filter_map(|p| match policies.purpose(p) {
            None => Some(format!("`{p}` is not a purpose in purposes.yaml")),
            Some(def) if !def.recipients.iter().any(|k| k == kind) => Some(format!(
                "`{p}` does not allow recipients of kind `{kind}` (it allows {})",
                def.recipients.join(", ")
            )),
            Some(_) => None,
        })
        .collect()
}

fn check_webhook(url: &str) -> Result<(), RecipientError> {
    let local = ["http://localhost", "http://127.0.0.1", "http://[::1]"]
        .iter()
        .any(|p| {
            url.strip_prefix(p)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with([':', '/']))
        });
    let ok = (url.starts_with("https://") && url.len() > "https://".len()) || local;
    if !ok || url.len() > 2048 || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            "webhook_url: an https:// URL (http:// only to localhost), at most 2048 characters",
        ));
    }
    Ok(())
}

pub struct Registry<'a> {
    pub db: &'a Db,
    pub master: &'a MasterKey,
    pub audit: &'a AuditLog,
    pub policies: &'a Policies,
    pub actor: Actor,
    pub request_id: Option<String>,
    pub now: Timestamp,
}

impl Registry<'_> {
    /// Checks `new` whole, then stores it with its first pseudonym key and audit entry.
    pub async fn create(&self, new: &NewRecipient) -> Result<RecipientRow, RecipientError> {
        let id = RecipientId::parse(new.id.trim()).map_err(|e| invalid(format!("id: {e}")))?;
        let name = new.name.trim();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(invalid("name: 1-100 printable characters"));
        }
        let kinds = &self.policies.purposes.recipients;
        if !kinds.iter().any(|k| k.name == new.kind) {
            return Err(invalid(format!(
                "kind: use one of {}",
                kinds
                    .iter()
                    .map(|k| k.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let mut purposes: Vec<String> = new.purposes.iter().map(|p| p.trim().to_owned()).collect();
        purposes.sort();
        purposes.dedup();
        if purposes.is_empty() {
            return Err(invalid("purposes: name at least one purpose"));
        }
        let problems = check_purposes(self.policies, &new.kind, &purposes);
        if !problems.is_empty() {
            return Err(invalid(format!("purposes: {}", problems.join("; "))));
        }
        let secret = match (&new.webhook_url, &new.webhook_secret) {
            (None, None) => None,
            (Some(url), Some(secret)) => {
                check_webhook(url)?;
                let n = secret.chars().count();
                if !(16..=256).contains(&n) {
                    return Err(invalid("webhook_secret: 16 to 256 characters"));
                }
                Some(
                    self.master
                        .wrap_webhook_secret(id.as_ref(), secret.as_bytes())?,
                )
            }
            (Some(_), None) => {
                return Err(invalid(
                    "webhook_secret: a webhook needs a secret to sign its notices",
                ));
            }
            (None, Some(_)) => return Err(invalid("webhook_secret: given without a webhook_url")),
        };
        let row = RecipientRow {
            id: id.as_ref().to_owned(),
            name: name.to_owned(),
            kind: new.kind.clone(),
            purposes,
            webhook_url: new.webhook_url.clone(),
            webhook_secret: secret,
            created_at: self.now.unix_micros(),
        };
        let txn = self.db.begin_write().await?;
        if !repo::insert(&txn, &row).await? {
            return Err(RecipientError::Exists(row.id));
        }
        let version =
            crypto::keyring::create_recipient_version(&txn, self.master, &row.id, self.now).await?;
        self.audit
            .append(
                &txn,
                NewEntry::new(self.actor.clone(), "recipient.create", Outcome::Ok)
                    .request_id(self.request_id.clone())
                    .attributes(vec![
                        format!("recipient:{}", row.id),
                        format!("kind:{}", row.kind),
                        format!("pseudonym:v{version}"),
                    ]),
            )
            .await?;
        txn.commit().await.map_err(StoreError::from)?;
        Ok(row)
    }

    /// Starts a new pseudonym key version for a recipient; older versions keep resolving.
    pub async fn rotate(&self, recipient: &str) -> Result<i32, RecipientError> {
        let txn = self.db.begin_write().await?;
        if repo::get(&txn, recipient).await?.is_none() {
            return Err(RecipientError::NotFound);
        }
        let version =
            crypto::keyring::create_recipient_version(&txn, self.master, recipient, self.now)
                .await?;
        self.audit
            .append(
                &txn,
                NewEntry::new(self.actor.clone(), "recipient.rotate", Outcome::Ok)
                    .request_id(self.request_id.clone())
                    .attributes(vec![
                        format!("recipient:{recipient}"),
                        format!("pseudonym:v{version}"),
                    ]),
            )
            .await?;
        txn.commit().await.map_err(StoreError::from)?;
        Ok(version)
    }

    /// Retires a pseudonym key version: pseudonyms made with it stop resolving.
    pub async fn retire(&self, recipient: &str, version: i32) -> Result<(), RecipientError> {
        let txn = self.db.begin_write().await?;
        if repo::get(&txn, recipient).await?.is_none() {
            return Err(RecipientError::NotFound);
        }
        crypto::keyring::retire_recipient_version(&txn, recipient, version, self.now).await?;
        self.audit
            .append(
                &txn,
                NewEntry::new(self.actor.clone(), "recipient.retire", Outcome::Ok)
                    .request_id(self.request_id.clone())
                    .attributes(vec![
                        format!("recipient:{recipient}"),
                        format!("pseudonym:v{version}"),
                    ]),
            )
            .await?;
        txn.commit().await.map_err(StoreError::from)?;
        Ok(())
    }
}

/// A recipient's webhook secret, unwrapped (for signing notices).
pub fn webhook_secret(
    master: &MasterKey,
    row: &RecipientRow,
) -> Result<Option<Vec<u8>>, KeyringError> {
    row.webhook_secret
        .as_ref()
        .map(|w| master.unwrap_webhook_secret(&row.id, w))
        .transpose()
}

pub async fn get(db: &Db, id: &str) -> Result<Option<RecipientRow>, RecipientError> {
    Ok(repo::get(db.conn(), id).await?)
}

pub async fn all(db: &Db) -> Result<Vec<RecipientRow>, RecipientError> {
    Ok(repo::all(db.conn()).await?)
}

/// The public view of rows, with their key versions from `keyring`.
pub fn describe(rows: &[RecipientRow], keyring: &crypto::Keyring) -> Vec<Recipient> {
    rows.iter().map(|r| Recipient::new(r, keyring)).collect()
}
