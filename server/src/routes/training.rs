//! `GET /api/catalog` (GPU types with prices, base models, presets) and
//! `POST /api/jobs/estimate` (the authoritative estimate for a configuration).

use axum::extract::State;
use axum::response::IntoResponse;
use engine::datasets::service;
use engine::jobs::{Adjustment, JobRequest};
use engine::training::estimate::{DatasetSize, Estimate, EstimateError, estimate};
use engine::training::{BaseModel, Hyperparameters, PresetName, TrainingConfig, check_config};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::ApiJson;
use crate::auth::CurrentUser;
use crate::error::{ApiError, Envelope, ErrorBody, ok};
use crate::state::AppState;

/// The catalog and the authoritative estimate.
pub fn router() -> super::Api {
    use axum::routing::{get, post};
    super::Api::new()
        .route("/api/catalog", get(catalog))
        .route("/api/jobs/estimate", post(estimate_job))
}

/// A GPU type as the catalog lists it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CatalogGpu {
    id: String,
    name: String,
    backend: engine::training::Backend,
    memory_gb: u32,
    /// Dollars per GPU per second (billed per second).
    price_per_second: f64,
    price_per_hour: f64,
    /// Training tokens/s on one GPU by `{size}_{quantization}`; a missing key: not offered.
    throughput: std::collections::BTreeMap<String, f64>,
    /// Cells of `throughput` measured from finished jobs: key → how many jobs.
    measured_jobs: std::collections::BTreeMap<String, u32>,
    /// Whether this server can run jobs on it.
    available: bool,
    /// Why not, and what fixes it.
    unavailable_reason: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Presets {
    fast: Hyperparameters,
    balanced: Hyperparameters,
    quality: Hyperparameters,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CatalogAnswer {
    gpus: Vec<CatalogGpu>,
    models: Vec<BaseModel>,
    /// The presets' general values (a model may adjust them: `models[].presets`).
    presets: Presets,
}

/// GPU types with prices and which backend serves them, base models, presets.
#[utoipa::path(get, path = "/api/catalog", tag = "training",
    responses((status = 200, body = Envelope<CatalogAnswer>), (status = 401, body = ErrorBody)))]
pub async fn catalog(
    State(state): State<AppState>,
    CurrentUser(_): CurrentUser,
) -> impl IntoResponse {
    let catalog = state.catalog.current();
    let gpus = catalog
        .gpus
        .iter()
        .map(|g| CatalogGpu {
            id: g.id.clone(),
            name: g.name.clone(),
            backend: g.backend,
            memory_gb: g.memory_gb,
            price_per_second: g.price_per_second,
            price_per_hour: g.price_per_hour(1),
            throughput: g.throughput.clone(),
            measured_jobs: g.measured.clone(),
            available: g.available,
            unavailable_reason: g.unavailable_reason.clone(),
        })
        .collect();
    ok(CatalogAnswer {
        gpus,
        models: catalog.models.clone(),
        presets: Presets {
            fast: PresetName::Fast.hyperparameters(),
            balanced: PresetName::Balanced.hyperparameters(),
            quality: PresetName::Quality.hyperparameters(),
        },
    })
}

/// `POST /api/jobs/estimate`: the same request as `POST /api/jobs` (budget fields ignored),
/// merged over its preset. The answer carries the merged configuration, our `estimate` and the
/// original's keys (`estimated_cost`, `cost_breakdown`, `estimated_duration_hours`,
/// `hourly_rate`, `training_details`).
#[utoipa::path(post, path = "/api/jobs/estimate", tag = "training", request_body = JobRequest,
    responses((status = 200, body = Envelope<EstimateAnswer>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody, description = "No such dataset."),
        (status = 409, body = ErrorBody, description = "The dataset is not validated or has no usable examples.")))]
pub async fn estimate_job(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiJson(request): ApiJson<JobRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let catalog = state.catalog.current();
    let resolved = request.resolve(&catalog).map_err(ApiError::Validation)?;
    let config = resolved.job.config;
    check_config(&config, &catalog).map_err(ApiError::Validation)?;
    let dataset = service::get(&state.db, user.id, request.dataset_id).await?;
    let (Some(examples), Some(tokens)) = (dataset.total_training_pairs, dataset.total_tokens)
    else {
        return Err(ApiError::conflict("the dataset has not been validated yet"));
    };
    // check_config guarantees both exist.
    let model = catalog
        .model(&config.base_model)
        .ok_or(ApiError::NotFound)?;
    let gpu = catalog.gpu(&config.gpu_type).ok_or(ApiError::NotFound)?;
    let size = DatasetSize {
        examples: examples.max(0) as u64,
        total_tokens: tokens.max(0) as u64,
    };
    let estimate = match estimate(size, model, gpu, config.gpu_count, &config.hyperparameters) {
        Ok(estimate) => estimate,
        Err(EstimateError::NoExamples) => {
            return Err(ApiError::conflict("the dataset has no usable examples"));
        }
        Err(EstimateError::Unsupported) => {
            return Err(ApiError::Validation(
                engine::validation::FieldErrors::single(
                    "gpu_type",
                    "This GPU cannot train this model with this quantization.",
                ),
            ));
        }
    };
    let b = &estimate.breakdown;
    let point = b.compute + b.startup + b.storage;
    Ok(ok(EstimateAnswer {
        estimated_cost: point,
        cost_breakdown: json!({
            "compute": b.compute, "startup": b.startup, "storage": b.storage, "total": point,
            "low": estimate.cost.low, "high": estimate.cost.high,
        }),
        // The point estimate's duration: start to adapter uploaded, as billed.
        estimated_duration_hours: estimate.billed_seconds as f64 / 3600.0,
        hourly_rate: estimate.price_per_hour,
        training_details: json!({
            "total_steps": estimate.total_steps,
            "steps_per_epoch": estimate.steps_per_epoch,
            "epochs": config.hyperparameters.epochs,
            "examples": size.examples,
            "total_tokens": size.total_tokens,
            "tokens_processed": estimate.tokens_processed,
            "tokens_per_second": estimate.tokens_per_second,
            "gpu_type": config.gpu_type,
            "gpu_count": config.gpu_count,
            "base_model": config.base_model,
        }),
        config,
        adjustments: resolved.adjustments,
        estimate,
    }))
}

/// `POST /api/jobs/estimate`'s answer: ours and the original's keys.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct EstimateAnswer {
    pub estimate: Estimate,
    /// The request merged over its preset: what `POST /api/jobs` would create.
    pub config: TrainingConfig,
    pub adjustments: Vec<Adjustment>,
    /// The point estimate, dollars.
    pub estimated_cost: f64,
    /// `{compute, startup, storage, total, low, high}`, dollars.
    pub cost_breakdown: serde_json::Value,
    pub estimated_duration_hours: f64,
    /// Dollars per hour for all the job's GPUs.
    pub hourly_rate: f64,
    /// `{total_steps, steps_per_epoch, epochs, examples, total_tokens, tokens_processed,
    /// tokens_per_second, gpu_type, gpu_count, base_model}`.
    pub training_details: serde_json::Value,
}
