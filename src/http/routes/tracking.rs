//! The Segment-compatible tracking API: `POST /v1/identify|track|page|screen|group|alias|batch`,
//! authenticated by an `ingest` write key as the HTTP Basic user name. A 200 is sent only
//! after the messages and their audit entry are committed.
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::{Authorized, IngestOnly, RawBody, WriteKey};
use crate::profiles::ingest::Ingest;
use crate::profiles::segment::{self, Kind, MAX_BATCH_BYTES, MAX_MESSAGE_BYTES};
use crate::startup::AppState;

type Auth = Authorized<IngestOnly, WriteKey>;

#[derive(Serialize, ToSchema)]
pub struct Accepted {
    /// Always true on a 200, as Segment answers.
    pub success: bool,
    /// Messages stored by this request.
    pub accepted: usize,
    /// Messages whose `messageId` this write key had already sent: not stored again.
    pub duplicates: usize,
}

/// Whether the browser sent the Global Privacy Control signal (`Sec-GPC: 1`).
fn gpc(req: &HttpRequest) -> bool {
    req.headers()
        .get("sec-gpc")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == "1")
}

async fn ingest(
    state: &AppState,
    auth: &Auth,
    messages: Vec<segment::Message>,
    batched: bool,
    gpc: bool,
) -> Result<HttpResponse, ApiError> {
    let keyring = state.keyring.get();
    let policies = state.policies.get();
    let run = Ingest {
        db: &state.db,
        master: &state.master,
        keyring: &keyring,
        audit: &state.audit,
        policies: &policies,
        scope: crate::profiles::ingest::Scope::Tracking,
        gpc,
        source: auth.actor(),
        request_id: auth.request_id.clone(),
        received_at: state.clock.now(),
    };
    let report = run.run(&messages, batched).await?;
    Ok(HttpResponse::Ok().json(Accepted {
        success: true,
        accepted: report.accepted,
        duplicates: report.duplicates,
    }))
}

async fn single(
    state: &AppState,
    req: &HttpRequest,
    auth: Auth,
    body: RawBody,
    kind: Kind,
) -> Result<HttpResponse, ApiError> {
    let bytes = body.read(MAX_MESSAGE_BYTES).await?;
    let message = segment::parse_single(kind, &bytes, state.clock.now())
        .map_err(crate::profiles::ingest::IngestError::from)?;
    ingest(state, &auth, vec![message], false, gpc(req)).await
}

macro_rules! tracking_route {
    ($name:ident, $kind:expr, $path:literal, $doc:literal) => {
        #[doc = $doc]
        #[utoipa::path(post, path = $path, tag = "tracking", security(("basic" = [])),
            request_body(content = Object, content_type = "application/json",
                description = "A Segment tracking-spec message (at most 32 KB)"),
            responses(
            (status = 200, description = "Stored", body = Accepted),
            (status = 400, description = "Not a valid message; the field is named", body = ErrorBody),
            (status = 401, description = "Missing or invalid write key", body = ErrorBody),
            (status = 403, description = "Not an ingest key", body = ErrorBody),
            (status = 413, description = "Over 32 KB", body = ErrorBody),
            (status = 503, description = "Database or audit log unavailable; nothing stored", body = ErrorBody)))]
        pub async fn $name(
            state: web::Data<AppState>,
            req: HttpRequest,
            auth: Auth,
            body: RawBody,
        ) -> Result<HttpResponse, ApiError> {
            single(&state, &req, auth, body, $kind).await
        }
    };
}

tracking_route!(
    identify,
    Kind::Identify,
    "/v1/identify",
    "Who a user is: `userId` and `traits`."
);
tracking_route!(
    track,
    Kind::Track,
    "/v1/track",
    "Something a user did: `event` and `properties`."
);
tracking_route!(page, Kind::Page, "/v1/page", "A page view.");
tracking_route!(screen, Kind::Screen, "/v1/screen", "A mobile screen view.");
tracking_route!(
    group,
    Kind::Group,
    "/v1/group",
    "The account a user belongs to: `groupId`."
);
tracking_route!(
    alias,
    Kind::Alias,
    "/v1/alias",
    "Links `previousId` to `userId`."
);

/// Several messages of any type; one invalid message refuses the whole batch.
#[utoipa::path(post, path = "/v1/batch", tag = "tracking", security(("basic" = [])),
    request_body(content = Object, content_type = "application/json",
        description = "`{\"batch\": [messages], \"context\": {...}, \"sentAt\": ...}`, at most 500 KB"),
    responses(
    (status = 200, description = "Stored", body = Accepted),
    (status = 400, description = "A message is invalid; its index and field are named", body = ErrorBody),
    (status = 401, description = "Missing or invalid write key", body = ErrorBody),
    (status = 403, description = "Not an ingest key", body = ErrorBody),
    (status = 413, description = "Over 500 KB", body = ErrorBody),
    (status = 503, description = "Database or audit log unavailable; nothing stored", body = ErrorBody)))]
pub async fn batch(
    state: web::Data<AppState>,
    req: HttpRequest,
    auth: Auth,
    body: RawBody,
) -> Result<HttpResponse, ApiError> {
    let bytes = body.read(MAX_BATCH_BYTES).await?;
    let messages = segment::parse_batch(&bytes, state.clock.now())
        .map_err(crate::profiles::ingest::IngestError::from)?;
    ingest(&state, &auth, messages, true, gpc(&req)).await
}
