//! Inclusion and consistency proofs (RFC 9162) from untrusted input: any proof, index and
//! sizes are checked without panicking or unbounded work; a proof the log makes for a
//! tree verifies, and the same proof for another leaf or root does not.
#![no_main]
mod common;

use arbitrary::Arbitrary;
use consentry::audit::merkle::{self, Frontier, Hash};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    index: u64,
    size: u64,
    leaf: Hash,
    root: Hash,
    other_root: Hash,
    proof: Vec<Hash>,
    frontier: Vec<u8>,
    leaves: Vec<Hash>,
    m: u8,
}

fuzz_target!(|input: Input| {
    let _ = merkle::verify_inclusion(
        input.index,
        input.size,
        &input.leaf,
        &input.proof,
        &input.root,
    );
    let _ = merkle::verify_consistency(
        input.index,
        input.size,
        &input.root,
        &input.other_root,
        &input.proof,
    );
    if let Some(f) = Frontier::from_bytes(input.size, &input.frontier) {
        assert_eq!(f.size(), input.size);
        let _ = f.root();
    }
    let leaves: Vec<Hash> = input.leaves.into_iter().take(64).collect();
    let n = leaves.len();
    if n == 0 {
        return;
    }
    let m = usize::from(input.m) % n;
    let root = merkle::root(&leaves);
    let path = merkle::inclusion_proof(m, &leaves);
    assert!(merkle::verify_inclusion(
        m as u64, n as u64, &leaves[m], &path, &root
    ));
    if input.leaf != leaves[m] {
        assert!(!merkle::verify_inclusion(
            m as u64,
            n as u64,
            &input.leaf,
            &path,
            &root
        ));
    }
    let k = m + 1;
    let first = merkle::root(&leaves[..k]);
    let proof = merkle::consistency_proof(k, &leaves);
    assert!(merkle::verify_consistency(
        k as u64, n as u64, &first, &root, &proof
    ));
    if input.other_root != root {
        assert!(!merkle::verify_consistency(
            k as u64,
            n as u64,
            &first,
            &input.other_root,
            &proof
        ));
    }
});
