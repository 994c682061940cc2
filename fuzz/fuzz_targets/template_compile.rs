//! Template sources as `POST /v1/templates` compiles each part.
#![no_main]
mod common;

use consentry::rendering::check::compile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = compile("html", source) {
        assert_eq!(e.part, "html");
    }
});
