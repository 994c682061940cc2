//! Request ids, metrics, a root tracing span without personal data, and a last-resort
//! rewrite of non-JSON error bodies into the API's error shape.
use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage, ResponseError};
use tracing::Span;
use tracing_actix_web::{RequestId, RootSpanBuilder};

use super::error::{ApiError, ErrorCode};

/// The span every request runs in. It names the method, route pattern, status and
/// request id, never the client address, user agent, query string or body.
pub struct RootSpan;

impl RootSpanBuilder for RootSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let request_id = request
            .extensions()
            .get::<RequestId>()
            .map(|id| id.to_string())
            .unwrap_or_default();
        let route = request
            .match_pattern()
            .unwrap_or_else(|| "unmatched".into());
        tracing::info_span!(
            "request",
            method = %request.method(),
            route = %route,
            request_id = %request_id,
            status = tracing::field::Empty,
        )
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        let status = match outcome {
            Ok(resp) => resp.status().as_u16(),
            Err(e) => e.as_response_error().status_code().as_u16(),
        };
        span.record("status", status);
    }
}

pub async fn request_id_header(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let id = req.extensions().get::<RequestId>().map(|id| id.to_string());
    let mut resp = next.call(req).await?;
    if let Some(id) = id
        && let Ok(value) = HeaderValue::from_str(&id)
    {
        resp.headers_mut()
            .insert(header::HeaderName::from_static("x-request-id"), value);
    }
    Ok(resp)
}

pub async fn metrics_middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let start = Instant::now();
    let method = req.method().to_string();
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
    let resp = next.call(req).await?;
    let status = resp.status().as_u16().to_string();
    metrics::counter!("consentry_http_requests_total",
        "method" => method.clone(), "route" => route.clone(), "status" => status)
    .increment(1);
    metrics::histogram!("consentry_http_request_duration_seconds",
        "method" => method, "route" => route)
    .record(start.elapsed().as_secs_f64());
    Ok(resp)
}

/// Refuses a request whose head (request line and headers) is over `max_header_bytes`
/// with 431 `headers_too_large`, and closes the connection. The HTTP/1 parser itself
/// refuses a head over 128 KiB, or of more than 96 headers, with a bare 431 before any of
/// this runs; this bound is the tighter one an application needs.
pub async fn header_limit(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let limit = req
        .app_data::<actix_web::web::Data<crate::startup::AppState>>()
        .map_or(16 * 1024, |s| s.settings.max_header_bytes);
    let line = req.method().as_str().len()
        + req.uri().path_and_query().map_or(0, |p| p.as_str().len())
        + 12;
    let size = req.headers().iter().fold(line, |n, (name, value)| {
        n + name.as_str().len() + value.len() + 4
    });
    if size > limit {
        let err = ApiError::new(
            ErrorCode::HeadersTooLarge,
            format!(
                "the request's headers are larger than the {limit}-byte limit; send fewer or shorter headers"
            ),
        );
        return Ok(req.into_response(err.error_response()));
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

fn code_for(status: u16) -> ErrorCode {
    match status {
        401 => ErrorCode::Unauthorized,
        403 => ErrorCode::Forbidden,
        404 => ErrorCode::NotFound,
        405 => ErrorCode::MethodNotAllowed,
        408 => ErrorCode::RequestTimeout,
        413 => ErrorCode::PayloadTooLarge,
        415 => ErrorCode::UnsupportedMediaType,
        422 => ErrorCode::ValidationFailed,
        429 => ErrorCode::TooManyRequests,
        431 => ErrorCode::HeadersTooLarge,
        503 => ErrorCode::DatabaseUnavailable,
        s if s >= 500 => ErrorCode::Internal,
        _ => ErrorCode::BadRequest,
    }
}

/// Any error response that is not JSON (from the framework itself: an unreadable body,
/// a bad header) is replaced by the API's error shape with the same status.
pub async fn json_errors(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let resp = match next.call(req).await {
        Ok(resp) => resp,
        Err(e) => {
            let status = e.as_response_error().status_code().as_u16();
            tracing::debug!(status, "framework error rewritten");
            return Err(ApiError::new(code_for(status), generic_message(status)).into());
        }
    };
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    if status.as_u16() < 400 || is_json {
        return Ok(resp.map_into_boxed_body());
    }
    let code = code_for(status.as_u16());
    let err = ApiError::new(code, generic_message(status.as_u16()));
    let (req, old) = resp.into_parts();
    let mut new = err.error_response();
    *new.status_mut() = old.status();
    for (name, value) in old.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            new.headers_mut().insert(name.clone(), value.clone());
        }
    }
    Ok(ServiceResponse::new(req, new))
}

fn generic_message(status: u16) -> &'static str {
    match status {
        404 => "no such route; the routes are listed at /openapi.json",
        405 => "method not allowed on this route; see /openapi.json",
        413 => "the request body is too large",
        415 => "unsupported content type; see /openapi.json for what each route takes",
        s if s >= 500 => "internal error; the cause has been logged",
        _ => "the request could not be read; check its headers and body",
    }
}
