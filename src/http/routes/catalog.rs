//! The product catalogue (ingest or admin) and the recommendation models (admin).
use actix_web::{HttpResponse, web};

use crate::http::error::{ApiError, ErrorBody, ErrorCode};
use crate::http::extract::{AdminOnly, Authorized, IngestOrAdmin, RawBody};
use crate::policy::catalog::{CatalogError, CatalogLoad, CatalogReport};
use crate::policy::recommendations::{ModelReport, RecommendError};
use crate::startup::AppState;

impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::Rejected { .. } => {
                ApiError::new(ErrorCode::InvalidCatalog, e.to_string())
            }
            CatalogError::Invalid(m) => ApiError::new(ErrorCode::InvalidCatalog, m),
            CatalogError::Store(s) => s.into(),
            CatalogError::Audit(a) => a.into(),
        }
    }
}

impl From<RecommendError> for ApiError {
    fn from(e: RecommendError) -> Self {
        match e {
            RecommendError::Invalid(m) => ApiError::new(ErrorCode::InvalidQuery, m),
            RecommendError::NotBehavioural(_) => {
                ApiError::new(ErrorCode::PurposeMismatch, e.to_string())
            }
            RecommendError::Gate(g) => g.into(),
            RecommendError::Store(s) => s.into(),
            RecommendError::Audit(a) => a.into(),
        }
    }
}

/// Load products as NDJSON, one per line: `id` (or `product_id`, `sku`), `name`, `url`,
/// and optionally `image_url`, `price`, `currency`, `category`, `available` (false: never
/// recommended); `{"id": ..., "deleted": true}` removes one. Upserted by id, all or
/// nothing: one bad line and every bad line is reported with its field, nothing loaded.
#[utoipa::path(post, path = "/v1/catalog", tag = "recommendations", security(("bearer" = [])),
    request_body(content = String, content_type = "application/x-ndjson",
        description = "One product per line"),
    responses(
    (status = 200, description = "Loaded", body = CatalogReport),
    (status = 400, description = "A line that is not UTF-8, or an unreadable body", body = ErrorBody),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not an ingest or admin key", body = ErrorBody),
    (status = 413, description = "Body over import_max_bytes", body = ErrorBody),
    (status = 422, description = "invalid_catalog: the bad lines (line, field, reason); nothing loaded", body = ErrorBody),
    (status = 503, description = "Audit log or database unavailable; nothing loaded", body = ErrorBody)))]
pub async fn load(
    state: web::Data<AppState>,
    auth: Authorized<IngestOrAdmin>,
    body: RawBody,
) -> Result<HttpResponse, ApiError> {
    let mut load = CatalogLoad::new(state.clock.now());
    body.lines(state.settings.import_max_bytes, |n, line| {
        load.json_line(n, line);
    })
    .await?;
    let report = load
        .finish(
            &state.db,
            &state.audit,
            auth.actor(),
            auth.request_id.clone(),
        )
        .await?;
    Ok(HttpResponse::Ok().json(report))
}

/// Train every behavioural purpose's recommendation model now (as the schedule does):
/// from the subjects each purpose may process, the products bought by the same people
/// (pairs bought by at least two) and the bestsellers.
#[utoipa::path(post, path = "/v1/recommendations/train", tag = "recommendations",
    security(("bearer" = [])),
    responses(
    (status = 200, description = "The models trained", body = Vec<ModelReport>),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not an admin key", body = ErrorBody),
    (status = 503, description = "Audit log or database unavailable", body = ErrorBody)))]
pub async fn train(
    state: web::Data<AppState>,
    auth: Authorized<AdminOnly>,
) -> Result<HttpResponse, ApiError> {
    let policies = state.policies.get();
    let report = crate::policy::recommendations::train_all(
        &state.db,
        &state.audit,
        &policies,
        auth.actor(),
        state.clock.now(),
    )
    .await?;
    Ok(HttpResponse::Ok().json(report))
}
