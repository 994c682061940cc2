use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, RwLock};

use ring::signature::{Ed25519KeyPair, KeyPair};
use sea_orm::ConnectionTrait;

use super::{MasterKey, random_bytes};
use crate::domain::Timestamp;
use crate::store::{self, StoreError, keyring::WrappedKey};

#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("{0}")]
    MasterKey(String),
    #[error(
        "the master key does not open the stored keyring (is CONSENTRY_MASTER_KEY the one this database was created with?)"
    )]
    Unwrap,
    #[error("cannot wrap a key")]
    Wrap,
    #[error("the system random number generator failed")]
    Random,
    #[error("no active {0} key")]
    NoActiveKey(KeyKind),
    #[error("{kind} key version {version} does not exist")]
    NoSuchVersion { kind: KeyKind, version: i32 },
    #[error("stored {0} key is malformed")]
    Malformed(KeyKind),
    #[error("recipient {0} has no active pseudonym key")]
    NoRecipientKey(String),
    #[error("recipient {recipient} has no pseudonym key version {version}")]
    NoSuchRecipientVersion { recipient: String, version: i32 },
    #[error("version {version} is recipient {recipient}'s last active pseudonym key; rotate first")]
    LastRecipientVersion { recipient: String, version: i32 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a key is for. Each kind has its own independent versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyKind {
    /// HMAC of normalised identifiers, for look-up without decrypting.
    BlindIndex,
    /// HMAC of subject ids handed to recipients.
    Pseudonym,
    /// HMAC signing of OAuth access tokens.
    TokenSigning,
    /// Ed25519 signing of audit checkpoints and receipts.
    CheckpointSigning,
    /// HMAC of subject references written into the audit log.
    AuditSubject,
    /// HMAC of erased people's identifiers, to stop re-import.
    Suppression,
}

impl KeyKind {
    pub const ALL: [KeyKind; 6] = [
        KeyKind::BlindIndex,
        KeyKind::Pseudonym,
        KeyKind::TokenSigning,
        KeyKind::CheckpointSigning,
        KeyKind::AuditSubject,
        KeyKind::Suppression,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::BlindIndex => "blind_index",
            KeyKind::Pseudonym => "pseudonym",
            KeyKind::TokenSigning => "token_signing",
            KeyKind::CheckpointSigning => "checkpoint_signing",
            KeyKind::AuditSubject => "audit_subject",
            KeyKind::Suppression => "suppression",
        }
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for KeyKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = KeyKind::ALL.iter().map(|k| k.as_str()).collect();
                format!("unknown key kind: expected one of {}", names.join(", "))
            })
    }
}

/// One unwrapped key version.
pub struct KeyVersion {
    pub version: i32,
    material: Vec<u8>,
    pub public_key: Option<Vec<u8>>,
    pub created_at: Timestamp,
    pub retired: bool,
}

impl fmt::Debug for KeyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyVersion")
            .field("version", &self.version)
            .field("retired", &self.retired)
            .finish_non_exhaustive()
    }
}

impl KeyVersion {
    /// The secret bytes (an HMAC key, or the Ed25519 PKCS#8 document).
    pub fn material(&self) -> &[u8] {
        &self.material
    }

    pub fn ed25519(&self, kind: KeyKind) -> Result<Ed25519KeyPair, KeyringError> {
        Ed25519KeyPair::from_pkcs8(&self.material).map_err(|_| KeyringError::Malformed(kind))
    }
}

/// Every key version, unwrapped, as loaded at one moment.
#[derive(Debug, Default)]
pub struct Keyring {
    kinds: BTreeMap<KeyKind, Vec<KeyVersion>>,
    /// Each recipient's pseudonym key versions, by recipient id.
    recipients: BTreeMap<String, Vec<KeyVersion>>,
}

fn aad(kind: &str, version: i32) -> Vec<u8> {
    format!("consentry-keyring/v1|{kind}|{version}").into_bytes()
}

/// A recipient's pseudonym keys are stored as kind `pseudonym:<recipient id>`.
const RECIPIENT_PREFIX: &str = "pseudonym:";

fn recipient_kind(recipient: &str) -> String {
    format!("{RECIPIENT_PREFIX}{recipient}")
}

impl Keyring {
    /// Loads and unwraps every stored version. Unknown kinds (from a newer release) are skipped.
    pub async fn load<C: ConnectionTrait>(c: &C, master: &MasterKey) -> Result<Self, KeyringError> {
        let mut kinds: BTreeMap<KeyKind, Vec<KeyVersion>> = BTreeMap::new();
        let mut recipients: BTreeMap<String, Vec<KeyVersion>> = BTreeMap::new();
        for row in store::keyring::all(c).await? {
            let slot = if let Some(r) = row.kind.strip_prefix(RECIPIENT_PREFIX) {
                recipients.entry(r.to_owned()).or_default()
            } else if let Ok(kind) = row.kind.parse::<KeyKind>() {
                kinds.entry(kind).or_default()
            } else {
                continue;
            };
            let material = master.unwrap(&aad(&row.kind, row.version), &row.wrapped)?;
            slot.push(KeyVersion {
                version: row.version,
                material,
                public_key: row.public_key,
                created_at: Timestamp::from_unix_micros(row.created_at),
                retired: row.retired_at.is_some(),
            });
        }
        Ok(Self { kinds, recipients })
    }

    /// A keyring held in memory only, from (kind, version, secret material): for unit
    /// tests and the fuzz targets, which have no database. Never built in a release.
    #[cfg(any(test, fuzzing))]
    pub fn in_memory(keys: Vec<(KeyKind, i32, Vec<u8>)>) -> Self {
        let mut kinds: BTreeMap<KeyKind, Vec<KeyVersion>> = BTreeMap::new();
        for (kind, version, material) in keys {
            kinds.entry(kind).or_default().push(KeyVersion {
                version,
                material,
                public_key: None,
                created_at: Timestamp::from_unix_micros(0),
                retired: false,
            });
        }
        Self {
            kinds,
            recipients: BTreeMap::new(),
        }
    }

    /// The newest version that is not retired: the one used to sign and to write.
    pub fn current(&self, kind: KeyKind) -> Result<&KeyVersion, KeyringError> {
        self.kinds
            .get(&kind)
            .and_then(|vs| vs.iter().rev().find(|v| !v.retired))
            .ok_or(KeyringError::NoActiveKey(kind))
    }

    /// A version that still works (not retired).
    pub fn active(&self, kind: KeyKind, version: i32) -> Option<&KeyVersion> {
        self.any(kind, version).filter(|v| !v.retired)
    }

    /// Any version, retired or not: old signatures stay verifiable with old public keys.
    pub fn any(&self, kind: KeyKind, version: i32) -> Option<&KeyVersion> {
        self.kinds.get(&kind)?.iter().find(|v| v.version == version)
    }

    pub fn versions(&self, kind: KeyKind) -> &[KeyVersion] {
        self.kinds.get(&kind).map(Vec::as_slice).unwrap_or(&[])
    }

    /// A recipient's newest active pseudonym key.
    pub fn recipient_current(&self, recipient: &str) -> Result<&KeyVersion, KeyringError> {
        self.recipients
            .get(recipient)
            .and_then(|vs| vs.iter().rev().find(|v| !v.retired))
            .ok_or_else(|| KeyringError::NoRecipientKey(recipient.to_owned()))
    }

    /// One of a recipient's pseudonym key versions, retired or not.
    pub fn recipient_version(&self, recipient: &str, version: i32) -> Option<&KeyVersion> {
        self.recipients
            .get(recipient)?
            .iter()
            .find(|v| v.version == version)
    }

    pub fn recipient_versions(&self, recipient: &str) -> &[KeyVersion] {
        self.recipients
            .get(recipient)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    pub fn missing_kinds(&self) -> Vec<KeyKind> {
        KeyKind::ALL
            .into_iter()
            .filter(|k| self.current(*k).is_err())
            .collect()
    }
}

/// Adds a new version of `kind` (current from now on) inside the caller's transaction.
pub async fn create_version<C: ConnectionTrait>(
    c: &C,
    master: &MasterKey,
    kind: KeyKind,
    now: Timestamp,
) -> Result<i32, KeyringError> {
    let (material, public_key) = match kind {
        KeyKind::CheckpointSigning => {
            let rng = ring::rand::SystemRandom::new();
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| KeyringError::Random)?;
            let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
                .map_err(|_| KeyringError::Malformed(kind))?;
            (
                pkcs8.as_ref().to_vec(),
                Some(pair.public_key().as_ref().to_vec()),
            )
        }
        _ => (random_bytes::<32>()?.to_vec(), None),
    };
    insert_version(c, master, kind.as_str(), material, public_key, now).await
}

/// Adds a new pseudonym key version for one recipient (its first when it has none).
pub async fn create_recipient_version<C: ConnectionTrait>(
    c: &C,
    master: &MasterKey,
    recipient: &str,
    now: Timestamp,
) -> Result<i32, KeyringError> {
    let material = random_bytes::<32>()?.to_vec();
    insert_version(c, master, &recipient_kind(recipient), material, None, now).await
}

async fn insert_version<C: ConnectionTrait>(
    c: &C,
    master: &MasterKey,
    kind: &str,
    material: Vec<u8>,
    public_key: Option<Vec<u8>>,
    now: Timestamp,
) -> Result<i32, KeyringError> {
    let existing = store::keyring::all(c).await?;
    let version = existing
        .iter()
        .filter(|r| r.kind == kind)
        .map(|r| r.version)
        .max()
        .unwrap_or(0)
        + 1;
    let wrapped = master.wrap(&aad(kind, version), &material)?;
    store::keyring::insert(
        c,
        &WrappedKey {
            kind: kind.to_owned(),
            version,
            wrapped,
            public_key,
            created_at: now.unix_micros(),
            retired_at: None,
        },
    )
    .await?;
    Ok(version)
}

/// Retires a version inside the caller's transaction; refuses to retire the last active one.
pub async fn retire_version<C: ConnectionTrait>(
    c: &C,
    kind: KeyKind,
    version: i32,
    now: Timestamp,
) -> Result<(), KeyringError> {
    match retire_named(c, kind.as_str(), version, now).await? {
        Retired::Done => Ok(()),
        Retired::NoSuchVersion => Err(KeyringError::NoSuchVersion { kind, version }),
        Retired::LastActive => Err(KeyringError::NoActiveKey(kind)),
    }
}

/// Retires one of a recipient's pseudonym key versions: its pseudonyms stop resolving.
pub async fn retire_recipient_version<C: ConnectionTrait>(
    c: &C,
    recipient: &str,
    version: i32,
    now: Timestamp,
) -> Result<(), KeyringError> {
    match retire_named(c, &recipient_kind(recipient), version, now).await? {
        Retired::Done => Ok(()),
        Retired::NoSuchVersion => Err(KeyringError::NoSuchRecipientVersion {
            recipient: recipient.to_owned(),
            version,
        }),
        Retired::LastActive => Err(KeyringError::LastRecipientVersion {
            recipient: recipient.to_owned(),
            version,
        }),
    }
}

enum Retired {
    Done,
    NoSuchVersion,
    LastActive,
}

async fn retire_named<C: ConnectionTrait>(
    c: &C,
    kind: &str,
    version: i32,
    now: Timestamp,
) -> Result<Retired, KeyringError> {
    let rows = store::keyring::all(c).await?;
    let active: Vec<_> = rows
        .iter()
        .filter(|r| r.kind == kind && r.retired_at.is_none())
        .collect();
    if !rows.iter().any(|r| r.kind == kind && r.version == version) {
        return Ok(Retired::NoSuchVersion);
    }
    if active.len() == 1 && active[0].version == version {
        return Ok(Retired::LastActive);
    }
    store::keyring::retire(c, kind, version, now.unix_micros()).await?;
    Ok(Retired::Done)
}

/// The keyring every request reads; replaced whole when it is reloaded.
#[derive(Clone, Debug, Default)]
pub struct SharedKeyring(Arc<RwLock<Arc<Keyring>>>);

impl SharedKeyring {
    pub fn new(keyring: Keyring) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(keyring))))
    }

    pub fn get(&self) -> Arc<Keyring> {
        match self.0.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    pub fn replace(&self, keyring: Keyring) {
        let new = Arc::new(keyring);
        match self.0.write() {
            Ok(mut guard) => *guard = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
    }
}
