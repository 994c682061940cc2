//! Profiles and ingestion (issue 3, in progress): the Segment tracking API's parser and
//! ingestion with identity resolution; imports, aggregates and look-up build on it.
pub mod demo;
pub mod import;
pub mod ingest;
pub mod lookup;
pub mod reclassify;
pub mod segment;

/// The one normal form of an identifier of `kind`, whatever path it came in by (tracking
/// message, import row, look-up, consent): emails parsed and lower-cased, phones to E.164
/// (`default_region` for numbers without `+country`), other kinds trimmed, 1 to 256
/// characters. The error says what is wrong, never the value.
pub fn normalise_identifier(
    kind: &str,
    raw: &str,
    default_region: Option<&str>,
) -> Result<String, String> {
    use crate::domain::{Email, Phone};
    match kind {
        "email" => Email::parse(raw).map(|e| e.as_ref().to_owned()),
        "phone" => Phone::parse(raw, default_region).map(|p| p.as_ref().to_owned()),
        _ => {
            let v = raw.trim();
            if v.is_empty() || v.len() > 256 {
                Err("must be 1 to 256 characters".into())
            } else {
                Ok(v.to_owned())
            }
        }
    }
}
