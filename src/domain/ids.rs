use std::fmt;

/// Checks the shape shared by purpose and recipient ids: 1-64 chars of `a-z 0-9 _ . -`,
/// starting with a letter.
fn check_id(kind: &str, s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{kind} must be 1-64 characters of a-z, 0-9, `_`, `.`, `-`, starting with a letter"
        ))
    }
}

/// A purpose of processing, e.g. `marketing.communications.email`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct PurposeId(String);

impl PurposeId {
    pub fn parse(s: &str) -> Result<Self, String> {
        check_id("a purpose id", s)?;
        Ok(Self(s.to_owned()))
    }
}

impl AsRef<str> for PurposeId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PurposeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A recipient of data (an ESP or other processor), e.g. `acme-esp`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct RecipientId(String);

impl RecipientId {
    pub fn parse(s: &str) -> Result<Self, String> {
        check_id("a recipient id", s)?;
        Ok(Self(s.to_owned()))
    }
}

impl AsRef<str> for RecipientId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RecipientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A subject as one recipient knows it: `ps<key version>.<43 base64url characters>`
/// (an HMAC-SHA256 of the internal subject id under that recipient's key).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Pseudonym(String);

impl Pseudonym {
    /// Checks the shape only; whether it stands for anyone is the gate's business.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || {
            "a pseudonym looks like `ps1.` followed by 43 base64url characters (as this gateway issued it)"
                .to_owned()
        };
        let rest = s.strip_prefix("ps").ok_or_else(bad)?;
        let (version, mac) = rest.split_once('.').ok_or_else(bad)?;
        let ok_version = !version.is_empty()
            && version.len() <= 9
            && version.bytes().all(|b| b.is_ascii_digit())
            && !version.starts_with('0');
        let ok_mac = mac.len() == 43
            && mac
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok_version && ok_mac {
            Ok(Self(s.to_owned()))
        } else {
            Err(bad())
        }
    }

    /// Builds one from its parts (the MAC already base64url-encoded).
    pub fn from_parts(version: i32, mac_b64: &str) -> Self {
        Self(format!("ps{version}.{mac_b64}"))
    }

    /// The key version it was made with.
    pub fn version(&self) -> i32 {
        self.0[2..]
            .split('.')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl AsRef<str> for Pseudonym {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Pseudonym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_fideslang_names_and_reject_others() {
        assert!(PurposeId::parse("marketing.communications.email").is_ok());
        assert!(RecipientId::parse("acme-esp").is_ok());
        for bad in ["", "Upper", "1abc", "sp ace", "semi;colon", &"a".repeat(65)] {
            assert!(PurposeId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pseudonyms_parse_only_in_the_issued_shape() {
        let good = format!("ps12.{}", "A".repeat(43));
        let p = Pseudonym::parse(&good).unwrap();
        assert_eq!(p.version(), 12);
        for bad in [
            "".to_owned(),
            "ps1".to_owned(),
            format!("ps.{}", "A".repeat(43)),
            format!("ps01.{}", "A".repeat(43)),
            format!("px1.{}", "A".repeat(43)),
            format!("ps1.{}", "A".repeat(42)),
            format!("ps1.{}=", "A".repeat(42)),
        ] {
            assert!(Pseudonym::parse(&bad).is_err(), "{bad}");
        }
    }
}
