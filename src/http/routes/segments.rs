//! Segments (esp for its own recipient, admin for any): save a rule for a purpose, count
//! its members and preview them, every row a minimised view through the gate.
use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::{Authorized, EspOrAdmin, JsonBody, Query};
use crate::policy::segments::{NewSegment, Preview, SegmentView, Segments};
use crate::startup::AppState;

fn service<'a>(
    state: &'a AppState,
    keyring: &'a crate::crypto::Keyring,
    auth: &'a Authorized<EspOrAdmin>,
) -> Segments<'a> {
    Segments {
        db: &state.db,
        master: &state.master,
        keyring,
        audit: &state.audit,
        policies: state.policies.get(),
        caller: &auth.caller,
        actor: auth.actor(),
        request_id: auth.request_id.clone(),
        now: state.clock.now(),
    }
}

/// Save a segment: a rule (see the README) for a purpose and a recipient. The rule is
/// parsed (errors name the path, e.g. `all[2].event.within`) and checked against the
/// purpose: every attribute, aggregate and event it reads must be of a category the
/// purpose may read, else 422 listing each.
#[utoipa::path(post, path = "/v1/segments", tag = "segments", security(("bearer" = [])),
    request_body = NewSegment, responses(
    (status = 201, description = "Saved", body = SegmentView),
    (status = 400, description = "Malformed body or unknown purpose", body = ErrorBody),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not an esp or admin key, another recipient, or a purpose the key may not use", body = ErrorBody),
    (status = 404, description = "No such recipient", body = ErrorBody),
    (status = 413, description = "Body too large", body = ErrorBody),
    (status = 415, description = "Not JSON", body = ErrorBody),
    (status = 422, description = "invalid_rule (the path and the fix) or purpose_mismatch (each reference the purpose may not read)", body = ErrorBody),
    (status = 503, description = "Audit log or database unavailable; nothing saved", body = ErrorBody)))]
pub async fn create(
    state: web::Data<AppState>,
    auth: Authorized<EspOrAdmin>,
    body: JsonBody<NewSegment>,
) -> Result<HttpResponse, ApiError> {
    let new = body.parse().await?;
    let keyring = state.keyring.get();
    let v = service(&state, &keyring, &auth).create(&new).await?;
    Ok(HttpResponse::Created().json(v))
}

#[derive(Serialize, ToSchema)]
pub struct SegmentList {
    pub segments: Vec<SegmentView>,
}

/// The segments this key may see (an esp key: its recipient's).
#[utoipa::path(get, path = "/v1/segments", tag = "segments", security(("bearer" = [])),
    responses(
    (status = 200, description = "Oldest first", body = SegmentList),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not an esp or admin key", body = ErrorBody),
    (status = 503, description = "Database unavailable", body = ErrorBody)))]
pub async fn list(
    state: web::Data<AppState>,
    auth: Authorized<EspOrAdmin>,
) -> Result<HttpResponse, ApiError> {
    let keyring = state.keyring.get();
    let segments = service(&state, &keyring, &auth).list().await?;
    Ok(HttpResponse::Ok().json(SegmentList { segments }))
}

/// One segment.
#[utoipa::path(get, path = "/v1/segments/{id}", tag = "segments", security(("bearer" = [])),
    params(("id" = String, Path, description = "The segment id")),
    responses(
    (status = 200, description = "The segment", body = SegmentView),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not an esp or admin key", body = ErrorBody),
    (status = 404, description = "No such segment (or another recipient's)", body = ErrorBody),
    (status = 503, description = "Database unavailable", body = ErrorBody)))]
pub async fn get(
    state: web::Data<AppState>,
    auth: Authorized<EspOrAdmin>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let keyring = state.keyring.get();
    let v = service(&state, &keyring, &auth).get(&path).await?;
    Ok(HttpResponse::Ok().json(v))
}

/// Delete a segment. Audited.
#[utoipa::path(delete, path = "/v1/segments/{id}", tag = "segments", security(("bearer" = [])),
    params(("id" = String, Path, description = "The segment id")),
    responses(
    (status = 204, description = "Deleted"),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not an esp or admin key", body = ErrorBody),
    (status = 404, description = "No such segment (or another recipient's)", body = ErrorBody),
    (status = 503, description = "Audit log or database unavailable; nothing changed", body = ErrorBody)))]
pub async fn delete(
    state: web::Data<AppState>,
    auth: Authorized<EspOrAdmin>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let keyring = state.keyring.get();
    service(&state, &keyring, &auth).delete(&path).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Serialize, ToSchema)]
pub struct Count {
    pub segment: String,
    /// Members now: the rule, and the gate's conditions (current consent or other legal
    /// basis, no objection or GPC opt-out, not restricted, active), in one query.
    pub count: u64,
}

/// How many people are in the segment now.
#[utoipa::path(get, path = "/v1/segments/{id}/count", tag = "segments", security(("bearer" = [])),
    params(("id" = String, Path, description = "The segment id")),
    responses(
    (status = 200, description = "The count", body = Count),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not an esp or admin key, or the purpose is no longer the key's", body = ErrorBody),
    (status = 404, description = "No such segment (or another recipient's)", body = ErrorBody),
    (status = 422, description = "The policies in force no longer allow the rule (purpose_mismatch)", body = ErrorBody),
    (status = 503, description = "Database unavailable", body = ErrorBody)))]
pub async fn count(
    state: web::Data<AppState>,
    auth: Authorized<EspOrAdmin>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let keyring = state.keyring.get();
    let count = service(&state, &keyring, &auth).count(&path).await?;
    Ok(HttpResponse::Ok().json(Count {
        segment: path.into_inner(),
        count,
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PreviewQuery {
    /// How many members to show, 1 to 100 (default 10).
    pub limit: Option<u64>,
}

/// The first members, each the minimised view for the segment's purpose with the
/// recipient's pseudonym. A disclosure: recorded per row, audited once.
#[utoipa::path(get, path = "/v1/segments/{id}/preview", tag = "segments", security(("bearer" = [])),
    params(("id" = String, Path, description = "The segment id"), PreviewQuery),
    responses(
    (status = 200, description = "The rows", body = Preview),
    (status = 400, description = "Bad limit", body = ErrorBody),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not an esp or admin key, or the purpose is no longer the key's", body = ErrorBody),
    (status = 404, description = "No such segment (or another recipient's)", body = ErrorBody),
    (status = 422, description = "The policies in force no longer allow the rule (purpose_mismatch)", body = ErrorBody),
    (status = 503, description = "Audit log or database unavailable; nothing disclosed", body = ErrorBody)))]
pub async fn preview(
    state: web::Data<AppState>,
    auth: Authorized<EspOrAdmin>,
    path: web::Path<String>,
    q: Query<PreviewQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = q.parse()?;
    let limit = q.limit.unwrap_or(10);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::new(
            crate::http::error::ErrorCode::InvalidQuery,
            "limit: 1 to 100",
        ));
    }
    let keyring = state.keyring.get();
    let recipient = service(&state, &keyring, &auth).get(&path).await?.recipient;
    let keyring = state.keyring_for(&recipient).await?;
    let v = service(&state, &keyring, &auth)
        .preview(&path, limit)
        .await?;
    Ok(HttpResponse::Ok().json(v))
}
