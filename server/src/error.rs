//! The one error type of the REST API, and how each variant looks on the wire.
//!
//! Body: `{"error": "<short message>", "details": …}` with a proper status. Internal errors are
//! logged with their cause and answered with a generic message: no SQL, no internals.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use engine::accounts::store::{LoginError, RegisterError, TokenError};
use engine::error::{Classify, ErrorKind};
use engine::validation::FieldErrors;
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the input broke a rule; `details.fields` says which field and why.
    #[error("validation failed")]
    Validation(FieldErrors),
    /// 400: the body could not be read as the expected JSON.
    #[error("malformed request: {0}")]
    BadRequest(String),
    /// 401: no valid session or token.
    #[error("authentication required")]
    Unauthorized,
    /// 401: login with unknown email or wrong password (deliberately not saying which).
    #[error("invalid email or password")]
    InvalidCredentials,
    /// 403: a state-changing request from another origin, or without one.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such resource — also for other tenants' ids, so ids leak nothing.
    #[error("not found")]
    NotFound,
    /// 413: the body (or the declared file size) is over the limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 409: the request conflicts with existing state (e.g. duplicate email).
    #[error("{message}")]
    Conflict {
        message: String,
        fields: FieldErrors,
    },
    /// 429: too many attempts.
    #[error("too many attempts; try again in {retry_after_s} seconds")]
    RateLimited { retry_after_s: u64 },
    /// 500: our fault; the cause is logged, never shown.
    #[error("internal error: {0}")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn internal(error: impl Into<anyhow::Error>) -> Self {
        Self::Internal(error.into())
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::Validation(_) | Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized | Self::InvalidCredentials => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (error, details): (String, Value) = match &self {
            Self::Validation(fields) => ("validation failed".into(), json!({ "fields": fields })),
            Self::BadRequest(reason) => ("malformed request".into(), json!(reason)),
            Self::PayloadTooLarge(reason) => ("too large".into(), json!(reason)),
            Self::Conflict { message, fields } => (message.clone(), json!({ "fields": fields })),
            Self::RateLimited { retry_after_s } => (
                self.to_string(),
                json!({ "retry_after_seconds": retry_after_s }),
            ),
            Self::Internal(cause) => {
                tracing::error!(error = ?cause, "request failed");
                if cause
                    .chain()
                    .any(|e| e.downcast_ref::<sqlx::Error>().is_some())
                {
                    metrics::counter!(engine::operations::metrics::DATABASE_ERRORS).increment(1);
                }
                (
                    "internal error".into(),
                    json!("something went wrong on our side; try again later"),
                )
            }
            other => (other.to_string(), Value::Null),
        };
        let mut response = (status, Json(ErrorBody { error, details })).into_response();
        if let Self::RateLimited { retry_after_s } = self
            && let Ok(value) = HeaderValue::from_str(&retry_after_s.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        Self::Internal(error.into())
    }
}

impl ApiError {
    /// A conflict without field errors.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::Conflict {
            message: message.into(),
            fields: FieldErrors::new(),
        }
    }

    /// The one conversion from an engine error, by its kind.
    pub fn from_engine(error: impl Classify) -> Self {
        match error.kind() {
            ErrorKind::NotFound => Self::NotFound,
            ErrorKind::Invalid(fields) => Self::Validation(fields),
            ErrorKind::TooLarge { message, .. } => Self::PayloadTooLarge(message),
            ErrorKind::Conflict { message, fields } => Self::Conflict { message, fields },
            ErrorKind::InvalidCredentials => Self::InvalidCredentials,
            ErrorKind::Forbidden(message) => Self::Forbidden(message),
            ErrorKind::RateLimited { retry_after_s } => Self::RateLimited { retry_after_s },
            ErrorKind::Internal => Self::internal(error),
        }
    }
}

/// `?` on every engine error in a handler.
macro_rules! from_engine_errors {
    ($($error:ty),+ $(,)?) => {
        $(impl From<$error> for ApiError {
            fn from(error: $error) -> Self {
                Self::from_engine(error)
            }
        })+
    };
}

from_engine_errors!(
    RegisterError,
    LoginError,
    TokenError,
    engine::datasets::service::DatasetError,
    engine::jobs::service::JobError,
    engine::models::service::ModelError,
    engine::costs::report::CostError,
    engine::webhooks::WebhookError,
);

/// The success envelope: `{"success": true, "data": …}`.
#[derive(serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Envelope<T> {
    /// Always `true`.
    pub success: bool,
    pub data: T,
}

/// Every failure: `{"error": "<short>", "details": …}` with the status that says what happened.
#[derive(serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A short message for people (`validation failed`, `not found`, a conflict's reason).
    pub error: String,
    /// `{"fields": {"<field>": "<what to do>"}}` for 400 and 409 with field errors; a reason
    /// (string) for malformed or too-large requests; `{"retry_after_seconds"}` for 429;
    /// `null` otherwise.
    pub details: Value,
}

/// `data` in the success envelope, serialized straight from its type: no `Value` tree is built
/// in between (a page of 100 jobs is written once).
pub fn ok<T: serde::Serialize>(data: T) -> Json<Envelope<T>> {
    Json(Envelope {
        success: true,
        data,
    })
}
