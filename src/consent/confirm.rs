//! Double opt-in: the signed confirmation link of a pending grant. The token is
//! `c<key version>.<record id>.<expiry, unix seconds>.<HMAC-SHA256, base64url>` under the
//! token-signing key: it names a record, never a person, and cannot be forged or extended.
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use ring::hmac;

use crate::crypto::{KeyKind, Keyring, KeyringError};
use crate::domain::Timestamp;

fn message(record_id: &str, expires: i64) -> Vec<u8> {
    format!("consent-confirm\0{record_id}\0{expires}").into_bytes()
}

fn mac(key: &[u8], record_id: &str, expires: i64) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    URL_SAFE_NO_PAD.encode(hmac::sign(&key, &message(record_id, expires)).as_ref())
}

/// The link token for `record_id`, valid until `expires`.
pub fn issue(
    keyring: &Keyring,
    record_id: &str,
    expires: Timestamp,
) -> Result<String, KeyringError> {
    let key = keyring.current(KeyKind::TokenSigning)?;
    let exp = expires.unix_seconds();
    Ok(format!(
        "c{}.{record_id}.{exp}.{}",
        key.version,
        mac(key.material(), record_id, exp)
    ))
}

/// Why a link does not confirm anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkError {
    /// Malformed, forged, or signed by a retired key: indistinguishable on purpose.
    Invalid,
    Expired,
}

/// The record a genuine, unexpired token names.
pub fn verify(keyring: &Keyring, token: &str, now: Timestamp) -> Result<String, LinkError> {
    let mut parts = token.splitn(4, '.');
    let (Some(v), Some(id), Some(exp), Some(sig)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(LinkError::Invalid);
    };
    let version: i32 = v
        .strip_prefix('c')
        .and_then(|v| v.parse().ok())
        .ok_or(LinkError::Invalid)?;
    let exp: i64 = exp.parse().map_err(|_| LinkError::Invalid)?;
    let key = keyring
        .active(KeyKind::TokenSigning, version)
        .ok_or(LinkError::Invalid)?;
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| LinkError::Invalid)?;
    let hkey = hmac::Key::new(hmac::HMAC_SHA256, key.material());
    hmac::verify(&hkey, &message(id, exp), &sig).map_err(|_| LinkError::Invalid)?;
    if now.unix_seconds() > exp {
        return Err(LinkError::Expired);
    }
    Ok(id.to_owned())
}
