//! Signed checkpoints (C2SP tlog-checkpoint notes) as an auditor's verification reads
//! them: any text is parsed and checked against a key; a note signed here verifies to
//! the checkpoint it carries.
#![no_main]
mod common;

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use consentry::audit::checkpoint::{Checkpoint, parse_note, verify_note};
use libfuzzer_sys::fuzz_target;
use ring::signature::{Ed25519KeyPair, KeyPair};

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    note: &'a str,
    origin: &'a str,
    size: u64,
    root: [u8; 32],
}

fn pair() -> &'static Ed25519KeyPair {
    static P: OnceLock<Ed25519KeyPair> = OnceLock::new();
    P.get_or_init(|| match Ed25519KeyPair::from_seed_unchecked(&[3; 32]) {
        Ok(p) => p,
        Err(e) => panic!("seed: {e}"),
    })
}

fuzz_target!(|input: Input<'_>| {
    let pk = pair().public_key().as_ref();
    let parsed = parse_note(input.note);
    let verified = verify_note(input.note, input.origin, pk);
    if let Ok(cp) = &verified {
        assert_eq!(Ok(cp), parsed.as_ref());
    }
    // Origins are configured names: no whitespace.
    if input.origin.is_empty() || input.origin.chars().any(char::is_whitespace) {
        return;
    }
    let cp = Checkpoint {
        origin: input.origin.to_owned(),
        size: input.size,
        root: input.root,
    };
    let note = cp.sign(pair());
    assert_eq!(verify_note(&note, input.origin, pk), Ok(cp.clone()));
    assert_eq!(parse_note(&note), Ok(cp));
});
