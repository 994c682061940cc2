//! The routes an ESP reads through. ESP-facing: these handlers see only a `PurposeGrant`
//! and a `MinimisedProfile`, never the store or a stored profile (checked by
//! `tests/api/architecture.rs`).
use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::{Authorized, EspOnly, JsonBody, Query};
use crate::policy::gate::{Gate, MinimisedProfile, PseudonymRequest, grant_for};
use crate::startup::AppState;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ProfileQuery {
    /// The purpose the data is for, e.g. `marketing.communications.email`.
    pub purpose: String,
}

fn gate<'a>(
    state: &'a AppState,
    keyring: &'a crate::crypto::Keyring,
    auth: &Authorized<EspOnly>,
) -> Gate<'a> {
    Gate {
        db: &state.db,
        master: &state.master,
        keyring,
        audit: &state.audit,
        actor: auth.actor(),
        request_id: auth.request_id.clone(),
        now: state.clock.now(),
    }
}

/// The minimised view of one person for one purpose: only the attributes the purpose
/// reads, the email address only if it reads `user.contact.email`. The same 404 for a
/// pseudonym never issued and for a person whose data may not be disclosed (no consent,
/// objection, GPC, restriction, suppression, under age). Each answer is a recorded
/// disclosure.
#[utoipa::path(get, path = "/v1/recipients/{rid}/profiles/{pseudonym}", tag = "recipients",
    security(("bearer" = [])),
    params(("rid" = String, Path, description = "The recipient id (the key's own)"),
           ("pseudonym" = String, Path, description = "`ps<version>.<43 base64url characters>`"),
           ProfileQuery),
    responses(
    (status = 200, description = "The minimised view", body = MinimisedProfile),
    (status = 400, description = "Malformed pseudonym, unknown purpose or missing `purpose`", body = ErrorBody),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not an esp key of this recipient, or a purpose it may not request", body = ErrorBody),
    (status = 404, description = "No profile for that pseudonym and purpose", body = ErrorBody),
    (status = 410, description = "The pseudonym's key version was retired", body = ErrorBody),
    (status = 503, description = "Audit log or database unavailable; nothing disclosed", body = ErrorBody)))]
pub async fn profile(
    state: web::Data<AppState>,
    auth: Authorized<EspOnly>,
    path: web::Path<(String, String)>,
    q: Query<ProfileQuery>,
) -> Result<HttpResponse, ApiError> {
    let (rid, pseudonym) = path.into_inner();
    let q = q.parse()?;
    let grant = grant_for(
        &state.db,
        &auth.caller,
        &rid,
        &q.purpose,
        state.policies.get(),
    )
    .await?;
    let keyring = state.keyring_for(&rid).await?;
    let view = gate(&state, &keyring, &auth)
        .profile(&grant, &pseudonym)
        .await?;
    Ok(HttpResponse::Ok().json(view))
}

#[derive(Serialize, ToSchema)]
pub struct IssuedPseudonym {
    #[schema(example = "ps1.2C5Yj0Ql8Vq3c0m0d3b9mXlq1Qb4v8c6hZJx0aKk3yE")]
    pub pseudonym: String,
}

/// The recipient's pseudonym for a person it already knows by an identifier, when that
/// person's data may be disclosed for the purpose: how an ESP reconciles its own list.
/// The same 404 for an unknown person and one whose data may not be disclosed.
#[utoipa::path(post, path = "/v1/recipients/{rid}/pseudonyms", tag = "recipients",
    security(("bearer" = [])),
    params(("rid" = String, Path, description = "The recipient id (the key's own)")),
    request_body = PseudonymRequest,
    responses(
    (status = 200, description = "The current pseudonym", body = IssuedPseudonym),
    (status = 400, description = "Malformed body, unknown purpose, or not exactly one identifier", body = ErrorBody),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not an esp key of this recipient, or a purpose it may not request", body = ErrorBody),
    (status = 404, description = "No disclosable person with that identifier", body = ErrorBody),
    (status = 413, description = "Body too large", body = ErrorBody),
    (status = 415, description = "Not JSON", body = ErrorBody),
    (status = 503, description = "Audit log or database unavailable; nothing disclosed", body = ErrorBody)))]
pub async fn pseudonym(
    state: web::Data<AppState>,
    auth: Authorized<EspOnly>,
    path: web::Path<String>,
    body: JsonBody<PseudonymRequest>,
) -> Result<HttpResponse, ApiError> {
    let rid = path.into_inner();
    let req = body.parse().await?;
    let policies = state.policies.get();
    let grant = grant_for(
        &state.db,
        &auth.caller,
        &rid,
        &req.purpose,
        policies.clone(),
    )
    .await?;
    let keyring = state.keyring_for(&rid).await?;
    let p = gate(&state, &keyring, &auth)
        .pseudonym_for(&grant, &policies, &req.identifier)
        .await?;
    Ok(HttpResponse::Ok().json(IssuedPseudonym {
        pseudonym: p.to_string(),
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RecommendationsQuery {
    /// The purpose the block is for; it must read browsing or purchase history.
    pub purpose: String,
    /// At most this many products (1-50, default 6).
    #[param(minimum = 1, maximum = 50)]
    pub limit: Option<usize>,
    /// `default` (recently viewed, then bought together, then bestsellers),
    /// `recently_viewed`, `bought_together`, `bestsellers` or `none`.
    #[param(pattern = "^(default|recently_viewed|bought_together|bestsellers|none)$")]
    pub strategy: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct RecommendationBlock {
    pub pseudonym: String,
    pub purpose: String,
    pub strategy: String,
    pub products: Vec<crate::rendering::Recommendation>,
}

/// Products for one person, from their browsing and purchase events as the purpose may
/// read them: recently viewed and not bought, then products often bought by the people
/// who bought what they bought, then the bestsellers. Only available catalogue products.
/// The same 404 as the profile for a person who may not be disclosed; each answer is a
/// recorded disclosure.
#[utoipa::path(get, path = "/v1/recipients/{rid}/profiles/{pseudonym}/recommendations",
    tag = "recipients", security(("bearer" = [])),
    params(("rid" = String, Path, description = "The recipient id (the key's own)"),
           ("pseudonym" = String, Path, description = "`ps<version>.<43 base64url characters>`"),
           RecommendationsQuery),
    responses(
    (status = 200, description = "The block (possibly empty)", body = RecommendationBlock),
    (status = 400, description = "Malformed pseudonym, unknown purpose or strategy, limit out of range", body = ErrorBody),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not an esp key of this recipient, or a purpose it may not request", body = ErrorBody),
    (status = 404, description = "No profile for that pseudonym and purpose", body = ErrorBody),
    (status = 410, description = "The pseudonym's key version was retired", body = ErrorBody),
    (status = 422, description = "purpose_mismatch: the purpose reads neither browsing nor purchase history", body = ErrorBody),
    (status = 503, description = "Audit log or database unavailable; nothing disclosed", body = ErrorBody)))]
pub async fn recommendations(
    state: web::Data<AppState>,
    auth: Authorized<EspOnly>,
    path: web::Path<(String, String)>,
    q: Query<RecommendationsQuery>,
) -> Result<HttpResponse, ApiError> {
    use crate::http::error::ErrorCode;
    use crate::rendering::Strategy;
    let (rid, pseudonym) = path.into_inner();
    let q = q.parse()?;
    let strategy = match q.strategy.as_deref() {
        None => Strategy::Default,
        Some(s) => Strategy::parse(s).ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidQuery,
                format!(
                    "strategy: one of {}",
                    Strategy::ALL.map(Strategy::as_str).join(", ")
                ),
            )
        })?,
    };
    let grant = grant_for(
        &state.db,
        &auth.caller,
        &rid,
        &q.purpose,
        state.policies.get(),
    )
    .await?;
    let keyring = state.keyring_for(&rid).await?;
    let products = crate::policy::recommendations::Recommendations {
        db: &state.db,
        master: &state.master,
        keyring: &keyring,
        audit: &state.audit,
        actor: auth.actor(),
        request_id: auth.request_id.clone(),
        now: state.clock.now(),
    }
    .for_pseudonym(&grant, &pseudonym, strategy, q.limit.unwrap_or(6))
    .await?;
    Ok(HttpResponse::Ok().json(RecommendationBlock {
        pseudonym,
        purpose: q.purpose,
        strategy: strategy.as_str().to_owned(),
        products,
    }))
}
