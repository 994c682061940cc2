//! Per-subject data keys and blind indexes.
//!
//! Each subject's direct identifiers are sealed with AES-256-GCM under the subject's own
//! random data key; the data key is stored wrapped under the master key. Deleting the
//! wrapped key (erasure) leaves every copy of the ciphertext, backups included, unreadable.
//! A blind index is `HMAC-SHA256(blind-index key vN, kind ‖ 0x00 ‖ normalised value)`,
//! written `bi<N>.<hex>`, so the gateway can find a subject by identifier without
//! decrypting anything.
use std::fmt;

use ring::aead;

use super::{KeyKind, KeyVersion, Keyring, KeyringError, MasterKey, hmac_sha256, random_bytes};
use crate::domain::Pseudonym;

const NONCE_LEN: usize = 12;

/// One subject's data key, unwrapped. Never printed.
pub struct SubjectKey(aead::LessSafeKey);

impl fmt::Debug for SubjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SubjectKey(..)")
    }
}

fn wrap_aad(subject_id: &str) -> Vec<u8> {
    format!("consentry-subject-key/v1|{subject_id}").into_bytes()
}

impl SubjectKey {
    /// A fresh key for `subject_id`, and its wrapped form to store.
    pub fn generate(master: &MasterKey, subject_id: &str) -> Result<(Self, Vec<u8>), KeyringError> {
        let bytes = random_bytes::<32>()?;
        let wrapped = master.wrap(&wrap_aad(subject_id), &bytes)?;
        Ok((Self::from_bytes(&bytes)?, wrapped))
    }

    pub fn unwrap(
        master: &MasterKey,
        subject_id: &str,
        wrapped: &[u8],
    ) -> Result<Self, KeyringError> {
        let bytes = master.unwrap(&wrap_aad(subject_id), wrapped)?;
        Self::from_bytes(&bytes)
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, KeyringError> {
        let key =
            aead::UnboundKey::new(&aead::AES_256_GCM, bytes).map_err(|_| KeyringError::Wrap)?;
        Ok(Self(aead::LessSafeKey::new(key)))
    }

    /// Seals `plaintext`; `context` (e.g. the identifier kind) is bound as additional data.
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Result<Vec<u8>, KeyringError> {
        let nonce_bytes = random_bytes::<NONCE_LEN>()?;
        let mut buf = plaintext.to_vec();
        self.0
            .seal_in_place_append_tag(
                aead::Nonce::assume_unique_for_key(nonce_bytes),
                aead::Aad::from(context.as_bytes()),
                &mut buf,
            )
            .map_err(|_| KeyringError::Wrap)?;
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&buf);
        Ok(out)
    }

    pub fn open(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, KeyringError> {
        if sealed.len() < NONCE_LEN + aead::AES_256_GCM.tag_len() {
            return Err(KeyringError::Unwrap);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce =
            aead::Nonce::try_assume_unique_for_key(nonce).map_err(|_| KeyringError::Unwrap)?;
        let mut buf = body.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, aead::Aad::from(context.as_bytes()), &mut buf)
            .map_err(|_| KeyringError::Unwrap)?;
        Ok(plain.to_vec())
    }
}

fn index_with(prefix: &str, key: &[u8], version: i32, kind: &str, normalised: &str) -> String {
    let mut data = Vec::with_capacity(kind.len() + 1 + normalised.len());
    data.extend_from_slice(kind.as_bytes());
    data.push(0);
    data.extend_from_slice(normalised.as_bytes());
    format!("{prefix}{version}.{}", hex::encode(hmac_sha256(key, &data)))
}

fn pseudonym_with(key: &KeyVersion, recipient: &str, subject_id: &str) -> Pseudonym {
    use base64::Engine;
    // The recipient id is bound into the MAC as well as the key: two recipients never
    // share a pseudonym even if an operator restored one's key for another.
    let mut data = Vec::with_capacity(recipient.len() + 1 + subject_id.len());
    data.extend_from_slice(recipient.as_bytes());
    data.push(0);
    data.extend_from_slice(subject_id.as_bytes());
    let mac = hmac_sha256(key.material(), &data);
    Pseudonym::from_parts(
        key.version,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac),
    )
}

impl Keyring {
    /// The blind index of a normalised identifier under the current key version.
    pub fn blind_index(&self, kind: &str, normalised: &str) -> Result<String, KeyringError> {
        let key = self.current(KeyKind::BlindIndex)?;
        Ok(index_with(
            "bi",
            key.material(),
            key.version,
            kind,
            normalised,
        ))
    }

    /// The blind index under every active version, newest first: what to look up while
    /// entries written before a rotation have not been re-indexed.
    pub fn blind_indexes(&self, kind: &str, normalised: &str) -> Vec<String> {
        self.versions(KeyKind::BlindIndex)
            .iter()
            .rev()
            .filter(|v| !v.retired)
            .map(|v| index_with("bi", v.material(), v.version, kind, normalised))
            .collect()
    }

    /// The stored form of an import row key (which may be an email or a customer number)
    /// under every active blind-index version, newest first: `rk<version>.<hex>`.
    pub fn row_keys(&self, source: &str, row_key: &str) -> Vec<String> {
        let kind = format!("import_row:{source}");
        self.versions(KeyKind::BlindIndex)
            .iter()
            .rev()
            .filter(|v| !v.retired)
            .map(|v| index_with("rk", v.material(), v.version, &kind, row_key))
            .collect()
    }

    /// The subject's pseudonym for a recipient under its current key:
    /// `ps<version>.<base64url(HMAC-SHA256(recipient key, subject id))>`.
    pub fn pseudonym(&self, recipient: &str, subject_id: &str) -> Result<Pseudonym, KeyringError> {
        let key = self.recipient_current(recipient)?;
        Ok(pseudonym_with(key, recipient, subject_id))
    }

    /// The subject's pseudonym under one given version of the recipient's key.
    pub fn pseudonym_under(
        &self,
        recipient: &str,
        version: i32,
        subject_id: &str,
    ) -> Result<Pseudonym, KeyringError> {
        let key = self.recipient_version(recipient, version).ok_or_else(|| {
            KeyringError::NoSuchRecipientVersion {
                recipient: recipient.to_owned(),
                version,
            }
        })?;
        Ok(pseudonym_with(key, recipient, subject_id))
    }

    /// The suppression-list hash of a normalised identifier, under the current key of
    /// its own kind: unlinkable to the blind index, and kept after the subject is gone.
    pub fn suppression_hash(&self, kind: &str, normalised: &str) -> Result<String, KeyringError> {
        let key = self.current(KeyKind::Suppression)?;
        Ok(index_with(
            "sp",
            key.material(),
            key.version,
            kind,
            normalised,
        ))
    }

    /// The suppression hash under every version, retired ones included: a suppression
    /// must outlive key rotation.
    pub fn suppression_hashes(&self, kind: &str, normalised: &str) -> Vec<String> {
        self.versions(KeyKind::Suppression)
            .iter()
            .rev()
            .map(|v| index_with("sp", v.material(), v.version, kind, normalised))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_subject_key_and_context() {
        let master = MasterKey::from_bytes(&[1u8; 32]).unwrap();
        let (key, wrapped) = SubjectKey::generate(&master, "s1").unwrap();
        let sealed = key.seal("email", b"jane@example.com").unwrap();
        assert!(!sealed.windows(4).any(|w| w == b"jane"));
        assert_eq!(key.open("email", &sealed).unwrap(), b"jane@example.com");
        assert!(key.open("phone", &sealed).is_err());
        let again = SubjectKey::unwrap(&master, "s1", &wrapped).unwrap();
        assert_eq!(again.open("email", &sealed).unwrap(), b"jane@example.com");
        assert!(SubjectKey::unwrap(&master, "s2", &wrapped).is_err());
        let (other, _) = SubjectKey::generate(&master, "s1").unwrap();
        assert!(other.open("email", &sealed).is_err());
    }

    #[test]
    fn blind_indexes_depend_on_kind_value_and_key() {
        let a = index_with("bi", &[1; 32], 1, "email", "jane@example.com");
        assert!(a.starts_with("bi1."));
        assert_eq!(
            a,
            index_with("bi", &[1; 32], 1, "email", "jane@example.com")
        );
        assert_ne!(
            a,
            index_with("bi", &[1; 32], 1, "user_id", "jane@example.com")
        );
        assert_ne!(
            a,
            index_with("bi", &[2; 32], 1, "email", "jane@example.com")
        );
    }
}
