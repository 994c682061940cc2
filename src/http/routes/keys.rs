use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::admin::{self, Context, KeyInfo, NewKey};
use crate::crypto::{KeyKind, Keyring};
use crate::domain::Role;
use crate::http::error::{ApiError, ErrorBody, ErrorCode};
use crate::http::extract::{AdminOnly, Authorized, JsonBody};
use crate::startup::AppState;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// A label for people, e.g. `Q4 audit`.
    pub name: String,
    /// `admin`, `dpo`, `auditor`, `esp` or `ingest`.
    #[schema(example = "auditor")]
    pub role: String,
    /// For `esp` keys: the recipient the key acts for.
    #[serde(default)]
    pub recipient: Option<String>,
    /// For `esp` keys: the purposes it may request.
    #[serde(default)]
    pub purposes: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedKey {
    pub key: KeyInfo,
    /// The bearer token. Shown once; only a hash is kept.
    pub token: String,
}

#[derive(Serialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyInfo>,
}

fn ctx<'a>(state: &'a AppState, auth: &Authorized<AdminOnly>) -> Context<'a> {
    Context {
        db: &state.db,
        audit: &state.audit,
        actor: auth.actor(),
        request_id: auth.request_id.clone(),
        now: state.clock.now(),
    }
}

/// Create an API key. The token is in the response once and never again.
#[utoipa::path(post, path = "/v1/keys", tag = "keys", security(("bearer" = [])),
    request_body = CreateKey, responses(
    (status = 201, description = "Created", body = CreatedKey),
    (status = 400, description = "Malformed body", body = ErrorBody),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not an admin key", body = ErrorBody),
    (status = 413, description = "Body too large", body = ErrorBody),
    (status = 415, description = "Not JSON", body = ErrorBody),
    (status = 422, description = "Invalid role, name, recipient or purposes", body = ErrorBody),
    (status = 503, description = "Audit log or database unavailable; nothing changed", body = ErrorBody)))]
pub async fn create(
    state: web::Data<AppState>,
    auth: Authorized<AdminOnly>,
    body: JsonBody<CreateKey>,
) -> Result<HttpResponse, ApiError> {
    let b = body.parse().await?;
    let role: Role = b.role.parse().map_err(|e: crate::domain::RoleParseError| {
        ApiError::new(ErrorCode::ValidationFailed, e.to_string())
    })?;
    let new = NewKey::parse(&b.name, role, b.recipient.as_deref(), &b.purposes)?;
    let (key, token) = admin::create_key(&ctx(&state, &auth), new).await?;
    Ok(HttpResponse::Created().json(CreatedKey { key, token }))
}

/// List API keys: ids, names, roles, dates. Never secrets.
#[utoipa::path(get, path = "/v1/keys", tag = "keys", security(("bearer" = [])), responses(
    (status = 200, description = "All keys", body = KeyList),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not an admin key", body = ErrorBody)))]
pub async fn list(
    state: web::Data<AppState>,
    _auth: Authorized<AdminOnly>,
) -> Result<HttpResponse, ApiError> {
    let keys = admin::list_keys(&state.db).await?;
    Ok(HttpResponse::Ok().json(KeyList { keys }))
}

/// Revoke an API key. Other nodes stop accepting it within the token cache's lifetime.
#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "keys", security(("bearer" = [])),
    params(("id" = String, Path, description = "The key id")), responses(
    (status = 204, description = "Revoked"),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not an admin key", body = ErrorBody),
    (status = 404, description = "No such key, or already revoked", body = ErrorBody),
    (status = 503, description = "Audit log or database unavailable; nothing changed", body = ErrorBody)))]
pub async fn revoke(
    state: web::Data<AppState>,
    auth: Authorized<AdminOnly>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    admin::revoke_key(&ctx(&state, &auth), &id).await?;
    state.auth.forget_cached();
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Serialize, ToSchema)]
pub struct Rotated {
    pub kind: String,
    /// The new current version.
    pub version: i32,
}

/// Add a version of a keyring key; it becomes current, older versions keep working.
#[utoipa::path(post, path = "/v1/keyring/{kind}/rotate", tag = "keys", security(("bearer" = [])),
    params(("kind" = String, Path, description = "blind_index, pseudonym, token_signing, checkpoint_signing, audit_subject or suppression")),
    responses(
    (status = 201, description = "Rotated", body = Rotated),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not an admin key", body = ErrorBody),
    (status = 404, description = "Unknown key kind", body = ErrorBody),
    (status = 503, description = "Audit log or database unavailable; nothing changed", body = ErrorBody)))]
pub async fn rotate(
    state: web::Data<AppState>,
    auth: Authorized<AdminOnly>,
    kind: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let kind: KeyKind = kind
        .parse()
        .map_err(|msg: String| ApiError::new(ErrorCode::NotFound, msg))?;
    let version = admin::rotate(&ctx(&state, &auth), &state.master, kind).await?;
    state
        .keyring
        .replace(Keyring::load(state.db.conn(), &state.master).await?);
    Ok(HttpResponse::Created().json(Rotated {
        kind: kind.as_str().into(),
        version,
    }))
}
