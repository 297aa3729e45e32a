//! One typed client for the RunPod Serverless API (and our local executor, which speaks the
//! same API). One shared connection pool, a timeout on every call, retries with exponential
//! backoff and jitter on 429, 5xx and transport errors — never on other 4xx — and a client-side
//! rate limit below RunPod's per-endpoint limits, so a thousand active jobs never trip them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;

use super::types::*;

#[derive(Debug, thiserror::Error)]
pub enum RunpodError {
    /// 404: the job is unknown (never existed, or its ttl/retention expired).
    #[error("the GPU backend does not know this job (404)")]
    NotFound,
    /// Any other 4xx: our request is wrong; retrying cannot help.
    #[error("the GPU backend rejected the request ({status}): {body}")]
    Rejected { status: u16, body: String },
    /// 429/5xx/timeouts that outlasted the retries.
    #[error("the GPU backend is unavailable: {0}")]
    Unavailable(String),
    /// `/run` got no answer in time: the backend may or may not have accepted the job, so
    /// sending it again could start (and bill) a second run.
    #[error("the GPU backend did not answer the submission in time")]
    Uncertain(String),
    /// A 2xx whose body is not what the API documents.
    #[error("the GPU backend sent a malformed response: {0}")]
    Malformed(String),
}

impl RunpodError {
    /// Worth trying again later (the job itself is not known to be lost).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Malformed(_))
    }
}

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts per call, the first included.
    pub attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 4,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(8),
            timeout: Duration::from_secs(20),
        }
    }
}

/// A token bucket: `rate` calls per second with a burst of `burst`.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(per_10s: f64) -> Self {
        let rate = per_10s / 10.0;
        Self {
            rate,
            burst: rate,
            tokens: rate,
            last: Instant::now(),
        }
    }

    /// Whether a call now would have to wait.
    fn exhausted(&self) -> bool {
        let refilled = self.tokens + self.last.elapsed().as_secs_f64() * self.rate;
        refilled.min(self.burst) < 1.0
    }

    /// How long to wait before a call may go out (and takes the token).
    fn take(&mut self) -> Duration {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

#[derive(Debug)]
struct Limits {
    run: Mutex<Bucket>,
    status: Mutex<Bucket>,
    stream: Mutex<Bucket>,
    cancel: Mutex<Bucket>,
}

#[derive(Debug, Clone, Copy)]
enum Route {
    Run,
    Status,
    Stream,
    Cancel,
    Retry,
    Health,
}

impl Route {
    /// The `endpoint` label of the GPU backend call metrics.
    fn name(self) -> &'static str {
        match self {
            Self::Run => "run",
            Self::Status => "status",
            Self::Stream => "stream",
            Self::Cancel => "cancel",
            Self::Retry => "retry",
            Self::Health => "health",
        }
    }
}

/// The client of one endpoint: `{api_base}/v2/{endpoint_id}` or our executor's equivalent.
#[derive(Debug, Clone)]
pub struct RunpodClient {
    http: reqwest::Client,
    base: String,
    api_key: String,
    retry: RetryPolicy,
    limits: Arc<Limits>,
    /// The `backend` label of its call metrics: `runpod` unless [`Self::labelled`].
    backend: &'static str,
}

impl RunpodClient {
    /// `base` is the endpoint URL, e.g. `https://api.runpod.ai/v2/abc123`.
    pub fn new(base: &str, api_key: &str, retry: RetryPolicy) -> Result<Self, RunpodError> {
        let http = reqwest::Client::builder()
            .timeout(retry.timeout)
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(64)
            .user_agent(concat!("lora-pipeline/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| RunpodError::Unavailable(format!("cannot build the HTTP client: {e}")))?;
        // 90% of RunPod's per-10 s limits, leaving room for other clients of the endpoint.
        let limits = Limits {
            run: Mutex::new(Bucket::new(900.0)),
            status: Mutex::new(Bucket::new(1800.0)),
            stream: Mutex::new(Bucket::new(1800.0)),
            cancel: Mutex::new(Bucket::new(90.0)),
        };
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            api_key: api_key.to_owned(),
            retry,
            limits: Arc::new(limits),
            backend: "runpod",
        })
    }

    /// Names the backend in its call metrics (the embedded executor is `local`).
    pub fn labelled(mut self, backend: &'static str) -> Self {
        self.backend = backend;
        self
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Whether `/stream` calls are at the client's rate limit right now (a call would wait).
    pub async fn stream_saturated(&self) -> bool {
        self.limits.stream.lock().await.exhausted()
    }

    pub async fn run(&self, request: &RunRequest) -> Result<JobRef, RunpodError> {
        self.call(Route::Run, reqwest::Method::POST, "/run", Some(request))
            .await
    }

    pub async fn status(&self, id: &str) -> Result<StatusResponse, RunpodError> {
        self.call::<(), _>(
            Route::Status,
            reqwest::Method::GET,
            &format!("/status/{}", path_segment(id)),
            None,
        )
        .await
    }

    pub async fn stream(&self, id: &str) -> Result<StreamResponse, RunpodError> {
        self.call::<(), _>(
            Route::Stream,
            reqwest::Method::GET,
            &format!("/stream/{}", path_segment(id)),
            None,
        )
        .await
    }

    pub async fn cancel(&self, id: &str) -> Result<JobRef, RunpodError> {
        self.call::<(), _>(
            Route::Cancel,
            reqwest::Method::POST,
            &format!("/cancel/{}", path_segment(id)),
            None,
        )
        .await
    }

    pub async fn retry(&self, id: &str) -> Result<JobRef, RunpodError> {
        self.call::<(), _>(
            Route::Retry,
            reqwest::Method::POST,
            &format!("/retry/{}", path_segment(id)),
            None,
        )
        .await
    }

    pub async fn health(&self) -> Result<HealthResponse, RunpodError> {
        self.call::<(), _>(Route::Health, reqwest::Method::GET, "/health", None)
            .await
    }

    async fn wait_for_rate(&self, route: Route) {
        let bucket = match route {
            Route::Run => &self.limits.run,
            Route::Status => &self.limits.status,
            Route::Stream => &self.limits.stream,
            Route::Cancel => &self.limits.cancel,
            Route::Retry | Route::Health => return,
        };
        let wait = bucket.lock().await.take();
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// One logical call (its retries included), counted and timed by endpoint.
    async fn call<B: serde::Serialize, T: DeserializeOwned>(
        &self,
        route: Route,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, RunpodError> {
        use crate::operations::metrics::{GPU_CALL_DURATION, GPU_CALLS};
        let started = std::time::Instant::now();
        let result = self.call_with_retries(route, method, path, body).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(RunpodError::NotFound) => "not_found",
            Err(_) => "error",
        };
        metrics::histogram!(GPU_CALL_DURATION, "backend" => self.backend, "endpoint" => route.name())
            .record(started.elapsed().as_secs_f64());
        metrics::counter!(GPU_CALLS, "backend" => self.backend, "endpoint" => route.name(), "outcome" => outcome)
            .increment(1);
        result
    }

    async fn call_with_retries<B: serde::Serialize, T: DeserializeOwned>(
        &self,
        route: Route,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, RunpodError> {
        let url = format!("{}{path}", self.base);
        let mut last_error = String::new();
        for attempt in 0..self.retry.attempts.max(1) {
            if attempt > 0 {
                tokio::time::sleep(self.backoff(attempt)).await;
            }
            self.wait_for_rate(route).await;
            let mut request = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(&self.api_key);
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = match request.send().await {
                Ok(r) => r,
                // A submission that may have arrived is never sent twice; one that could not
                // connect certainly did not arrive.
                Err(e) if matches!(route, Route::Run) && !e.is_connect() => {
                    return Err(RunpodError::Uncertain(describe_transport(&e)));
                }
                Err(e) => {
                    last_error = describe_transport(&e);
                    continue;
                }
            };
            let status = response.status();
            if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                last_error = format!("{} from {path}", status.as_u16());
                // RunPod sends Retry-After on 429; honour it within our own ceiling.
                if let Some(seconds) = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                {
                    tokio::time::sleep(Duration::from_secs(seconds).min(self.retry.max_delay))
                        .await;
                }
                continue;
            }
            if status == StatusCode::NOT_FOUND {
                return Err(RunpodError::NotFound);
            }
            let bytes = match response.bytes().await {
                Ok(b) => b,
                Err(e) if matches!(route, Route::Run) && status.is_success() => {
                    return Err(RunpodError::Uncertain(describe_transport(&e)));
                }
                Err(e) => {
                    last_error = describe_transport(&e);
                    continue;
                }
            };
            if !status.is_success() {
                return Err(RunpodError::Rejected {
                    status: status.as_u16(),
                    body: String::from_utf8_lossy(&bytes).chars().take(500).collect(),
                });
            }
            return serde_json::from_slice(&bytes).map_err(|e| {
                // An accepted submission we cannot read is still an accepted submission.
                let wrap = if matches!(route, Route::Run) {
                    RunpodError::Uncertain
                } else {
                    RunpodError::Malformed
                };
                wrap(format!(
                    "{path}: {e} (body starts {:?})",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(120)])
                ))
            });
        }
        Err(RunpodError::Unavailable(format!(
            "{last_error} (after {} attempts)",
            self.retry.attempts
        )))
    }

    /// Exponential backoff with full jitter.
    fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self
            .retry
            .base_delay
            .saturating_mul(1 << attempt.min(10))
            .min(self.retry.max_delay);
        let millis = rand::thread_rng()
            .gen_range(ceiling.as_millis() as u64 / 2..=ceiling.as_millis() as u64);
        Duration::from_millis(millis)
    }
}

fn describe_transport(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "cannot connect".into()
    } else {
        format!("transport error: {e}")
    }
}

/// Job ids come from the backend; keep them from changing the path.
fn path_segment(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_paces() {
        let mut bucket = Bucket::new(100.0); // 10/s, burst 10
        for _ in 0..10 {
            assert_eq!(bucket.take(), Duration::ZERO);
        }
        let wait = bucket.take();
        assert!(wait > Duration::from_millis(50) && wait <= Duration::from_millis(110));
    }

    #[test]
    fn an_exhausted_bucket_says_so_without_taking() {
        let mut bucket = Bucket::new(20.0); // 2/s, burst 2
        assert!(!bucket.exhausted());
        bucket.take();
        bucket.take();
        assert!(bucket.exhausted());
        assert!(bucket.exhausted(), "asking takes nothing");
    }

    #[test]
    fn ids_cannot_escape_the_path() {
        assert_eq!(path_segment("../x?y=1"), "xy1");
        assert_eq!(path_segment("sync-abc_12"), "sync-abc_12");
    }
}
