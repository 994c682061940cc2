//! One wire error type and one table of stable codes. 4xx messages say what to fix;
//! 5xx bodies are opaque and their causes go to the log.
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

use crate::admin::AdminError;
use crate::audit::AuditError;
use crate::auth::AuthError;
use crate::crypto::KeyringError;
use crate::store::StoreError;

/// Every error code the API can return. Clients may rely on these strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    BadRequest,
    InvalidJson,
    InvalidQuery,
    InvalidPath,
    InvalidMessage,
    InvalidMapping,
    InvalidFile,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
    TooManyRequests,
    Internal,
    AuditUnavailable,
    DatabaseUnavailable,
    NotReady,
    LinkExpired,
    Conflict,
    UnknownPurpose,
    InvalidPseudonym,
    PseudonymRetired,
    InvalidState,
    MailUnavailable,
    InvalidRule,
    PurposeMismatch,
    InvalidSince,
    InvalidTemplate,
    InvalidUnsubscribeLink,
    InvalidCatalog,
    InvalidExperiment,
    TooManyStreams,
    GatewayBusy,
    HeadersTooLarge,
    RequestTimeout,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 37] = [
        ErrorCode::BadRequest,
        ErrorCode::InvalidJson,
        ErrorCode::InvalidQuery,
        ErrorCode::InvalidPath,
        ErrorCode::InvalidMessage,
        ErrorCode::InvalidMapping,
        ErrorCode::InvalidFile,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::ValidationFailed,
        ErrorCode::TooManyRequests,
        ErrorCode::Internal,
        ErrorCode::AuditUnavailable,
        ErrorCode::DatabaseUnavailable,
        ErrorCode::NotReady,
        ErrorCode::LinkExpired,
        ErrorCode::Conflict,
        ErrorCode::UnknownPurpose,
        ErrorCode::InvalidPseudonym,
        ErrorCode::PseudonymRetired,
        ErrorCode::InvalidState,
        ErrorCode::MailUnavailable,
        ErrorCode::InvalidRule,
        ErrorCode::PurposeMismatch,
        ErrorCode::InvalidSince,
        ErrorCode::InvalidTemplate,
        ErrorCode::InvalidUnsubscribeLink,
        ErrorCode::InvalidCatalog,
        ErrorCode::InvalidExperiment,
        ErrorCode::TooManyStreams,
        ErrorCode::GatewayBusy,
        ErrorCode::HeadersTooLarge,
        ErrorCode::RequestTimeout,
    ];

    pub fn as_str(self) -> &'static str {
        self.entry().1
    }

    pub fn status(self) -> StatusCode {
        self.entry().0
    }

    fn entry(self) -> (StatusCode, &'static str) {
        use ErrorCode as C;
        match self {
            C::BadRequest => (StatusCode::BAD_REQUEST, "bad_request"),
            C::InvalidJson => (StatusCode::BAD_REQUEST, "invalid_json"),
            C::InvalidQuery => (StatusCode::BAD_REQUEST, "invalid_query"),
            C::InvalidPath => (StatusCode::BAD_REQUEST, "invalid_path"),
            C::InvalidMessage => (StatusCode::BAD_REQUEST, "invalid_message"),
            C::InvalidMapping => (StatusCode::BAD_REQUEST, "invalid_mapping"),
            C::InvalidFile => (StatusCode::BAD_REQUEST, "invalid_file"),
            C::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            C::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            C::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            C::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            C::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            C::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            C::ValidationFailed => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            C::TooManyRequests => (StatusCode::TOO_MANY_REQUESTS, "too_many_requests"),
            C::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            C::AuditUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "audit_unavailable"),
            C::DatabaseUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "database_unavailable"),
            C::NotReady => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
            C::LinkExpired => (StatusCode::GONE, "link_expired"),
            C::Conflict => (StatusCode::CONFLICT, "conflict"),
            C::UnknownPurpose => (StatusCode::BAD_REQUEST, "unknown_purpose"),
            C::InvalidPseudonym => (StatusCode::BAD_REQUEST, "invalid_pseudonym"),
            C::PseudonymRetired => (StatusCode::GONE, "pseudonym_retired"),
            C::InvalidState => (StatusCode::CONFLICT, "invalid_state"),
            C::MailUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "mail_unavailable"),
            C::InvalidRule => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_rule"),
            C::PurposeMismatch => (StatusCode::UNPROCESSABLE_ENTITY, "purpose_mismatch"),
            C::InvalidSince => (StatusCode::CONFLICT, "invalid_since"),
            C::InvalidTemplate => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_template"),
            C::InvalidUnsubscribeLink => (StatusCode::BAD_REQUEST, "invalid_unsubscribe_link"),
            C::InvalidCatalog => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_catalog"),
            C::InvalidExperiment => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_experiment"),
            C::TooManyStreams => (StatusCode::TOO_MANY_REQUESTS, "too_many_streams"),
            C::GatewayBusy => (StatusCode::SERVICE_UNAVAILABLE, "gateway_busy"),
            C::HeadersTooLarge => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
            ),
            C::RequestTimeout => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
        }
    }
}

/// `{"error": {"code": "...", "message": "..."}}`
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable code from the table in the README.
    #[schema(example = "validation_failed")]
    pub code: String,
    /// What went wrong and how to fix it.
    pub message: String,
}

#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub retry_after: Option<u64>,
    /// The `WWW-Authenticate` challenge of a 401 (Bearer unless a route says otherwise).
    pub challenge: Option<&'static str>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after: None,
            challenge: None,
        }
    }

    /// A 5xx whose cause is logged but not sent.
    pub fn opaque(code: ErrorCode, cause: &dyn std::error::Error) -> Self {
        tracing::error!(code = code.as_str(), error = %chain(cause), "request failed");
        let message = match code {
            ErrorCode::AuditUnavailable => {
                "the audit log cannot be written, so nothing was changed; retry later"
            }
            ErrorCode::DatabaseUnavailable => "the database is unavailable; retry later",
            _ => "internal error; the cause has been logged",
        };
        Self::new(code, message)
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code.status()
    }

    fn error_response(&self) -> HttpResponse {
        let mut resp = HttpResponse::build(self.status_code());
        if self.code == ErrorCode::Unauthorized {
            resp.insert_header((
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(self.challenge.unwrap_or("Bearer realm=\"consentry\"")),
            ));
        }
        if let Some(secs) = self.retry_after {
            resp.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        // The rest of such a request cannot be trusted to arrive: the connection is closed
        // rather than kept for a next request.
        if matches!(
            self.code,
            ErrorCode::HeadersTooLarge | ErrorCode::RequestTimeout
        ) {
            resp.force_close();
        }
        resp.json(ErrorBody {
            error: ErrorDetail {
                code: self.code.as_str().to_owned(),
                message: self.message.clone(),
            },
        })
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => ApiError::opaque(ErrorCode::DatabaseUnavailable, &e),
            _ => ApiError::opaque(ErrorCode::Internal, &e),
        }
    }
}

impl From<AuditError> for ApiError {
    fn from(e: AuditError) -> Self {
        match e {
            AuditError::BadRange(msg) => ApiError::new(ErrorCode::InvalidQuery, msg),
            AuditError::BeyondHead { .. } => ApiError::new(ErrorCode::InvalidQuery, e.to_string()),
            AuditError::Store(StoreError::Unavailable(_)) => {
                ApiError::opaque(ErrorCode::DatabaseUnavailable, &e)
            }
            _ => ApiError::opaque(ErrorCode::AuditUnavailable, &e),
        }
    }
}

impl From<KeyringError> for ApiError {
    fn from(e: KeyringError) -> Self {
        match e {
            KeyringError::NoSuchVersion { .. }
            | KeyringError::NoActiveKey(_)
            | KeyringError::NoSuchRecipientVersion { .. }
            | KeyringError::LastRecipientVersion { .. } => {
                ApiError::new(ErrorCode::ValidationFailed, e.to_string())
            }
            KeyringError::Store(s) => s.into(),
            _ => ApiError::opaque(ErrorCode::Internal, &e),
        }
    }
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::Invalid(msg) => ApiError::new(ErrorCode::ValidationFailed, msg),
            AdminError::KeyNotFound => ApiError::new(ErrorCode::NotFound, e.to_string()),
            AdminError::Audit(a) => a.into(),
            AdminError::Store(s) => s.into(),
            AdminError::Keyring(k) => k.into(),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Missing => ApiError::new(
                ErrorCode::Unauthorized,
                "send `Authorization: Bearer <token>` with an API key or access token",
            ),
            AuthError::Invalid => ApiError::new(
                ErrorCode::Unauthorized,
                "the token is invalid, expired or revoked",
            ),
            AuthError::RateLimited { retry_after_secs } => ApiError {
                retry_after: Some(retry_after_secs),
                ..ApiError::new(
                    ErrorCode::TooManyRequests,
                    format!("too many failed attempts; retry in {retry_after_secs} s"),
                )
            },
            AuthError::Store(s) => s.into(),
        }
    }
}

impl From<crate::limits::RateLimited> for ApiError {
    fn from(e: crate::limits::RateLimited) -> Self {
        ApiError {
            retry_after: Some(e.retry_after_secs),
            ..ApiError::new(
                ErrorCode::TooManyRequests,
                format!(
                    "this key may make {} {} a minute; retry in {} s",
                    e.per_minute,
                    e.kind.noun(),
                    e.retry_after_secs
                ),
            )
        }
    }
}

/// How long a refused stream is told to wait: streams take seconds to minutes.
const STREAM_RETRY_AFTER_SECS: u64 = 10;

impl From<crate::limits::StreamRefused> for ApiError {
    fn from(e: crate::limits::StreamRefused) -> Self {
        use crate::limits::StreamRefused as E;
        let (code, message) = match e {
            E::Key { limit } => (
                ErrorCode::TooManyStreams,
                format!(
                    "this key already has {limit} exports or campaign message streams open; finish one first"
                ),
            ),
            E::Node { limit } => (
                ErrorCode::GatewayBusy,
                format!(
                    "the gateway is serving its {limit} concurrent exports and campaign message streams; retry later"
                ),
            ),
        };
        ApiError {
            retry_after: Some(STREAM_RETRY_AFTER_SECS),
            ..ApiError::new(code, message)
        }
    }
}

impl From<crate::profiles::ingest::IngestError> for ApiError {
    fn from(e: crate::profiles::ingest::IngestError) -> Self {
        use crate::profiles::ingest::IngestError as E;
        match e {
            E::Invalid(m) => ApiError::new(ErrorCode::InvalidMessage, m.to_string()),
            E::Contended => ApiError::opaque(ErrorCode::DatabaseUnavailable, &e),
            E::Store(s) => s.into(),
            E::Audit(a) => a.into(),
            E::Keyring(k) => k.into(),
        }
    }
}

impl From<crate::profiles::import::ImportError> for ApiError {
    fn from(e: crate::profiles::import::ImportError) -> Self {
        use crate::profiles::import::ImportError as E;
        match e {
            E::Mapping(m) => ApiError::new(ErrorCode::InvalidMapping, m.to_string()),
            E::File(_) | E::Io(_) => ApiError::new(ErrorCode::InvalidFile, e.to_string()),
            E::Ingest(i) => i.into(),
        }
    }
}

impl From<crate::consent::ConsentError> for ApiError {
    fn from(e: crate::consent::ConsentError) -> Self {
        use crate::consent::ConsentError as E;
        match e {
            E::Invalid(m) => ApiError::new(ErrorCode::BadRequest, m),
            E::Refused(m) => ApiError::new(ErrorCode::ValidationFailed, m),
            E::Suppressed => ApiError::new(ErrorCode::ValidationFailed, e.to_string()),
            E::NoSubject | E::NoRecord | E::BadLink => {
                ApiError::new(ErrorCode::NotFound, e.to_string())
            }
            E::LinkExpired => ApiError::new(ErrorCode::LinkExpired, e.to_string()),
            E::Store(s) => s.into(),
            E::Audit(a) => a.into(),
            E::Ingest(i) => i.into(),
        }
    }
}

impl From<crate::policy::recipients::RecipientError> for ApiError {
    fn from(e: crate::policy::recipients::RecipientError) -> Self {
        use crate::policy::recipients::RecipientError as E;
        match e {
            E::Invalid(m) => ApiError::new(ErrorCode::ValidationFailed, m),
            E::Exists(_) => ApiError::new(ErrorCode::Conflict, e.to_string()),
            E::NotFound => ApiError::new(ErrorCode::NotFound, e.to_string()),
            E::Keyring(k) => k.into(),
            E::Store(s) => s.into(),
            E::Audit(a) => a.into(),
        }
    }
}

impl From<crate::policy::gate::AuthorizeError> for ApiError {
    fn from(e: crate::policy::gate::AuthorizeError) -> Self {
        use crate::policy::gate::AuthorizeError as E;
        match e {
            E::UnknownPurpose(_) => ApiError::new(ErrorCode::UnknownPurpose, e.to_string()),
            E::Forbidden(m) => ApiError::new(ErrorCode::Forbidden, m),
            E::UnknownRecipient => ApiError::new(ErrorCode::NotFound, e.to_string()),
            E::Store(s) => s.into(),
        }
    }
}

impl From<crate::policy::gate::GateError> for ApiError {
    fn from(e: crate::policy::gate::GateError) -> Self {
        use crate::policy::gate::GateError as E;
        match e {
            E::InvalidPseudonym(_) => ApiError::new(ErrorCode::InvalidPseudonym, e.to_string()),
            E::Retired(_) => ApiError::new(ErrorCode::PseudonymRetired, e.to_string()),
            E::NotFound => ApiError::new(ErrorCode::NotFound, e.to_string()),
            E::Invalid(m) => ApiError::new(ErrorCode::BadRequest, m),
            E::Store(s) => s.into(),
            E::Audit(a) => a.into(),
            E::Keyring(k) => ApiError::opaque(ErrorCode::Internal, &k),
        }
    }
}

impl From<crate::subject_requests::flags::FlagError> for ApiError {
    fn from(e: crate::subject_requests::flags::FlagError) -> Self {
        use crate::subject_requests::flags::FlagError as E;
        match e {
            E::Invalid(m) => ApiError::new(ErrorCode::ValidationFailed, m),
            E::NoSubject | E::NotSet(_) => ApiError::new(ErrorCode::NotFound, e.to_string()),
            E::Store(s) => s.into(),
            E::Audit(a) => a.into(),
        }
    }
}

impl From<crate::subject_requests::requests::RequestError> for ApiError {
    fn from(e: crate::subject_requests::requests::RequestError) -> Self {
        use crate::subject_requests::requests::RequestError as E;
        match e {
            E::Invalid(m) => ApiError::new(ErrorCode::ValidationFailed, m),
            E::NotFound => ApiError::new(ErrorCode::NotFound, e.to_string()),
            E::State(m) => ApiError::new(ErrorCode::InvalidState, m),
            E::Expired => ApiError::new(ErrorCode::LinkExpired, e.to_string()),
            E::Unavailable(m) => ApiError::new(
                ErrorCode::MailUnavailable,
                format!("{m}; nothing changed, retry later"),
            ),
            E::Keyring(k) => ApiError::opaque(ErrorCode::Internal, &k),
            E::Store(s) => s.into(),
            E::Audit(a) => a.into(),
        }
    }
}

impl From<crate::profiles::lookup::LookupError> for ApiError {
    fn from(e: crate::profiles::lookup::LookupError) -> Self {
        use crate::profiles::lookup::LookupError as E;
        match e {
            E::Invalid(m) => ApiError::new(ErrorCode::InvalidQuery, m),
            E::Store(s) => s.into(),
            E::Audit(a) => a.into(),
        }
    }
}

/// Replaces quoted values in a parser message, so an error never echoes submitted data.
pub fn redact_values(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut in_quote = false;
    for ch in msg.chars() {
        if ch == '"' {
            if in_quote {
                out.push_str("…\"");
            } else {
                out.push('"');
            }
            in_quote = !in_quote;
        } else if !in_quote {
            out.push(ch);
        }
    }
    out
}

impl From<crate::policy::segments::SegmentError> for ApiError {
    fn from(e: crate::policy::segments::SegmentError) -> Self {
        use crate::policy::segments::SegmentError as E;
        match e {
            E::Rule(_) => ApiError::new(ErrorCode::InvalidRule, e.to_string()),
            E::Purpose(_) => ApiError::new(ErrorCode::PurposeMismatch, e.to_string()),
            E::Invalid(m) => ApiError::new(ErrorCode::ValidationFailed, m),
            E::NotFound => ApiError::new(ErrorCode::NotFound, e.to_string()),
            E::Since(m) => ApiError::new(ErrorCode::InvalidSince, m),
            E::Authorize(a) => a.into(),
            E::Gate(g) => g.into(),
            E::Store(s) => s.into(),
            E::Audit(a) => a.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            assert!(seen.insert(c.as_str()), "{}", c.as_str());
            assert!(
                c.as_str()
                    .chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch == '_')
            );
        }
    }

    #[test]
    fn parser_messages_lose_their_quoted_values() {
        assert_eq!(
            redact_values("invalid type: string \"jane@example.com\", expected u64"),
            "invalid type: string \"…\", expected u64"
        );
    }
}
