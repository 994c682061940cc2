use actix_web::{HttpResponse, web};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::audit::{self, Entry};
use crate::http::error::{ApiError, ErrorBody, ErrorCode};
use crate::http::extract::{AuditorOnly, Authorized, Query};
use crate::startup::AppState;

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EntriesQuery {
    /// Return entries with a sequence number greater than this; from the start if absent.
    pub after: Option<u64>,
    /// At most this many entries (1-1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct Actor {
    pub key_id: String,
    pub role: String,
}

#[derive(Serialize, ToSchema)]
pub struct EntryView {
    /// Sequence number; also the leaf index in the Merkle tree (from 0).
    pub seq: u64,
    /// RFC 3339, microseconds.
    pub at: String,
    pub actor: Actor,
    pub action: String,
    pub purpose: Option<String>,
    /// Keyed hash of the subject under the audit-only key; never a raw identifier.
    pub subject_ref: Option<String>,
    pub attributes: Vec<String>,
    /// `ok`, `denied` or `failed`.
    pub outcome: String,
    pub request_id: Option<String>,
    /// Base64 of the canonical bytes; the leaf hash is SHA-256(0x00 ‖ these bytes).
    pub canonical: String,
    /// Hex.
    pub leaf_hash: String,
}

impl From<Entry> for EntryView {
    fn from(e: Entry) -> Self {
        Self {
            canonical: STANDARD.encode(e.canonical_bytes()),
            leaf_hash: hex::encode(e.leaf_hash()),
            attributes: e.attribute_list(),
            seq: e.seq,
            at: e.at.to_rfc3339(),
            actor: Actor {
                key_id: e.actor_key_id,
                role: e.actor_role,
            },
            action: e.action,
            purpose: e.purpose,
            subject_ref: e.subject_ref,
            outcome: e.outcome,
            request_id: e.request_id,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct EntryPage {
    pub entries: Vec<EntryView>,
    /// Pass as `after` for the next page; absent at the end of the log.
    pub next_after: Option<u64>,
}

/// Read the audit log in sequence order.
#[utoipa::path(get, path = "/v1/audit/entries", tag = "audit", security(("bearer" = [])),
    params(EntriesQuery), responses(
    (status = 200, description = "A page of entries", body = EntryPage),
    (status = 400, description = "Bad query", body = ErrorBody),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not an auditor key", body = ErrorBody)))]
pub async fn entries(
    state: web::Data<AppState>,
    _auth: Authorized<AuditorOnly>,
    q: Query<EntriesQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = q.parse()?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::new(
            ErrorCode::InvalidQuery,
            "limit must be between 1 and 1000",
        ));
    }
    state.audit.settle(&state.db).await?;
    let entries = audit::entries(&state.db, q.after, limit).await?;
    let next_after = (entries.len() as u64 == limit)
        .then(|| entries.last().map(|e| e.seq))
        .flatten();
    Ok(HttpResponse::Ok().json(EntryPage {
        entries: entries.into_iter().map(EntryView::from).collect(),
        next_after,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct KeyView {
    /// The signed-note key name (the origin).
    pub name: String,
    pub version: i32,
    /// Base64 Ed25519 public key.
    pub public_key: String,
    /// `name+keyid+base64(0x01 ‖ key)`, as signed-note tools take it.
    pub verifier_key: String,
}

#[derive(Serialize, ToSchema)]
pub struct CheckpointView {
    pub size: u64,
    /// Hex Merkle root over entries [0, size).
    pub root: String,
    /// The signed note (C2SP tlog-checkpoint).
    pub note: String,
    pub key_version: i32,
    pub created_at: String,
    /// Every checkpoint-signing public key, retired ones included.
    pub keys: Vec<KeyView>,
}

/// The latest signed checkpoint.
#[utoipa::path(get, path = "/v1/audit/checkpoint", tag = "audit", security(("bearer" = [])),
    responses(
    (status = 200, description = "The latest checkpoint", body = CheckpointView),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not an auditor key", body = ErrorBody),
    (status = 404, description = "No checkpoint yet", body = ErrorBody)))]
pub async fn checkpoint(
    state: web::Data<AppState>,
    _auth: Authorized<AuditorOnly>,
) -> Result<HttpResponse, ApiError> {
    state.audit.settle(&state.db).await?;
    let Some(cp) = audit::latest_checkpoint(&state.db).await? else {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "no checkpoint has been signed yet",
        ));
    };
    let keys = state
        .audit
        .checkpoint_keys()
        .into_iter()
        .map(|k| KeyView {
            name: k.name,
            version: k.version,
            public_key: STANDARD.encode(&k.public_key),
            verifier_key: k.verifier_key,
        })
        .collect();
    Ok(HttpResponse::Ok().json(CheckpointView {
        size: cp.size as u64,
        root: hex::encode(&cp.root),
        note: cp.note,
        key_version: cp.key_version,
        created_at: crate::domain::Timestamp::from_unix_micros(cp.created_at).to_rfc3339(),
        keys,
    }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ProofQuery {
    /// Tree size to prove against; the current size if absent.
    pub size: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct InclusionView {
    pub seq: u64,
    pub tree_size: u64,
    pub leaf_hash: String,
    pub root: String,
    /// Hex hashes, leaf to root (RFC 6962 audit path).
    pub path: Vec<String>,
}

/// An RFC 6962 inclusion proof for one entry.
#[utoipa::path(get, path = "/v1/audit/proof/{seq}", tag = "audit", security(("bearer" = [])),
    params(("seq" = u64, Path, description = "The entry's sequence number"), ProofQuery),
    responses(
    (status = 200, description = "The proof", body = InclusionView),
    (status = 400, description = "seq or size out of range", body = ErrorBody),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not an auditor key", body = ErrorBody)))]
pub async fn proof(
    state: web::Data<AppState>,
    _auth: Authorized<AuditorOnly>,
    seq: web::Path<u64>,
    q: Query<ProofQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = q.parse()?;
    let head = state.audit.settle(&state.db).await?;
    let size = q.size.unwrap_or(head);
    let p = audit::inclusion_proof(&state.db, *seq, size).await?;
    Ok(HttpResponse::Ok().json(InclusionView {
        seq: p.seq,
        tree_size: p.tree_size,
        leaf_hash: hex::encode(p.leaf_hash),
        root: hex::encode(p.root),
        path: p.path.iter().map(hex::encode).collect(),
    }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyQuery {
    /// The older tree size.
    pub from: u64,
    /// The newer tree size.
    pub to: u64,
}

#[derive(Serialize, ToSchema)]
pub struct ConsistencyView {
    pub from: u64,
    pub to: u64,
    pub from_root: String,
    pub to_root: String,
    /// Hex hashes (RFC 6962 consistency proof).
    pub path: Vec<String>,
}

/// An RFC 6962 consistency proof between two tree sizes.
#[utoipa::path(get, path = "/v1/audit/consistency", tag = "audit", security(("bearer" = [])),
    params(ConsistencyQuery), responses(
    (status = 200, description = "The proof", body = ConsistencyView),
    (status = 400, description = "Sizes out of range", body = ErrorBody),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not an auditor key", body = ErrorBody)))]
pub async fn consistency(
    state: web::Data<AppState>,
    _auth: Authorized<AuditorOnly>,
    q: Query<ConsistencyQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = q.parse()?;
    state.audit.settle(&state.db).await?;
    let p = audit::consistency_proof(&state.db, q.from, q.to).await?;
    Ok(HttpResponse::Ok().json(ConsistencyView {
        from: p.from,
        to: p.to,
        from_root: hex::encode(p.from_root),
        to_root: hex::encode(p.to_root),
        path: p.path.iter().map(hex::encode).collect(),
    }))
}
