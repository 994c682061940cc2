//! API key tokens: `cs_<key id>_<secret>`, the key id 16 hex characters, the secret 32
//! random bytes in base64url. Only an argon2id hash of the secret is stored.
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::crypto::{KeyringError, random_bytes};

pub const PREFIX: &str = "cs_";

/// OWASP's argon2id minimum: m = 19 MiB, t = 2, p = 1.
fn hasher() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, Some(32)).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// A freshly generated key: the token to hand out once, and what to store.
pub struct NewToken {
    pub key_id: String,
    pub token: String,
    pub secret_hash: String,
}

pub fn generate() -> Result<NewToken, KeyringError> {
    let key_id = hex::encode(random_bytes::<8>()?);
    let secret = URL_SAFE_NO_PAD.encode(random_bytes::<32>()?);
    let secret_hash = hash_secret(&secret)?;
    Ok(NewToken {
        token: format!("{PREFIX}{key_id}_{secret}"),
        key_id,
        secret_hash,
    })
}

pub fn hash_secret(secret: &str) -> Result<String, KeyringError> {
    hasher()
        .hash_password(secret.as_bytes())
        .map(|h| h.to_string())
        .map_err(|_| KeyringError::Random)
}

/// Constant-work check of `secret` against a stored PHC string.
pub fn verify_secret(secret: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => hasher().verify_password(secret.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// Splits a token into (key id, secret) if it has the right shape.
pub fn parse(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let id_ok = id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit());
    let secret_ok = secret.len() == 43
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (id_ok && secret_ok).then_some((id, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse_and_verify_and_others_do_not() {
        let t = generate().unwrap();
        let (id, secret) = parse(&t.token).unwrap();
        assert_eq!(id, t.key_id);
        assert!(verify_secret(secret, &t.secret_hash));
        assert!(!verify_secret("wrong", &t.secret_hash));
        assert!(t.secret_hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(parse("cs_short_x").is_none());
        assert!(parse("Bearer something").is_none());
    }
}
