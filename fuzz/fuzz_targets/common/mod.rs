//! What the fuzz targets share: the shipped policies, an in-memory keyring and a fixed
//! clock, so that a crash reproduces from its input alone.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use consentry::crypto::{KeyKind, Keyring};
use consentry::domain::Timestamp;
use consentry::policy::Policies;

/// The token-signing key the targets' keyring holds, as version 1.
pub const TOKEN_KEY: [u8; 32] = [7; 32];

pub fn policies_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

pub fn policies() -> &'static Policies {
    static P: OnceLock<Policies> = OnceLock::new();
    P.get_or_init(|| match Policies::load(&policies_dir()) {
        Ok(p) => p,
        Err(e) => panic!("the shipped policies do not load: {e}"),
    })
}

pub fn keyring() -> &'static Keyring {
    static K: OnceLock<Keyring> = OnceLock::new();
    K.get_or_init(|| Keyring::in_memory(vec![(KeyKind::TokenSigning, 1, TOKEN_KEY.to_vec())]))
}

/// 2026-12-01T10:00:00Z.
pub fn now() -> Timestamp {
    Timestamp::from_unix_micros(1_796_119_200_000_000)
}

/// The shipped policy files, as text.
pub fn policy_text(name: &str) -> String {
    std::fs::read_to_string(policies_dir().join(name)).unwrap_or_default()
}
