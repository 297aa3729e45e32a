//! `/api/webhook`: the account's webhook (one URL), its recent deliveries, a test event.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use engine::webhooks::{self, DeliveryView, WebhookChange, WebhookView};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::ApiJson;
use crate::auth::CurrentUser;
use crate::error::{ApiError, Envelope, ErrorBody, ok};
use crate::state::AppState;

/// `/api/webhook`.
pub fn router() -> super::Api {
    use axum::routing::{get, post};
    super::Api::new()
        .route("/api/webhook", get(show).put(set).delete(remove))
        .route("/api/webhook/test", post(test))
}

/// The webhook (null when none is set) and its latest deliveries, newest first.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookAnswer {
    pub webhook: Option<WebhookView>,
    pub deliveries: Vec<DeliveryView>,
}

/// The account's webhook and its 20 latest deliveries (event, status, attempts, the
/// receiver's last answer).
#[utoipa::path(get, path = "/api/webhook", tag = "webhooks",
    responses((status = 200, body = Envelope<WebhookAnswer>), (status = 401, body = ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<impl IntoResponse, ApiError> {
    let webhook = webhooks::get(&state.db, user.id).await?;
    let deliveries = webhooks::deliveries(&state.db, user.id).await?;
    Ok(ok(WebhookAnswer {
        webhook,
        deliveries,
    }))
}

/// Sets the URL that receives `job.completed`, `job.failed`, `job.cancelled`,
/// `dataset.ready` and `dataset.invalid` as signed POSTs (docs/API.md "Webhooks"). A new
/// webhook gets a secret (`whsec_…`); changing the URL keeps it. 400 when the host resolves to
/// a loopback, private or link-local address and the operator has not allowed those.
#[utoipa::path(put, path = "/api/webhook", tag = "webhooks", request_body = WebhookChange,
    responses((status = 200, body = Envelope<WebhookView>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
pub async fn set(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiJson(change): ApiJson<WebhookChange>,
) -> Result<impl IntoResponse, ApiError> {
    let webhook = webhooks::set(&state.db, user.id, &change, state.settings.gpu.webhooks).await?;
    Ok(ok(webhook))
}

/// Removes the webhook; deliveries not yet sent are dropped.
#[utoipa::path(delete, path = "/api/webhook", tag = "webhooks",
    responses((status = 204, description = "Removed."), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No webhook is set.")))]
pub async fn remove(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<impl IntoResponse, ApiError> {
    webhooks::remove(&state.db, user.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/webhook/test`: the queued `ping` delivery's id.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueuedDelivery {
    pub delivery_id: Uuid,
}

/// Queues a `ping` event to the webhook (delivered and retried like any other).
#[utoipa::path(post, path = "/api/webhook/test", tag = "webhooks",
    responses((status = 202, body = Envelope<QueuedDelivery>), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No webhook is set.")))]
pub async fn test(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<impl IntoResponse, ApiError> {
    let delivery_id = webhooks::ping(&state.db, user.id).await?;
    Ok((StatusCode::ACCEPTED, ok(QueuedDelivery { delivery_id })))
}
