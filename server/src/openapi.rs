//! `GET /api/openapi.json`: the OpenAPI 3.1 document of the REST API, generated from the
//! handlers' `#[utoipa::path]` attributes and the wire types' schemas (the engine's types
//! derive `ToSchema` under `ssr`). Nothing in it is written by hand but the prose; the test
//! `tests/openapi.rs` fails when the router serves a route or method the document lacks.

use std::sync::{Arc, OnceLock};

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "lora-pipeline",
        description = "Upload a chat dataset, validate it, train a QLoRA adapter on RunPod or the local executor, \
                       follow it live, download the model. Every answer is `{\"success\": true, \"data\": …}` or \
                       `{\"error\", \"details\"}`; another account's ids answer 404. Scripts authenticate with an API \
                       token (`Authorization: Bearer lpt_…`); pages with the session cookie. docs/API.md explains \
                       partial job requests, the original system's field names and `Idempotency-Key`.",
        license(name = "MIT OR Apache-2.0"),
    ),
    paths(
        routes::accounts::register,
        routes::accounts::login,
        routes::accounts::logout,
        routes::accounts::logout_all,
        routes::accounts::me,
        routes::accounts::invite,
        routes::accounts::budget,
        routes::accounts::set_budget,
        routes::tokens::create,
        routes::tokens::list,
        routes::tokens::revoke,
        routes::datasets::create,
        routes::datasets::list,
        routes::datasets::detail,
        routes::datasets::delete,
        routes::datasets::confirm,
        routes::storage::put,
        routes::storage::get,
        routes::training::catalog,
        routes::training::estimate_job,
        routes::jobs::create,
        routes::jobs::list,
        routes::jobs::detail,
        routes::jobs::cancel,
        routes::jobs::retry,
        routes::jobs::metrics,
        routes::live::job_events,
        routes::live::user_events,
        routes::models::list,
        routes::models::detail,
        routes::models::update,
        routes::models::delete,
        routes::models::download,
        routes::models::bundle,
        routes::models::file,
        routes::costs::costs,
        routes::notifications::list,
        routes::notifications::read,
        routes::notifications::read_all,
        routes::webhooks::show,
        routes::webhooks::set,
        routes::webhooks::remove,
        routes::webhooks::test,
        routes::health::healthz,
        routes::health::readyz,
        crate::metrics::scrape,
        openapi_json,
    ),
    components(schemas(engine::live::DatasetChange, engine::live::NotificationChange)),
    modifiers(&Security),
    security(("token" = []), ("session" = [])),
    tags(
        (name = "account", description = "Registration, sessions, API tokens, the monthly budget."),
        (name = "datasets", description = "Upload through a signed URL, background validation with line-numbered errors."),
        (name = "training", description = "The catalog (GPU types, models, presets) and the authoritative estimate."),
        (name = "jobs", description = "Create, follow (SSE), cancel and retry training jobs."),
        (name = "models", description = "Trained adapters: quality, files, signed downloads."),
        (name = "costs", description = "What jobs cost, by day, GPU, job or type."),
        (name = "notifications", description = "The caller's notifications, and everything of theirs live."),
        (name = "webhooks", description = "One URL per account that receives signed events: job endings and dataset verdicts."),
        (name = "storage", description = "The local store's signed URLs (the signature is the authorisation)."),
        (name = "operations", description = "Health checks and this document."),
    )
)]
pub struct ApiDoc;

/// How callers authenticate: an API token, or the browser's session cookie.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API token (`lpt_…`) from Settings or `POST /api/tokens`.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                engine::accounts::web::SESSION_COOKIE,
                "The browser's session (set by register and login). A state-changing request \
                 with it must carry this site's Origin.",
            ))),
        );
    }
}

/// The document, built once.
pub fn document() -> Arc<utoipa::openapi::OpenApi> {
    static DOCUMENT: OnceLock<Arc<utoipa::openapi::OpenApi>> = OnceLock::new();
    DOCUMENT.get_or_init(|| Arc::new(ApiDoc::openapi())).clone()
}

/// `/api/openapi.json`.
pub fn router() -> routes::Api {
    routes::Api::new().route("/api/openapi.json", axum::routing::get(openapi_json))
}

/// This document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "operations", security(()),
    responses((status = 200, content_type = "application/json", description = "The OpenAPI 3.1 document.")))]
pub async fn openapi_json() -> impl IntoResponse {
    static JSON: OnceLock<String> = OnceLock::new();
    let json = JSON.get_or_init(|| document().to_json().unwrap_or_default());
    ([(header::CONTENT_TYPE, "application/json")], json.as_str())
}
