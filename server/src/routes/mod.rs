//! REST API routes (DESIGN §6.1) and operations endpoints.

pub mod accounts;
pub mod costs;
pub mod datasets;
pub mod health;
pub mod jobs;
pub mod live;
pub mod models;
pub mod notifications;
pub mod storage;
pub mod tokens;
pub mod training;
pub mod webhooks;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::routing::MethodRouter;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::state::AppState;

/// The REST routes, built so that their paths can be listed: axum keeps no list of its own,
/// and the isolation matrix test walks every route (asking each path for its methods).
#[derive(Default)]
pub struct Api {
    router: axum::Router<AppState>,
    paths: Vec<&'static str>,
}

impl Api {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn route(mut self, path: &'static str, methods: MethodRouter<AppState>) -> Self {
        self.router = self.router.route(path, methods);
        self.paths.push(path);
        self
    }

    pub fn merge(mut self, other: Api) -> Self {
        self.router = self.router.merge(other.router);
        self.paths.extend(other.paths);
        self
    }

    pub fn paths(&self) -> &[&'static str] {
        &self.paths
    }

    pub fn into_router(self) -> axum::Router<AppState> {
        self.router
    }
}

/// Every REST route: the API, the live streams, the signed-URL storage endpoints and the health
/// checks.
pub fn api() -> Api {
    compressible().merge(live::router())
}

/// Every REST route but the live streams: the ones whose answers the server compresses. An SSE
/// body is never compressed, and outside the compression layer an open stream does not carry
/// an idle encoder's state either (kilobytes each, 10,000 streams; docs/PERFORMANCE.md).
pub fn compressible() -> Api {
    Api::new()
        .merge(accounts::router())
        .merge(tokens::router())
        .merge(datasets::router())
        .merge(storage::router())
        .merge(training::router())
        .merge(jobs::router())
        .merge(models::router())
        .merge(costs::router())
        .merge(notifications::router())
        .merge(webhooks::router())
        .merge(health::router())
        .merge(crate::openapi::router())
}

/// `Json<T>` whose rejections use our error envelope (400 with the reason).
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::PayloadTooLarge(
                    "the JSON body is larger than 2 MB; send files to their upload URL".into(),
                ))
            }
            Err(rejection) => Err(ApiError::BadRequest(match rejection {
                JsonRejection::MissingJsonContentType(_) => {
                    "send a JSON body with Content-Type: application/json".into()
                }
                // serde's reasons quote field names: at most a message's worth of them.
                other => {
                    engine::format::clip(&other.body_text(), engine::format::MAX_MESSAGE_CHARS)
                        .into_owned()
                }
            })),
        }
    }
}

/// Where a page of a list is: `{page, limit, total}`.
#[derive(serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Pagination {
    pub page: u32,
    pub limit: u32,
    /// Rows in the whole list.
    pub total: i64,
}

/// `?page&limit` of the list endpoints: checked into `fields`, defaulting to page 1 of 20.
pub fn paging(
    page: Option<u32>,
    limit: Option<u32>,
    fields: &mut engine::validation::FieldErrors,
) -> (u32, u32) {
    let limit = limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        fields.add("limit", "Use a limit between 1 and 100.");
    }
    if page == Some(0) {
        fields.add("page", "Pages start at 1.");
    }
    (page.unwrap_or(1), limit)
}

/// Unknown `/api/...` paths answer in the API's envelope, not with an HTML page.
pub async fn api_not_found() -> ApiError {
    ApiError::NotFound
}

/// The `Idempotency-Key` header of a write that creates something or starts paid work.
pub struct IdempotencyHeader(Option<String>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for IdempotencyHeader {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        match parts.headers.get("idempotency-key") {
            None => Ok(Self(None)),
            Some(value) => value
                .to_str()
                .map(|key| Self(Some(key.to_owned())))
                .map_err(|_| {
                    ApiError::BadRequest(engine::idempotency::KeyError::Malformed.to_string())
                }),
        }
    }
}

impl IdempotencyHeader {
    /// The key bound to `operation` and the parsed request; none without the header.
    pub fn bind(
        &self,
        operation: &str,
        request: &impl serde::Serialize,
    ) -> Result<Option<engine::idempotency::IdempotencyKey>, ApiError> {
        self.0
            .as_deref()
            .map(|key| engine::idempotency::IdempotencyKey::new(key, operation, request))
            .transpose()
            .map_err(|e| ApiError::BadRequest(e.to_string()))
    }
}
