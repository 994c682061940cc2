//! Campaigns (esp for its own recipient, admin for any) and the one-click unsubscribe
//! links of their messages (no authentication: the link is the credential).
use actix_web::{HttpResponse, web};

use crate::http::error::{ApiError, ErrorBody, ErrorCode};
use crate::http::extract::{Authorized, EspOrAdmin, JsonBody};
use crate::policy::campaigns::{
    CampaignError, CampaignView, Campaigns, Message, NewCampaign, Unsubscriber,
};
use crate::startup::AppState;

impl From<CampaignError> for ApiError {
    fn from(e: CampaignError) -> Self {
        use CampaignError as E;
        match e {
            E::Invalid(m) => ApiError::new(ErrorCode::ValidationFailed, m),
            E::NotFound => ApiError::new(ErrorCode::NotFound, e.to_string()),
            E::BadLink | E::LinkExpired => {
                ApiError::new(ErrorCode::InvalidUnsubscribeLink, e.to_string())
            }
            E::Templates(t) => t.into(),
            E::Segments(s) => s.into(),
            E::Consent(c) => c.into(),
            E::Store(s) => s.into(),
            E::Audit(a) => a.into(),
            E::Keyring(k) => ApiError::opaque(ErrorCode::Internal, &k),
            E::Experiment(x) => x.into(),
        }
    }
}

fn service<'a>(
    state: &'a AppState,
    keyring: &'a crate::crypto::Keyring,
    caller: &'a crate::auth::Caller,
    actor: crate::domain::Actor,
    request_id: Option<String>,
) -> Campaigns<'a> {
    Campaigns {
        db: &state.db,
        master: &state.master,
        keyring,
        audit: &state.audit,
        policies: state.policies.get(),
        settings: &state.settings,
        caller,
        actor,
        request_id,
        now: state.clock.now(),
    }
}

/// Create a campaign: a template and a segment of the same purpose and recipient (a
/// purpose on consent or legitimate interest that reads email addresses).
#[utoipa::path(post, path = "/v1/campaigns", tag = "campaigns", security(("bearer" = [])),
    request_body = NewCampaign, responses(
    (status = 201, description = "Created", body = CampaignView, links(
        ("get" = (operation_ref = "#/paths/~1v1~1campaigns~1{id}/get", parameters(("id" = "$response.body#/id")))),
        ("messages" = (operation_ref = "#/paths/~1v1~1campaigns~1{id}~1messages/get", parameters(("id" = "$response.body#/id")))))),
    (status = 400, description = "Malformed body", body = ErrorBody),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not an esp or admin key, or a purpose the key may not use", body = ErrorBody),
    (status = 404, description = "No such template or segment (or another recipient's)", body = ErrorBody),
    (status = 415, description = "Not JSON", body = ErrorBody),
    (status = 422, description = "Template and segment disagree, or the purpose cannot carry a campaign", body = ErrorBody),
    (status = 503, description = "Audit log or database unavailable; nothing saved", body = ErrorBody)))]
pub async fn create(
    state: web::Data<AppState>,
    auth: Authorized<EspOrAdmin>,
    body: JsonBody<NewCampaign>,
) -> Result<HttpResponse, ApiError> {
    let new = body.parse().await?;
    let keyring = state.keyring.get();
    let v = service(
        &state,
        &keyring,
        &auth.caller,
        auth.actor(),
        auth.request_id.clone(),
    )
    .create(&new)
    .await?;
    Ok(HttpResponse::Created().json(v))
}

/// One campaign.
#[utoipa::path(get, path = "/v1/campaigns/{id}", tag = "campaigns", security(("bearer" = [])),
    params(("id" = String, Path, description = "The campaign id")),
    responses(
    (status = 200, description = "The campaign", body = CampaignView),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not an esp or admin key", body = ErrorBody),
    (status = 404, description = "No such campaign (or another recipient's)", body = ErrorBody),
    (status = 503, description = "Database unavailable", body = ErrorBody)))]
pub async fn get(
    state: web::Data<AppState>,
    auth: Authorized<EspOrAdmin>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let keyring = state.keyring.get();
    let v = service(
        &state,
        &keyring,
        &auth.caller,
        auth.actor(),
        auth.request_id.clone(),
    )
    .get(&path)
    .await?;
    Ok(HttpResponse::Ok().json(v))
}

/// The campaign's messages, streamed as NDJSON: one `Message` per consented member with an
/// email address, rendered from their minimised view, with `List-Unsubscribe` (HTTPS and
/// mailto) and `List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058). Each page
/// is recorded (a disclosure per person, an audit entry per page) before it is sent.
#[utoipa::path(get, path = "/v1/campaigns/{id}/messages", tag = "campaigns", security(("bearer" = [])),
    params(("id" = String, Path, description = "The campaign id")),
    responses(
    (status = 200, description = "One Message per line", body = Message, content_type = "application/x-ndjson"),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not an esp or admin key", body = ErrorBody),
    (status = 404, description = "No such campaign (or another recipient's)", body = ErrorBody),
    (status = 422, description = "The policies in force no longer allow its template or segment", body = ErrorBody),
    (status = 429, description = "too_many_requests: this key is over its rate (`rate_limit_exports_per_minute`), or too many failed authentications from this address; too_many_streams: this key has `max_concurrent_streams_per_key` exports and campaign message streams open", body = ErrorBody,
        headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    (status = 503, description = "gateway_busy: the node is serving `max_concurrent_streams` streams; or the audit log or database is unavailable, nothing disclosed", body = ErrorBody,
        headers(("Retry-After" = u64, description = "Seconds to wait before retrying (gateway_busy)")))))]
pub async fn messages(
    state: web::Data<AppState>,
    auth: Authorized<EspOrAdmin>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state
        .limits
        .check(crate::limits::Expensive::Export, &auth.caller.key_id)?;
    let keyring = state.keyring.get();
    let recipient = service(&state, &keyring, &auth.caller, auth.actor(), None)
        .recipient(&path)
        .await?;
    let keyring = state.keyring_for(&recipient).await?;
    service(&state, &keyring, &auth.caller, auth.actor(), None)
        .check(&path)
        .await?;
    let permit = state.limits.start_stream(&auth.caller.key_id)?;
    let id = path.into_inner();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let state = state.into_inner();
    let caller = auth.caller.clone();
    let actor = auth.actor();
    let request_id = auth.request_id.clone();
    actix_web::rt::spawn(async move {
        let svc = service(&state, &keyring, &caller, actor, request_id);
        svc.run_messages(&id, tx).await;
    });
    Ok(HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .streaming(super::segments::streamed(rx, permit)))
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>{title}</title></head><body style=\"font-family:sans-serif;max-width:32em;margin:3em auto\"><h1>{title}</h1>{body}</body></html>"
    )
}

/// The page an unsubscribe link opens: a button that unsubscribes. Following the link
/// changes nothing, so mail scanners that open links unsubscribe nobody.
#[utoipa::path(get, path = "/u/{token}", tag = "campaigns",
    params(("token" = String, Path, description = "From the message's List-Unsubscribe link")),
    responses(
    (status = 200, description = "The confirmation page", body = String, content_type = "text/html"),
    (status = 400, description = "invalid_unsubscribe_link: changed, forged or expired", body = ErrorBody)))]
pub async fn confirm_page(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let keyring = state.keyring.get();
    unsubscriber(&state, &keyring).check_link(&path)?;
    let html = page(
        "Unsubscribe",
        "<p>Stop receiving these emails?</p><form method=\"post\"><input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\"><button type=\"submit\">Unsubscribe</button></form>",
    );
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(html))
}

/// One-click unsubscribe (RFC 8058; also the confirmation page's button): records a
/// withdrawal of the campaign's consent (method `unsubscribe_link`) in the consent ledger,
/// or an objection to its legitimate-interest purpose. Repeating it records nothing new.
#[utoipa::path(post, path = "/u/{token}", tag = "campaigns",
    params(("token" = String, Path, description = "From the message's List-Unsubscribe link")),
    responses(
    (status = 200, description = "Unsubscribed", body = String, content_type = "text/html"),
    (status = 400, description = "invalid_unsubscribe_link: changed, forged or expired; nothing recorded", body = ErrorBody),
    (status = 503, description = "Audit log or database unavailable; nothing recorded", body = ErrorBody)))]
pub async fn unsubscribe(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let keyring = state.keyring.get();
    unsubscriber(&state, &keyring).unsubscribe(&path).await?;
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(page(
            "Unsubscribed",
            "<p>You will not receive these emails any more.</p>",
        )))
}

fn unsubscriber<'a>(state: &'a AppState, keyring: &'a crate::crypto::Keyring) -> Unsubscriber<'a> {
    Unsubscriber {
        db: &state.db,
        master: &state.master,
        keyring,
        audit: &state.audit,
        policies: state.policies.get(),
        now: state.clock.now(),
    }
}
