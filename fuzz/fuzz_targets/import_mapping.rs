//! Import mappings (TOML) as `POST /v1/imports` and `consentry import` check them.
#![no_main]
mod common;

use consentry::profiles::import::mapping::Mapping;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(m) = Mapping::parse(text, common::policies()) {
        assert!(!m.columns().is_empty() || m.identifiers.is_empty());
    }
});
