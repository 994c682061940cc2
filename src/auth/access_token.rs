//! OAuth 2.0 client-credentials access tokens: HS256 JWTs signed with the current
//! `token_signing` key version, named in the `kid` header as `ts<version>`.
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::crypto::{KeyKind, Keyring};
use crate::domain::{Role, Timestamp};

pub const ISSUER: &str = "consentry";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The API key id the token was issued to.
    pub sub: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rcp: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pur: Vec<String>,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
}

pub fn sign(keyring: &Keyring, claims: &Claims) -> Option<String> {
    let key = keyring.current(KeyKind::TokenSigning).ok()?;
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(format!("ts{}", key.version));
    let key = EncodingKey::from_secret(key.material()).ok()?;
    jsonwebtoken::encode(&header, claims, &key).ok()
}

/// Checks the signature and issuer and that the token is not expired at `now`.
pub fn verify(keyring: &Keyring, token: &str, now: Timestamp) -> Option<Claims> {
    let header = jsonwebtoken::decode_header(token).ok()?;
    if header.alg != Algorithm::HS256 {
        return None;
    }
    let version: i32 = header.kid?.strip_prefix("ts")?.parse().ok()?;
    let key = keyring.active(KeyKind::TokenSigning, version)?;
    let mut validation = Validation::new(Algorithm::HS256);
    // Expiry is checked against the injected clock below, not the system time.
    validation.validate_exp = false;
    validation.required_spec_claims.clear();
    validation.set_issuer(&[ISSUER]);
    let key = DecodingKey::from_secret(key.material()).ok()?;
    let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).ok()?;
    (data.claims.exp > now.unix_seconds()).then_some(data.claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonwebtoken_rejects_a_changed_payload() {
        let key = b"0123456789abcdef0123456789abcdef";
        let claims = serde_json::json!({"iss": ISSUER, "sub": "x", "iat": 1, "exp": 2});
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("ts1".into());
        let t = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(key).unwrap())
            .unwrap();
        let (head, rest) = t.split_once('.').unwrap();
        let (_, sig) = rest.split_once('.').unwrap();
        let other = serde_json::json!({"iss": ISSUER, "sub": "y", "iat": 1, "exp": 2});
        let forged_payload = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            other.to_string(),
        );
        let forged = format!("{head}.{forged_payload}.{sig}");
        let mut v = Validation::new(Algorithm::HS256);
        v.validate_exp = false;
        v.required_spec_claims.clear();
        let ok = jsonwebtoken::decode::<serde_json::Value>(
            &forged,
            &DecodingKey::from_secret(key).unwrap(),
            &v,
        );
        assert!(ok.is_err(), "{ok:?}");
    }
}
