//! The keyring. Guarantees:
//! - every key is random (ring's `SystemRandom`) and stored only wrapped under the master
//!   key with AES-256-GCM, bound by its additional data to its kind and version;
//! - keys are versioned: rotation adds a version and makes it current; older versions keep
//!   verifying and resolving until they are retired;
//! - no key material or master key is ever formatted by `Debug`.
pub mod keyring;
mod master;
pub mod subject;

pub use keyring::{KeyKind, KeyVersion, Keyring, KeyringError, SharedKeyring};
pub use master::{MasterKey, MasterKeySource, write_secret_file, write_secret_file_bytes};
pub use subject::SubjectKey;

use ring::{digest, hmac};

/// HMAC-SHA256 of `data` under `key`.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    let tag = hmac::sign(&k, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// `n` random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], KeyringError> {
    use ring::rand::SecureRandom;
    let mut out = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| KeyringError::Random)?;
    Ok(out)
}
