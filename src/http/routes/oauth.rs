//! `POST /oauth/token`: RFC 6749 §4.4 client credentials. Errors here use the RFC 6749
//! §5.2 shape (`{"error": "invalid_client", "error_description": ...}`), which OAuth
//! client libraries parse, rather than the `/v1` error shape.
use actix_web::http::header;
use actix_web::web::Data;
use actix_web::{HttpMessage, HttpRequest, HttpResponse};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::audit::{NewEntry, Outcome};
use crate::auth::AuthError;
use crate::domain::Actor;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::{RawBody, request_id};
use crate::startup::AppState;

/// A token request is a few short form fields.
const MAX_FORM_BYTES: usize = 16 * 1024;

#[derive(Deserialize, ToSchema)]
pub struct TokenRequest {
    /// Must be `client_credentials`.
    #[schema(example = "client_credentials", pattern = "^client_credentials$")]
    pub grant_type: String,
    /// The API key id (or send it as the HTTP Basic user name).
    pub client_id: Option<String>,
    /// The API key token (or send it as the HTTP Basic password).
    pub client_secret: Option<String>,
    /// Ignored: the token carries the key's own role and purposes.
    pub scope: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    #[schema(example = "Bearer")]
    pub token_type: String,
    /// Seconds until the token expires.
    pub expires_in: u64,
}

#[derive(Serialize, ToSchema)]
pub struct OAuthError {
    /// `invalid_request`, `invalid_client` or `unsupported_grant_type`.
    pub error: String,
    pub error_description: String,
}

fn oauth_error(status: u16, error: &str, description: &str, basic: bool) -> HttpResponse {
    let mut resp = HttpResponse::build(
        actix_web::http::StatusCode::from_u16(status)
            .unwrap_or(actix_web::http::StatusCode::BAD_REQUEST),
    );
    resp.insert_header((header::CACHE_CONTROL, "no-store"));
    if status == 401 {
        let scheme = if basic { "Basic" } else { "Bearer" };
        resp.insert_header((
            header::WWW_AUTHENTICATE,
            format!("{scheme} realm=\"consentry\""),
        ));
    }
    resp.json(OAuthError {
        error: error.into(),
        error_description: description.into(),
    })
}

fn basic_credentials(req: &HttpRequest) -> Option<(String, String)> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(b64.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

/// Exchange an API key for a short-lived bearer token (OAuth 2.0 client credentials).
#[utoipa::path(post, path = "/oauth/token", tag = "auth", security((), ("basic" = [])),
    request_body(content = TokenRequest, content_type = "application/x-www-form-urlencoded"),
    responses(
    (status = 200, description = "Issued", body = TokenResponse),
    (status = 400, description = "Malformed request or unsupported grant", body = OAuthError),
    (status = 401, description = "Unknown client or wrong secret", body = OAuthError),
    (status = 413, description = "Body too large", body = ErrorBody),
    (status = 415, description = "Not form-encoded", body = OAuthError),
    (status = 408, description = "request_timeout: the body did not arrive within `body_read_timeout_secs`", body = ErrorBody),
    (status = 429, description = "too_many_requests: too many failed attempts from this address, or this key has been issued `rate_limit_tokens_per_minute` tokens this minute", body = ErrorBody,
        headers(("Retry-After" = u64, description = "Seconds until a request would be allowed"))),
    (status = 503, description = "Database unavailable", body = ErrorBody)))]
pub async fn token(
    state: Data<AppState>,
    req: HttpRequest,
    body: RawBody,
) -> Result<HttpResponse, ApiError> {
    if req
        .mime_type()
        .ok()
        .flatten()
        .map(|m| m.essence_str().to_owned())
        != Some("application/x-www-form-urlencoded".into())
    {
        return Ok(oauth_error(
            415,
            "invalid_request",
            "send the body as application/x-www-form-urlencoded",
            false,
        ));
    }
    let body = body.read(MAX_FORM_BYTES).await?;
    let form: TokenRequest = match serde_urlencoded::from_bytes(&body) {
        Ok(f) => f,
        Err(_) => {
            return Ok(oauth_error(
                400,
                "invalid_request",
                "the form needs grant_type=client_credentials",
                false,
            ));
        }
    };
    if form.grant_type != "client_credentials" {
        return Ok(oauth_error(
            400,
            "unsupported_grant_type",
            "only grant_type=client_credentials is supported",
            false,
        ));
    }
    let basic = basic_credentials(&req);
    let used_basic = basic.is_some();
    let (client_id, client_secret) = match (basic, form.client_id, form.client_secret) {
        (Some(creds), _, _) => creds,
        (None, Some(id), Some(secret)) => (id, secret),
        _ => {
            return Ok(oauth_error(
                401,
                "invalid_client",
                "send the key id and token as HTTP Basic credentials or client_id/client_secret",
                used_basic,
            ));
        }
    };
    let ip = req.peer_addr().map(|a| a.ip());
    let rid = request_id(&req);
    match state
        .auth
        .issue_access_token(&client_id, &client_secret, ip)
        .await
    {
        Ok(issued) => {
            // Counted once the key is proven: a stranger naming a client id cannot use up
            // its budget (failed attempts have their own limit, per address).
            if let Err(limited) = state
                .limits
                .check(crate::limits::Expensive::Token, &issued.caller.key_id)
            {
                let mut resp = actix_web::ResponseError::error_response(&ApiError::from(limited));
                resp.headers_mut().insert(
                    header::CACHE_CONTROL,
                    header::HeaderValue::from_static("no-store"),
                );
                return Ok(resp);
            }
            let entry = NewEntry::new(issued.caller.actor(), "auth.token_issued", Outcome::Ok)
                .request_id(rid);
            state.audit.record(&state.db, entry).await?;
            Ok(HttpResponse::Ok()
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .json(TokenResponse {
                    access_token: issued.token,
                    token_type: "Bearer".into(),
                    expires_in: issued.expires_in,
                }))
        }
        Err(AuthError::Invalid | AuthError::Missing) => {
            let entry = NewEntry::new(Actor::anonymous(), "auth.denied", Outcome::Denied)
                .request_id(rid)
                .attributes(vec![
                    "route:POST /oauth/token".into(),
                    "reason:invalid".into(),
                ]);
            state.audit.record(&state.db, entry).await?;
            Ok(oauth_error(
                401,
                "invalid_client",
                "unknown client, wrong secret or revoked key",
                used_basic,
            ))
        }
        Err(e) => Err(e.into()),
    }
}
