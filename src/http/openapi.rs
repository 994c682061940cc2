//! What the OpenAPI document says about every route by construction, so that no route's
//! `responses(...)` can forget it, and the `Allow` header of a 405, read from the document.
use std::collections::HashMap;
use std::sync::OnceLock;

use utoipa::Modify;
use utoipa::openapi::path::Operation;
use utoipa::openapi::{Content, OpenApi, RefOr, Response};

/// Responses that come from the extractors rather than the handler: every authenticated
/// `/v1` route can answer 401 (`Authorized`), 429 (the failed-authentication limiter) and
/// 503 (a refusal is audited, and the audit log or the database may be down); every
/// JSON body (`JsonBody`) can be malformed (400), too large (413) or not JSON (415).
/// Every route can refuse an oversized head (431), and every route that reads a body a
/// body that does not arrive in time (408).
/// A route that documents one of these itself keeps its own description.
pub struct CommonResponses;

const HEAD: [(&str, &str); 1] = [(
    "431",
    "headers_too_large: the request's headers are over `max_header_bytes`; the connection is closed",
)];

const BODY: [(&str, &str); 1] = [(
    "408",
    "request_timeout: the body did not arrive within `body_read_timeout_secs` (a streamed upload: paused longer than that); the connection is closed",
)];

const AUTH: [(&str, &str); 3] = [
    ("401", "Missing or invalid credentials"),
    (
        "429",
        "Too many failed authentications from this address; see `Retry-After`",
    ),
    (
        "503",
        "The audit log or the database is unavailable; nothing changed",
    ),
];

const JSON_BODY: [(&str, &str); 3] = [
    ("400", "Malformed JSON body; the field is named"),
    ("413", "Body too large"),
    ("415", "Not JSON: send `Content-Type: application/json`"),
];

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let ops = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in ops.into_iter().flatten() {
                if path.starts_with("/v1/") && authenticated(op) {
                    add(op, &AUTH);
                }
                if takes_json_body(op) && !is_tracking(op) {
                    add(op, &JSON_BODY);
                }
                if op.request_body.is_some() {
                    add(op, &BODY);
                }
                add(op, &HEAD);
            }
        }
    }
}

fn add(op: &mut Operation, responses: &[(&str, &str)]) {
    for (status, description) in responses {
        op.responses
            .responses
            .entry((*status).to_owned())
            .or_insert_with(|| error_response(description));
    }
}

fn error_response(description: &str) -> RefOr<Response> {
    let schema = RefOr::Ref(utoipa::openapi::Ref::from_schema_name("ErrorBody"));
    RefOr::T(
        utoipa::openapi::ResponseBuilder::new()
            .description(description)
            .content("application/json", Content::new(Some(schema)))
            .build(),
    )
}

/// Whether a credential is required (not merely accepted, as `security((), ...)` says).
fn authenticated(op: &Operation) -> bool {
    op.security.as_ref().is_some_and(|reqs| {
        !reqs.is_empty()
            && reqs.iter().all(|r| {
                serde_json::to_value(r)
                    .ok()
                    .and_then(|v| v.as_object().map(|o| !o.is_empty()))
                    .unwrap_or(false)
            })
    })
}

fn takes_json_body(op: &Operation) -> bool {
    matches!(&op.request_body, Some(RefOr::T(body)) if body.content.contains_key("application/json"))
}

/// The tracking API reads its body as Segment's clients send it, whatever the content type.
fn is_tracking(op: &Operation) -> bool {
    op.tags
        .as_ref()
        .is_some_and(|t| t.iter().any(|t| t == "tracking"))
}

/// The methods the document lists for a route pattern (`/v1/keys/{id}`), for the `Allow`
/// header of a 405: `GET, DELETE`.
pub fn allowed_methods(pattern: &str) -> Option<&'static str> {
    static TABLE: OnceLock<HashMap<String, String>> = OnceLock::new();
    TABLE
        .get_or_init(|| {
            let doc = super::openapi_doc();
            doc.paths
                .paths
                .iter()
                .map(|(path, item)| {
                    let methods: Vec<&str> = [
                        ("GET", item.get.is_some()),
                        ("PUT", item.put.is_some()),
                        ("POST", item.post.is_some()),
                        ("DELETE", item.delete.is_some()),
                        ("PATCH", item.patch.is_some()),
                    ]
                    .into_iter()
                    .filter_map(|(m, present)| present.then_some(m))
                    .collect();
                    (path.clone(), methods.join(", "))
                })
                .collect()
        })
        .get(pattern)
        .map(String::as_str)
}
