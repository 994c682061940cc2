//! `POST /v1/consents` bodies: parsed as the route parses JSON, then checked against the
//! shipped policies as the ledger checks them before any look-up.
#![no_main]
mod common;

use consentry::consent::{self, NewConsent};
use consentry::http::extract::parse_json;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = parse_json::<NewConsent>(data) else {
        return;
    };
    let _ = consent::check(common::policies(), &req, common::now());
});
