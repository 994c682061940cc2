//! Segments (esp for its own recipient, admin for any): save a rule for a purpose, count
//! its members and preview them, every row a minimised view through the gate.
use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::{Authorized, EspOrAdmin, JsonBody, Query};
use crate::policy::segments::{ExportView, NewSegment, Preview, SegmentView, Segments};
use crate::segmentation::export::Format;
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
    (status = 201, description = "Saved", body = SegmentView, links(
        ("get" = (operation_ref = "#/paths/~1v1~1segments~1{id}/get", parameters(("id" = "$response.body#/id")))),
        ("count" = (operation_ref = "#/paths/~1v1~1segments~1{id}~1count/get", parameters(("id" = "$response.body#/id")))),
        ("preview" = (operation_ref = "#/paths/~1v1~1segments~1{id}~1preview/get", parameters(("id" = "$response.body#/id")))),
        ("export" = (operation_ref = "#/paths/~1v1~1segments~1{id}~1export/get", parameters(("id" = "$response.body#/id"), ("recipient" = "$response.body#/recipient")))),
        ("exports" = (operation_ref = "#/paths/~1v1~1segments~1{id}~1exports/get", parameters(("id" = "$response.body#/id")))),
        ("delete" = (operation_ref = "#/paths/~1v1~1segments~1{id}/delete", parameters(("id" = "$response.body#/id")))))),
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
    let recipient = service(&state, &keyring, &auth).get(&path).await?.recipient;
    let keyring = state.keyring_for(&recipient).await?;
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
    #[param(minimum = 1, maximum = 100)]
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

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// The recipient the audience goes to: the one the segment is built for (an esp key:
    /// its own).
    pub recipient: String,
    /// `ndjson` (the default; one minimised view per line) or `csv` (columns in the
    /// order the README documents, ready for an ESP's list import).
    #[param(inline)]
    pub format: Option<Format>,
    /// The id of an earlier complete export of this segment to this recipient: send only
    /// the members who joined since (whole rows, `change: joined`) and those who left
    /// (`change: left`, the pseudonym alone).
    pub since: Option<String>,
}

/// The HTTP body of a streamed export or campaign: the producer's chunks as they come; an
/// error chunk cuts the transfer. The body owns the stream's permit: it is given back when
/// the last chunk has been taken or when the server drops the body (the client left).
pub(crate) fn streamed(
    rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, crate::policy::segments::ExportAborted>>,
    permit: crate::limits::StreamPermit,
) -> impl futures_util::Stream<Item = Result<web::Bytes, crate::policy::segments::ExportAborted>> + 'static
{
    futures_util::stream::unfold((rx, permit), |(mut rx, permit)| async move {
        rx.recv()
            .await
            .map(|chunk| (chunk.map(web::Bytes::from), (rx, permit)))
    })
}

/// Export the segment's audience to its recipient, streamed: every row the member's
/// minimised view with the recipient's pseudonym, consent evaluated as the rows are
/// read. Each page of rows is recorded (a disclosure record per member) before it is
/// sent; the export ends with one audit entry holding the row count and a commitment to
/// the pseudonyms sent (`pseudonyms:<hex SHA-256 of each row's pseudonym and a newline,
/// in row order>`). The export's id is in the `Consentry-Export-Id` header; a body that
/// ends early (the transfer is cut, not closed) is an interrupted export, recorded as such.
#[utoipa::path(get, path = "/v1/segments/{id}/export", tag = "segments", security(("bearer" = [])),
    params(("id" = String, Path, description = "The segment id"), ExportQuery),
    responses(
    (status = 200, description = "The rows, streamed", content(
        (String = "application/x-ndjson"),
        (String = "text/csv")),
        headers(("Consentry-Export-Id" = String, description = "This export's id (for `since` and GET /v1/exports/{id})"))),
    (status = 400, description = "Bad query (recipient missing, unknown format) or not the segment's recipient", body = ErrorBody),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not an esp or admin key, or the purpose is no longer the key's", body = ErrorBody),
    (status = 404, description = "No such segment (or another recipient's)", body = ErrorBody),
    (status = 409, description = "invalid_since: `since` is not a complete export of this segment to this recipient, or too old", body = ErrorBody),
    (status = 422, description = "The policies in force no longer allow the rule (purpose_mismatch)", body = ErrorBody),
    (status = 429, description = "too_many_requests: this key is over its rate (`rate_limit_exports_per_minute`), or too many failed authentications from this address; too_many_streams: this key has `max_concurrent_streams_per_key` exports and campaign message streams open", body = ErrorBody,
        headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    (status = 503, description = "gateway_busy: the node is serving `max_concurrent_streams` streams; or the audit log or database is unavailable, nothing disclosed", body = ErrorBody,
        headers(("Retry-After" = u64, description = "Seconds to wait before retrying (gateway_busy)")))))]
pub async fn export(
    state: web::Data<AppState>,
    auth: Authorized<EspOrAdmin>,
    path: web::Path<String>,
    q: Query<ExportQuery>,
) -> Result<HttpResponse, ApiError> {
    state
        .limits
        .check(crate::limits::Expensive::Export, &auth.caller.key_id)?;
    let q = q.parse()?;
    let format = q.format.unwrap_or(Format::Ndjson);
    let keyring = state.keyring_for(&q.recipient).await?;
    // Taken before the export is recorded, so a refused one leaves nothing behind.
    let permit = state.limits.start_stream(&auth.caller.key_id)?;
    let svc = service(&state, &keyring, &auth);
    let now = svc.now;
    let plan = svc
        .start_export(&path, &q.recipient, format, q.since.as_deref())
        .await?;
    let id = plan.export.id.clone();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let state = state.into_inner();
    let caller = auth.caller.clone();
    let actor = auth.actor();
    let request_id = auth.request_id.clone();
    actix_web::rt::spawn(async move {
        let svc = Segments {
            db: &state.db,
            master: &state.master,
            keyring: &keyring,
            audit: &state.audit,
            policies: state.policies.get(),
            caller: &caller,
            actor,
            request_id,
            now,
        };
        svc.run_export(plan, state.clock.as_ref(), tx).await;
    });
    let body = streamed(rx, permit);
    let extension = format.as_str();
    Ok(HttpResponse::Ok()
        .content_type(format.content_type())
        .insert_header(("Consentry-Export-Id", id.clone()))
        .insert_header((
            actix_web::http::header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"export-{id}.{extension}\""),
        ))
        .streaming(body))
}

#[derive(Serialize, ToSchema)]
pub struct ExportList {
    pub exports: Vec<ExportView>,
}

/// A segment's exports, newest first (at most 100).
#[utoipa::path(get, path = "/v1/segments/{id}/exports", tag = "segments", security(("bearer" = [])),
    params(("id" = String, Path, description = "The segment id")),
    responses(
    (status = 200, description = "The exports", body = ExportList),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not an esp or admin key", body = ErrorBody),
    (status = 404, description = "No such segment (or another recipient's)", body = ErrorBody),
    (status = 503, description = "Database unavailable", body = ErrorBody)))]
pub async fn exports(
    state: web::Data<AppState>,
    auth: Authorized<EspOrAdmin>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let keyring = state.keyring.get();
    let list = service(&state, &keyring, &auth).exports(&path).await?;
    Ok(HttpResponse::Ok().json(ExportList { exports: list }))
}

/// One export: its status, row count and commitment.
#[utoipa::path(get, path = "/v1/exports/{id}", tag = "segments", security(("bearer" = [])),
    params(("id" = String, Path, description = "The export id (the `Consentry-Export-Id` header)")),
    responses(
    (status = 200, description = "The export", body = ExportView),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not an esp or admin key", body = ErrorBody),
    (status = 404, description = "No such export (or another recipient's)", body = ErrorBody),
    (status = 503, description = "Database unavailable", body = ErrorBody)))]
pub async fn export_status(
    state: web::Data<AppState>,
    auth: Authorized<EspOrAdmin>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let keyring = state.keyring.get();
    let e = service(&state, &keyring, &auth).export(&path).await?;
    Ok(HttpResponse::Ok().json(e))
}
