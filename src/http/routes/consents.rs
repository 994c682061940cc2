//! The consent ledger: recording consent, and a subject's history for DPOs.
use actix_web::{HttpResponse, web};
use serde::Deserialize;

use crate::consent::{ConsentHistory, ConsentRecord, Ledger, NewConsent};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::{Authorized, DpoOnly, IngestOrDpo, JsonBody, Query};
use crate::startup::AppState;

fn ledger<'a>(
    state: &'a AppState,
    keyring: &'a crate::crypto::Keyring,
    policies: &'a crate::policy::Policies,
    actor: crate::domain::Actor,
    request_id: Option<String>,
) -> Ledger<'a> {
    Ledger {
        confirm_ttl_secs: i64::try_from(state.settings.double_opt_in_ttl_secs).unwrap_or(i64::MAX),
        db: &state.db,
        master: &state.master,
        keyring,
        audit: &state.audit,
        policies,
        actor,
        request_id,
        now: state.clock.now(),
        writer: Some(&state.consents),
    }
}

/// Record a consent decision. A person not yet known is created from the identifier
/// given. A grant of a consent that needs double opt-in is recorded as `pending`.
#[utoipa::path(post, path = "/v1/consents", tag = "consents", security(("bearer" = [])),
    request_body = NewConsent, responses(
    (status = 201, description = "Recorded", body = ConsentRecord),
    (status = 400, description = "Malformed or unknown field (named in the message)", body = ErrorBody),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not an ingest or dpo key", body = ErrorBody),
    (status = 422, description = "The purpose is not consent-based", body = ErrorBody),
    (status = 503, description = "Audit log or database unavailable", body = ErrorBody)))]
pub async fn record(
    state: web::Data<AppState>,
    auth: Authorized<IngestOrDpo>,
    body: JsonBody<NewConsent>,
) -> Result<HttpResponse, ApiError> {
    let req = body.parse().await?;
    let keyring = state.keyring.get();
    let policies = state.policies.get();
    let ledger = ledger(
        &state,
        &keyring,
        &policies,
        auth.actor(),
        auth.request_id.clone(),
    );
    let record = ledger.record(&req).await?;
    Ok(HttpResponse::Created().json(record))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// RFC 3339: the state at this moment ("was this email sent with consent?").
    #[param(format = DateTime)]
    pub at: Option<String>,
}

/// A subject's consent history and its state at a moment (default: now). Audited.
#[utoipa::path(get, path = "/v1/subjects/{subject_id}/consents", tag = "consents",
    security(("bearer" = [])),
    params(("subject_id" = String, Path, description = "The internal id (from GET /v1/subjects)"), HistoryQuery),
    responses(
    (status = 200, description = "History and state", body = ConsentHistory),
    (status = 400, description = "Malformed `at`", body = ErrorBody),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not a dpo key", body = ErrorBody),
    (status = 404, description = "No such subject", body = ErrorBody),
    (status = 503, description = "Audit log or database unavailable", body = ErrorBody)))]
pub async fn history(
    state: web::Data<AppState>,
    auth: Authorized<DpoOnly>,
    path: web::Path<String>,
    q: Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = q.parse()?;
    let keyring = state.keyring.get();
    let policies = state.policies.get();
    let ledger = ledger(
        &state,
        &keyring,
        &policies,
        auth.actor(),
        auth.request_id.clone(),
    );
    let h = ledger.history(&path.into_inner(), q.at.as_deref()).await?;
    Ok(HttpResponse::Ok().json(h))
}

/// The confirmation link of a double opt-in grant, followed by the person. No credentials:
/// the signed token is the proof. Answers a short HTML page.
#[utoipa::path(get, path = "/v1/consents/confirm/{token}", tag = "consents",
    params(("token" = String, Path, description = "From the pending record's confirm_token")),
    responses(
    (status = 200, description = "Confirmed", content_type = "text/html", body = String),
    (status = 404, description = "Not a link this gateway issued", body = ErrorBody),
    (status = 410, description = "Expired, superseded or already used", body = ErrorBody),
    (status = 503, description = "Audit log or database unavailable", body = ErrorBody)))]
pub async fn confirm(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let keyring = state.keyring.get();
    let policies = state.policies.get();
    let ledger = ledger(
        &state,
        &keyring,
        &policies,
        crate::domain::Actor::anonymous(),
        None,
    );
    ledger.confirm(&path.into_inner()).await?;
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body("<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>Confirmed</title><p>Thank you: your choice is confirmed.</p></html>"))
}

/// The signed consent receipt of one record (Kantara Consent Receipt v1.1 shape, Ed25519
/// over the payload bytes with the checkpoint key). Audited.
#[utoipa::path(get, path = "/v1/consents/{id}/receipt", tag = "consents", security(("bearer" = [])),
    params(("id" = String, Path, description = "The consent record id")),
    responses(
    (status = 200, description = "The signed receipt", body = crate::consent::receipt::SignedReceipt),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not a dpo key", body = ErrorBody),
    (status = 404, description = "No such record", body = ErrorBody),
    (status = 503, description = "Audit log or database unavailable", body = ErrorBody)))]
pub async fn receipt(
    state: web::Data<AppState>,
    auth: Authorized<DpoOnly>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let keyring = state.keyring.get();
    let policies = state.policies.get();
    let ledger = ledger(
        &state,
        &keyring,
        &policies,
        auth.actor(),
        auth.request_id.clone(),
    );
    let controller = state.settings.controller();
    let signed = ledger.receipt(&path.into_inner(), controller).await?;
    Ok(HttpResponse::Ok().json(signed))
}
