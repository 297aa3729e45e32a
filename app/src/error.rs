//! The error type of every server function: what the UI can show, never internals.

use std::collections::BTreeMap;

use leptos::server_fn::codec::JsonEncoding;
use leptos::server_fn::error::{FromServerFnError, ServerFnErrorErr};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub enum AppError {
    /// Some fields broke a rule: shown beside each field.
    #[error("{message}")]
    Invalid {
        message: String,
        fields: BTreeMap<String, String>,
    },
    #[error("Your session has ended. Log in again.")]
    Unauthorized,
    #[error("Not found.")]
    NotFound,
    /// Signed in, but not allowed to do this (the message says why).
    #[error("{0}")]
    Forbidden(String),
    #[error("Too many attempts. Try again in {0} seconds.")]
    RateLimited(u64),
    #[error("Something went wrong on our side. Try again in a moment.")]
    Internal,
    /// The request never got a proper answer (network down, server restarting).
    #[error("Could not reach the server ({0}). Check your connection and try again.")]
    Transport(String),
}

impl AppError {
    pub fn field(&self, name: &str) -> Option<String> {
        match self {
            Self::Invalid { fields, .. } => fields.get(name).cloned(),
            _ => None,
        }
    }

    pub fn invalid(message: impl Into<String>, fields: engine::validation::FieldErrors) -> Self {
        Self::Invalid {
            message: message.into(),
            fields: fields.0,
        }
    }

    /// Logs the cause and returns the generic message.
    #[cfg(feature = "ssr")]
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "server function failed");
        Self::Internal
    }
}

#[cfg(feature = "ssr")]
impl AppError {
    /// The one conversion from an engine error, by its kind.
    pub fn from_engine(error: impl engine::error::Classify) -> Self {
        use engine::error::ErrorKind;
        match error.kind() {
            ErrorKind::NotFound => Self::NotFound,
            ErrorKind::Invalid(fields) => Self::invalid("Check the highlighted fields.", fields),
            ErrorKind::TooLarge { field, message } => Self::invalid(
                message.clone(),
                engine::validation::FieldErrors::single(field, message),
            ),
            ErrorKind::Conflict { message, fields } => Self::Invalid {
                message,
                fields: fields.0,
            },
            ErrorKind::InvalidCredentials => Self::Invalid {
                message: "The email or password is not right.".into(),
                fields: BTreeMap::new(),
            },
            ErrorKind::RateLimited { retry_after_s } => Self::RateLimited(retry_after_s),
            ErrorKind::Forbidden(message) => Self::Forbidden(message),
            ErrorKind::Internal => Self::internal(error),
        }
    }
}

/// `?` on every engine error in a server function.
#[cfg(feature = "ssr")]
macro_rules! from_engine_errors {
    ($($error:ty),+ $(,)?) => {
        $(impl From<$error> for AppError {
            fn from(error: $error) -> Self {
                Self::from_engine(error)
            }
        })+
    };
}

#[cfg(feature = "ssr")]
from_engine_errors!(
    engine::accounts::store::TokenError,
    engine::datasets::service::DatasetError,
    engine::jobs::service::JobError,
    engine::models::service::ModelError,
    engine::costs::report::CostError,
    engine::webhooks::WebhookError,
);

impl FromServerFnError for AppError {
    type Encoder = JsonEncoding;

    fn from_server_fn_error(value: ServerFnErrorErr) -> Self {
        Self::Transport(value.to_string())
    }
}
