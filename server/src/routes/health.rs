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

/// `{"status": "ready" | "not ready", "database", "migrations"?, "health"?}`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Readiness {
    status: &'static str,
    database: &'static str,
    migrations: Option<&'static str>,
    /// The same figures as `lora-pipeline health` (queue, jobs, failures, validations, storage),
    /// when the database answers. Readiness does not depend on them: a busy queue is not a
    /// reason to take a replica out of its load balancer.
    health: Option<engine::operations::HealthReport>,
}

/// The database answers and its schema is current (503 otherwise, saying which), with the
/// platform's health figures.
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let database = state.db.ping().await;
    let migrations = state.db.migrations_current().await;
    let (status, readiness) = match (database, migrations) {
        (Ok(()), Ok(true)) => (
            StatusCode::OK,
            Readiness {
                status: "ready",
                database: "ok",
                migrations: Some("current"),
                health: None,
            },
        ),
        (Ok(()), Ok(false)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Readiness {
                status: "not ready",
                database: "ok",
                migrations: Some("pending: run `lora-pipeline migrate`"),
                health: None,
            },
        ),
        (db, mig) => {
            tracing::warn!(database = ?db.err(), migrations = ?mig.err(), "readiness check failed");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(Readiness {
                    status: "not ready",
                    database: "unreachable",
                    migrations: None,
                    health: None,
                }),
            );
        }
    };
    let health = match engine::operations::report(&state.db).await {
        Ok(report) => Some(report),
        Err(e) => {
            tracing::warn!(error = %e, "could not read the health figures");
            None
        }
    };
    (
        status,
        Json(Readiness {
            health,
            ..readiness
        }),
    )
}
