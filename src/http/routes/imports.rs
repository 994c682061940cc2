//! `POST /v1/imports`: a CSV or NDJSON file and its mapping as multipart form parts,
//! spooled to the data directory and imported row by row.
use std::io::Write;

use actix_multipart::Multipart;
use actix_web::{HttpResponse, web};
use futures_util::StreamExt;
use serde::Deserialize;

use crate::http::error::{ApiError, ErrorBody, ErrorCode};
use crate::http::extract::{Authorized, IngestOnly, Query, without_pause};
use crate::profiles::import::mapping::{Format, Mapping};
use crate::profiles::import::{self, ImportReport, Importer};
use crate::profiles::ingest::{Ingest, Scope};
use crate::startup::AppState;

/// The largest mapping part accepted.
const MAX_MAPPING_BYTES: usize = 64 * 1024;
/// How many bad rows a response lists (all are counted).
const MAX_LISTED_ERRORS: usize = 10_000;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ImportQuery {
    /// The system the file comes from (`crm`, `pos`, `loyalty` ...): row keys are unique
    /// within it, so re-sending a file changes nothing.
    pub source: String,
    /// Check every row and report the bad ones; write nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// `csv` or `ndjson`, when neither the mapping nor the file name says.
    #[param(inline)]
    pub format: Option<Format>,
}

/// The form parts, for the OpenAPI document.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ImportForm {
    /// The TOML mapping (see the README's import section).
    mapping: String,
    /// The CSV or NDJSON file.
    #[schema(format = Binary, content_media_type = "application/octet-stream")]
    file: Vec<u8>,
}

fn bad_form(msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::BadRequest, msg)
}

/// Import a CRM, POS or loyalty file. Bad rows do not fail the request: they are listed
/// (row, column, reason) in the result, and the good rows are stored.
#[utoipa::path(post, path = "/v1/imports", tag = "imports", security(("bearer" = [])),
    params(ImportQuery),
    request_body(content = ImportForm, content_type = "multipart/form-data"),
    responses(
    (status = 200, description = "The file was read to the end; counts and bad rows", body = ImportReport),
    (status = 400, description = "Bad form, mapping or file", body = ErrorBody),
    (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    (status = 403, description = "Not an ingest key", body = ErrorBody),
    (status = 413, description = "File over import_max_bytes", body = ErrorBody),
    (status = 503, description = "Audit log or database unavailable", body = ErrorBody)))]
pub async fn create(
    state: web::Data<AppState>,
    auth: Authorized<IngestOnly>,
    q: Query<ImportQuery>,
    mut form: Multipart,
) -> Result<HttpResponse, ApiError> {
    let q = q.parse()?;
    import::check_source(&q.source)?;
    let mut mapping_text: Option<String> = None;
    let mut spooled: Option<(tempfile::NamedTempFile, Option<String>)> = None;
    // A pause longer than this in the upload is a 408 (the file may take long in all).
    let idle = std::time::Duration::from_secs(state.settings.body_read_timeout_secs.max(1));
    while let Some(field) = without_pause(idle, form.next()).await? {
        let mut field = field.map_err(|e| bad_form(format!("multipart: {e}")))?;
        let name = field.name().unwrap_or_default().to_owned();
        match name.as_str() {
            "mapping" => {
                let mut buf = Vec::new();
                while let Some(chunk) = without_pause(idle, field.next()).await? {
                    let chunk = chunk.map_err(|e| bad_form(format!("multipart: {e}")))?;
                    if buf.len() + chunk.len() > MAX_MAPPING_BYTES {
                        return Err(ApiError::new(
                            ErrorCode::PayloadTooLarge,
                            "mapping: over 64 KiB",
                        ));
                    }
                    buf.extend_from_slice(&chunk);
                }
                mapping_text = Some(
                    String::from_utf8(buf).map_err(|_| bad_form("mapping: is not UTF-8 text"))?,
                );
            }
            "file" => {
                let file_name = field
                    .content_disposition()
                    .and_then(|d| d.get_filename())
                    .map(str::to_owned);
                let mut tmp = tempfile::NamedTempFile::new_in(&state.settings.data_dir)
                    .map_err(|e| ApiError::opaque(ErrorCode::Internal, &e))?;
                let mut size: u64 = 0;
                while let Some(chunk) = without_pause(idle, field.next()).await? {
                    let chunk = chunk.map_err(|e| bad_form(format!("multipart: {e}")))?;
                    size += chunk.len() as u64;
                    if size > state.settings.import_max_bytes {
                        return Err(ApiError::new(
                            ErrorCode::PayloadTooLarge,
                            format!(
                                "file: over import_max_bytes ({} bytes)",
                                state.settings.import_max_bytes
                            ),
                        ));
                    }
                    tmp.write_all(&chunk)
                        .map_err(|e| ApiError::opaque(ErrorCode::Internal, &e))?;
                }
                tmp.flush()
                    .map_err(|e| ApiError::opaque(ErrorCode::Internal, &e))?;
                spooled = Some((tmp, file_name));
            }
            other => {
                return Err(bad_form(format!(
                    "unknown form part `{}`; send `mapping` and `file`",
                    other.chars().take(40).collect::<String>()
                )));
            }
        }
    }
    let mapping_text = mapping_text.ok_or_else(|| bad_form("the `mapping` part is missing"))?;
    let (tmp, file_name) = spooled.ok_or_else(|| bad_form("the `file` part is missing"))?;
    let policies = state.policies.get();
    let mapping = Mapping::parse(&mapping_text, &policies).map_err(import::ImportError::from)?;
    let format = q
        .format
        .or(mapping.format)
        .or_else(|| file_name.as_deref().and_then(Format::from_file_name))
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidMapping,
                "say `format = \"csv\"` or `\"ndjson\"` in the mapping or the query: the file name does not tell",
            )
        })?;
    let keyring = state.keyring.get();
    let importer = Importer {
        ingest: Ingest {
            db: &state.db,
            master: &state.master,
            keyring: &keyring,
            audit: &state.audit,
            policies: &policies,
            source: auth.actor(),
            scope: Scope::Import { source: q.source },
            gpc: false,
            request_id: auth.request_id.clone(),
            received_at: state.clock.now(),
        },
        mapping: &mapping,
        dry_run: q.dry_run,
        max_listed_errors: MAX_LISTED_ERRORS,
    };
    let file = tmp
        .reopen()
        .map_err(|e| ApiError::opaque(ErrorCode::Internal, &e))?;
    let report = importer
        .run(
            std::io::BufReader::with_capacity(256 * 1024, file),
            format,
            |_| {},
            |_, _| {},
        )
        .await?;
    Ok(HttpResponse::Ok().json(report))
}
