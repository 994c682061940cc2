//! Double opt-in confirmation tokens (`GET /v1/consents/confirm/{token}`): any text must
//! verify or be refused without panicking; a token this keyring issued verifies to its
//! record.
#![no_main]
mod common;

use arbitrary::Arbitrary;
use consentry::consent::confirm::{self, LinkError};
use consentry::domain::Timestamp;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    token: &'a str,
    record: &'a str,
    expires: i64,
}

fuzz_target!(|input: Input<'_>| {
    let (keyring, now) = (common::keyring(), common::now());
    let _ = confirm::verify(keyring, input.token, now);
    // Record ids are UUIDs in simple form: hex digits only.
    if input.record.is_empty() || !input.record.bytes().all(|b| b.is_ascii_hexdigit()) {
        return;
    }
    let expires = Timestamp::from_unix_micros(input.expires);
    let Ok(token) = confirm::issue(keyring, input.record, expires) else {
        return;
    };
    match confirm::verify(keyring, &token, now) {
        Ok(id) => assert_eq!(id, input.record),
        Err(e) => assert_eq!(e, LinkError::Expired),
    }
});
