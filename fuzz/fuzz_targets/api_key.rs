//! Presented API keys (`cs_<key id>_<secret>`) as the `Caller` extractor splits them.
#![no_main]
mod common;

use consentry::auth::api_key;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    if let Some((id, secret)) = api_key::parse(token) {
        assert_eq!(format!("{}{id}_{secret}", api_key::PREFIX), token);
        assert_eq!(id.len(), 16);
        assert_eq!(secret.len(), 43);
    }
});
