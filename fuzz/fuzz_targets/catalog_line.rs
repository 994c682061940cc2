//! Product catalogue NDJSON lines (`POST /v1/catalog`) as a catalogue load checks them.
#![no_main]
mod common;

use consentry::policy::catalog::CatalogLoad;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut load = CatalogLoad::new(common::now());
    for (i, line) in text.lines().enumerate() {
        load.json_line(i as u64 + 1, line);
    }
});
