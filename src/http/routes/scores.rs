//! Scores: posted by an external ML system (ingest), computed on demand (admin).
use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::http::error::{ApiError, ErrorBody, ErrorCode};
use crate::http::extract::{AdminOnly, Authorized, IngestOnly, JsonBody};
use crate::scores::external::{PostedScores, Poster};
use crate::scores::{ComputeReport, ScoreError};
use crate::startup::AppState;

impl From<ScoreError> for ApiError {
    fn from(e: ScoreError) -> Self {
        match e {
            ScoreError::Invalid(m) => ApiError::new(ErrorCode::ValidationFailed, m),
            ScoreError::NotEnoughData(m) => ApiError::new(ErrorCode::InvalidState, m),
            ScoreError::UnknownSubject => ApiError::new(ErrorCode::NotFound, e.to_string()),
            ScoreError::Training(_) => ApiError::opaque(ErrorCode::Internal, &e),
            ScoreError::Store(s) => s.into(),
            ScoreError::Audit(a) => a.into(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct Posted {
    /// Scores stored (replacing earlier values of the same names).
    pub stored: usize,
}

/// Post scores an external model computed for one subject (`churn.risk`, ...). They are
/// `user.derived.score`: only a purpose marked profiling, on consent, can read them.
/// Audited, with the score names (never the values).
#[utoipa::path(post, path = "/v1/scores", tag = "scores", security(("bearer" = [])),
    request_body = PostedScores, responses(
    (status = 200, description = "Stored", body = Posted),
    (status = 400, description = "Malformed body or identifier", body = ErrorBody),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not an ingest key", body = ErrorBody),
    (status = 404, description = "No active subject has that identifier", body = ErrorBody),
    (status = 413, description = "Body too large", body = ErrorBody),
    (status = 415, description = "Not JSON", body = ErrorBody),
    (status = 422, description = "A bad score name, value or model version (the field is named), or a name the gateway computes itself", body = ErrorBody),
    (status = 503, description = "Audit log or database unavailable; nothing stored", body = ErrorBody)))]
pub async fn post(
    state: web::Data<AppState>,
    auth: Authorized<IngestOnly>,
    body: JsonBody<PostedScores>,
) -> Result<HttpResponse, ApiError> {
    let body = body.parse().await?;
    let keyring = state.keyring.get();
    let policies = state.policies.get();
    let stored = Poster {
        db: &state.db,
        keyring: &keyring,
        audit: &state.audit,
        policies: &policies,
        actor: auth.actor(),
        request_id: auth.request_id.clone(),
        now: state.clock.now(),
    }
    .post(&body)
    .await?;
    Ok(HttpResponse::Ok().json(Posted { stored }))
}

/// Compute the scores now (as the schedule does): RFM, then a purchase-propensity model
/// trained afresh, or, with too little history, everyone scored with the last model.
#[utoipa::path(post, path = "/v1/scores/compute", tag = "scores", security(("bearer" = [])),
    responses(
    (status = 200, description = "What was computed", body = ComputeReport),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not an admin key", body = ErrorBody),
    (status = 503, description = "Audit log or database unavailable", body = ErrorBody)))]
pub async fn compute(
    state: web::Data<AppState>,
    auth: Authorized<AdminOnly>,
) -> Result<HttpResponse, ApiError> {
    let policies = state.policies.get();
    let report = crate::scores::compute_all(
        &state.db,
        &state.audit,
        &policies,
        auth.actor(),
        state.clock.now(),
    )
    .await?;
    Ok(HttpResponse::Ok().json(report))
}
