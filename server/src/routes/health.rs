//! `/healthz` (the process is up) and `/readyz` (the database answers and its schema is current).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

use crate::state::AppState;

/// `/healthz` and `/readyz`.
pub fn router() -> super::Api {
    use axum::routing::get;
    super::Api::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

/// `{"status": "ok"}` (and further figures in later versions).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Health {
    status: String,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()),
    responses((status = 200, body = Health)))]
pub async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// `{"status": "ready" | "not ready", "database", "migrations"?}`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Readiness {
    status: String,
    database: String,
    migrations: Option<String>,
}

/// The database answers and its schema is current (503 otherwise, saying which).
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let database = state.db.ping().await;
    let migrations = state.db.migrations_current().await;
    match (database, migrations) {
        (Ok(()), Ok(true)) => (
            StatusCode::OK,
            Json(json!({ "status": "ready", "database": "ok", "migrations": "current" })),
        ),
        (Ok(()), Ok(false)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                json!({ "status": "not ready", "database": "ok", "migrations": "pending: run `lora-pipeline migrate`" }),
            ),
        ),
        (db, mig) => {
            tracing::warn!(database = ?db.err(), migrations = ?mig.err(), "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "not ready", "database": "unreachable" })),
            )
        }
    }
}
