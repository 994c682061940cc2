//! Authentication and roles. Guarantees:
//! - API key secrets are 256-bit random values, stored only as argon2id hashes;
//! - a verified token is cached (keyed by its SHA-256) for at most `token_cache_ttl_secs`,
//!   which bounds how long a revoked key keeps working; requests arriving at once with a
//!   token not (or no longer) cached wait for one verification instead of each paying
//!   argon2;
//! - a failed attempt always pays a full argon2 verification, so it is never answered
//!   faster than a success, and repeated failures from one address are refused (429);
//! - OAuth access tokens are short-lived HS256 JWTs; a token of a revoked key is refused.
pub mod access_token;
pub mod api_key;
mod cache;
mod limiter;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

pub use limiter::FailureLimiter;

use crate::crypto::{SharedKeyring, sha256};
use crate::domain::{Actor, Clock, Role, Timestamp};
use crate::store::{self, Db, StoreError, api_keys::ApiKeyRow};
use cache::TtlCache;

/// Who is calling, as proven by their token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub key_id: String,
    pub name: String,
    pub role: Role,
    pub recipient: Option<String>,
    pub purposes: Vec<String>,
    pub via: Credential,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Credential {
    ApiKey,
    AccessToken,
}

impl Caller {
    pub fn actor(&self) -> Actor {
        Actor {
            key_id: self.key_id.clone(),
            role: self.role.as_str().to_owned(),
        }
    }

    /// Whether this caller may see what is kept for `recipient` (segments, templates,
    /// campaigns): an `esp` key only its own recipient's, other roles any.
    pub fn sees(&self, recipient: &str) -> bool {
        self.role != Role::Esp || self.recipient.as_deref() == Some(recipient)
    }

    /// Which recipient's records a listing shows: `Some(None)` all of them,
    /// `Some(Some(r))` only `r`'s (an `esp` key), `None` nothing (an `esp` key with no
    /// recipient).
    pub fn listing(&self) -> Option<Option<&str>> {
        match (self.role, self.recipient.as_deref()) {
            (Role::Esp, None) => None,
            (Role::Esp, Some(r)) => Some(Some(r)),
            _ => Some(None),
        }
    }

    /// The recipient a new record is for: the one named, else the key's own.
    pub fn recipient_or_own(&self, named: Option<&str>) -> Option<String> {
        named.or(self.recipient.as_deref()).map(str::to_owned)
    }

    fn from_row(row: &ApiKeyRow, via: Credential) -> Self {
        Self {
            key_id: row.id.clone(),
            name: row.name.clone(),
            role: row.role,
            recipient: row.recipient.clone(),
            purposes: row.purposes.clone(),
            via,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing credentials")]
    Missing,
    #[error("invalid or expired credentials")]
    Invalid,
    #[error("too many failed attempts")]
    RateLimited { retry_after_secs: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An issued OAuth access token.
#[derive(Clone, Debug)]
pub struct AccessToken {
    pub token: String,
    pub expires_in: u64,
    pub caller: Caller,
}

#[derive(Debug)]
pub struct Authenticator {
    db: Db,
    keyring: SharedKeyring,
    clock: Arc<dyn Clock>,
    /// Verified callers, with the expiry (by the clock) of access tokens.
    cache: TtlCache<(Caller, Option<Timestamp>)>,
    /// One verification at a time per token: requests arriving with a token that is not
    /// (or no longer) cached wait for the first one's argon2 check and take its result
    /// from the cache, instead of each paying argon2 at once.
    verifying: Turns,
    /// How many argon2 verifications this node has run (successes and failures).
    verifications: std::sync::atomic::AtomicU64,
    access_ttl_secs: u64,
    /// A hash of nothing in particular, verified on failures so they cost what successes do.
    dummy_hash: String,
    pub limiter: FailureLimiter,
}

type Turns = std::sync::Mutex<HashMap<[u8; 32], Arc<tokio::sync::Mutex<()>>>>;

/// A request's turn to verify one token; see [`Authenticator::verification_turn`].
struct Turn<'a> {
    map: &'a Turns,
    digest: [u8; 32],
    lock: Arc<tokio::sync::Mutex<()>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for Turn<'_> {
    /// Ends the turn, and forgets the token's lock once no other request holds or waits
    /// for it (clones are made only under the map's lock, so the count cannot grow while
    /// it is read here: the map's and this turn's are the last two).
    fn drop(&mut self) {
        drop(self.guard.take());
        if let Ok(mut map) = self.map.lock()
            && map
                .get(&self.digest)
                .is_some_and(|l| Arc::ptr_eq(l, &self.lock))
            && Arc::strong_count(&self.lock) == 2
        {
            map.remove(&self.digest);
        }
    }
}

impl Authenticator {
    pub fn new(
        db: Db,
        keyring: SharedKeyring,
        clock: Arc<dyn Clock>,
        cache_ttl: Duration,
        cache_capacity: usize,
        access_ttl_secs: u64,
        failures_per_minute: u32,
    ) -> Result<Self, crate::crypto::KeyringError> {
        let dummy = api_key::generate()?;
        Ok(Self {
            db,
            keyring,
            clock,
            cache: TtlCache::new(cache_ttl, cache_capacity),
            verifying: std::sync::Mutex::new(HashMap::new()),
            verifications: std::sync::atomic::AtomicU64::new(0),
            access_ttl_secs,
            dummy_hash: dummy.secret_hash,
            limiter: FailureLimiter::new(failures_per_minute),
        })
    }

    /// Authenticates a bearer token (an API key or an access token) from `ip`.
    pub async fn authenticate(&self, token: &str, ip: Option<IpAddr>) -> Result<Caller, AuthError> {
        if let Some(ip) = ip
            && let Err(secs) = self.limiter.check(ip)
        {
            return Err(AuthError::RateLimited {
                retry_after_secs: secs,
            });
        }
        let digest = sha256(token.as_bytes());
        if let Some(caller) = self.cached(&digest) {
            return Ok(caller);
        }
        let _turn = self.verification_turn(digest).await;
        // Another request with this token may have been verified while this one waited.
        if let Some(caller) = self.cached(&digest) {
            return Ok(caller);
        }
        let result = if token.starts_with(api_key::PREFIX) {
            self.verify_api_key(token).await
        } else {
            self.verify_access_token(token).await
        };
        match result {
            Ok((caller, expires)) => {
                let ttl = expires.map(|t| {
                    let left = t.unix_micros() - self.clock.now().unix_micros();
                    Duration::from_micros(u64::try_from(left).unwrap_or(0))
                });
                self.cache.insert(digest, (caller.clone(), expires), ttl);
                Ok(caller)
            }
            Err(AuthError::Invalid) => {
                if let Some(ip) = ip {
                    self.limiter.record_failure(ip);
                }
                Err(AuthError::Invalid)
            }
            Err(e) => Err(e),
        }
    }

    fn count_verification(&self) {
        self.verifications
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// How many argon2 verifications this node has run.
    pub fn verifications(&self) -> u64 {
        self.verifications
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn cached(&self, digest: &[u8; 32]) -> Option<Caller> {
        self.cache
            .get(digest)
            .filter(|(_, expires)| expires.is_none_or(|t| t > self.clock.now()))
            .map(|(caller, _)| caller)
    }

    /// Waits for this token's turn to verify: held until the returned guard is dropped
    /// (also when the request is cancelled).
    async fn verification_turn(&self, digest: [u8; 32]) -> Turn<'_> {
        let lock = match self.verifying.lock() {
            Ok(mut map) => map.entry(digest).or_default().clone(),
            // A poisoned map only costs the sharing: verify alone.
            Err(_) => Arc::default(),
        };
        let guard = lock.clone().lock_owned().await;
        Turn {
            map: &self.verifying,
            digest,
            lock,
            guard: Some(guard),
        }
    }

    async fn verify_api_key(&self, token: &str) -> Result<(Caller, Option<Timestamp>), AuthError> {
        let parsed = api_key::parse(token);
        let row = match parsed {
            Some((id, _)) => store::api_keys::find(self.db.conn(), id).await?,
            None => None,
        };
        let secret = parsed.map(|(_, s)| s.to_owned()).unwrap_or_default();
        let hash = row
            .as_ref()
            .map_or_else(|| self.dummy_hash.clone(), |r| r.secret_hash.clone());
        self.count_verification();
        let matches = tokio::task::spawn_blocking(move || api_key::verify_secret(&secret, &hash))
            .await
            .unwrap_or(false);
        match row {
            Some(row) if matches && row.revoked_at.is_none() => {
                let now = self.clock.now().unix_micros();
                store::api_keys::touch(self.db.conn(), &row.id, now).await?;
                Ok((Caller::from_row(&row, Credential::ApiKey), None))
            }
            _ => Err(AuthError::Invalid),
        }
    }

    async fn verify_access_token(
        &self,
        token: &str,
    ) -> Result<(Caller, Option<Timestamp>), AuthError> {
        let now = self.clock.now();
        let Some(claims) = access_token::verify(&self.keyring.get(), token, now) else {
            self.burn_dummy().await;
            return Err(AuthError::Invalid);
        };
        let row = store::api_keys::find(self.db.conn(), &claims.sub).await?;
        match row {
            Some(row) if row.revoked_at.is_none() => {
                let caller = Caller::from_row(&row, Credential::AccessToken);
                let expires = Timestamp::from_unix_micros(claims.exp.saturating_mul(1_000_000));
                Ok((caller, Some(expires)))
            }
            _ => {
                self.burn_dummy().await;
                Err(AuthError::Invalid)
            }
        }
    }

    /// Pays one argon2 verification, so a failure costs at least what a success does.
    async fn burn_dummy(&self) {
        self.count_verification();
        let hash = self.dummy_hash.clone();
        let _ = tokio::task::spawn_blocking(move || api_key::verify_secret("x", &hash)).await;
    }

    /// RFC 6749 §4.4: exchanges an API key (client secret) for a short-lived access token.
    pub async fn issue_access_token(
        &self,
        client_id: &str,
        client_secret: &str,
        ip: Option<IpAddr>,
    ) -> Result<AccessToken, AuthError> {
        let caller = self.authenticate(client_secret, ip).await?;
        if caller.via != Credential::ApiKey || caller.key_id != client_id {
            if let Some(ip) = ip {
                self.limiter.record_failure(ip);
            }
            return Err(AuthError::Invalid);
        }
        let now = self.clock.now().unix_seconds();
        let jti = hex::encode(crate::crypto::random_bytes::<16>().map_err(|_| AuthError::Invalid)?);
        let ttl = i64::try_from(self.access_ttl_secs).unwrap_or(900);
        let claims = access_token::Claims {
            iss: access_token::ISSUER.to_owned(),
            sub: caller.key_id.clone(),
            role: caller.role,
            rcp: caller.recipient.clone(),
            pur: caller.purposes.clone(),
            iat: now,
            exp: now + ttl,
            jti,
        };
        let token = access_token::sign(&self.keyring.get(), &claims).ok_or(AuthError::Invalid)?;
        Ok(AccessToken {
            token,
            expires_in: self.access_ttl_secs,
            caller,
        })
    }

    /// Forgets cached verifications (after a revocation made through this node).
    pub fn forget_cached(&self) {
        self.cache.clear();
    }
}
