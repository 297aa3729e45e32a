//! `/healthz` (the process is up), `/readyz` (the database answers and its schema is current;
//! with `?health=1`, for the operator, the platform's health figures too) and `/metrics`.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::state::AppState;

/// `/healthz` and `/readyz`.
pub fn router() -> super::Api {
    use axum::routing::get;
    super::Api::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(crate::metrics::scrape))
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
    /// With `?health=1`: the same figures as `lora-pipeline health` (queue, jobs, failures,
    /// validations, storage), when the database answers. Readiness does not depend on them: a
    /// busy queue is not a reason to take a replica out of its load balancer.
    health: Option<engine::operations::HealthReport>,
}

/// `?health=1` asks for the health figures.
#[derive(serde::Deserialize, utoipa::IntoParams)]
pub struct ReadyQuery {
    /// `1` or `true`: include the health report (for whoever may read `/metrics`: loopback,
    /// or `Authorization: Bearer <METRICS_TOKEN>`).
    health: Option<String>,
}

/// The database answers and its schema is current (503 otherwise, saying which). A load
/// balancer's probe costs two small queries; `?health=1` adds the platform's health figures
/// for the operator (403 for anyone else).
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()), params(ReadyQuery),
    responses((status = 200, body = Readiness), (status = 503, body = Readiness),
              (status = 403, description = "`?health=1` from neither loopback nor a METRICS_TOKEN holder", body = String)))]
pub async fn readyz(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(query): Query<ReadyQuery>,
) -> Response {
    let with_health = matches!(query.health.as_deref(), Some("1" | "true"));
    if with_health && !crate::metrics::may_read(&state, peer, &headers) {
        return crate::metrics::refusal(&state);
    }
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
            )
                .into_response();
        }
    };
    if !with_health {
        return (status, Json(readiness)).into_response();
    }
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
        .into_response()
}
