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
}
