//! The policy set: the record of processing activities generated from it, and reloading it.
use actix_web::{HttpResponse, web};
use serde::Deserialize;

use crate::http::error::{ApiError, ErrorBody, ErrorCode};
use crate::http::extract::{AdminOnly, Authorized, DpoOrAuditor, Query};
use crate::policy::reload::{Reload, ReloadError};
use crate::policy::ropa::Ropa;
use crate::startup::AppState;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RopaQuery {
    /// `json` (default) or `markdown`.
    #[param(pattern = "^(json|markdown)$")]
    pub format: Option<String>,
}

/// The record of processing activities (GDPR Art. 30), from the policies in force.
#[utoipa::path(get, path = "/v1/ropa", tag = "policies", security(("bearer" = [])),
    params(RopaQuery), responses(
    (status = 200, description = "The record (JSON, or Markdown with format=markdown)",
        content((Ropa = "application/json"), (String = "text/markdown"))),
    (status = 400, description = "Unknown format", body = ErrorBody),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not a dpo or auditor key", body = ErrorBody),
    (status = 503, description = "Database unavailable", body = ErrorBody)))]
pub async fn ropa(
    state: web::Data<AppState>,
    _auth: Authorized<DpoOrAuditor>,
    q: Query<RopaQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = q.parse()?;
    let policies = state.policies.get();
    let registered = crate::policy::recipients::all(&state.db).await?;
    let ropa = Ropa::generate(
        &policies,
        &registered,
        &state.settings.controller_name,
        state.clock.now().to_rfc3339(),
    );
    match q.format.as_deref() {
        None | Some("json") => Ok(HttpResponse::Ok().json(ropa)),
        Some("markdown") => Ok(HttpResponse::Ok()
            .content_type("text/markdown; charset=utf-8")
            .body(ropa.to_markdown())),
        Some(_) => Err(ApiError::new(
            ErrorCode::InvalidQuery,
            "format: use json or markdown",
        )),
    }
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Reloaded {
    /// What the set now in force holds.
    pub summary: String,
    /// The published generation of the set: every node puts the latest in force within
    /// `policy_sync_interval_secs`.
    pub generation: i64,
    /// SHA-256 (hex) of the set's three files.
    pub digest: String,
}

/// Load the policy files again. A set with any problem is refused whole (422, each
/// problem as `file:line: message`) and the running one stays in force. A set put in
/// force is published: every node puts it in force within `policy_sync_interval_secs`.
#[utoipa::path(post, path = "/v1/policies/reload", tag = "policies", security(("bearer" = [])),
    responses(
    (status = 200, description = "The new set is in force", body = Reloaded),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not an admin key", body = ErrorBody),
    (status = 422, description = "The new set has problems; the old one stays", body = ErrorBody),
    (status = 503, description = "Audit log or database unavailable", body = ErrorBody)))]
pub async fn reload(
    state: web::Data<AppState>,
    auth: Authorized<AdminOnly>,
) -> Result<HttpResponse, ApiError> {
    let run = Reload {
        db: &state.db,
        master: &state.master,
        audit: &state.audit,
        shared: &state.policies,
        actor: auth.actor(),
        request_id: auth.request_id.clone(),
        now: state.clock.now(),
    };
    match run.run().await {
        Ok(r) => Ok(HttpResponse::Ok().json(Reloaded {
            summary: r.summary,
            generation: r.generation,
            digest: r.digest,
        })),
        Err(ReloadError::Invalid(errors)) => Err(ApiError::new(
            ErrorCode::ValidationFailed,
            format!("the policies were not reloaded: {}", {
                let lines: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
                lines.join("; ")
            }),
        )),
        Err(ReloadError::Store(e)) => Err(e.into()),
        Err(ReloadError::Audit(e)) => Err(e.into()),
        Err(ReloadError::Reclassify(e)) => Err(e.into()),
    }
}
