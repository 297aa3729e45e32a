//! One typed client of the REST API: the token on every call, timeouts, the `{success, data}`
//! envelope unwrapped into the server's own answer types, and errors that say what to do.

use std::time::Duration;

use engine::accounts::UserView;
use engine::datasets::{DatasetView, NewDataset};
use engine::jobs::JobRequest;
use engine::jobs::service::JobDetail;
use engine::models::DownloadLinks;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::{ExitStatus, Remote};
use crate::error::{Envelope, ErrorBody};
use crate::routes::accounts::UserAnswer;
use crate::routes::datasets::{CreatedDataset, DatasetAnswer, DatasetList, Deleted};
use crate::routes::jobs::{CreatedJob, JobAnswer, JobList};
use crate::routes::models::{ModelAnswer, ModelList};
use crate::routes::training::EstimateAnswer;

/// A JSON call's limit; uploads, downloads and streams have none but `READ_TIMEOUT`.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// A stream that sends nothing this long is dead (the server sends a keep-alive every 15 s).
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No answer: the server is down, the URL wrong, or the network cut.
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The server answered with an error; `message` is its reason with any field errors.
    #[error("{message}")]
    Api { status: StatusCode, message: String },
    /// An answer this version of the CLI cannot read.
    #[error("unexpected answer from {url}: {reason}")]
    Unexpected { url: String, reason: String },
}

impl ClientError {
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            Self::Api { status, .. } => match *status {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ExitStatus::Unauthorized,
                StatusCode::NOT_FOUND => ExitStatus::NotFound,
                s if s.is_client_error() => ExitStatus::Refused,
                _ => ExitStatus::Error,
            },
            _ => ExitStatus::Error,
        }
    }

    /// Worth sending again (with the same idempotency key): nothing came back.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Api { status, .. } => matches!(
                *status,
                StatusCode::BAD_GATEWAY
                    | StatusCode::SERVICE_UNAVAILABLE
                    | StatusCode::GATEWAY_TIMEOUT
            ),
            Self::Unexpected { .. } => false,
        }
    }

    fn unreachable(url: &str, error: &reqwest::Error) -> Self {
        let reason = if error.is_timeout() {
            "timed out".to_owned()
        } else if error.is_connect() {
            "connection refused or no route (is the server running, and the URL right?)".into()
        } else {
            // reqwest's own message names only the outermost cause.
            let mut reason = error.to_string();
            let mut source = std::error::Error::source(error);
            while let Some(cause) = source {
                reason = format!("{reason}: {cause}");
                source = cause.source();
            }
            reason
        };
        Self::Unreachable {
            url: url.to_owned(),
            reason,
        }
    }

    /// An error answer, read from the API's `{error, details}` body when it has one.
    async fn from_response(response: Response) -> Self {
        let status = response.status();
        let body = response.bytes().await.unwrap_or_default();
        let message = match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(error) => describe(&error),
            Err(_) => String::from_utf8_lossy(&body)
                .trim()
                .chars()
                .take(300)
                .collect(),
        };
        let message = match status {
            StatusCode::UNAUTHORIZED => format!(
                "the server refused the token ({message}): make a new one on Settings → API \
                 tokens and run `lora-pipeline login`"
            ),
            _ if message.is_empty() => format!("the server answered {status}"),
            _ => message,
        };
        Self::Api { status, message }
    }
}

/// `validation failed: epochs: Use 1 to 20.; rank: …` — the reason and every field's hint.
fn describe(error: &ErrorBody) -> String {
    let mut message = error.error.clone();
    match &error.details {
        serde_json::Value::Object(details) => {
            if let Some(serde_json::Value::Object(fields)) = details.get("fields") {
                for (field, hint) in fields {
                    let hint = hint
                        .as_str()
                        .map_or_else(|| hint.to_string(), str::to_owned);
                    message.push_str(&format!("\n  {field}: {hint}"));
                }
            }
            if let Some(after) = details.get("retry_after_seconds") {
                message.push_str(&format!(" (try again in {after} s)"));
            }
        }
        serde_json::Value::String(reason) if !reason.is_empty() => {
            message.push_str(": ");
            message.push_str(reason);
        }
        _ => {}
    }
    message
}

/// The API of one server, as one account.
#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl ApiClient {
    pub fn new(remote: &Remote) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("lora-pipeline-cli/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(READ_TIMEOUT)
            .build()?;
        Ok(Self {
            http,
            base: remote.url.clone(),
            token: remote.token.clone(),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A call to the API: the token, and the JSON-call timeout unless `streaming`.
    pub fn request(&self, method: Method, path: &str, streaming: bool) -> RequestBuilder {
        let request = self
            .http
            .request(method, self.url(path))
            .bearer_auth(&self.token);
        if streaming {
            request
        } else {
            request.timeout(CALL_TIMEOUT)
        }
    }

    /// A signed storage URL: no token (it is not ours to send to S3), no overall timeout.
    pub fn signed(&self, method: Method, url: &str) -> RequestBuilder {
        self.http.request(method, url)
    }

    /// Sends `request`; a non-success answer becomes [`ClientError::Api`].
    pub async fn send(&self, request: RequestBuilder) -> Result<Response, ClientError> {
        let (client, request) = request.build_split();
        let request = request.map_err(|e| ClientError::unreachable(&self.base, &e))?;
        let url = request.url().to_string();
        let response = client
            .execute(request)
            .await
            .map_err(|e| ClientError::unreachable(&url, &e))?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(ClientError::from_response(response).await)
        }
    }

    /// Sends `request` and reads `data` of its envelope.
    async fn data<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T, ClientError> {
        let response = self.send(request).await?;
        let url = response.url().to_string();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ClientError::unreachable(&url, &e))?;
        serde_json::from_slice::<Envelope<T>>(&bytes)
            .map(|envelope| envelope.data)
            .map_err(|e| ClientError::Unexpected {
                url,
                reason: format!("{e} (is this a lora-pipeline server of the same version?)"),
            })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.data(self.request(Method::GET, path, false)).await
    }

    async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
        idempotency_key: Option<&str>,
    ) -> Result<T, ClientError> {
        let mut request = self.request(Method::POST, path, false).json(body);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        self.data(request).await
    }

    /// Sends a write again after a lost answer, with the same idempotency key: the server
    /// answers with the first result and starts nothing twice.
    async fn post_retrying<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, ClientError> {
        let key = Uuid::new_v4().to_string();
        let mut delay = Duration::from_millis(500);
        let mut attempt = 1;
        loop {
            match self.post(path, body, Some(&key)).await {
                Err(e) if e.is_transient() && attempt < 4 => {
                    eprintln!(
                        "{e}; trying again in {} ms (same request, nothing doubles)",
                        delay.as_millis()
                    );
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    pub async fn me(&self) -> Result<UserView, ClientError> {
        self.get::<UserAnswer>("/api/auth/me").await.map(|a| a.user)
    }

    pub async fn create_dataset(&self, new: &NewDataset) -> Result<CreatedDataset, ClientError> {
        self.post_retrying("/api/datasets", new).await
    }

    pub async fn confirm_dataset(&self, id: Uuid) -> Result<DatasetView, ClientError> {
        self.post::<DatasetAnswer>(&format!("/api/datasets/{id}/confirm"), &(), None)
            .await
            .map(|a| a.dataset)
    }

    pub async fn dataset(&self, id: Uuid) -> Result<DatasetView, ClientError> {
        self.get(&format!("/api/datasets/{id}")).await
    }

    pub async fn datasets(&self, page: u32, limit: u32) -> Result<DatasetList, ClientError> {
        self.get(&format!("/api/datasets?page={page}&limit={limit}"))
            .await
    }

    pub async fn delete_dataset(&self, id: Uuid) -> Result<Deleted, ClientError> {
        self.data(self.request(Method::DELETE, &format!("/api/datasets/{id}"), false))
            .await
    }

    pub async fn estimate(&self, request: &JobRequest) -> Result<EstimateAnswer, ClientError> {
        self.post("/api/jobs/estimate", request, None).await
    }

    pub async fn create_job(&self, request: &JobRequest) -> Result<CreatedJob, ClientError> {
        self.post_retrying("/api/jobs", request).await
    }

    pub async fn jobs(&self, page: u32, limit: u32) -> Result<JobList, ClientError> {
        self.get(&format!("/api/jobs?page={page}&limit={limit}"))
            .await
    }

    pub async fn job(&self, id: Uuid) -> Result<JobDetail, ClientError> {
        self.get(&format!("/api/jobs/{id}")).await
    }

    pub async fn cancel_job(&self, id: Uuid) -> Result<JobAnswer, ClientError> {
        self.post(&format!("/api/jobs/{id}/cancel"), &(), None)
            .await
    }

    pub async fn retry_job(&self, id: Uuid) -> Result<JobAnswer, ClientError> {
        self.post_retrying(&format!("/api/jobs/{id}/retry"), &())
            .await
    }

    pub async fn models(
        &self,
        page: u32,
        limit: u32,
        by_quality: bool,
    ) -> Result<ModelList, ClientError> {
        let sort = if by_quality { "quality" } else { "created_at" };
        self.get(&format!(
            "/api/models?page={page}&limit={limit}&sort={sort}"
        ))
        .await
    }

    pub async fn model(&self, id: Uuid) -> Result<ModelAnswer, ClientError> {
        self.get(&format!("/api/models/{id}")).await
    }

    pub async fn download_links(&self, id: Uuid) -> Result<DownloadLinks, ClientError> {
        self.post(
            &format!("/api/models/{id}/download"),
            &serde_json::json!({}),
            None,
        )
        .await
    }
}

/// An id from the command line; anything else is not found, as the server would say.
pub fn parse_id(kind: &str, raw: &str) -> Result<Uuid, super::Failure> {
    Uuid::parse_str(raw.trim()).map_err(|_| {
        super::Failure::new(
            ExitStatus::NotFound,
            format!("{raw:?} is not a {kind} id (a UUID, as `lora-pipeline {kind}s list` shows)"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_errors_are_spelled_out() {
        let body = ErrorBody {
            error: "validation failed".into(),
            details: serde_json::json!({"fields": {"epochs": "Use 1 to 20."}}),
        };
        assert_eq!(describe(&body), "validation failed\n  epochs: Use 1 to 20.");
        let body = ErrorBody {
            error: "too many requests".into(),
            details: serde_json::json!({"retry_after_seconds": 30}),
        };
        assert_eq!(describe(&body), "too many requests (try again in 30 s)");
    }

    #[test]
    fn statuses_map_to_exit_codes() {
        let api = |status| ClientError::Api {
            status,
            message: String::new(),
        };
        assert_eq!(
            api(StatusCode::UNAUTHORIZED).exit_status(),
            ExitStatus::Unauthorized
        );
        assert_eq!(
            api(StatusCode::NOT_FOUND).exit_status(),
            ExitStatus::NotFound
        );
        assert_eq!(api(StatusCode::CONFLICT).exit_status(), ExitStatus::Refused);
        assert_eq!(
            api(StatusCode::INTERNAL_SERVER_ERROR).exit_status(),
            ExitStatus::Error
        );
        assert!(api(StatusCode::BAD_GATEWAY).is_transient());
        assert!(!api(StatusCode::CONFLICT).is_transient());
    }
}
