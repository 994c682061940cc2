//! One-click unsubscribe links (RFC 8058). The token is
//! `u<key version>~<campaign id>~<pseudonym>~<expiry, unix seconds>~<HMAC-SHA256, base64url>`
//! under the token-signing key: it names the campaign (hence the purpose) and the person
//! as the campaign's recipient knows them, never an internal id, and cannot be forged,
//! moved to another person or campaign, or extended.
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;

use crate::crypto::{KeyKind, Keyring, KeyringError};
use crate::domain::Timestamp;

fn message(campaign: &str, pseudonym: &str, expires: i64) -> Vec<u8> {
    format!("unsubscribe\0{campaign}\0{pseudonym}\0{expires}").into_bytes()
}

fn mac(key: &[u8], campaign: &str, pseudonym: &str, expires: i64) -> hmac::Tag {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    hmac::sign(&key, &message(campaign, pseudonym, expires))
}

/// The token for `pseudonym` in `campaign`, valid until `expires`.
pub fn issue(
    keyring: &Keyring,
    campaign: &str,
    pseudonym: &str,
    expires: Timestamp,
) -> Result<String, KeyringError> {
    let key = keyring.current(KeyKind::TokenSigning)?;
    let exp = expires.unix_seconds();
    let tag = mac(key.material(), campaign, pseudonym, exp);
    Ok(format!(
        "u{}~{campaign}~{pseudonym}~{exp}~{}",
        key.version,
        URL_SAFE_NO_PAD.encode(tag.as_ref())
    ))
}

/// Why a link unsubscribes nobody.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkError {
    /// Malformed, forged, or signed by a retired key: indistinguishable on purpose.
    Invalid,
    Expired,
}

/// What a genuine token names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsubscribe {
    pub campaign: String,
    pub pseudonym: String,
}

pub fn verify(keyring: &Keyring, token: &str, now: Timestamp) -> Result<Unsubscribe, LinkError> {
    let parts: Vec<&str> = token.split('~').collect();
    let [v, campaign, pseudonym, exp, sig] = parts.as_slice() else {
        return Err(LinkError::Invalid);
    };
    let version: i32 = v
        .strip_prefix('u')
        .and_then(|v| v.parse().ok())
        .ok_or(LinkError::Invalid)?;
    let exp: i64 = exp.parse().map_err(|_| LinkError::Invalid)?;
    let key = keyring
        .active(KeyKind::TokenSigning, version)
        .ok_or(LinkError::Invalid)?;
    let sig = URL_SAFE_NO_PAD
        .decode(sig.as_bytes())
        .map_err(|_| LinkError::Invalid)?;
    let k = hmac::Key::new(hmac::HMAC_SHA256, key.material());
    hmac::verify(&k, &message(campaign, pseudonym, exp), &sig).map_err(|_| LinkError::Invalid)?;
    if now.unix_seconds() > exp {
        return Err(LinkError::Expired);
    }
    Ok(Unsubscribe {
        campaign: (*campaign).to_owned(),
        pseudonym: (*pseudonym).to_owned(),
    })
}
