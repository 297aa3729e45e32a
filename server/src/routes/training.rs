//! `GET /api/catalog` (GPU types with prices, base models, presets) and
//! `POST /api/jobs/estimate` (the authoritative estimate for a configuration).

use axum::extract::State;
use axum::response::IntoResponse;
use engine::datasets::service;
use engine::training::estimate::{DatasetSize, EstimateError, estimate};
use engine::training::{PresetName, TrainingConfig, check_config};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::ApiJson;
use crate::auth::CurrentUser;
use crate::error::{ApiError, ok};
use crate::state::AppState;

/// The catalog and the authoritative estimate.
pub fn router() -> super::Api {
    use axum::routing::{get, post};
    super::Api::new()
        .route("/api/catalog", get(catalog))
        .route("/api/jobs/estimate", post(estimate_job))
}

pub async fn catalog(
    State(state): State<AppState>,
    CurrentUser(_): CurrentUser,
) -> impl IntoResponse {
    let catalog = state.catalog.current();
    let gpus: Vec<_> = catalog
        .gpus
        .iter()
        .map(|g| {
            json!({
                "id": g.id, "name": g.name, "backend": g.backend, "memory_gb": g.memory_gb,
                "price_per_second": g.price_per_second, "price_per_hour": g.price_per_hour(1),
                "throughput": g.throughput, "measured_jobs": g.measured, "available": g.available,
                "unavailable_reason": g.unavailable_reason,
            })
        })
        .collect();
    ok(json!({
        "gpus": gpus,
        "models": catalog.models,
        "presets": {
            "fast": PresetName::Fast.hyperparameters(),
            "balanced": PresetName::Balanced.hyperparameters(),
            "quality": PresetName::Quality.hyperparameters(),
        },
    }))
}

#[derive(Deserialize)]
pub struct EstimateRequest {
    dataset_id: Uuid,
    #[serde(flatten)]
    config: TrainingConfig,
}

pub async fn estimate_job(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiJson(request): ApiJson<EstimateRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let catalog = state.catalog.current();
    check_config(&request.config, &catalog).map_err(ApiError::Validation)?;
    let dataset = service::get(&state.db, user.id, request.dataset_id).await?;
    let (Some(examples), Some(tokens)) = (dataset.total_training_pairs, dataset.total_tokens)
    else {
        return Err(ApiError::conflict("the dataset has not been validated yet"));
    };
    // check_config guarantees both exist.
    let model = catalog
        .model(&request.config.base_model)
        .ok_or(ApiError::NotFound)?;
    let gpu = catalog
        .gpu(&request.config.gpu_type)
        .ok_or(ApiError::NotFound)?;
    let size = DatasetSize {
        examples: examples.max(0) as u64,
        total_tokens: tokens.max(0) as u64,
    };
    match estimate(
        size,
        model,
        gpu,
        request.config.gpu_count,
        &request.config.hyperparameters,
    ) {
        Ok(estimate) => Ok(ok(json!({ "estimate": estimate }))),
        Err(EstimateError::NoExamples) => {
            Err(ApiError::conflict("the dataset has no usable examples"))
        }
        Err(EstimateError::Unsupported) => Err(ApiError::Validation(
            engine::validation::FieldErrors::single(
                "gpu_type",
                "This GPU cannot train this model with this quantization.",
            ),
        )),
    }
}
