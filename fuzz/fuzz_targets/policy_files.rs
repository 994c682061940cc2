//! Policy files (taxonomy, identifiers, purposes YAML) checked as `consentry policy check`
//! and start-up load them. The first byte picks which file the rest replaces (the other
//! two stay the shipped ones), or splits the rest at NUL bytes into all three.
#![no_main]
mod common;

use std::sync::OnceLock;

use consentry::policy::Policies;
use libfuzzer_sys::fuzz_target;

const FILES: [&str; 3] = ["taxonomy.yaml", "identifiers.yaml", "purposes.yaml"];

fn shipped() -> &'static [String; 3] {
    static S: OnceLock<[String; 3]> = OnceLock::new();
    S.get_or_init(|| FILES.map(common::policy_text))
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(rest) = std::str::from_utf8(rest) else {
        return;
    };
    let mut texts: [&str; 3] = {
        let s = shipped();
        [&s[0], &s[1], &s[2]]
    };
    match usize::from(selector) % 4 {
        3 => {
            let mut parts = rest.splitn(3, '\0');
            for t in texts.iter_mut() {
                *t = parts.next().unwrap_or("");
            }
        }
        i => texts[i] = rest,
    }
    match Policies::from_texts(&common::policies_dir(), texts[0], texts[1], texts[2]) {
        Ok(p) => {
            let _ = p.summary();
        }
        Err(e) => assert!(!e.is_empty()),
    }
});
