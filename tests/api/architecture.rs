//! SPEC §4's one rule, checked on the source: segmentation, rendering and every ESP-facing
//! route see only `MinimisedProfile` and `PurposeGrant`; only `policy` makes them; `http`
//! never reaches `store`. The compiler already stops other modules from building the view
//! types (their fields are private); this stops anyone from going around them.
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file without comments and string literals, so that documentation and
/// route paths do not count as uses.
fn code_only(text: &str) -> String {
    // A quote as a char literal is not the start of a string.
    let text = text.replace("'\"'", "'q'").replace("'\\\"'", "'q'");
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                let mut escaped = false;
                for n in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if n == '\\' {
                        escaped = true;
                    } else if n == '"' {
                        break;
                    }
                }
                out.push_str("\"\"");
            }
            _ => out.push(c),
        }
    }
    out
}

/// What code that may only see minimised views must never name.
const FORBIDDEN: &[&str] = &[
    "store::",
    "crate::store",
    "sea_orm",
    "SubjectRecord",
    "load_record",
    "profiles::",
    "TraitRow",
    "IdentifierRow",
    "SubjectKey",
    "consent::",
];

fn violations(code: &str) -> Vec<&'static str> {
    FORBIDDEN
        .iter()
        .copied()
        .filter(|f| code.contains(f))
        .collect()
}

#[test]
fn the_checker_finds_what_it_looks_for() {
    let bad = "use crate::store::profiles::traits_of;\nfn f(r: &SubjectRecord) {}\n";
    assert_eq!(
        violations(&code_only(bad)),
        vec!["store::", "crate::store", "SubjectRecord", "profiles::"]
    );
    let fine = "// reads store:: never\nconst P: &str = \"/v1/recipients/{rid}/profiles/x\";\n";
    assert!(violations(&code_only(fine)).is_empty());
}

#[test]
fn segmentation_rendering_and_esp_routes_see_only_minimised_views() {
    let root = src();
    let esp = root.join("http/routes/esp.rs");
    assert!(
        esp.exists(),
        "the ESP-facing routes moved: update this test"
    );
    let mut files = vec![esp];
    for module in ["segmentation", "rendering"] {
        rust_files(&root.join(module), &mut files);
    }
    for f in &files {
        let code = code_only(&std::fs::read_to_string(f).unwrap());
        let found = violations(&code);
        assert!(
            found.is_empty(),
            "{} may only see MinimisedProfile and PurposeGrant, but names {found:?}",
            f.display()
        );
    }
}

#[test]
fn only_the_gate_builds_views_and_grants_and_http_never_reaches_the_store() {
    let root = src();
    let gate = root.join("policy/gate");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(files.len() > 50, "found the sources");
    for f in &files {
        let code = code_only(&std::fs::read_to_string(f).unwrap());
        let in_gate = f.starts_with(&gate);
        for literal in ["MinimisedProfile {", "PurposeGrant {", "SubjectRecord {"] {
            assert!(
                in_gate || !code.contains(literal),
                "{} builds a `{literal}`: only policy::gate may",
                f.display()
            );
        }
        if f.starts_with(root.join("http")) {
            let reaches = code
                .match_indices("store::")
                .any(|(i, _)| !code[i..].starts_with("store::StoreError"));
            assert!(!reaches, "{} reaches the store", f.display());
        }
    }
}
