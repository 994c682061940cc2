use actix_web::{HttpResponse, web};

use crate::http::error::{ApiError, ErrorBody, ErrorCode};
use crate::http::extract::{Authorized, DpoOnly, JsonBody, Query};
use crate::profiles::lookup::{self, SubjectQuery, SubjectQueryDoc, SubjectSummary};
use crate::startup::AppState;
use crate::subject_requests::flags::{Flag, FlagView, NewFlag};

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

fn flags<'a>(
    state: &'a AppState,
    auth: &Authorized<DpoOnly>,
    flag: Flag,
) -> crate::subject_requests::flags::Flags<'a> {
    crate::subject_requests::flags::Flags {
        db: &state.db,
        audit: &state.audit,
        actor: auth.actor(),
        request_id: auth.request_id.clone(),
        now: state.clock.now(),
        flag,
    }
}

/// Restrict processing of a subject (GDPR Art. 18): from now on nothing about them is
/// disclosed for any purpose until the restriction is lifted. Audited.
#[utoipa::path(put, path = "/v1/subjects/{subject_id}/restriction", tag = "subjects",
    security(("bearer" = [])),
    params(("subject_id" = String, Path, description = "The internal id (from GET /v1/subjects)")),
    request_body = NewFlag,
    responses(
    (status = 200, description = "Restricted (an earlier restriction is kept as it was)", body = FlagView),
    (status = 400, description = "Malformed body", body = ErrorBody),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not a dpo key", body = ErrorBody),
    (status = 404, description = "No such subject", body = ErrorBody),
    (status = 413, description = "Body too large", body = ErrorBody),
    (status = 415, description = "Not JSON", body = ErrorBody),
    (status = 422, description = "Invalid reason", body = ErrorBody),
    (status = 503, description = "Audit log or database unavailable; nothing changed", body = ErrorBody)))]
pub async fn restrict(
    state: web::Data<AppState>,
    auth: Authorized<DpoOnly>,
    path: web::Path<String>,
    body: JsonBody<NewFlag>,
) -> Result<HttpResponse, ApiError> {
    let req = body.parse().await?;
    let v = flags(&state, &auth, Flag::Restriction)
        .set(&path.into_inner(), &req)
        .await?;
    Ok(HttpResponse::Ok().json(v))
}

/// Whether a subject is restricted, since when and why.
#[utoipa::path(get, path = "/v1/subjects/{subject_id}/restriction", tag = "subjects",
    security(("bearer" = [])),
    params(("subject_id" = String, Path, description = "The internal id")),
    responses(
    (status = 200, description = "The restriction", body = FlagView),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not a dpo key", body = ErrorBody),
    (status = 404, description = "Not restricted", body = ErrorBody)))]
pub async fn restriction(
    state: web::Data<AppState>,
    auth: Authorized<DpoOnly>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let v = flags(&state, &auth, Flag::Restriction)
        .get(&path.into_inner())
        .await?;
    Ok(HttpResponse::Ok().json(v))
}

/// Lift a restriction. Audited.
#[utoipa::path(delete, path = "/v1/subjects/{subject_id}/restriction", tag = "subjects",
    security(("bearer" = [])),
    params(("subject_id" = String, Path, description = "The internal id")),
    responses(
    (status = 204, description = "Lifted"),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not a dpo key", body = ErrorBody),
    (status = 404, description = "Not restricted", body = ErrorBody),
    (status = 503, description = "Audit log or database unavailable; nothing changed", body = ErrorBody)))]
pub async fn lift(
    state: web::Data<AppState>,
    auth: Authorized<DpoOnly>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    flags(&state, &auth, Flag::Restriction)
        .clear(&path.into_inner())
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Place a legal hold (Art. 17(3)(e)): erasure requests for the subject are refused,
/// with this reason, until it is lifted. Audited.
#[utoipa::path(put, path = "/v1/subjects/{subject_id}/legal-hold", tag = "subjects",
    security(("bearer" = [])),
    params(("subject_id" = String, Path, description = "The internal id (from GET /v1/subjects)")),
    request_body = NewFlag,
    responses(
    (status = 200, description = "Held (an earlier hold is kept as it was)", body = FlagView),
    (status = 400, description = "Malformed body", body = ErrorBody),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not a dpo key", body = ErrorBody),
    (status = 404, description = "No such subject", body = ErrorBody),
    (status = 413, description = "Body too large", body = ErrorBody),
    (status = 415, description = "Not JSON", body = ErrorBody),
    (status = 422, description = "Invalid reason", body = ErrorBody),
    (status = 503, description = "Audit log or database unavailable; nothing changed", body = ErrorBody)))]
pub async fn hold(
    state: web::Data<AppState>,
    auth: Authorized<DpoOnly>,
    path: web::Path<String>,
    body: JsonBody<NewFlag>,
) -> Result<HttpResponse, ApiError> {
    let req = body.parse().await?;
    let v = flags(&state, &auth, Flag::LegalHold)
        .set(&path.into_inner(), &req)
        .await?;
    Ok(HttpResponse::Ok().json(v))
}

/// Whether a subject is under legal hold, since when and why.
#[utoipa::path(get, path = "/v1/subjects/{subject_id}/legal-hold", tag = "subjects",
    security(("bearer" = [])),
    params(("subject_id" = String, Path, description = "The internal id")),
    responses(
    (status = 200, description = "The hold", body = FlagView),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not a dpo key", body = ErrorBody),
    (status = 404, description = "Not held", body = ErrorBody)))]
pub async fn held(
    state: web::Data<AppState>,
    auth: Authorized<DpoOnly>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let v = flags(&state, &auth, Flag::LegalHold)
        .get(&path.into_inner())
        .await?;
    Ok(HttpResponse::Ok().json(v))
}

/// Lift a legal hold. Audited.
#[utoipa::path(delete, path = "/v1/subjects/{subject_id}/legal-hold", tag = "subjects",
    security(("bearer" = [])),
    params(("subject_id" = String, Path, description = "The internal id")),
    responses(
    (status = 204, description = "Lifted"),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not a dpo key", body = ErrorBody),
    (status = 404, description = "Not held", body = ErrorBody),
    (status = 503, description = "Audit log or database unavailable; nothing changed", body = ErrorBody)))]
pub async fn release(
    state: web::Data<AppState>,
    auth: Authorized<DpoOnly>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    flags(&state, &auth, Flag::LegalHold)
        .clear(&path.into_inner())
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
