use actix_web::{HttpResponse, web};

use crate::http::error::{ApiError, ErrorBody, ErrorCode};
use crate::http::extract::{Authorized, DpoOnly, Query};
use crate::profiles::lookup::{self, SubjectQuery, SubjectQueryDoc, SubjectSummary};
use crate::startup::AppState;

/// Find a subject by one identifier: what the gateway holds about them, never the values.
#[utoipa::path(get, path = "/v1/subjects", tag = "subjects", security(("bearer" = [])),
    params(SubjectQueryDoc), responses(
    (status = 200, description = "The subject", body = SubjectSummary),
    (status = 400, description = "Not exactly one valid identifier", body = ErrorBody),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not a dpo key", body = ErrorBody),
    (status = 404, description = "No subject has that identifier", body = ErrorBody),
    (status = 503, description = "Audit log or database unavailable", body = ErrorBody)))]
pub async fn find(
    state: web::Data<AppState>,
    auth: Authorized<DpoOnly>,
    q: Query<SubjectQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = q.parse()?;
    let keyring = state.keyring.get();
    let policies = state.policies.get();
    let found = lookup::find_subject(
        &state.db,
        &keyring,
        &state.audit,
        &policies,
        auth.actor(),
        auth.request_id.clone(),
        &q,
    )
    .await?;
    match found {
        Some(s) => Ok(HttpResponse::Ok().json(s)),
        None => Err(ApiError::new(
            ErrorCode::NotFound,
            "no subject has that identifier",
        )),
    }
}
