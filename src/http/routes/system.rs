use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::Credential;
use crate::http::error::{ApiError, ErrorBody, ErrorCode};
use crate::http::extract::{AnyRole, Authorized};
use crate::startup::AppState;

#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: String,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "system",
    responses((status = 200, description = "The process is up", body = Health)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health {
        status: "ok".into(),
    })
}

#[derive(Serialize, ToSchema)]
pub struct Ready {
    #[schema(example = "ready")]
    pub status: String,
    pub database: String,
    pub migrations: String,
}

/// How long `/readyz` waits for the database: a probe gets its answer within this, even
/// while the database is down and requests wait out `database_acquire_timeout_secs`.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Readiness: the database answers (within 2 s) and every migration is applied.
#[utoipa::path(get, path = "/readyz", tag = "system", responses(
    (status = 200, description = "Ready to serve", body = Ready),
    (status = 503, description = "Database unreachable or migrations pending", body = ErrorBody)))]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    match tokio::time::timeout(READY_TIMEOUT, ready(&state)).await {
        Ok(answer) => answer,
        Err(_) => Err(ApiError::new(
            ErrorCode::NotReady,
            "the database does not answer",
        )),
    }
}

async fn ready(state: &AppState) -> Result<HttpResponse, ApiError> {
    if state.db.ping().await.is_err() {
        return Err(ApiError::new(
            ErrorCode::NotReady,
            "the database does not answer",
        ));
    }
    match state.db.pending_migrations().await {
        Ok(0) => Ok(HttpResponse::Ok().json(Ready {
            status: "ready".into(),
            database: "ok".into(),
            migrations: "current".into(),
        })),
        Ok(n) => Err(ApiError::new(
            ErrorCode::NotReady,
            format!("{n} migrations are pending: run `consentry migrate`"),
        )),
        Err(_) => Err(ApiError::new(
            ErrorCode::NotReady,
            "the database does not answer",
        )),
    }
}

/// Prometheus text exposition: requests by route and status, latency, audit appends,
/// overdue data-subject requests (`consentry_dsar_overdue`, counted at each scrape).
#[utoipa::path(get, path = "/metrics", tag = "system",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    // A database that does not answer leaves the last count; /readyz says why.
    if let Ok(n) = crate::subject_requests::requests::overdue(&state.db, state.clock.now()).await {
        metrics::gauge!("consentry_dsar_overdue").set(n as f64);
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}

/// This OpenAPI document.
#[utoipa::path(get, path = "/openapi.json", tag = "system",
    responses((status = 200, description = "OpenAPI 3.1 document", body = Object)))]
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(crate::http::openapi_doc())
}

#[derive(Serialize, ToSchema)]
pub struct WhoAmI {
    pub key_id: String,
    pub name: String,
    #[schema(example = "auditor")]
    pub role: String,
    pub recipient: Option<String>,
    pub purposes: Vec<String>,
    /// `api_key` or `access_token`.
    pub credential: String,
}

/// Who the presented credentials belong to.
#[utoipa::path(get, path = "/v1/whoami", tag = "auth", security(("bearer" = [])), responses(
    (status = 200, description = "The caller", body = WhoAmI),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 429, description = "Too many failed attempts", body = ErrorBody)))]
pub async fn whoami(auth: Authorized<AnyRole>) -> HttpResponse {
    let c = auth.caller;
    HttpResponse::Ok().json(WhoAmI {
        key_id: c.key_id,
        name: c.name,
        role: c.role.as_str().into(),
        recipient: c.recipient,
        purposes: c.purposes,
        credential: match c.via {
            Credential::ApiKey => "api_key".into(),
            Credential::AccessToken => "access_token".into(),
        },
    })
}
