//! The local executor over HTTP: RunPod's Serverless routes (`/v2/{endpoint}/run`, `/status`,
//! `/stream`, `/cancel`, `/retry`, `/purge-queue`, `/health`) in front of
//! [`engine::executor::Executor`]. Mounted under `/executor` inside `serve` when no RunPod key
//! is configured, or served alone by `lora-pipeline executor` on a GPU box.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use engine::executor::{DEFAULT_RETENTION, Executor, ExecutorConfig, ExecutorError};
use engine::runpod::RunRequest;
use rust_embed::RustEmbed;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::settings::WorkerSettings;

/// The worker's Python source, shipped inside the binary.
#[derive(RustEmbed)]
#[folder = "$CARGO_MANIFEST_DIR/../worker"]
#[include = "*.py"]
#[include = "contract/*.json"]
#[include = "requirements*.txt"]
#[exclude = "tests/*"]
#[exclude = "bench/*"]
#[exclude = "**/__pycache__/*"]
struct WorkerSource;

#[derive(Clone)]
struct ExecutorState {
    executor: Executor,
    api_key: Arc<str>,
}

/// The executor's routes; every call needs `Authorization: Bearer <api_key>`.
pub fn router(executor: Executor, api_key: &str) -> Router {
    let state = ExecutorState {
        executor,
        api_key: api_key.into(),
    };
    Router::new()
        .route("/v2/{endpoint}/run", post(run))
        .route("/v2/{endpoint}/status/{id}", get(status).post(status))
        .route("/v2/{endpoint}/stream/{id}", get(stream).post(stream))
        .route("/v2/{endpoint}/cancel/{id}", post(cancel))
        .route("/v2/{endpoint}/retry/{id}", post(retry))
        .route("/v2/{endpoint}/purge-queue", post(purge_queue))
        .route("/v2/{endpoint}/health", get(health))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state)
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

async fn authorize(State(state): State<ExecutorState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let expected = state.api_key.as_bytes();
    // Constant-time comparison of equal-length keys.
    let equal = presented.len() == expected.len()
        && presented
            .bytes()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !equal {
        return error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized: send Authorization: Bearer <api key>",
        );
    }
    next.run(request).await
}

fn respond<T: serde::Serialize>(result: Result<T, ExecutorError>) -> Response {
    match result {
        Ok(value) => Json(value).into_response(),
        Err(ExecutorError::NotFound) => error(StatusCode::NOT_FOUND, "job not found"),
        Err(ExecutorError::BadRequest(message)) => error(StatusCode::BAD_REQUEST, &message),
    }
}

async fn run(State(state): State<ExecutorState>, body: axum::body::Bytes) -> Response {
    match serde_json::from_slice::<RunRequest>(&body) {
        Ok(request) => respond(state.executor.run(request)),
        Err(e) => error(
            StatusCode::BAD_REQUEST,
            &format!("the body must be {{\"input\": {{...}}}}: {e}"),
        ),
    }
}

async fn status(
    State(state): State<ExecutorState>,
    UrlPath((_, id)): UrlPath<(String, String)>,
) -> Response {
    respond(state.executor.status(&id))
}

async fn stream(
    State(state): State<ExecutorState>,
    UrlPath((_, id)): UrlPath<(String, String)>,
) -> Response {
    respond(state.executor.stream(&id))
}

async fn cancel(
    State(state): State<ExecutorState>,
    UrlPath((_, id)): UrlPath<(String, String)>,
) -> Response {
    respond(state.executor.cancel(&id))
}

async fn retry(
    State(state): State<ExecutorState>,
    UrlPath((_, id)): UrlPath<(String, String)>,
) -> Response {
    respond(state.executor.retry(&id))
}

async fn purge_queue(State(state): State<ExecutorState>) -> Response {
    Json(state.executor.purge_queue()).into_response()
}

async fn health(State(state): State<ExecutorState>) -> Response {
    Json(state.executor.health()).into_response()
}

/// Starts an executor running the worker from `worker` (or the embedded copy).
pub fn start(
    worker: &WorkerSettings,
    data_dir: &Path,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Executor> {
    let worker_dir = match &worker.worker_dir {
        Some(dir) => dir.clone(),
        None => unpack_worker(data_dir)?,
    };
    if !worker_dir.join("harness.py").is_file() {
        anyhow::bail!("WORKER_DIR {} has no harness.py", worker_dir.display());
    }
    tracing::info!(python = %worker.python.display(), worker_dir = %worker_dir.display(), slots = worker.slots, "local executor ready");
    Ok(Executor::start(
        ExecutorConfig {
            python: worker.python.clone(),
            worker_dir,
            slots: worker.slots,
            retention: DEFAULT_RETENTION,
            env: vec![(
                "LORA_WORKER_CACHE".into(),
                data_dir.join("worker-cache").to_string_lossy().into_owned(),
            )],
        },
        shutdown,
    ))
}

/// Writes the embedded worker into DATA_DIR/worker/<content hash>/ (once per version).
fn unpack_worker(data_dir: &Path) -> anyhow::Result<PathBuf> {
    let mut names: Vec<_> = WorkerSource::iter().collect();
    names.sort();
    let mut hasher = Sha256::new();
    for name in &names {
        if let Some(file) = WorkerSource::get(name) {
            hasher.update(name.as_bytes());
            hasher.update(&file.data);
        }
    }
    let version = hex::encode(&hasher.finalize()[..8]);
    let dir = data_dir.join("worker").join(&version);
    if dir.join("harness.py").is_file() {
        return Ok(dir);
    }
    let partial = data_dir
        .join("worker")
        .join(format!(".{version}-{}", std::process::id()));
    for name in &names {
        if let Some(file) = WorkerSource::get(name) {
            let path = partial.join(name.as_ref());
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            std::fs::write(&path, &file.data)
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    // Another process may have unpacked the same version meanwhile; either copy is fine.
    if std::fs::rename(&partial, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&partial);
    }
    Ok(dir)
}

pub struct Standalone {
    pub bind: SocketAddr,
    pub api_key: String,
    pub worker: WorkerSettings,
    pub data_dir: PathBuf,
}

/// `lora-pipeline executor`: the RunPod API over this machine's GPUs, until SIGINT/SIGTERM.
pub async fn serve_standalone(options: Standalone) -> anyhow::Result<()> {
    std::fs::create_dir_all(&options.data_dir)
        .with_context(|| format!("creating DATA_DIR {}", options.data_dir.display()))?;
    let (stop, stopped) = watch::channel(false);
    let executor = start(&options.worker, &options.data_dir, stopped)?;
    let listener = tokio::net::TcpListener::bind(options.bind)
        .await
        .with_context(|| format!("cannot listen on {} (EXECUTOR_BIND)", options.bind))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "executor listening; point RUNPOD_API_URL at http://{addr}/v2");
    // Machine-readable for scripts and tests that bind port 0.
    println!("executor listening on http://{addr}/v2");
    axum::serve(listener, router(executor, &options.api_key))
        .with_graceful_shutdown(crate::startup::shutdown_signal())
        .await
        .context("executor HTTP server failed")?;
    // Stops the scheduler and kills running workers.
    let _ = stop.send(true);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    Ok(())
}
