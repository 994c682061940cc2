//! One audit entry and its canonical bytes.
//!
//! The leaf hashed into the tree is `SHA-256(0x00 ‖ canonical)`, where `canonical` is the
//! compact JSON object below, keys in this order, every stored column verbatim (the
//! attributes column is included as the exact JSON text stored, as a string):
//! `{"v":1,"seq":…,"at_us":…,"actor_key_id":…,"actor_role":…,"action":…,"purpose":…,
//! "subject_ref":…,"attributes":…,"outcome":…,"request_id":…}`.
use serde::Serialize;

use super::AuditError;
use super::merkle::{self, Hash};
use crate::domain::{Actor, Timestamp};
use crate::store::audit::{EntryRow, PendingRow};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Denied,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Denied => "denied",
            Outcome::Failed => "failed",
        }
    }
}

/// What a caller asks to record; the log adds the sequence number and the time.
#[derive(Clone, Debug)]
pub struct NewEntry {
    pub actor: Actor,
    pub action: String,
    pub purpose: Option<String>,
    pub subject_ref: Option<String>,
    pub attributes: Vec<String>,
    pub outcome: Outcome,
    pub request_id: Option<String>,
}

impl NewEntry {
    pub fn new(actor: Actor, action: &str, outcome: Outcome) -> Self {
        Self {
            actor,
            action: action.to_owned(),
            purpose: None,
            subject_ref: None,
            attributes: Vec::new(),
            outcome,
            request_id: None,
        }
    }

    pub fn request_id(mut self, id: Option<String>) -> Self {
        self.request_id = id;
        self
    }

    pub fn attributes(mut self, attrs: Vec<String>) -> Self {
        self.attributes = attrs;
        self
    }

    /// The pending row for this entry, appended at `at`: the sequencer gives it its
    /// sequence number later.
    pub(super) fn into_pending(self, at: Timestamp) -> PendingRow {
        let mut attributes = self.attributes;
        attributes.sort();
        attributes.dedup();
        PendingRow {
            at_us: at.unix_micros(),
            actor_key_id: self.actor.key_id,
            actor_role: self.actor.role,
            action: self.action,
            purpose: self.purpose,
            subject_ref: self.subject_ref,
            attributes: serde_json::to_string(&attributes).unwrap_or_else(|_| "[]".into()),
            outcome: self.outcome.as_str().to_owned(),
            request_id: self.request_id,
        }
    }
}

/// A stored entry, exactly as it is hashed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub at: Timestamp,
    pub actor_key_id: String,
    pub actor_role: String,
    pub action: String,
    pub purpose: Option<String>,
    pub subject_ref: Option<String>,
    /// The JSON array text of attribute names, verbatim.
    pub attributes: String,
    pub outcome: String,
    pub request_id: Option<String>,
}

#[derive(Serialize)]
struct Canonical<'a> {
    v: u8,
    seq: u64,
    at_us: i64,
    actor_key_id: &'a str,
    actor_role: &'a str,
    action: &'a str,
    purpose: Option<&'a str>,
    subject_ref: Option<&'a str>,
    attributes: &'a str,
    outcome: &'a str,
    request_id: Option<&'a str>,
}

impl Entry {
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let c = Canonical {
            v: 1,
            seq: self.seq,
            at_us: self.at.unix_micros(),
            actor_key_id: &self.actor_key_id,
            actor_role: &self.actor_role,
            action: &self.action,
            purpose: self.purpose.as_deref(),
            subject_ref: self.subject_ref.as_deref(),
            attributes: &self.attributes,
            outcome: &self.outcome,
            request_id: self.request_id.as_deref(),
        };
        // Serialising a struct of strings and integers cannot fail.
        serde_json::to_vec(&c).unwrap_or_default()
    }

    pub fn leaf_hash(&self) -> Hash {
        merkle::leaf_hash(&self.canonical_bytes())
    }

    /// Attribute names, parsed from the stored text.
    pub fn attribute_list(&self) -> Vec<String> {
        serde_json::from_str(&self.attributes).unwrap_or_default()
    }

    pub(super) fn to_row(&self) -> EntryRow {
        EntryRow {
            seq: self.seq as i64,
            at_us: self.at.unix_micros(),
            actor_key_id: self.actor_key_id.clone(),
            actor_role: self.actor_role.clone(),
            action: self.action.clone(),
            purpose: self.purpose.clone(),
            subject_ref: self.subject_ref.clone(),
            attributes: self.attributes.clone(),
            outcome: self.outcome.clone(),
            request_id: self.request_id.clone(),
            leaf_hash: self.leaf_hash().to_vec(),
        }
    }

    /// A pending entry placed at `seq`.
    pub(super) fn placed(seq: u64, p: PendingRow) -> Self {
        Self {
            seq,
            at: Timestamp::from_unix_micros(p.at_us),
            actor_key_id: p.actor_key_id,
            actor_role: p.actor_role,
            action: p.action,
            purpose: p.purpose,
            subject_ref: p.subject_ref,
            attributes: p.attributes,
            outcome: p.outcome,
            request_id: p.request_id,
        }
    }

    pub(super) fn from_row(row: EntryRow) -> Result<Self, AuditError> {
        Ok(Self {
            seq: u64::try_from(row.seq).map_err(|_| AuditError::CorruptHead)?,
            at: Timestamp::from_unix_micros(row.at_us),
            actor_key_id: row.actor_key_id,
            actor_role: row.actor_role,
            action: row.action,
            purpose: row.purpose,
            subject_ref: row.subject_ref,
            attributes: row.attributes,
            outcome: row.outcome,
            request_id: row.request_id,
        })
    }
}
