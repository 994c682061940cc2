//! Experiments (esp for its own recipient, admin for any): A/B and multivariate tests that
//! campaigns run, and their results from the ingested events.
use actix_web::{HttpResponse, web};

use crate::http::error::{ApiError, ErrorBody, ErrorCode};
use crate::http::extract::{Authorized, EspOrAdmin, JsonBody};
use crate::policy::experiments::{ExperimentError, ExperimentView, Experiments, NewExperiment};
use crate::rendering::results::ExperimentResults;
use crate::startup::AppState;

impl From<ExperimentError> for ApiError {
    fn from(e: ExperimentError) -> Self {
        use ExperimentError as E;
        match e {
            E::Invalid(m) => ApiError::new(ErrorCode::InvalidExperiment, m),
            E::NotFound => ApiError::new(ErrorCode::NotFound, e.to_string()),
            E::Templates(t) => t.into(),
            E::Authorize(a) => a.into(),
            E::Store(s) => s.into(),
            E::Audit(a) => a.into(),
            E::Keyring(k) => ApiError::opaque(ErrorCode::Internal, &k),
        }
    }
}

fn service<'a>(
    state: &'a AppState,
    keyring: &'a crate::crypto::Keyring,
    auth: &'a Authorized<EspOrAdmin>,
) -> Experiments<'a> {
    Experiments {
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

/// Create an experiment: 2–10 variants (each a template, a subject line or a
/// recommendation strategy, with a whole-percent weight; the weights sum to 100), an
/// optional holdout (0–50% of the audience receives nothing) and the control. A campaign
/// runs it (`POST /v1/campaigns` with `experiment`): each member is assigned a variant by
/// a keyed hash of the experiment and the person, the same at every render.
#[utoipa::path(post, path = "/v1/experiments", tag = "experiments", security(("bearer" = [])),
    request_body = NewExperiment, responses(
    (status = 201, description = "Created", body = ExperimentView, links(
        ("get" = (operation_ref = "#/paths/~1v1~1experiments~1{id}/get", parameters(("id" = "$response.body#/id")))),
        ("results" = (operation_ref = "#/paths/~1v1~1experiments~1{id}~1results/get", parameters(("id" = "$response.body#/id")))))),
    (status = 400, description = "Malformed body, or an unknown purpose", body = ErrorBody),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not an esp or admin key, or a purpose or recipient the key may not use", body = ErrorBody),
    (status = 404, description = "No such recipient", body = ErrorBody),
    (status = 415, description = "Not JSON", body = ErrorBody),
    (status = 422, description = "invalid_experiment (weights that do not sum to 100, a bad name, template, strategy, holdout or control: the field is named), invalid_template or purpose_mismatch (a variant's subject line)", body = ErrorBody),
    (status = 503, description = "Audit log or database unavailable; nothing saved", body = ErrorBody)))]
pub async fn create(
    state: web::Data<AppState>,
    auth: Authorized<EspOrAdmin>,
    body: JsonBody<NewExperiment>,
) -> Result<HttpResponse, ApiError> {
    let new = body.parse().await?;
    let keyring = state.keyring.get();
    let v = service(&state, &keyring, &auth).create(&new).await?;
    Ok(HttpResponse::Created().json(v))
}

/// One experiment.
#[utoipa::path(get, path = "/v1/experiments/{id}", tag = "experiments", security(("bearer" = [])),
    params(("id" = String, Path, description = "The experiment id")),
    responses(
    (status = 200, description = "The experiment", body = ExperimentView),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not an esp or admin key", body = ErrorBody),
    (status = 404, description = "No such experiment (or another recipient's)", body = ErrorBody),
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

/// The results so far: per variant the exposures, opens, clicks and conversions (from
/// ingested `Email Opened`, `Email Link Clicked` and `Order Completed` events after each
/// person's exposure that name one of the experiment's campaigns, by `campaign_id` or
/// UTM parameters, and the person's variant if they name one), the open rate,
/// click-through and conversion rate with 95% Wilson intervals, and the pooled
/// two-proportion z-test of each variant against the control with a verdict in words
/// (which says when there are still too few messages to tell). The holdout's conversions
/// are any order after exposure. Counts only: no person is named.
#[utoipa::path(get, path = "/v1/experiments/{id}/results", tag = "experiments", security(("bearer" = [])),
    params(("id" = String, Path, description = "The experiment id")),
    responses(
    (status = 200, description = "The results", body = ExperimentResults),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not an esp or admin key", body = ErrorBody),
    (status = 404, description = "No such experiment (or another recipient's)", body = ErrorBody),
    (status = 503, description = "Database unavailable", body = ErrorBody)))]
pub async fn results(
    state: web::Data<AppState>,
    auth: Authorized<EspOrAdmin>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let keyring = state.keyring.get();
    let v = service(&state, &keyring, &auth).results(&path).await?;
    Ok(HttpResponse::Ok().json(v))
}
