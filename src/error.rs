//! What kind of failure an engine error is. Each operation keeps its own error enum (with its
//! causes); [`Classify`] says which kind it is, so each boundary — the REST API's `ApiError`,
//! the server functions' `AppError` — needs one conversion for every engine error.

use crate::validation::FieldErrors;

#[derive(Debug, Clone, PartialEq)]
pub enum ErrorKind {
    /// No such thing — or another tenant's: ids leak nothing.
    NotFound,
    /// The input broke rules; the fields say which and why.
    Invalid(FieldErrors),
    /// Over a size limit; `field` is the input that is too large, `message` says the limit.
    TooLarge {
        field: &'static str,
        message: String,
    },
    /// The request conflicts with the current state (a duplicate, a job that has ended).
    Conflict {
        message: String,
        fields: FieldErrors,
    },
    /// Wrong email or password (never saying which).
    InvalidCredentials,
    /// Not allowed, whoever asks (registration closed, no invite); the message says what to do.
    Forbidden(String),
    /// Too many attempts.
    RateLimited { retry_after_s: u64 },
    /// Our fault: the error's own message is the cause to log, never shown.
    Internal,
}

impl ErrorKind {
    /// A conflict explained by `message` alone.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::Conflict {
            message: message.into(),
            fields: FieldErrors::new(),
        }
    }
}

/// An engine error that knows its [`ErrorKind`].
pub trait Classify: std::error::Error + Send + Sync + 'static {
    fn kind(&self) -> ErrorKind;
}
