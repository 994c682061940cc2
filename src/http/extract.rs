//! Extractors that turn bad input into the API's error shape: JSON bodies (bounded,
//! gzip-aware, unknown fields named), and the authorisation guard every `/v1` route takes.
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::time::Duration;

use actix_web::dev::{Decompress, Payload};
use actix_web::http::header;
use actix_web::web::{BytesMut, Data};
use actix_web::{FromRequest, HttpMessage, HttpRequest};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use super::error::{ApiError, ErrorCode, redact_values};
use crate::audit::{NewEntry, Outcome};
use crate::auth::{AuthError, Caller};
use crate::domain::{Actor, Role};
use crate::startup::AppState;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T>>>;

pub fn request_id(req: &HttpRequest) -> Option<String> {
    req.extensions()
        .get::<tracing_actix_web::RequestId>()
        .map(|id| id.to_string())
}

fn state(req: &HttpRequest) -> Result<Data<AppState>, ApiError> {
    req.app_data::<Data<AppState>>()
        .cloned()
        .ok_or_else(|| ApiError::new(ErrorCode::Internal, "application state missing"))
}

/// A request body, read (gunzipped if sent with `Content-Encoding: gzip`) only when the
/// handler asks, so that authorisation, an earlier extractor, is decided first.
pub struct RawBody {
    body: Decompress<Payload>,
    declared: Option<usize>,
    /// `body_read_timeout_secs`: for the whole of a bounded body, between chunks of a
    /// streamed one.
    timeout: Duration,
}

impl RawBody {
    /// The whole body, refused with 413 past `limit` bytes (after decompression) and with
    /// 408 when it has not all arrived within the read timeout (a client trickling it).
    pub async fn read(self, limit: usize) -> Result<BytesMut, ApiError> {
        if self.declared.is_some_and(|n| n > limit) {
            return Err(too_large(limit));
        }
        let timeout = self.timeout;
        let mut body = self.body;
        let read = async move {
            let mut buf = BytesMut::new();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|_| {
                    ApiError::new(ErrorCode::BadRequest, "the request body could not be read")
                })?;
                if buf.len() + chunk.len() > limit {
                    return Err(too_large(limit));
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(buf)
        };
        tokio::time::timeout(timeout, read).await.map_err(|_| {
            too_slow(format!(
                "the request body did not arrive in full within {} s; send it at once",
                timeout.as_secs()
            ))
        })?
    }
}

fn too_slow(message: String) -> ApiError {
    ApiError::new(ErrorCode::RequestTimeout, message)
}

/// The next piece of a streamed body, or 408 when the client pauses longer than `idle`.
pub async fn without_pause<F: Future>(idle: Duration, next: F) -> Result<F::Output, ApiError> {
    tokio::time::timeout(idle, next).await.map_err(|_| {
        too_slow(format!(
            "the request body paused for more than {} s; send it without pauses",
            idle.as_secs()
        ))
    })
}

impl RawBody {
    /// The body a line at a time (`f(line number, text)`), never held whole; refused with
    /// 413 past `limit` bytes, 400 when a line is not UTF-8 and 408 when the client pauses
    /// longer than the read timeout (the whole may take longer: it may be large).
    pub async fn lines(self, limit: u64, mut f: impl FnMut(u64, &str)) -> Result<(), ApiError> {
        if self.declared.is_some_and(|n| n as u64 > limit) {
            return Err(too_large(usize::try_from(limit).unwrap_or(usize::MAX)));
        }
        let mut body = self.body;
        let mut pending: Vec<u8> = Vec::new();
        let mut size: u64 = 0;
        let mut line: u64 = 0;
        let mut emit = |bytes: &[u8], line: u64| -> Result<(), ApiError> {
            let text = std::str::from_utf8(bytes).map_err(|_| {
                ApiError::new(
                    ErrorCode::BadRequest,
                    format!("line {line}: is not UTF-8 text"),
                )
            })?;
            f(line, text.strip_suffix('\r').unwrap_or(text));
            Ok(())
        };
        let idle = self.timeout;
        while let Some(chunk) = without_pause(idle, body.next()).await? {
            let chunk = chunk.map_err(|_| {
                ApiError::new(ErrorCode::BadRequest, "the request body could not be read")
            })?;
            size += chunk.len() as u64;
            if size > limit {
                return Err(too_large(usize::try_from(limit).unwrap_or(usize::MAX)));
            }
            pending.extend_from_slice(&chunk);
            let mut start = 0;
            while let Some(i) = pending[start..].iter().position(|b| *b == b'\n') {
                line += 1;
                emit(&pending[start..start + i], line)?;
                start += i + 1;
            }
            pending.drain(..start);
        }
        if !pending.is_empty() {
            line += 1;
            emit(&pending, line)?;
        }
        Ok(())
    }
}

impl FromRequest for RawBody {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let timeout = Duration::from_secs(
            state(req).map_or(30, |s| s.settings.body_read_timeout_secs.max(1)),
        );
        std::future::ready(Ok(Self {
            body: Decompress::from_headers(payload.take(), req.headers()),
            declared,
            timeout,
        }))
    }
}

/// A JSON request body, parsed strictly when the handler asks for it.
pub struct JsonBody<T> {
    raw: RawBody,
    limit: usize,
    is_json: bool,
    _t: PhantomData<T>,
}

impl<T: DeserializeOwned> JsonBody<T> {
    pub async fn parse(self) -> Result<T, ApiError> {
        if !self.is_json {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "send the body as JSON with `Content-Type: application/json`",
            ));
        }
        parse_json(&self.raw.read(self.limit).await?)
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit = state(req).map_or(1024 * 1024, |s| s.settings.body_limit_bytes);
        let is_json = req
            .mime_type()
            .ok()
            .flatten()
            .is_some_and(|m| m.subtype() == "json" || m.suffix().is_some_and(|s| s == "json"));
        let raw = match RawBody::from_request(req, payload).into_inner() {
            Ok(raw) => raw,
            Err(e) => return std::future::ready(Err(e)),
        };
        std::future::ready(Ok(Self {
            raw,
            limit,
            is_json,
            _t: PhantomData,
        }))
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!("the request body is larger than the {limit}-byte limit"),
    )
}

/// Parses JSON, naming the path of the first offending field and never echoing values.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let msg = redact_values(&e.inner().to_string());
        let message = if path == "." || path.is_empty() {
            format!("invalid JSON body: {msg}")
        } else {
            format!("invalid JSON body at `{path}`: {msg}")
        };
        ApiError::new(ErrorCode::InvalidJson, message)
    })?;
    de.end().map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidJson,
            "trailing characters after the JSON body",
        )
    })?;
    Ok(value)
}

/// The roles a route accepts. Each route's handler names one of these in its signature.
pub trait Permission {
    const ROLES: &'static [Role];
}

macro_rules! permission {
    ($name:ident, $doc:literal, [$($role:ident),+]) => {
        #[doc = $doc]
        pub struct $name;
        impl Permission for $name {
            const ROLES: &'static [Role] = &[$(Role::$role),+];
        }
    };
}

permission!(AdminOnly, "Key and keyring management.", [Admin]);
permission!(DpoOnly, "Data-subject requests and look-ups.", [Dpo]);
permission!(IngestOnly, "The tracking API's write keys.", [Ingest]);
permission!(AuditorOnly, "Reading and proving the audit log.", [Auditor]);
permission!(
    IngestOrDpo,
    "Recording consent (sites, forms and DPOs).",
    [Ingest, Dpo]
);
permission!(
    DpoOrAuditor,
    "The record of processing activities.",
    [Dpo, Auditor]
);
permission!(
    IngestOrAdmin,
    "Loading the product catalogue (sources and admins).",
    [Ingest, Admin]
);
permission!(EspOnly, "An ESP reading for its own recipient.", [Esp]);
permission!(
    EspOrAdmin,
    "Segments (an ESP for its own recipient, admins for any).",
    [Esp, Admin]
);
permission!(
    Governance,
    "Seeing recipients (admins, DPOs, auditors).",
    [Admin, Dpo, Auditor]
);
permission!(
    AnyRole,
    "Any authenticated caller.",
    [Admin, Dpo, Auditor, Esp, Ingest]
);

/// Where a route reads its credentials from.
pub trait Scheme {
    /// The `WWW-Authenticate` challenge sent with a 401.
    const CHALLENGE: &'static str;
    fn token(req: &HttpRequest) -> Option<String>;
}

/// `Authorization: Bearer <token>`: every `/v1` route but the tracking API.
pub struct Bearer;

impl Scheme for Bearer {
    const CHALLENGE: &'static str = "Bearer realm=\"consentry\"";

    fn token(req: &HttpRequest) -> Option<String> {
        let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned())
            .filter(|t| !t.is_empty())
    }
}

/// HTTP Basic with the write key as the user name and an empty password, as Segment's
/// client libraries send it.
pub struct WriteKey;

impl Scheme for WriteKey {
    const CHALLENGE: &'static str = "Basic realm=\"consentry\"";

    fn token(req: &HttpRequest) -> Option<String> {
        use base64::Engine;
        let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, b64) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let user = text.split_once(':').map_or(text.as_str(), |(u, _)| u);
        (!user.is_empty()).then(|| user.to_owned())
    }
}

/// A caller proven to hold one of `P::ROLES`, by credentials read as `S` says. 401
/// without valid credentials, 403 with the wrong role; both are audited.
pub struct Authorized<P: Permission, S: Scheme = Bearer> {
    pub caller: Caller,
    pub request_id: Option<String>,
    _p: PhantomData<(P, S)>,
}

impl<P: Permission, S: Scheme> Authorized<P, S> {
    pub fn actor(&self) -> Actor {
        self.caller.actor()
    }
}

impl<P: Permission + 'static, S: Scheme + 'static> FromRequest for Authorized<P, S> {
    type Error = ApiError;
    type Future = BoxFuture<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let state = state(&req)?;
            let request_id = request_id(&req);
            let ip = req.peer_addr().map(|a| a.ip());
            // Only a refusal needs the route's name; successes skip the formatting.
            let route = || {
                format!(
                    "{} {}",
                    req.method(),
                    req.match_pattern().unwrap_or_else(|| "unmatched".into())
                )
            };
            let token = S::token(&req);
            let result = match token {
                Some(t) => state.auth.authenticate(&t, ip).await,
                None => {
                    if let Some(ip) = ip {
                        if let Err(secs) = state.auth.limiter.check(ip) {
                            return Err(AuthError::RateLimited {
                                retry_after_secs: secs,
                            }
                            .into());
                        }
                        state.auth.limiter.record_failure(ip);
                    }
                    Err(AuthError::Missing)
                }
            };
            let caller = match result {
                Ok(c) => c,
                Err(e @ (AuthError::Missing | AuthError::Invalid)) => {
                    let reason = if matches!(e, AuthError::Missing) {
                        "missing"
                    } else {
                        "invalid"
                    };
                    audit_denial(&state, Actor::anonymous(), &route(), reason, &request_id).await?;
                    let mut err = ApiError::from(e);
                    err.challenge = Some(S::CHALLENGE);
                    return Err(err);
                }
                Err(e) => return Err(e.into()),
            };
            if !P::ROLES.contains(&caller.role) {
                audit_denial(&state, caller.actor(), &route(), "role", &request_id).await?;
                return Err(ApiError::new(
                    ErrorCode::Forbidden,
                    format!(
                        "this route needs the {} role; this key has {}",
                        P::ROLES
                            .iter()
                            .map(|r| r.as_str())
                            .collect::<Vec<_>>()
                            .join(" or "),
                        caller.role
                    ),
                ));
            }
            Ok(Self {
                caller,
                request_id,
                _p: PhantomData,
            })
        })
    }
}

async fn audit_denial(
    state: &AppState,
    actor: Actor,
    route: &str,
    reason: &str,
    request_id: &Option<String>,
) -> Result<(), ApiError> {
    let entry = NewEntry::new(actor, "auth.denied", Outcome::Denied)
        .request_id(request_id.clone())
        .attributes(vec![format!("route:{route}"), format!("reason:{reason}")]);
    state.audit.record(&state.db, entry).await?;
    Ok(())
}

/// A query string, parsed when the handler asks for it (after authorisation).
pub struct Query<T> {
    raw: String,
    _t: PhantomData<T>,
}

impl<T: DeserializeOwned> Query<T> {
    pub fn parse(&self) -> Result<T, ApiError> {
        serde_urlencoded::from_str(&self.raw).map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidQuery,
                format!("invalid query string: {}", redact_values(&e.to_string())),
            )
        })
    }
}

impl<T: 'static> FromRequest for Query<T> {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(Ok(Self {
            raw: req.query_string().to_owned(),
            _t: PhantomData,
        }))
    }
}
