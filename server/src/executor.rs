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
pub(crate) struct WorkerSource;

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

/// The worker's Python when `WORKER_PYTHON` is unset: the environment `lora-pipeline worker
/// install` builds in DATA_DIR, else `python3` from PATH.
pub fn default_python(data_dir: &Path) -> PathBuf {
    let installed = crate::worker_env::env_dir(data_dir).join("bin/python");
    if installed.exists() {
        installed
    } else {
        PathBuf::from("python3")
    }
}

/// An executor, and why its worker cannot train here when it cannot (its Python cannot be run
/// by the worker's user, or lacks torch, transformers or peft): the reason says what fixes it.
pub struct Started {
    pub executor: Executor,
    pub problem: Option<String>,
}

/// Starts an executor running the worker from `worker` (or the embedded copy).
pub async fn start(
    worker: &WorkerSettings,
    data_dir: &Path,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Started> {
    let (python, worker_dir, run_as) = prepare_worker(worker, data_dir).await?;
    let problem = sandbox::check(&python, &worker_dir, run_as.as_ref()).await;
    match &problem {
        None => {
            tracing::info!(python = %python.display(), worker_dir = %worker_dir.display(), slots = worker.slots, user = run_as.as_ref().map(|u| u.name.as_str()).unwrap_or("(this process's)"), "local executor ready")
        }
        Some(problem) => tracing::error!(%problem, "the local executor cannot train here"),
    }
    let cache = match &run_as {
        Some(user) => user.home.join("cache"),
        None => data_dir.join("worker-cache"),
    };
    let executor = Executor::start(
        ExecutorConfig {
            python,
            worker_dir,
            slots: worker.slots,
            retention: DEFAULT_RETENTION,
            env: vec![(
                "LORA_WORKER_CACHE".into(),
                cache.to_string_lossy().into_owned(),
            )],
            run_as,
        },
        shutdown,
    );
    Ok(Started { executor, problem })
}

/// The worker's Python and source, and the user it runs as (prepared: created when it is the
/// dedicated one, with a home it owns).
async fn prepare_worker(
    worker: &WorkerSettings,
    data_dir: &Path,
) -> anyhow::Result<(PathBuf, PathBuf, Option<engine::executor::RunAs>)> {
    let worker_dir = match &worker.worker_dir {
        Some(dir) => dir.clone(),
        None => unpack_worker(data_dir)?,
    };
    if !worker_dir.join("harness.py").is_file() {
        anyhow::bail!("WORKER_DIR {} has no harness.py", worker_dir.display());
    }
    let python = worker
        .python
        .clone()
        .unwrap_or_else(|| default_python(data_dir));
    let run_as = match sandbox::resolve(&worker.user).await? {
        Some((name, uid, gid)) => Some(sandbox::prepare(&name, uid, gid, data_dir).await?),
        None => None,
    };
    Ok((python, worker_dir, run_as))
}

/// For `verify`: whether the local executor's worker can train here. The quick probe `serve`
/// runs at start, then a real import of torch, transformers and peft as the worker's user
/// (seconds); `Ok` carries their versions and whether a CUDA device is visible.
pub async fn check_worker(
    worker: &WorkerSettings,
    data_dir: &Path,
) -> anyhow::Result<Result<String, String>> {
    const IMPORT: &str = "import torch, transformers, peft
print(f'torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, CUDA devices: {torch.cuda.device_count()}')";
    let (python, worker_dir, run_as) = prepare_worker(worker, data_dir).await?;
    if let Some(problem) = sandbox::check(&python, &worker_dir, run_as.as_ref()).await {
        return Ok(Err(problem));
    }
    let mut import = tokio::process::Command::new(&python);
    import
        .args(["-c", IMPORT])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    if let Some(user) = &run_as {
        import.env("HOME", &user.home).uid(user.uid).gid(user.gid);
    }
    let output = import
        .output()
        .await
        .with_context(|| format!("running {}", python.display()))?;
    if output.status.success() {
        Ok(Ok(String::from_utf8_lossy(&output.stdout)
            .trim()
            .to_owned()))
    } else {
        Ok(Err(format!(
            "{} cannot import torch, transformers and peft: {}",
            python.display(),
            engine::format::clip(
                String::from_utf8_lossy(&output.stderr)
                    .trim()
                    .lines()
                    .last()
                    .unwrap_or(""),
                300
            )
        )))
    }
}

/// The worker's own user: who it is, and a home it can write to.
mod sandbox {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    use anyhow::{Context, bail};
    use engine::executor::RunAs;

    use crate::settings::WorkerUser;

    /// The dedicated system user made for the worker when the server runs as root.
    pub const DEDICATED: &str = "lora-worker";

    fn is_root() -> bool {
        std::fs::metadata("/proc/self")
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
            .unwrap_or(false)
    }

    /// uid and gid of `name`, from /etc/passwd.
    async fn lookup(name: &str) -> anyhow::Result<Option<(u32, u32)>> {
        let passwd = tokio::fs::read_to_string("/etc/passwd")
            .await
            .context("reading /etc/passwd")?;
        Ok(passwd.lines().find_map(|line| {
            let mut fields = line.split(':');
            (fields.next()? == name).then_some(())?;
            let _password = fields.next()?;
            Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
        }))
    }

    /// The user the worker runs as, creating the dedicated one when it is missing; `None`:
    /// this process's own user.
    pub async fn resolve(setting: &WorkerUser) -> anyhow::Result<Option<(String, u32, u32)>> {
        let name = match setting {
            WorkerUser::Same => return Ok(None),
            WorkerUser::Auto if !is_root() => return Ok(None),
            WorkerUser::Auto => DEDICATED.to_owned(),
            WorkerUser::Named(name) if !is_root() => bail!(
                "WORKER_USER={name} needs the server to run as root (it starts the worker as \
                 that user); unset it to run the worker as this server's user"
            ),
            WorkerUser::Named(name) => name.clone(),
        };
        if lookup(&name).await?.is_none() && name == DEDICATED {
            tracing::info!(user = DEDICATED, "creating the worker's system user");
            // Racing another process that creates it too is fine: looked up again below.
            let _ = tokio::process::Command::new("useradd")
                .args(["--system", "--user-group", "--no-create-home"])
                .args(["--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin"])
                .arg(DEDICATED)
                .output()
                .await;
        }
        match lookup(&name).await? {
            Some((0, _)) => bail!("WORKER_USER={name} is root: name an unprivileged user"),
            Some((uid, gid)) => Ok(Some((name, uid, gid))),
            None => bail!(
                "the worker's user {name} does not exist and could not be created: create it \
                 (useradd --system {name}) or set WORKER_USER=none"
            ),
        }
    }

    /// DATA_DIR made enterable (its contents stay private: objects/ and run/ are 0700, secrets
    /// 0600) and a home the user owns (cache, temporary files).
    pub async fn prepare(name: &str, uid: u32, gid: u32, data_dir: &Path) -> anyhow::Result<RunAs> {
        let mode = tokio::fs::metadata(data_dir)
            .await
            .with_context(|| format!("reading {}", data_dir.display()))?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            tokio::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(mode | 0o001))
                .await
                .with_context(|| format!("letting the worker enter {}", data_dir.display()))?;
        }
        let home = data_dir.join("worker-home");
        for dir in [home.clone(), home.join("cache"), home.join("tmp")] {
            tokio::fs::create_dir_all(&dir)
                .await
                .with_context(|| format!("creating {}", dir.display()))?;
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .with_context(|| format!("giving {} to {name}", dir.display()))?;
            tokio::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                .await
                .with_context(|| format!("making {} private", dir.display()))?;
        }
        Ok(RunAs {
            name: name.to_owned(),
            uid,
            gid,
            home,
        })
    }

    /// What the probe runs: the worker's source is readable, its home writable, and the
    /// modules it trains with are installed (found, not imported: this takes milliseconds).
    const PROBE: &str = "import sys, os, importlib.util as u
open(sys.argv[1]).close()
if len(sys.argv) > 2: open(os.path.join(sys.argv[2], '.probe'), 'w').close()
missing = [m for m in ('torch', 'transformers', 'peft') if u.find_spec(m) is None]
print(' '.join(missing))";

    /// Runs the probe as the worker will run (its user, its Python); `None` when the worker
    /// can train here, else why not and what fixes it.
    pub async fn check(python: &Path, worker_dir: &Path, run_as: Option<&RunAs>) -> Option<String> {
        let mut probe = tokio::process::Command::new(python);
        probe
            .args(["-c", PROBE])
            .arg(worker_dir.join("harness.py"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default());
        if let Some(user) = run_as {
            probe.arg(user.home.join("tmp")).uid(user.uid).gid(user.gid);
        }
        let who = run_as
            .map(|u| format!("the user {} (WORKER_USER)", u.name))
            .unwrap_or_else(|| "this server's user".to_owned());
        let output = match probe.output().await {
            Ok(output) => output,
            Err(e) => {
                return Some(format!(
                    "The local executor cannot start its worker's Python {} as {who}: {e}. Run \
                     `lora-pipeline worker install` (or set WORKER_PYTHON to a Python with \
                     worker/requirements.txt installed).",
                    python.display()
                ));
            }
        };
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Some(format!(
                "The local executor's worker cannot run as {who} with {} and the worker in {}: \
                 {}. Make them reachable by that user (every parent directory needs o+x; \
                 `lora-pipeline worker install` puts the environment in DATA_DIR), or set \
                 WORKER_USER=none.",
                python.display(),
                worker_dir.display(),
                engine::format::clip(stderr.trim(), 300)
            ));
        }
        let missing = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        if !missing.is_empty() {
            return Some(format!(
                "The local executor's Python ({}) lacks {}: run `lora-pipeline worker install` \
                 and restart (or set WORKER_PYTHON).",
                python.display(),
                missing.replace(' ', ", ")
            ));
        }
        None
    }
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
            // Readable by the worker's own user whatever the umask (our source, not a secret).
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
            let mut dir = path.parent();
            while let Some(parent) = dir.filter(|d| d.starts_with(data_dir.join("worker"))) {
                std::fs::set_permissions(
                    parent,
                    std::os::unix::fs::PermissionsExt::from_mode(0o755),
                )?;
                dir = parent.parent();
            }
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
    let Started { executor, problem } = start(&options.worker, &options.data_dir, stopped).await?;
    if let Some(problem) = problem {
        anyhow::bail!("{problem}");
    }
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
