//! Email templates (esp for its own recipient, admin for any): save a Handlebars template
//! checked against its purpose, and render it for one person through the gate.
use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::http::error::{ApiError, ErrorBody, ErrorCode};
use crate::http::extract::{Authorized, EspOrAdmin, JsonBody};
use crate::policy::templates::{NewTemplate, TemplateView, Templates, TemplatesError};
use crate::rendering::Rendered;
use crate::startup::AppState;

impl From<TemplatesError> for ApiError {
    fn from(e: TemplatesError) -> Self {
        use TemplatesError as E;
        match e {
            E::Compile(_) => ApiError::new(ErrorCode::InvalidTemplate, e.to_string()),
            E::Purpose(_) => ApiError::new(ErrorCode::PurposeMismatch, e.to_string()),
            E::Invalid(m) => ApiError::new(ErrorCode::ValidationFailed, m),
            E::NotFound => ApiError::new(ErrorCode::NotFound, e.to_string()),
            E::Render(_) => ApiError::opaque(ErrorCode::Internal, &e),
            E::Authorize(a) => a.into(),
            E::Gate(g) => g.into(),
            E::Store(s) => s.into(),
            E::Audit(a) => a.into(),
        }
    }
}

fn service<'a>(
    state: &'a AppState,
    keyring: &'a crate::crypto::Keyring,
    auth: &'a Authorized<EspOrAdmin>,
) -> Templates<'a> {
    Templates {
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

/// Save a template: subject, HTML and text in Handlebars, for a purpose and a recipient.
/// Each part is compiled (errors give the line and column) and every token checked
/// against the purpose (422 listing each token with its line).
#[utoipa::path(post, path = "/v1/templates", tag = "templates", security(("bearer" = [])),
    request_body = NewTemplate, responses(
    (status = 201, description = "Saved", body = TemplateView, links(
        ("get" = (operation_ref = "#/paths/~1v1~1templates~1{id}/get", parameters(("id" = "$response.body#/id")))),
        ("render" = (operation_ref = "#/paths/~1v1~1templates~1{id}~1render/post", parameters(("id" = "$response.body#/id")))),
        ("delete" = (operation_ref = "#/paths/~1v1~1templates~1{id}/delete", parameters(("id" = "$response.body#/id")))))),
    (status = 400, description = "Malformed body or unknown purpose", body = ErrorBody),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not an esp or admin key, another recipient, or a purpose the key may not use", body = ErrorBody),
    (status = 404, description = "No such recipient", body = ErrorBody),
    (status = 413, description = "Body too large", body = ErrorBody),
    (status = 415, description = "Not JSON", body = ErrorBody),
    (status = 422, description = "invalid_template (a part that does not compile: where and why), purpose_mismatch (each token the purpose may not read, unknown names and helpers), validation_failed", body = ErrorBody),
    (status = 503, description = "Audit log or database unavailable; nothing saved", body = ErrorBody)))]
pub async fn create(
    state: web::Data<AppState>,
    auth: Authorized<EspOrAdmin>,
    body: JsonBody<NewTemplate>,
) -> Result<HttpResponse, ApiError> {
    let new = body.parse().await?;
    let keyring = state.keyring.get();
    let v = service(&state, &keyring, &auth).create(&new).await?;
    Ok(HttpResponse::Created().json(v))
}

#[derive(Serialize, ToSchema)]
pub struct TemplateList {
    pub templates: Vec<TemplateView>,
}

/// The templates this key may see (an esp key: its recipient's).
#[utoipa::path(get, path = "/v1/templates", tag = "templates", security(("bearer" = [])),
    responses(
    (status = 200, description = "Oldest first", body = TemplateList),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not an esp or admin key", body = ErrorBody),
    (status = 503, description = "Database unavailable", body = ErrorBody)))]
pub async fn list(
    state: web::Data<AppState>,
    auth: Authorized<EspOrAdmin>,
) -> Result<HttpResponse, ApiError> {
    let keyring = state.keyring.get();
    let templates = service(&state, &keyring, &auth).list().await?;
    Ok(HttpResponse::Ok().json(TemplateList { templates }))
}

/// One template.
#[utoipa::path(get, path = "/v1/templates/{id}", tag = "templates", security(("bearer" = [])),
    params(("id" = String, Path, description = "The template id")),
    responses(
    (status = 200, description = "The template", body = TemplateView),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not an esp or admin key", body = ErrorBody),
    (status = 404, description = "No such template (or another recipient's)", body = ErrorBody),
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

/// Delete a template. Audited.
#[utoipa::path(delete, path = "/v1/templates/{id}", tag = "templates", security(("bearer" = [])),
    params(("id" = String, Path, description = "The template id")),
    responses(
    (status = 204, description = "Deleted"),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not an esp or admin key", body = ErrorBody),
    (status = 404, description = "No such template (or another recipient's)", body = ErrorBody),
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

/// `{"pseudonym": "ps1.…"}`: the person to render for, as the template's recipient knows them.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenderRequest {
    pub pseudonym: String,
}

/// Render the template for one person (a preview): their minimised view for the
/// template's purpose, nothing else; a disclosure, recorded and audited like a profile
/// read. A person who may not be disclosed is a 404, as for the profile.
#[utoipa::path(post, path = "/v1/templates/{id}/render", tag = "templates", security(("bearer" = [])),
    params(("id" = String, Path, description = "The template id")),
    request_body = RenderRequest, responses(
    (status = 200, description = "The message", body = Rendered),
    (status = 400, description = "Malformed body or pseudonym", body = ErrorBody),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not an esp or admin key, or the purpose is no longer the key's", body = ErrorBody),
    (status = 404, description = "No such template, or no profile for that pseudonym and purpose", body = ErrorBody),
    (status = 410, description = "The pseudonym's key version was retired", body = ErrorBody),
    (status = 422, description = "The policies in force no longer allow a token (purpose_mismatch)", body = ErrorBody),
    (status = 429, description = "too_many_requests: this key is over its rate for this route (`rate_limit_renders_per_minute`); or too many failed authentications from this address", body = ErrorBody,
        headers(("Retry-After" = u64, description = "Seconds until a request would be allowed"))),
    (status = 503, description = "Audit log or database unavailable; nothing disclosed", body = ErrorBody)))]
pub async fn render(
    state: web::Data<AppState>,
    auth: Authorized<EspOrAdmin>,
    path: web::Path<String>,
    body: JsonBody<RenderRequest>,
) -> Result<HttpResponse, ApiError> {
    state
        .limits
        .check(crate::limits::Expensive::Render, &auth.caller.key_id)?;
    let req = body.parse().await?;
    let keyring = state.keyring.get();
    let recipient = service(&state, &keyring, &auth).get(&path).await?.recipient;
    let keyring = state.keyring_for(&recipient).await?;
    let v = service(&state, &keyring, &auth)
        .render(&path, &req.pseudonym)
        .await?;
    Ok(HttpResponse::Ok().json(v))
}
