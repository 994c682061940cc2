//! Signed checkpoints in the C2SP tlog-checkpoint / signed-note text format:
//!
//! ```text
//! <origin>
//! <tree size>
//! <base64 root hash>
//!
//! — <key name> <base64(key id ‖ Ed25519 signature)>
//! ```
//!
//! The key id is the first four bytes of SHA-256(key name ‖ 0x0A ‖ 0x01 ‖ public key).
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

use super::merkle::Hash;
use crate::crypto::sha256;

const ED25519_ALG: u8 = 0x01;
const SIG_PREFIX: &str = "\u{2014} ";

/// The parsed body of a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NoteError {
    #[error("the note is not in tlog-checkpoint form: {0}")]
    Malformed(&'static str),
    #[error("no signature by key `{0}` with a matching key id")]
    NoSignature(String),
    #[error("the signature does not verify")]
    BadSignature,
}

pub fn key_id(name: &str, public_key: &[u8]) -> [u8; 4] {
    let mut data = Vec::with_capacity(name.len() + 2 + public_key.len());
    data.extend_from_slice(name.as_bytes());
    data.push(b'\n');
    data.push(ED25519_ALG);
    data.extend_from_slice(public_key);
    let h = sha256(&data);
    [h[0], h[1], h[2], h[3]]
}

/// The verifier key string, `name+hex(key id)+base64(0x01 ‖ public key)`, as note tools take it.
pub fn verifier_key(name: &str, public_key: &[u8]) -> String {
    let mut typed = vec![ED25519_ALG];
    typed.extend_from_slice(public_key);
    format!(
        "{name}+{}+{}",
        hex::encode(key_id(name, public_key)),
        STANDARD.encode(typed)
    )
}

impl Checkpoint {
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root)
        )
    }

    /// The signed note. The key name is the origin.
    pub fn sign(&self, pair: &Ed25519KeyPair) -> String {
        let body = self.body();
        let sig = pair.sign(body.as_bytes());
        let mut blob = key_id(&self.origin, pair.public_key().as_ref()).to_vec();
        blob.extend_from_slice(sig.as_ref());
        format!(
            "{body}\n{SIG_PREFIX}{} {}\n",
            self.origin,
            STANDARD.encode(blob)
        )
    }
}

/// Parses a signed note and checks the signature by `key_name` / `public_key`.
pub fn verify_note(note: &str, key_name: &str, public_key: &[u8]) -> Result<Checkpoint, NoteError> {
    let cp = parse_note(note)?;
    let (body, sigs) = note
        .split_once("\n\n")
        .ok_or(NoteError::Malformed("no blank line before the signatures"))?;
    let body = format!("{body}\n");
    let want = key_id(key_name, public_key);
    for line in sigs.lines() {
        let Some(rest) = line.strip_prefix(SIG_PREFIX) else {
            return Err(NoteError::Malformed(
                "a signature line must start with an em dash",
            ));
        };
        let Some((name, b64)) = rest.split_once(' ') else {
            return Err(NoteError::Malformed(
                "a signature line needs a name and a signature",
            ));
        };
        if name != key_name {
            continue;
        }
        let blob = STANDARD
            .decode(b64)
            .map_err(|_| NoteError::Malformed("signature is not base64"))?;
        if blob.len() != 4 + 64 || blob[..4] != want {
            continue;
        }
        return UnparsedPublicKey::new(&ED25519, public_key)
            .verify(body.as_bytes(), &blob[4..])
            .map(|()| cp)
            .map_err(|_| NoteError::BadSignature);
    }
    Err(NoteError::NoSignature(key_name.to_owned()))
}

/// Parses the body of a note without checking signatures.
pub fn parse_note(note: &str) -> Result<Checkpoint, NoteError> {
    let (body, _) = note
        .split_once("\n\n")
        .ok_or(NoteError::Malformed("no blank line before the signatures"))?;
    let mut lines = body.split('\n');
    let origin = lines
        .next()
        .filter(|l| !l.is_empty())
        .ok_or(NoteError::Malformed("missing origin line"))?;
    let size = lines
        .next()
        .and_then(|l| l.parse::<u64>().ok())
        .ok_or(NoteError::Malformed("missing or non-numeric size line"))?;
    let root_b64 = lines
        .next()
        .ok_or(NoteError::Malformed("missing root hash line"))?;
    let root_bytes = STANDARD
        .decode(root_b64)
        .map_err(|_| NoteError::Malformed("root hash is not base64"))?;
    let root: Hash = root_bytes
        .try_into()
        .map_err(|_| NoteError::Malformed("root hash is not 32 bytes"))?;
    Ok(Checkpoint {
        origin: origin.to_owned(),
        size,
        root,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_pair() -> Ed25519KeyPair {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    }

    #[test]
    fn a_signed_note_verifies_and_any_change_breaks_it() {
        let pair = new_pair();
        let pk = pair.public_key().as_ref().to_vec();
        let cp = Checkpoint {
            origin: "example.org/log".into(),
            size: 42,
            root: [9u8; 32],
        };
        let note = cp.sign(&pair);
        assert!(note.starts_with("example.org/log\n42\n"));
        assert_eq!(verify_note(&note, "example.org/log", &pk), Ok(cp));
        let tampered = note.replace("\n42\n", "\n43\n");
        assert_eq!(
            verify_note(&tampered, "example.org/log", &pk),
            Err(NoteError::BadSignature)
        );
        let other = new_pair();
        assert!(verify_note(&note, "example.org/log", other.public_key().as_ref()).is_err());
    }
}
