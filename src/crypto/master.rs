use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::aead;
use secrecy::ExposeSecret;

use super::{KeyringError, random_bytes};
use crate::config::{Mode, Settings};

/// The 32-byte key that wraps every other key.
pub struct MasterKey(aead::LessSafeKey);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// Where the master key came from, so `serve` can warn or refuse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MasterKeySource {
    Config,
    File(PathBuf),
    /// Created now in the data directory: a development shortcut.
    Generated(PathBuf),
    /// An earlier generated key read back from the data directory.
    GeneratedEarlier(PathBuf),
}

const NONCE_LEN: usize = 12;

impl MasterKey {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyringError> {
        if bytes.len() != 32 {
            return Err(KeyringError::MasterKey(format!(
                "the master key must be 32 bytes, base64-encoded (got {} bytes)",
                bytes.len()
            )));
        }
        let unbound = aead::UnboundKey::new(&aead::AES_256_GCM, bytes)
            .map_err(|_| KeyringError::MasterKey("unusable master key".into()))?;
        Ok(Self(aead::LessSafeKey::new(unbound)))
    }

    pub fn from_base64(text: &str) -> Result<Self, KeyringError> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| KeyringError::MasterKey("the master key is not valid base64".into()))?;
        Self::from_bytes(&bytes)
    }

    /// Resolves the master key from settings: `master_key`, then `master_key_file`, then
    /// `DATA_DIR/master.key`, generating that file (mode 0600) outside production mode.
    pub fn load(settings: &Settings) -> Result<(Self, MasterKeySource), KeyringError> {
        if let Some(key) = &settings.master_key {
            return Ok((
                Self::from_base64(key.expose_secret())?,
                MasterKeySource::Config,
            ));
        }
        if let Some(path) = &settings.master_key_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                KeyringError::MasterKey(format!("cannot read {}: {e}", path.display()))
            })?;
            return Ok((
                Self::from_base64(&text)?,
                MasterKeySource::File(path.clone()),
            ));
        }
        let path = settings.data_dir.join("master.key");
        if path.exists() {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                KeyringError::MasterKey(format!("cannot read {}: {e}", path.display()))
            })?;
            return Ok((
                Self::from_base64(&text)?,
                MasterKeySource::GeneratedEarlier(path),
            ));
        }
        if settings.mode == Mode::Production {
            return Err(KeyringError::MasterKey(
                "production mode needs a master key: set CONSENTRY_MASTER_KEY (base64 of 32 random bytes) or master_key_file".into(),
            ));
        }
        let bytes = random_bytes::<32>()?;
        write_secret_file(&path, &STANDARD.encode(bytes)).map_err(|e| {
            KeyringError::MasterKey(format!("cannot write {}: {e}", path.display()))
        })?;
        Ok((Self::from_bytes(&bytes)?, MasterKeySource::Generated(path)))
    }

    /// Wraps a recipient's webhook secret, bound to the recipient's id.
    pub fn wrap_webhook_secret(
        &self,
        recipient: &str,
        secret: &[u8],
    ) -> Result<Vec<u8>, KeyringError> {
        self.wrap(&webhook_aad(recipient), secret)
    }

    pub fn unwrap_webhook_secret(
        &self,
        recipient: &str,
        wrapped: &[u8],
    ) -> Result<Vec<u8>, KeyringError> {
        self.unwrap(&webhook_aad(recipient), wrapped)
    }

    pub(super) fn wrap(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, KeyringError> {
        let nonce_bytes = random_bytes::<NONCE_LEN>()?;
        let nonce = aead::Nonce::assume_unique_for_key(nonce_bytes);
        let mut buf = plaintext.to_vec();
        self.0
            .seal_in_place_append_tag(nonce, aead::Aad::from(aad), &mut buf)
            .map_err(|_| KeyringError::Wrap)?;
        let mut out = Vec::with_capacity(NONCE_LEN + buf.len());
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&buf);
        Ok(out)
    }

    pub(super) fn unwrap(&self, aad: &[u8], wrapped: &[u8]) -> Result<Vec<u8>, KeyringError> {
        if wrapped.len() < NONCE_LEN + aead::AES_256_GCM.tag_len() {
            return Err(KeyringError::Unwrap);
        }
        let (nonce_bytes, sealed) = wrapped.split_at(NONCE_LEN);
        let nonce = aead::Nonce::try_assume_unique_for_key(nonce_bytes)
            .map_err(|_| KeyringError::Unwrap)?;
        let mut buf = sealed.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, aead::Aad::from(aad), &mut buf)
            .map_err(|_| KeyringError::Unwrap)?;
        Ok(plain.to_vec())
    }
}

fn webhook_aad(recipient: &str) -> Vec<u8> {
    format!("consentry-webhook-secret/v1|{recipient}").into_bytes()
}

/// Writes a file readable only by its owner (0600), creating its directory.
pub fn write_secret_file(path: &Path, contents: &str) -> std::io::Result<()> {
    write_secret_file_bytes(path, format!("{contents}\n").as_bytes())
}

/// Writes bytes to a file readable only by its owner (0600), creating its directory.
pub fn write_secret_file_bytes(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_material_opens_only_with_the_same_aad_and_key() {
        let key = MasterKey::from_bytes(&[7u8; 32]).unwrap();
        let wrapped = key.wrap(b"kind|1", b"material").unwrap();
        assert_eq!(key.unwrap(b"kind|1", &wrapped).unwrap(), b"material");
        assert!(key.unwrap(b"kind|2", &wrapped).is_err());
        let other = MasterKey::from_bytes(&[8u8; 32]).unwrap();
        assert!(other.unwrap(b"kind|1", &wrapped).is_err());
    }

    #[test]
    fn master_key_must_be_32_bytes() {
        assert!(MasterKey::from_base64("c2hvcnQ=").is_err());
        assert!(MasterKey::from_base64("not base64!").is_err());
    }
}
