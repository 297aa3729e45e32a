//! Shared state of the HTTP server; handlers take the parts they need via `FromRef`.

use std::sync::Arc;

use axum::extract::FromRef;
use engine::accounts::web::SessionCookie;
use engine::db::Db;
use engine::storage::Storage;
use leptos::config::LeptosOptions;

use crate::settings::Settings;

#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub storage: Storage,
    /// GPU types and base models on offer (built-in, or the operator's CATALOG_FILE), with
    /// throughput calibrated from finished jobs.
    pub catalog: engine::training::calibration::CatalogHandle,
    pub settings: Arc<Settings>,
    pub leptos_options: LeptosOptions,
    pub cookie: SessionCookie,
    /// Origins allowed to make state-changing browser requests.
    pub allowed_origins: Arc<Vec<String>>,
    /// Live job events, fanned out from Postgres.
    pub hub: engine::live::Hub,
    /// Turns true when the server starts shutting down (ends SSE streams).
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// Live streams open per user on this replica.
    pub streams: crate::routes::live::StreamCounter,
    /// The Prometheus recorder `/metrics` renders.
    pub metrics: crate::metrics::Metrics,
}

impl FromRef<AppState> for LeptosOptions {
    fn from_ref(state: &AppState) -> Self {
        state.leptos_options.clone()
    }
}

impl FromRef<AppState> for Db {
    fn from_ref(state: &AppState) -> Self {
        state.db.clone()
    }
}
