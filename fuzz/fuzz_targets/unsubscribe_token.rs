//! One-click unsubscribe tokens (RFC 8058 links): any text must verify or be refused
//! without panicking; a token this keyring issued verifies to what it named.
#![no_main]
mod common;

use arbitrary::Arbitrary;
use consentry::consent::unsubscribe::{self, LinkError};
use consentry::domain::Timestamp;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    token: &'a str,
    campaign: &'a str,
    pseudonym: &'a str,
    expires: i64,
}

/// Campaign ids and pseudonyms are UUIDs and base64url: never `~`.
fn id_like(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fuzz_target!(|input: Input<'_>| {
    let (keyring, now) = (common::keyring(), common::now());
    if let Ok(u) = unsubscribe::verify(keyring, input.token, now) {
        assert!(!u.campaign.contains('~') && !u.pseudonym.contains('~'));
    }
    if !(id_like(input.campaign) && id_like(input.pseudonym)) {
        return;
    }
    let expires = Timestamp::from_unix_micros(input.expires);
    let Ok(token) = unsubscribe::issue(keyring, input.campaign, input.pseudonym, expires) else {
        return;
    };
    match unsubscribe::verify(keyring, &token, now) {
        Ok(u) => {
            assert!(expires.unix_seconds() >= now.unix_seconds());
            assert_eq!(
                (u.campaign.as_str(), u.pseudonym.as_str()),
                (input.campaign, input.pseudonym)
            );
        }
        Err(e) => assert_eq!(e, LinkError::Expired),
    }
});
