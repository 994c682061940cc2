//! HTTP: routes, extractors, the error table and the OpenAPI document. Handlers are thin:
//! extract, call one service function, map the result.
pub mod error;
pub mod extract;
mod middleware;
mod openapi;
pub mod routes;

use actix_web::web::{self, ServiceConfig};
use actix_web::{HttpRequest, HttpResponse, Resource};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

pub use middleware::{RootSpan, header_limit, json_errors, metrics_middleware, request_id_header};

use error::{ApiError, ErrorCode};
use openapi::CommonResponses;
use routes::{
    audit, campaigns, catalog, consents, dsar, esp, experiments, imports, keys, oauth, policies,
    recipients, scores, segments, subjects, system, templates, tracking,
};

#[derive(OpenApi)]
#[openapi(
    info(title = "Consentry", description = "Privacy-first consent and compliance gateway. Errors are `{\"error\": {\"code\", \"message\"}}` with a stable code (see README)."),
    paths(
        system::healthz, system::readyz, system::metrics, system::openapi, system::whoami,
        oauth::token,
        keys::create, keys::list, keys::revoke, keys::rotate,
        audit::entries, audit::checkpoint, audit::proof, audit::consistency,
        tracking::identify, tracking::track, tracking::page, tracking::screen,
        tracking::group, tracking::alias, tracking::batch,
        subjects::find, subjects::restrict, subjects::restriction, subjects::lift,
        subjects::hold, subjects::held, subjects::release,
        imports::create,
        policies::ropa, policies::reload,
        consents::record, consents::history, consents::confirm, consents::receipt,
        recipients::create, recipients::list, recipients::get, recipients::rotate,
        recipients::retire, esp::profile, esp::pseudonym, esp::recommendations,
        catalog::load, catalog::train,
        dsar::create, dsar::list, dsar::show, dsar::verify, dsar::extend, dsar::reject,
        dsar::withdraw, dsar::execute, dsar::package, dsar::rectify,
        segments::create, segments::list, segments::get, segments::delete, segments::count,
        segments::preview, segments::export, segments::exports, segments::export_status,
        scores::post, scores::compute,
        templates::create, templates::list, templates::get, templates::delete, templates::render,
        campaigns::create, campaigns::get, campaigns::messages, campaigns::confirm_page,
        campaigns::unsubscribe,
        experiments::create, experiments::get, experiments::results,
    ),
    modifiers(&Security, &CommonResponses),
    tags(
        (name = "system", description = "Health, readiness, metrics, this document"),
        (name = "auth", description = "Tokens and identity"),
        (name = "keys", description = "API keys and the keyring (admin)"),
        (name = "audit", description = "The tamper-evident access log (auditor)"),
        (name = "subjects", description = "Finding subjects and restricting processing (dpo)"),
        (name = "dsar", description = "Data-subject requests and their deadlines (dpo; ingest may file)"),
        (name = "recipients", description = "Recipients (admin) and the minimised profiles an ESP reads (esp)"),
        (name = "segments", description = "Segments checked against their purpose; counts, previews and streamed audience exports through the gate (esp, admin)"),
        (name = "scores", description = "RFM and purchase-propensity scores (admin computes), external scores (ingest posts)"),
        (name = "templates", description = "Handlebars templates checked against their purpose; rendered through the gate (esp, admin)"),
        (name = "campaigns", description = "Campaigns: a template rendered for a segment's members (esp, admin); one-click unsubscribe links (RFC 8058, no authentication)"),
        (name = "recommendations", description = "The product catalogue (ingest, admin) and the recommendation models (admin); blocks are read per person under recipients"),
        (name = "experiments", description = "A/B and multivariate tests run by campaigns: deterministic keyed assignment, a holdout, results with confidence intervals and z-tests (esp, admin)"),
        (name = "policies", description = "The record of processing activities (dpo, auditor) and policy reloads (admin)"),
        (name = "consents", description = "The consent ledger (ingest, dpo)"),
        (name = "imports", description = "Offline CRM, POS and loyalty files (ingest)"),
        (name = "tracking", description = "Segment-compatible tracking API (ingest write key as the HTTP Basic user name)"),
    )
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
        );
    }
}

pub fn openapi_doc() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// A resource whose unlisted methods answer 405 in the API's error shape.
fn resource(path: &str) -> Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.app_data(web::PathConfig::default().error_handler(|e, _| {
        ApiError::new(
            ErrorCode::InvalidPath,
            format!(
                "invalid path parameter: {}",
                error::redact_values(&e.to_string())
            ),
        )
        .into()
    }))
    .service(resource("/healthz").route(web::get().to(system::healthz)))
    .service(resource("/readyz").route(web::get().to(system::readyz)))
    .service(resource("/metrics").route(web::get().to(system::metrics)))
    .service(resource("/openapi.json").route(web::get().to(system::openapi)))
    .service(resource("/oauth/token").route(web::post().to(oauth::token)))
    .service(resource("/v1/whoami").route(web::get().to(system::whoami)))
    .service(
        resource("/v1/keys")
            .route(web::post().to(keys::create))
            .route(web::get().to(keys::list)),
    )
    .service(resource("/v1/keys/{id}").route(web::delete().to(keys::revoke)))
    .service(resource("/v1/keyring/{kind}/rotate").route(web::post().to(keys::rotate)))
    .service(resource("/v1/audit/entries").route(web::get().to(audit::entries)))
    .service(resource("/v1/audit/checkpoint").route(web::get().to(audit::checkpoint)))
    .service(resource("/v1/audit/proof/{seq}").route(web::get().to(audit::proof)))
    .service(resource("/v1/audit/consistency").route(web::get().to(audit::consistency)))
    .service(resource("/v1/subjects").route(web::get().to(subjects::find)))
    .service(resource("/v1/imports").route(web::post().to(imports::create)))
    .service(resource("/v1/consents").route(web::post().to(consents::record)))
    .service(resource("/v1/consents/confirm/{token}").route(web::get().to(consents::confirm)))
    .service(resource("/v1/consents/{id}/receipt").route(web::get().to(consents::receipt)))
    .service(resource("/v1/subjects/{subject_id}/consents").route(web::get().to(consents::history)))
    .service(
        resource("/v1/subjects/{subject_id}/restriction")
            .route(web::put().to(subjects::restrict))
            .route(web::get().to(subjects::restriction))
            .route(web::delete().to(subjects::lift)),
    )
    .service(
        resource("/v1/subjects/{subject_id}/legal-hold")
            .route(web::put().to(subjects::hold))
            .route(web::get().to(subjects::held))
            .route(web::delete().to(subjects::release)),
    )
    .service(
        resource("/v1/recipients")
            .route(web::post().to(recipients::create))
            .route(web::get().to(recipients::list)),
    )
    .service(resource("/v1/recipients/{rid}").route(web::get().to(recipients::get)))
    .service(resource("/v1/recipients/{rid}/keys/rotate").route(web::post().to(recipients::rotate)))
    .service(
        resource("/v1/recipients/{rid}/keys/{version}/retire")
            .route(web::post().to(recipients::retire)),
    )
    .service(
        resource("/v1/recipients/{rid}/profiles/{pseudonym}").route(web::get().to(esp::profile)),
    )
    .service(
        resource("/v1/recipients/{rid}/profiles/{pseudonym}/recommendations")
            .route(web::get().to(esp::recommendations)),
    )
    .service(resource("/v1/recipients/{rid}/pseudonyms").route(web::post().to(esp::pseudonym)))
    .service(
        resource("/v1/dsar")
            .route(web::post().to(dsar::create))
            .route(web::get().to(dsar::list)),
    )
    .service(resource("/v1/dsar/{id}").route(web::get().to(dsar::show)))
    .service(resource("/v1/dsar/{id}/verify").route(web::post().to(dsar::verify)))
    .service(resource("/v1/dsar/{id}/extend").route(web::post().to(dsar::extend)))
    .service(resource("/v1/dsar/{id}/reject").route(web::post().to(dsar::reject)))
    .service(resource("/v1/dsar/{id}/withdraw").route(web::post().to(dsar::withdraw)))
    .service(resource("/v1/dsar/{id}/execute").route(web::post().to(dsar::execute)))
    .service(resource("/v1/dsar/{id}/rectify").route(web::post().to(dsar::rectify)))
    .service(resource("/v1/dsar/{id}/package").route(web::get().to(dsar::package)))
    .service(
        resource("/v1/segments")
            .route(web::post().to(segments::create))
            .route(web::get().to(segments::list)),
    )
    .service(
        resource("/v1/segments/{id}")
            .route(web::get().to(segments::get))
            .route(web::delete().to(segments::delete)),
    )
    .service(resource("/v1/segments/{id}/count").route(web::get().to(segments::count)))
    .service(resource("/v1/segments/{id}/preview").route(web::get().to(segments::preview)))
    .service(resource("/v1/segments/{id}/export").route(web::get().to(segments::export)))
    .service(resource("/v1/segments/{id}/exports").route(web::get().to(segments::exports)))
    .service(resource("/v1/exports/{id}").route(web::get().to(segments::export_status)))
    .service(
        resource("/v1/templates")
            .route(web::post().to(templates::create))
            .route(web::get().to(templates::list)),
    )
    .service(
        resource("/v1/templates/{id}")
            .route(web::get().to(templates::get))
            .route(web::delete().to(templates::delete)),
    )
    .service(resource("/v1/templates/{id}/render").route(web::post().to(templates::render)))
    .service(resource("/v1/campaigns").route(web::post().to(campaigns::create)))
    .service(resource("/v1/campaigns/{id}").route(web::get().to(campaigns::get)))
    .service(resource("/v1/campaigns/{id}/messages").route(web::get().to(campaigns::messages)))
    .service(resource("/v1/experiments").route(web::post().to(experiments::create)))
    .service(resource("/v1/experiments/{id}").route(web::get().to(experiments::get)))
    .service(resource("/v1/experiments/{id}/results").route(web::get().to(experiments::results)))
    .service(
        resource("/u/{token}")
            .route(web::get().to(campaigns::confirm_page))
            .route(web::post().to(campaigns::unsubscribe)),
    )
    .service(resource("/v1/catalog").route(web::post().to(catalog::load)))
    .service(resource("/v1/recommendations/train").route(web::post().to(catalog::train)))
    .service(resource("/v1/scores").route(web::post().to(scores::post)))
    .service(resource("/v1/scores/compute").route(web::post().to(scores::compute)))
    .service(resource("/v1/ropa").route(web::get().to(policies::ropa)))
    .service(resource("/v1/policies/reload").route(web::post().to(policies::reload)))
    .service(resource("/v1/identify").route(web::post().to(tracking::identify)))
    .service(resource("/v1/track").route(web::post().to(tracking::track)))
    .service(resource("/v1/page").route(web::post().to(tracking::page)))
    .service(resource("/v1/screen").route(web::post().to(tracking::screen)))
    .service(resource("/v1/group").route(web::post().to(tracking::group)))
    .service(resource("/v1/alias").route(web::post().to(tracking::alias)))
    .service(resource("/v1/batch").route(web::post().to(tracking::batch)))
    .service(
        utoipa_swagger_ui::SwaggerUi::new("/docs/{_:.*}")
            .config(utoipa_swagger_ui::Config::from("/openapi.json")),
    );
}

pub async fn not_found() -> HttpResponse {
    let err = ApiError::new(
        ErrorCode::NotFound,
        "no such route; the routes are listed at /openapi.json",
    );
    actix_web::ResponseError::error_response(&err)
}

async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    let err = ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!(
            "{} is not allowed on this route; see /openapi.json",
            req.method()
        ),
    );
    let mut resp = actix_web::ResponseError::error_response(&err);
    // RFC 9110 §15.5.6: a 405 lists the methods the route has.
    if let Some(allow) = req
        .match_pattern()
        .and_then(|p| openapi::allowed_methods(&p))
        .and_then(|a| actix_web::http::header::HeaderValue::from_str(a).ok())
    {
        resp.headers_mut()
            .insert(actix_web::http::header::ALLOW, allow);
    }
    resp
}
