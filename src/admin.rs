//! Administrative operations shared by the HTTP API and the CLI. Each change and its
//! audit entry commit in one transaction.
use std::path::Path;

use serde::Serialize;

use crate::audit::{AuditError, AuditLog, NewEntry, Outcome};
use crate::auth::api_key;
use crate::crypto::{self, KeyKind, Keyring, KeyringError, MasterKey};
use crate::domain::{Actor, PurposeId, RecipientId, Role, Timestamp};
use crate::store::{self, Db, StoreError, api_keys::ApiKeyRow};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Invalid(String),
    #[error("no API key with that id, or it is already revoked")]
    KeyNotFound,
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Keyring(#[from] KeyringError),
}

/// A validated request for a new API key.
#[derive(Clone, Debug)]
pub struct NewKey {
    pub name: String,
    pub role: Role,
    pub recipient: Option<RecipientId>,
    pub purposes: Vec<PurposeId>,
}

impl NewKey {
    pub fn parse(
        name: &str,
        role: Role,
        recipient: Option<&str>,
        purposes: &[String],
    ) -> Result<Self, AdminError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(AdminError::Invalid(
                "name must be 1-100 printable characters".into(),
            ));
        }
        let recipient = recipient
            .map(RecipientId::parse)
            .transpose()
            .map_err(AdminError::Invalid)?;
        let mut purposes = purposes
            .iter()
            .map(|p| PurposeId::parse(p.trim()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(AdminError::Invalid)?;
        purposes.sort();
        purposes.dedup();
        match role {
            Role::Esp if recipient.is_none() || purposes.is_empty() => {
                return Err(AdminError::Invalid(
                    "an esp key needs a recipient and at least one purpose".into(),
                ));
            }
            Role::Esp => {}
            _ if recipient.is_some() || !purposes.is_empty() => {
                return Err(AdminError::Invalid(format!(
                    "recipient and purposes apply to esp keys only, not to {role}"
                )));
            }
            _ => {}
        }
        Ok(Self {
            name: name.to_owned(),
            role,
            recipient,
            purposes,
        })
    }
}

/// What anyone may see of a key: never its secret or hash.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct KeyInfo {
    pub id: String,
    pub name: String,
    #[schema(value_type = String, example = "auditor")]
    pub role: Role,
    pub recipient: Option<String>,
    pub purposes: Vec<String>,
    /// RFC 3339.
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
}

fn ts(us: i64) -> String {
    Timestamp::from_unix_micros(us).to_rfc3339()
}

impl From<&ApiKeyRow> for KeyInfo {
    fn from(r: &ApiKeyRow) -> Self {
        Self {
            id: r.id.clone(),
            name: r.name.clone(),
            role: r.role,
            recipient: r.recipient.clone(),
            purposes: r.purposes.clone(),
            created_at: ts(r.created_at),
            last_used_at: r.last_used_at.map(ts),
            revoked_at: r.revoked_at.map(ts),
        }
    }
}

pub struct Context<'a> {
    pub db: &'a Db,
    pub audit: &'a AuditLog,
    pub actor: Actor,
    pub request_id: Option<String>,
    pub now: Timestamp,
}

/// Creates a key; returns it and the token, which is shown once and never stored.
pub async fn create_key(ctx: &Context<'_>, new: NewKey) -> Result<(KeyInfo, String), AdminError> {
    if let Some(recipient) = &new.recipient {
        check_recipient(ctx.db, recipient.as_ref(), &new.purposes).await?;
    }
    let (row, token) = generate_key(new, ctx.now).await?;
    let txn = ctx.db.begin_write().await?;
    store::api_keys::insert(&txn, &row).await?;
    let entry = NewEntry::new(ctx.actor.clone(), "keys.create", Outcome::Ok)
        .request_id(ctx.request_id.clone())
        .attributes(vec![
            format!("key:{}", row.id),
            format!("role:{}", row.role),
        ]);
    ctx.audit.append(&txn, entry).await?;
    txn.commit().await.map_err(StoreError::from)?;
    Ok((KeyInfo::from(&row), token))
}

/// An esp key acts for a registered recipient and only for purposes it is registered for.
async fn check_recipient(db: &Db, id: &str, purposes: &[PurposeId]) -> Result<(), AdminError> {
    let Some(r) = store::recipients::get(db.conn(), id).await? else {
        return Err(AdminError::Invalid(format!(
            "recipient `{id}` is not registered; create it first (POST /v1/recipients)"
        )));
    };
    let extra: Vec<&str> = purposes
        .iter()
        .map(AsRef::as_ref)
        .filter(|p| !r.purposes.iter().any(|q| q == p))
        .collect();
    if !extra.is_empty() {
        return Err(AdminError::Invalid(format!(
            "purposes: recipient `{id}` is not registered for {}",
            extra.join(", ")
        )));
    }
    Ok(())
}

/// A new key's row and its token (argon2 runs off the async threads).
async fn generate_key(new: NewKey, now: Timestamp) -> Result<(ApiKeyRow, String), AdminError> {
    let token = tokio::task::spawn_blocking(api_key::generate)
        .await
        .map_err(|_| AdminError::Keyring(KeyringError::Random))??;
    let row = ApiKeyRow {
        id: token.key_id,
        name: new.name,
        role: new.role,
        recipient: new.recipient.map(|r| r.as_ref().to_owned()),
        purposes: new.purposes.iter().map(|p| p.as_ref().to_owned()).collect(),
        secret_hash: token.secret_hash,
        created_at: now.unix_micros(),
        last_used_at: None,
        revoked_at: None,
    };
    Ok((row, token.token))
}

pub async fn list_keys(db: &Db) -> Result<Vec<KeyInfo>, AdminError> {
    Ok(store::api_keys::list(db.conn())
        .await?
        .iter()
        .map(KeyInfo::from)
        .collect())
}

pub async fn revoke_key(ctx: &Context<'_>, id: &str) -> Result<(), AdminError> {
    let txn = ctx.db.begin_write().await?;
    if !store::api_keys::revoke(&txn, id, ctx.now.unix_micros()).await? {
        return Err(AdminError::KeyNotFound);
    }
    let entry = NewEntry::new(ctx.actor.clone(), "keys.revoke", Outcome::Ok)
        .request_id(ctx.request_id.clone())
        .attributes(vec![format!("key:{id}")]);
    ctx.audit.append(&txn, entry).await?;
    txn.commit().await.map_err(StoreError::from)?;
    Ok(())
}

/// Adds a version of `kind`; it is current from now on, older ones keep working.
pub async fn rotate(
    ctx: &Context<'_>,
    master: &MasterKey,
    kind: KeyKind,
) -> Result<i32, AdminError> {
    let txn = ctx.db.begin_write().await?;
    let version = crypto::keyring::create_version(&txn, master, kind, ctx.now).await?;
    let entry = NewEntry::new(ctx.actor.clone(), "keyring.rotate", Outcome::Ok)
        .request_id(ctx.request_id.clone())
        .attributes(vec![format!("{kind}:v{version}")]);
    ctx.audit.append(&txn, entry).await?;
    txn.commit().await.map_err(StoreError::from)?;
    Ok(version)
}

pub async fn retire(ctx: &Context<'_>, kind: KeyKind, version: i32) -> Result<(), AdminError> {
    let txn = ctx.db.begin_write().await?;
    crypto::keyring::retire_version(&txn, kind, version, ctx.now).await?;
    let entry = NewEntry::new(ctx.actor.clone(), "keyring.retire", Outcome::Ok)
        .request_id(ctx.request_id.clone())
        .attributes(vec![format!("{kind}:v{version}")]);
    ctx.audit.append(&txn, entry).await?;
    txn.commit().await.map_err(StoreError::from)?;
    Ok(())
}

/// Makes sure every key kind has an active version, then loads the keyring.
/// Safe to run from several nodes at once: the head lock serialises them.
pub async fn ensure_keyring(
    db: &Db,
    master: &MasterKey,
    now: Timestamp,
) -> Result<Keyring, AdminError> {
    let keyring = Keyring::load(db.conn(), master).await?;
    if keyring.missing_kinds().is_empty() {
        return Ok(keyring);
    }
    let txn = db.begin_write().await?;
    store::audit::lock_head(&txn).await?;
    let current = Keyring::load(&txn, master).await?;
    for kind in current.missing_kinds() {
        crypto::keyring::create_version(&txn, master, kind, now).await?;
    }
    txn.commit().await.map_err(StoreError::from)?;
    Ok(Keyring::load(db.conn(), master).await?)
}

/// On an empty database, creates the first admin key, writes it to `DATA_DIR/admin.token`
/// (mode 0600) and returns it. Returns `None` when any key exists.
pub async fn bootstrap_admin(
    db: &Db,
    audit: &AuditLog,
    data_dir: &Path,
    now: Timestamp,
) -> Result<Option<String>, AdminError> {
    let txn = db.begin_write().await?;
    store::audit::lock_head(&txn).await?;
    if store::api_keys::count(&txn).await? > 0 {
        return Ok(None);
    }
    let new = NewKey::parse("bootstrap admin", Role::Admin, None, &[])?;
    let (row, token) = generate_key(new, now).await?;
    store::api_keys::insert(&txn, &row).await?;
    let entry = NewEntry::new(Actor::system(), "keys.bootstrap", Outcome::Ok)
        .attributes(vec![format!("key:{}", row.id), "role:admin".into()]);
    audit.append(&txn, entry).await?;
    crypto::write_secret_file(&data_dir.join("admin.token"), &token)
        .map_err(|e| AdminError::Invalid(format!("cannot write admin.token: {e}")))?;
    txn.commit().await.map_err(StoreError::from)?;
    Ok(Some(token))
}
