//! Data-subject requests (DPOs; public forms file them with an ingest key).
use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::Role;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::{Authorized, DpoOnly, IngestOrDpo, JsonBody, Permission, Query};
use crate::startup::AppState;
use crate::subject_requests::requests::{
    Extension, NewRequest, Rejection, RequestReceipt, RequestView, Requests, Verification,
    Withdrawal,
};

fn requests<'a, P: Permission>(
    state: &'a AppState,
    keyring: &'a crate::crypto::Keyring,
    policies: &'a crate::policy::Policies,
    auth: &Authorized<P>,
) -> Requests<'a> {
    Requests {
        db: &state.db,
        keyring,
        audit: &state.audit,
        policies,
        actor: auth.actor(),
        request_id: auth.request_id.clone(),
        now: state.clock.now(),
    }
}

macro_rules! with_requests {
    ($state:expr, $auth:expr, |$r:ident| $body:expr) => {{
        let keyring = $state.keyring.get();
        let policies = $state.policies.get();
        let $r = requests(&$state, &keyring, &policies, &$auth);
        $body
    }};
}

/// File a request. Its deadline is one calendar month from `received_at` (Art. 12(3)).
/// A second open request of the same kind for the same person is linked to the first
/// (`duplicate_of`). An ingest key (a public form) gets only the receipt.
#[utoipa::path(post, path = "/v1/dsar", tag = "dsar", security(("bearer" = [])),
    request_body = NewRequest, responses(
    (status = 201, description = "Filed (a dpo key sees the whole request)", body = RequestView, links(
        ("get" = (operation_ref = "#/paths/~1v1~1dsar~1{id}/get", parameters(("id" = "$response.body#/id")))),
        ("package" = (operation_ref = "#/paths/~1v1~1dsar~1{id}~1package/get", parameters(("id" = "$response.body#/id")))))),
    (status = 400, description = "Malformed body", body = ErrorBody),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not a dpo or ingest key", body = ErrorBody),
    (status = 413, description = "Body too large", body = ErrorBody),
    (status = 415, description = "Not JSON", body = ErrorBody),
    (status = 422, description = "Unknown kind, no or bad identifier, bad channel or time", body = ErrorBody),
    (status = 429, description = "too_many_requests: this key is over its rate for this route (`rate_limit_dsar_per_minute`); or too many failed authentications from this address", body = ErrorBody,
        headers(("Retry-After" = u64, description = "Seconds until a request would be allowed"))),
    (status = 503, description = "Audit log or database unavailable; nothing filed", body = ErrorBody)))]
pub async fn create(
    state: web::Data<AppState>,
    auth: Authorized<IngestOrDpo>,
    body: JsonBody<NewRequest>,
) -> Result<HttpResponse, ApiError> {
    state
        .limits
        .check(crate::limits::Expensive::Dsar, &auth.caller.key_id)?;
    let new = body.parse().await?;
    let view = with_requests!(state, auth, |r| r.create(&new).await?);
    if auth.caller.role == Role::Ingest {
        return Ok(HttpResponse::Created().json(RequestReceipt::from(&view)));
    }
    Ok(HttpResponse::Created().json(view))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct QueueQuery {
    /// Only requests in this status.
    #[param(
        pattern = "^(received|verifying|verified|in_progress|completed|completed_with_pending_notices|rejected|withdrawn)$"
    )]
    pub status: Option<String>,
    /// RFC 3339: only requests due before this moment.
    #[param(format = DateTime)]
    pub due_before: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Queue {
    /// By due date, soonest first (at most 1,000).
    pub requests: Vec<RequestView>,
}

/// The queue, by due date, with days left and overdue flags.
#[utoipa::path(get, path = "/v1/dsar", tag = "dsar", security(("bearer" = [])),
    params(QueueQuery), responses(
    (status = 200, description = "The queue", body = Queue),
    (status = 400, description = "Bad status or time", body = ErrorBody),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not a dpo key", body = ErrorBody)))]
pub async fn list(
    state: web::Data<AppState>,
    auth: Authorized<DpoOnly>,
    q: Query<QueueQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = q.parse()?;
    let list = with_requests!(state, auth, |r| r
        .list(q.status.as_deref(), q.due_before.as_deref())
        .await
        .map_err(|e| match e {
            crate::subject_requests::requests::RequestError::Invalid(m) =>
                ApiError::new(crate::http::error::ErrorCode::InvalidQuery, m),
            other => other.into(),
        })?);
    Ok(HttpResponse::Ok().json(Queue { requests: list }))
}

/// One request with every transition (who, why, when).
#[utoipa::path(get, path = "/v1/dsar/{id}", tag = "dsar", security(("bearer" = [])),
    params(("id" = String, Path, description = "The request id")),
    responses(
    (status = 200, description = "The request", body = RequestView),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not a dpo key", body = ErrorBody),
    (status = 404, description = "No such request", body = ErrorBody)))]
pub async fn show(
    state: web::Data<AppState>,
    auth: Authorized<DpoOnly>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let v = with_requests!(state, auth, |r| r.show(&path).await?);
    Ok(HttpResponse::Ok().json(v))
}

macro_rules! transition_route {
    ($name:ident, $path:literal, $body:ty, $method:ident, $doc:literal, $bad:literal) => {
        #[doc = $doc]
        #[utoipa::path(post, path = $path, tag = "dsar", security(("bearer" = [])),
            params(("id" = String, Path, description = "The request id")),
            request_body = $body, responses(
            (status = 200, description = "Done", body = RequestView),
            (status = 400, description = "Malformed body", body = ErrorBody),
            (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
            (status = 403, description = "Not a dpo key", body = ErrorBody),
            (status = 404, description = "No such request", body = ErrorBody),
            (status = 409, description = $bad, body = ErrorBody),
            (status = 413, description = "Body too large", body = ErrorBody),
            (status = 415, description = "Not JSON", body = ErrorBody),
            (status = 422, description = "Invalid value (named in the message)", body = ErrorBody),
            (status = 503, description = "Audit log or database unavailable; nothing changed", body = ErrorBody)))]
        pub async fn $name(
            state: web::Data<AppState>,
            auth: Authorized<DpoOnly>,
            path: web::Path<String>,
            body: JsonBody<$body>,
        ) -> Result<HttpResponse, ApiError> {
            let b = body.parse().await?;
            let v = with_requests!(state, auth, |r| r.$method(&path, &b).await?);
            Ok(HttpResponse::Ok().json(v))
        }
    };
}

/// Verify the requester. `dpo_attested` (with `note`): the DPO records how identity was
/// checked. `email_code` without `code`: a six-digit code goes to the subject's email
/// address on file (the request becomes `verifying`); with `code`: the code is checked
/// (five wrong entries void it). Nothing is executed before `verified`.
#[utoipa::path(post, path = "/v1/dsar/{id}/verify", tag = "dsar", security(("bearer" = [])),
    params(("id" = String, Path, description = "The request id")),
    request_body = Verification, responses(
    (status = 200, description = "Verified, or a code sent", body = RequestView),
    (status = 400, description = "Malformed body", body = ErrorBody),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not a dpo key", body = ErrorBody),
    (status = 404, description = "No such request", body = ErrorBody),
    (status = 409, description = "Not waiting for verification, no code sent, or too many wrong codes", body = ErrorBody),
    (status = 410, description = "The code has expired", body = ErrorBody),
    (status = 413, description = "Body too large", body = ErrorBody),
    (status = 415, description = "Not JSON", body = ErrorBody),
    (status = 422, description = "Unknown method, missing note, wrong code, no relay or no address on file", body = ErrorBody),
    (status = 503, description = "Mail relay, audit log or database unavailable; nothing changed", body = ErrorBody)))]
pub async fn verify(
    state: web::Data<AppState>,
    auth: Authorized<DpoOnly>,
    path: web::Path<String>,
    body: JsonBody<Verification>,
) -> Result<HttpResponse, ApiError> {
    let b = body.parse().await?;
    let v = with_requests!(state, auth, |r| {
        if b.method == "email_code" {
            let codes = crate::subject_requests::codes::Codes {
                requests: r,
                master: &state.master,
                mailer: state.mailer.as_deref(),
                ttl_secs: i64::try_from(state.settings.dsar_code_ttl_secs).unwrap_or(900),
            };
            match &b.code {
                None => codes.send(&path).await?,
                Some(code) => codes.check(&path, code).await?,
            }
        } else {
            r.verify(&path, &b).await?
        }
    });
    Ok(HttpResponse::Ok().json(v))
}
transition_route!(
    extend,
    "/v1/dsar/{id}/extend",
    Extension,
    extend,
    "Extend the deadline by one or two further months, once, with a reason (Art. 12(3)).",
    "Already extended, or the request is closed"
);
transition_route!(
    reject,
    "/v1/dsar/{id}/reject",
    Rejection,
    reject,
    "Reject: identity not verified, manifestly unfounded, or no data held.",
    "The request is closed"
);
transition_route!(
    withdraw,
    "/v1/dsar/{id}/withdraw",
    Withdrawal,
    withdraw,
    "The requester withdrew the request.",
    "The request is closed"
);

fn executor<'a>(
    state: &'a AppState,
    requests: Requests<'a>,
) -> crate::subject_requests::execute::Executor<'a> {
    crate::subject_requests::execute::Executor::new(requests, &state.master, &state.settings)
}

/// Execute a verified request (or resume one left in progress): access and portability
/// make the package downloadable; erasure deletes everything held, destroys the data key
/// and suppresses the identifiers; restriction restricts; objection stops every
/// marketing purpose. One transaction with its transitions and audit entries.
#[utoipa::path(post, path = "/v1/dsar/{id}/execute", tag = "dsar", security(("bearer" = [])),
    params(("id" = String, Path, description = "The request id")),
    responses(
    (status = 200, description = "Completed", body = RequestView),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not a dpo key", body = ErrorBody),
    (status = 404, description = "No such request", body = ErrorBody),
    (status = 409, description = "Not verified, closed, a duplicate, no data held, or a kind not executable here", body = ErrorBody),
    (status = 503, description = "Audit log or database unavailable; nothing changed", body = ErrorBody)))]
pub async fn execute(
    state: web::Data<AppState>,
    auth: Authorized<DpoOnly>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let v = with_requests!(state, auth, |r| executor(&state, r).execute(&path).await?);
    Ok(HttpResponse::Ok().json(v))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PackageQuery {
    /// `json` (default for access), `html` (a readable page) or `zip` (JSON and CSV files;
    /// default for portability).
    #[param(pattern = "^(json|html|zip)$")]
    pub format: Option<String>,
}

/// The package of a completed access or portability request: everything held about the
/// person, built at download, while `package_expires_at` has not passed. Audited.
#[utoipa::path(get, path = "/v1/dsar/{id}/package", tag = "dsar", security(("bearer" = [])),
    params(("id" = String, Path, description = "The request id"), PackageQuery),
    responses(
    (status = 200, description = "The package", body = crate::subject_requests::package::AccessPackage),
    (status = 400, description = "Unknown format", body = ErrorBody),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not a dpo key", body = ErrorBody),
    (status = 404, description = "No such request", body = ErrorBody),
    (status = 409, description = "Not completed, or a kind without a package", body = ErrorBody),
    (status = 410, description = "The package has expired", body = ErrorBody),
    (status = 503, description = "Audit log or database unavailable", body = ErrorBody)))]
pub async fn package(
    state: web::Data<AppState>,
    auth: Authorized<DpoOnly>,
    path: web::Path<String>,
    q: Query<PackageQuery>,
) -> Result<HttpResponse, ApiError> {
    use crate::subject_requests::execute::Format;
    let q = q.parse()?;
    let bad_format = |e: crate::subject_requests::requests::RequestError| {
        ApiError::new(crate::http::error::ErrorCode::InvalidQuery, e.to_string())
    };
    // A bad format is refused before the download is built and audited.
    if let Some(f) = q.format.as_deref() {
        Format::parse(f).map_err(bad_format)?;
    }
    let package = with_requests!(state, auth, |r| executor(&state, r).package(&path).await?);
    let format = Format::for_package(q.format.as_deref(), &package).map_err(bad_format)?;
    let name = format!("consentry-{}", package.request_id);
    Ok(match format {
        Format::Json => HttpResponse::Ok().json(package),
        Format::Html => HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .body(package.to_html()),
        Format::Zip => HttpResponse::Ok()
            .content_type("application/zip")
            .insert_header((
                "content-disposition",
                format!("attachment; filename=\"{name}.zip\""),
            ))
            .body(
                package
                    .to_zip()
                    .map_err(|e| ApiError::opaque(crate::http::error::ErrorCode::Internal, &e))?,
            ),
    })
}

/// Execute a verified rectification with the corrected values (Art. 16): each trait
/// replaced (every spelling of its name; `null` removes it) and each identifier kind
/// replaced, the old values deleted, recipients that received the data notified.
#[utoipa::path(post, path = "/v1/dsar/{id}/rectify", tag = "dsar", security(("bearer" = [])),
    params(("id" = String, Path, description = "The request id")),
    request_body = crate::subject_requests::rectify::Rectification, responses(
    (status = 200, description = "Rectified", body = RequestView),
    (status = 400, description = "Malformed body", body = ErrorBody),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not a dpo key", body = ErrorBody),
    (status = 404, description = "No such request", body = ErrorBody),
    (status = 409, description = "Not a verified rectification, a duplicate, or the value belongs to another person", body = ErrorBody),
    (status = 413, description = "Body too large", body = ErrorBody),
    (status = 415, description = "Not JSON", body = ErrorBody),
    (status = 422, description = "No change given, or an invalid value (named)", body = ErrorBody),
    (status = 503, description = "Audit log or database unavailable; nothing changed", body = ErrorBody)))]
pub async fn rectify(
    state: web::Data<AppState>,
    auth: Authorized<DpoOnly>,
    path: web::Path<String>,
    body: JsonBody<crate::subject_requests::rectify::Rectification>,
) -> Result<HttpResponse, ApiError> {
    let fix = body.parse().await?;
    let v = with_requests!(state, auth, |r| {
        crate::subject_requests::rectify::Rectifier {
            requests: r,
            master: &state.master,
        }
        .rectify(&path, &fix)
        .await?
    });
    Ok(HttpResponse::Ok().json(v))
}
