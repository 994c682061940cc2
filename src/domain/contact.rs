//! Direct identifiers, parsed once at the edge and normalised so that one person's
//! identifier always has one spelling (the blind index depends on it).
use std::fmt;
use std::str::FromStr;

/// An email address, trimmed and lower-cased. Reachable only through `AsRef<str>`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    pub fn parse(s: &str) -> Result<Self, String> {
        let trimmed = s.trim();
        if trimmed.len() > 254 {
            return Err("an email address is at most 254 characters".into());
        }
        let parsed = email_address::EmailAddress::from_str(trimmed)
            .map_err(|_| "not a valid email address".to_owned())?;
        let (local, domain) = (parsed.local_part(), parsed.domain());
        if !domain.contains('.') || domain.starts_with('[') {
            return Err("an email address needs a domain name such as example.com".into());
        }
        Ok(Self(format!(
            "{}@{}",
            local.to_lowercase(),
            domain.to_lowercase()
        )))
    }
}

impl AsRef<str> for Email {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Never prints the address itself.
impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Email(..)")
    }
}

/// A phone number in E.164 form, e.g. `+442079460958`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Phone(String);

impl Phone {
    /// Parses a number written with a leading `+`, or in the national format of
    /// `default_region` (ISO 3166 alpha-2, e.g. `GB`) when one is given.
    pub fn parse(s: &str, default_region: Option<&str>) -> Result<Self, String> {
        let region = default_region
            .map(|r| {
                phonenumber::country::Id::from_str(&r.to_ascii_uppercase())
                    .map_err(|_| "unknown default region for phone numbers".to_owned())
            })
            .transpose()?;
        let number = phonenumber::parse(region, s.trim()).map_err(|_| {
            "not a valid phone number: use the international form, e.g. +44 20 7946 0958".to_owned()
        })?;
        if !phonenumber::is_valid(&number) {
            return Err("not a valid phone number for its country".into());
        }
        Ok(Self(
            number.format().mode(phonenumber::Mode::E164).to_string(),
        ))
    }
}

impl AsRef<str> for Phone {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Phone(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_to_one_spelling() {
        let a = Email::parse("  Jane.Doe@Example.COM ").unwrap();
        let b = Email::parse("jane.doe@example.com").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.as_ref(), "jane.doe@example.com");
        for bad in [
            "",
            "jane",
            "jane@",
            "@example.com",
            "jane@localhost",
            "a b@example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(format!("{a:?}"), "Email(..)");
    }

    #[test]
    fn phones_become_e164() {
        let a = Phone::parse("+44 20 7946 0958", None).unwrap();
        let b = Phone::parse("020 7946 0958", Some("gb")).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.as_ref(), "+442079460958");
        assert!(Phone::parse("020 7946 0958", None).is_err());
        assert!(Phone::parse("12", None).is_err());
        assert!(Phone::parse("not a number", Some("US")).is_err());
    }
}
