//! Consent receipts shaped after the Kantara Consent Receipt v1.1 (the basis of ISO/IEC
//! TS 27560), signed with the gateway's checkpoint key (Ed25519). The signature covers
//! the exact `payload` bytes; anyone with the public key from `GET /v1/audit/checkpoint`
//! can check a receipt without trusting the gateway's word.
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::signature::KeyPair;
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::crypto::{KeyKind, Keyring, KeyringError};
use crate::policy::Policies;
use crate::store::consents::ConsentRow;

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SignedReceipt {
    /// The receipt (the same content as `payload`, decoded).
    #[schema(value_type = Object)]
    pub receipt: Value,
    /// Base64url of the exact JSON bytes signed.
    pub payload: String,
    /// `Ed25519`.
    pub alg: String,
    /// The checkpoint-signing key version.
    pub key_version: i32,
    /// Base64 of the raw Ed25519 public key.
    pub public_key: String,
    /// Base64url of the signature over the payload bytes.
    pub signature: String,
}

/// The receipt for `record`; `subject_ref` is the subject's keyed pseudonym (as in the
/// audit log), never its internal id or an identifier.
pub fn build(
    record: &ConsentRow,
    subject_ref: &str,
    policies: &Policies,
    controller: &str,
    keyring: &Keyring,
) -> Result<SignedReceipt, KeyringError> {
    let purposes: Vec<Value> = policies
        .purposes
        .purposes
        .iter()
        .filter(|p| p.consent.as_deref() == Some(record.consent.as_str()))
        .map(|p| {
            json!({
                "purpose": p.description,
                "purposeCategory": [p.name],
                "consentType": "EXPLICIT",
                "piiCategory": p.reads,
                "primaryPurpose": false,
                "termination": format!("withdrawal of consent, or {} days after collection", p.retention_days),
                "thirdPartyDisclosure": !p.recipients.is_empty(),
                "thirdPartyName": p.recipients.join(", "),
                "legalBasis": p.legal_basis.as_str(),
            })
        })
        .collect();
    let receipt = json!({
        "version": "KI-CR-v1.1.0",
        "jurisdiction": "EU (GDPR)",
        "consentTimestamp": record.captured_at / 1_000_000,
        "collectionMethod": record.method,
        "consentReceiptID": record.id,
        "language": "en",
        "piiPrincipalId": subject_ref,
        "piiControllers": [{"piiController": controller, "onBehalf": false}],
        "policyUrl": record.notice_version,
        "services": [{"service": record.consent, "purposes": purposes}],
        "sensitive": false,
        "spiCat": [],
        "consentStatus": record.status,
        "source": record.source,
    });
    let bytes = serde_json::to_vec(&receipt)
        .map_err(|_| KeyringError::Malformed(KeyKind::CheckpointSigning))?;
    let key = keyring.current(KeyKind::CheckpointSigning)?;
    let pair = key.ed25519(KeyKind::CheckpointSigning)?;
    let signature = pair.sign(&bytes);
    Ok(SignedReceipt {
        receipt,
        payload: URL_SAFE_NO_PAD.encode(&bytes),
        alg: "Ed25519".into(),
        key_version: key.version,
        public_key: STANDARD.encode(pair.public_key().as_ref()),
        signature: URL_SAFE_NO_PAD.encode(signature.as_ref()),
    })
}
