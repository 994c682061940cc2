//! End-to-end verification: recompute every leaf from the stored columns, rebuild the
//! tree, check every checkpoint's root and Ed25519 signature and the head. Because every
//! checkpoint root is recomputed from one sequence of leaves, each checkpoint is a prefix
//! of the next: that is exactly what a consistency proof between them would show.
use ring::signature::KeyPair;

use super::checkpoint::verify_note;
use super::entry::Entry;
use super::merkle::{Frontier, Hash};
use crate::crypto::{KeyKind, Keyring};
use crate::store::{self, Db, StoreError};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    pub entries: u64,
    pub root: Hash,
    pub checkpoints: u64,
}

/// Where verification stopped: the first sequence number that is wrong, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("broken at seq {seq}: {reason}")]
pub struct VerifyFailure {
    pub seq: u64,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Broken(#[from] VerifyFailure),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn broken(seq: u64, reason: impl Into<String>) -> VerifyError {
    VerifyError::Broken(VerifyFailure {
        seq,
        reason: reason.into(),
    })
}

pub async fn verify(db: &Db, keyring: &Keyring) -> Result<VerifyReport, VerifyError> {
    let checkpoints = store::audit::checkpoints(db.conn()).await?;
    let head_size = store::audit::head_size(db.conn()).await?;
    let mut next_cp = checkpoints.iter().peekable();
    let mut frontier = Frontier::new();
    let mut last_cp_size = 0u64;
    let mut expected = 0u64;

    let scan = store::audit::scan_entries(db, |mut row| {
        let seq = row.seq as u64;
        if seq != expected {
            return Err(broken(expected, format!("entry {expected} is missing")));
        }
        let stored_leaf = std::mem::take(&mut row.leaf_hash);
        let entry = Entry::from_row(row).map_err(|_| broken(seq, "unreadable entry"))?;
        let leaf = entry.leaf_hash();
        if stored_leaf != leaf {
            return Err(broken(
                seq,
                "the entry does not match its leaf hash (altered, swapped or reordered)",
            ));
        }
        frontier.push(leaf);
        expected += 1;
        while let Some(cp) = next_cp.next_if(|cp| cp.size as u64 == expected) {
            check_checkpoint(cp, &frontier, keyring, last_cp_size)?;
            last_cp_size = expected;
        }
        Ok(())
    })
    .await;
    match scan {
        Ok(()) => {}
        Err(store::audit::ScanError::Visitor(e)) => return Err(e),
        Err(store::audit::ScanError::Store(e)) => return Err(e.into()),
    }

    if let Some(cp) = next_cp.next() {
        return Err(broken(
            expected,
            format!(
                "the log ends at {expected} entries but a checkpoint covers {} (truncated)",
                cp.size
            ),
        ));
    }
    // Another node's sequencer may place entries while the log is read: the head is read
    // before and after the scan, and the entries read must lie between the two.
    let head_before = u64::try_from(head_size).unwrap_or(0);
    let head_after = u64::try_from(store::audit::head_size(db.conn()).await?).unwrap_or(0);
    if expected < head_before || expected > head_after {
        let head = if expected < head_before {
            head_before
        } else {
            head_after
        };
        return Err(broken(
            expected.min(head),
            format!("the head records {head} entries, the log holds {expected}"),
        ));
    }
    Ok(VerifyReport {
        entries: expected,
        root: frontier.root(),
        checkpoints: checkpoints.len() as u64,
    })
}

fn check_checkpoint(
    cp: &store::audit::CheckpointRow,
    frontier: &Frontier,
    keyring: &Keyring,
    since: u64,
) -> Result<(), VerifyError> {
    let size = cp.size as u64;
    let root = frontier.root();
    if cp.root != root {
        return Err(broken(
            since,
            format!("checkpoint {size} does not match the entries in [{since}, {size})"),
        ));
    }
    if cp.frontier != frontier.to_bytes() {
        return Err(broken(
            since,
            format!("checkpoint {size}: its stored compact range does not match the entries"),
        ));
    }
    let Some(key) = keyring.any(KeyKind::CheckpointSigning, cp.key_version) else {
        return Err(broken(
            since,
            format!(
                "checkpoint {size} names unknown key version {}",
                cp.key_version
            ),
        ));
    };
    let pair = key
        .ed25519(KeyKind::CheckpointSigning)
        .map_err(|_| broken(since, "checkpoint key unreadable"))?;
    let parsed = super::checkpoint::parse_note(&cp.note)
        .map_err(|e| broken(since, format!("checkpoint {size}: {e}")))?;
    let body = verify_note(&cp.note, &parsed.origin, pair.public_key().as_ref())
        .map_err(|e| broken(since, format!("checkpoint {size}: {e}")))?;
    if body.size != size || body.root != root {
        return Err(broken(
            since,
            format!("checkpoint {size}: the signed note does not match its row"),
        ));
    }
    Ok(())
}
