//! Recipients: registering them and their pseudonym keys (admin), seeing them (admin,
//! dpo, auditor). The routes ESPs read through are in `esp.rs`.
use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::{AdminOnly, Authorized, Governance, JsonBody};
use crate::policy::recipients::{self, NewRecipient, Recipient, Registry};
use crate::startup::AppState;

fn registry<'a>(
    state: &'a AppState,
    policies: &'a crate::policy::Policies,
    auth: &Authorized<AdminOnly>,
) -> Registry<'a> {
    Registry {
        db: &state.db,
        master: &state.master,
        audit: &state.audit,
        policies,
        actor: auth.actor(),
        request_id: auth.request_id.clone(),
        now: state.clock.now(),
    }
}

/// The recipient with its key versions; the keyring is read from the database again only
/// when it knows no key of this recipient yet (one created here or on another node).
async fn described(state: &AppState, id: &str) -> Result<Recipient, ApiError> {
    let row = recipients::get(&state.db, id)
        .await?
        .ok_or(recipients::RecipientError::NotFound)?;
    let keyring = state.keyring_for(id).await?;
    Ok(recipients::describe(&[row], &keyring).remove(0))
}

/// Register a recipient: an ESP or other processor data may be disclosed to, with its
/// purposes and the webhook for erasure/rectification notices. It gets its own
/// pseudonym key (version 1).
#[utoipa::path(post, path = "/v1/recipients", tag = "recipients", security(("bearer" = [])),
    request_body = NewRecipient, responses(
    (status = 201, description = "Registered", body = Recipient, links(
        ("get" = (operation_ref = "#/paths/~1v1~1recipients~1{rid}/get", parameters(("rid" = "$response.body#/id")))))),
    (status = 400, description = "Malformed body", body = ErrorBody),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not an admin key", body = ErrorBody),
    (status = 409, description = "The id is taken", body = ErrorBody),
    (status = 422, description = "Invalid id, kind, purposes or webhook (named in the message)", body = ErrorBody),
    (status = 503, description = "Audit log or database unavailable; nothing changed", body = ErrorBody)))]
pub async fn create(
    state: web::Data<AppState>,
    auth: Authorized<AdminOnly>,
    body: JsonBody<NewRecipient>,
) -> Result<HttpResponse, ApiError> {
    let new = body.parse().await?;
    let policies = state.policies.get();
    let row = registry(&state, &policies, &auth).create(&new).await?;
    Ok(HttpResponse::Created().json(described(&state, &row.id).await?))
}

#[derive(Serialize, ToSchema)]
pub struct RecipientList {
    pub recipients: Vec<Recipient>,
}

/// Every registered recipient (never webhook secrets).
#[utoipa::path(get, path = "/v1/recipients", tag = "recipients", security(("bearer" = [])),
    responses(
    (status = 200, description = "All recipients", body = RecipientList),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not an admin, dpo or auditor key", body = ErrorBody)))]
pub async fn list(
    state: web::Data<AppState>,
    _auth: Authorized<Governance>,
) -> Result<HttpResponse, ApiError> {
    let rows = recipients::all(&state.db).await?;
    let keyring = state.keyring.get();
    Ok(HttpResponse::Ok().json(RecipientList {
        recipients: recipients::describe(&rows, &keyring),
    }))
}

/// One recipient, with its pseudonym key versions.
#[utoipa::path(get, path = "/v1/recipients/{rid}", tag = "recipients", security(("bearer" = [])),
    params(("rid" = String, Path, description = "The recipient id")),
    responses(
    (status = 200, description = "The recipient", body = Recipient),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not an admin, dpo or auditor key", body = ErrorBody),
    (status = 404, description = "No such recipient", body = ErrorBody)))]
pub async fn get(
    state: web::Data<AppState>,
    _auth: Authorized<Governance>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(described(&state, &path.into_inner()).await?))
}

#[derive(Serialize, ToSchema)]
pub struct RecipientKeyVersion {
    pub recipient: String,
    pub version: i32,
}

/// Start a new pseudonym key version: new pseudonyms use it; old ones keep resolving
/// until their version is retired.
#[utoipa::path(post, path = "/v1/recipients/{rid}/keys/rotate", tag = "recipients",
    security(("bearer" = [])),
    params(("rid" = String, Path, description = "The recipient id")),
    responses(
    (status = 201, description = "The new version", body = RecipientKeyVersion),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not an admin key", body = ErrorBody),
    (status = 404, description = "No such recipient", body = ErrorBody),
    (status = 503, description = "Audit log or database unavailable; nothing changed", body = ErrorBody)))]
pub async fn rotate(
    state: web::Data<AppState>,
    auth: Authorized<AdminOnly>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let rid = path.into_inner();
    let policies = state.policies.get();
    let version = registry(&state, &policies, &auth).rotate(&rid).await?;
    state.reload_keyring().await?;
    Ok(HttpResponse::Created().json(RecipientKeyVersion {
        recipient: rid,
        version,
    }))
}

/// Retire a pseudonym key version: pseudonyms made with it answer 410 from now on.
#[utoipa::path(post, path = "/v1/recipients/{rid}/keys/{version}/retire", tag = "recipients",
    security(("bearer" = [])),
    params(("rid" = String, Path, description = "The recipient id"),
           ("version" = i32, Path, description = "The version to retire")),
    responses(
    (status = 200, description = "Retired", body = RecipientKeyVersion),
    (status = 400, description = "Malformed version", body = ErrorBody),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not an admin key", body = ErrorBody),
    (status = 404, description = "No such recipient", body = ErrorBody),
    (status = 422, description = "No such version, or the last active one", body = ErrorBody),
    (status = 503, description = "Audit log or database unavailable; nothing changed", body = ErrorBody)))]
pub async fn retire(
    state: web::Data<AppState>,
    auth: Authorized<AdminOnly>,
    path: web::Path<(String, i32)>,
) -> Result<HttpResponse, ApiError> {
    let (rid, version) = path.into_inner();
    let policies = state.policies.get();
    registry(&state, &policies, &auth)
        .retire(&rid, version)
        .await?;
    state.reload_keyring().await?;
    Ok(HttpResponse::Ok().json(RecipientKeyVersion {
        recipient: rid,
        version,
    }))
}
