//! Typed settings from flags, environment and `.env`, validated at start with messages that say
//! what to fix.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use url::Url;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Which PostgreSQL to use.
#[derive(Debug, Clone)]
pub enum DatabaseSettings {
    /// A server the operator runs (DATABASE_URL); we manage nothing.
    External(Box<PgConnectOptions>),
    /// Our own cluster inside DATA_DIR.
    Managed,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub data_dir: PathBuf,
    pub bind: SocketAddr,
    /// How browsers and GPU workers reach us (origin checks, cookies, signed URLs).
    pub public_url: Url,
    pub log_format: LogFormat,
    /// HMAC key for the local store's signed URLs; every replica must share it. Unset: a random
    /// key kept in DATA_DIR/signing.key.
    pub storage_signing_key: Option<String>,
    /// S3 instead of the local file store, when configured.
    pub s3: Option<engine::storage::S3Settings>,
    /// The operator's GPU/model catalog (TOML); the built-in one when unset.
    pub catalog_file: Option<PathBuf>,
    /// The GPU backend (RunPod, or the embedded local executor) and how jobs are followed.
    pub gpu: GpuSettings,
    /// Proxies whose `X-Forwarded-For` is believed (`TRUSTED_PROXIES`); none: the TCP peer is
    /// the caller.
    pub trusted_proxies: Vec<crate::client_addr::Cidr>,
    /// Who may create an account (`REGISTRATION`; the first account always may), and how often
    /// one address may try (`REGISTRATIONS_PER_HOUR`).
    pub registration: engine::accounts::store::RegistrationPolicy,
    /// Brotli/gzip level of pages and JSON (`COMPRESSION_LEVEL`, 1–9).
    pub compression_level: u32,
    /// Live streams one user may hold open on this replica (`STREAMS_PER_USER`).
    pub streams_per_user: usize,
    /// The bearer token of `/metrics` (`METRICS_TOKEN`); unset: loopback clients only.
    pub metrics_token: Option<String>,
}

/// `COMPRESSION_LEVEL`'s default, chosen with scripts/bench/ssr.sh (docs/PERFORMANCE.md).
pub const DEFAULT_COMPRESSION_LEVEL: u32 = 1;

/// Where training runs.
#[derive(Debug, Clone)]
pub struct GpuSettings {
    /// RunPod (or a standalone `lora-pipeline executor`), when configured.
    pub runpod: Option<RunpodSettings>,
    /// The executor embedded in `serve` (`slots` = 0: none).
    pub executor: WorkerSettings,
    pub processor: engine::jobs::processor::ProcessorConfig,
    /// Background tasks run at once by this replica, per lane.
    pub task_concurrency: engine::tasks::Concurrency,
    /// Where the background tasks may deliver webhooks (`WEBHOOK_ALLOW_PRIVATE`).
    pub webhooks: engine::webhooks::WebhookSettings,
    /// What the maintenance chores keep, and for how long (`RETAIN_*`, `ORPHAN_*`).
    pub retention: engine::maintenance::Retention,
}

#[derive(Debug, Clone)]
pub struct RunpodSettings {
    /// The endpoint URL, e.g. https://api.runpod.ai/v2/abc123.
    pub endpoint_url: String,
    pub api_key: String,
}

/// How the local executor runs the worker.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// The worker's Python; unset: the environment `lora-pipeline worker install` built in
    /// DATA_DIR, else `python3`.
    pub python: Option<PathBuf>,
    /// The worker's source; unset: the copy embedded in the binary, unpacked into DATA_DIR.
    pub worker_dir: Option<PathBuf>,
    pub slots: usize,
    /// Who the worker runs as (`WORKER_USER`).
    pub user: WorkerUser,
}

/// Who the local executor starts the worker as (`WORKER_USER`): code that trains on users'
/// data runs without the server's privileges.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum WorkerUser {
    /// `auto`: as root, the dedicated system user `lora-worker` (created when missing);
    /// otherwise this process's own user (which cannot switch users).
    #[default]
    Auto,
    /// `none`: this process's own user.
    Same,
    /// A system user by name (needs the server to run as root).
    Named(String),
}

impl WorkerUser {
    pub fn parse(value: &str) -> Result<Self, SettingsError> {
        match value.trim() {
            "" | "auto" => Ok(Self::Auto),
            "none" => Ok(Self::Same),
            name if name.len() <= 32
                && name.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'
                }) =>
            {
                Ok(Self::Named(name.to_owned()))
            }
            other => Err(SettingsError(format!(
                "WORKER_USER must be auto, none or a system user's name (got {other:?})"
            ))),
        }
    }
}

impl Default for GpuSettings {
    fn default() -> Self {
        Self {
            runpod: None,
            executor: WorkerSettings {
                python: None,
                worker_dir: None,
                slots: 1,
                user: WorkerUser::Auto,
            },
            processor: engine::jobs::processor::ProcessorConfig::default(),
            task_concurrency: Default::default(),
            webhooks: Default::default(),
            retention: Default::default(),
        }
    }
}

/// Raw GPU options as given; [`parse_gpu`] validates them.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GpuOptions {
    /// RunPod API key. With RUNPOD_ENDPOINT_ID, jobs run on RunPod; unset: the local executor.
    #[arg(
        long = "runpod-api-key",
        env = "RUNPOD_API_KEY",
        hide_env_values = true
    )]
    pub runpod_api_key: Option<String>,
    /// The RunPod Serverless endpoint running the worker image.
    #[arg(long = "runpod-endpoint-id", env = "RUNPOD_ENDPOINT_ID")]
    pub runpod_endpoint_id: Option<String>,
    /// RunPod's API base; point it at a standalone `lora-pipeline executor` to use your own GPUs.
    #[arg(
        long = "runpod-api-url",
        env = "RUNPOD_API_URL",
        default_value = "https://api.runpod.ai/v2"
    )]
    pub runpod_api_url: String,
    /// Python of the worker's environment (the local executor runs the worker with it).
    /// Unset: the one `lora-pipeline worker install` built in DATA_DIR, else python3.
    #[arg(long = "worker-python", env = "WORKER_PYTHON")]
    pub worker_python: Option<PathBuf>,
    /// The worker's source directory; unset: the copy embedded in this binary.
    #[arg(long = "worker-dir", env = "WORKER_DIR")]
    pub worker_dir: Option<PathBuf>,
    /// Who the worker runs as: auto (as root, the dedicated system user lora-worker, created
    /// when missing), none (this server's user) or a system user's name.
    #[arg(long = "worker-user", env = "WORKER_USER", default_value = "auto")]
    pub worker_user: String,
    /// Jobs the embedded local executor runs at once (one per GPU); 0 runs none.
    #[arg(long = "executor-slots", env = "EXECUTOR_SLOTS", default_value_t = 1)]
    pub executor_slots: usize,
    /// Milliseconds between two polls of a running job.
    #[arg(
        long = "job-poll-interval-ms",
        env = "JOB_POLL_INTERVAL_MS",
        default_value_t = 1000
    )]
    pub poll_interval_ms: u64,
    /// A running job with no progress for this many seconds is failed as stalled.
    #[arg(
        long = "job-stall-timeout-s",
        env = "JOB_STALL_TIMEOUT_S",
        default_value_t = 900
    )]
    pub stall_timeout_s: u64,
    /// Seconds of training between two resumable checkpoints (a retry or a lost run continues
    /// from the latest; at most this much training is paid for twice).
    #[arg(
        long = "checkpoint-interval-s",
        env = "CHECKPOINT_INTERVAL_S",
        default_value_t = 600
    )]
    pub checkpoint_interval_s: u64,
    /// Times a run lost with its GPU backend is resumed automatically before the job fails.
    #[arg(
        long = "max-auto-resumes",
        env = "MAX_AUTO_RESUMES",
        default_value_t = 3
    )]
    pub max_auto_resumes: u32,
    /// The worker reports metrics at most once per this many milliseconds.
    #[arg(
        long = "job-report-interval-ms",
        env = "JOB_REPORT_INTERVAL_MS",
        default_value_t = 1000
    )]
    pub report_interval_ms: u64,
    /// Dataset validations this replica runs at once (each reads a whole file); job tasks
    /// keep slots of their own, so uploads never delay them.
    #[arg(
        long = "validation-concurrency",
        env = "VALIDATION_CONCURRENCY",
        default_value_t = 2
    )]
    pub validation_concurrency: usize,
    /// Deliver webhooks to loopback, private and link-local addresses too (a receiver on this
    /// machine or network). Off by default: accounts must not reach the server's own network.
    #[arg(long = "webhook-allow-private", env = "WEBHOOK_ALLOW_PRIVATE")]
    pub webhook_allow_private: bool,
    /// Days finished background tasks are kept.
    #[arg(
        long = "retain-finished-tasks-days",
        env = "RETAIN_FINISHED_TASKS_DAYS",
        default_value_t = 7
    )]
    pub retain_finished_tasks_days: u32,
    /// Days the live-event log of an ended job is kept (its metric points, the charts, stay).
    #[arg(
        long = "retain-job-events-days",
        env = "RETAIN_JOB_EVENTS_DAYS",
        default_value_t = 90
    )]
    pub retain_job_events_days: u32,
    /// Hours after a dataset or model is deleted that its files are certainly removed.
    #[arg(
        long = "retain-deleted-files-hours",
        env = "RETAIN_DELETED_FILES_HOURS",
        default_value_t = 24
    )]
    pub retain_deleted_files_hours: u32,
    /// Orphaned objects (no row owns them): `delete` them once reported for ORPHAN_GRACE_HOURS,
    /// or only `report` them.
    #[arg(long = "orphan-sweep", env = "ORPHAN_SWEEP", default_value = "delete")]
    pub orphan_sweep: String,
    /// Hours an orphan is reported before the sweep deletes it.
    #[arg(
        long = "orphan-grace-hours",
        env = "ORPHAN_GRACE_HOURS",
        default_value_t = 24
    )]
    pub orphan_grace_hours: u32,
}

pub fn parse_gpu(options: &GpuOptions) -> Result<GpuSettings, SettingsError> {
    let key = options
        .runpod_api_key
        .as_deref()
        .map(str::trim)
        .filter(|k| !k.is_empty());
    let endpoint = options
        .runpod_endpoint_id
        .as_deref()
        .map(str::trim)
        .filter(|k| !k.is_empty());
    let runpod = match (key, endpoint) {
        (Some(key), Some(endpoint)) => {
            if !endpoint
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(SettingsError(format!(
                    "RUNPOD_ENDPOINT_ID must be an endpoint id such as abc123xyz (got '{endpoint}')"
                )));
            }
            let base = Url::parse(options.runpod_api_url.trim()).map_err(|e| {
                SettingsError(format!(
                    "RUNPOD_API_URL must be a URL such as https://api.runpod.ai/v2 ({e})"
                ))
            })?;
            Some(RunpodSettings {
                endpoint_url: format!("{}/{endpoint}", base.as_str().trim_end_matches('/')),
                api_key: key.to_owned(),
            })
        }
        (None, None) => None,
        _ => {
            return Err(SettingsError(
                "set both RUNPOD_API_KEY and RUNPOD_ENDPOINT_ID to train on RunPod, or neither to use the local executor".into(),
            ));
        }
    };
    if options.executor_slots > 64 {
        return Err(SettingsError(
            "EXECUTOR_SLOTS must be from 0 (no local executor) to 64".into(),
        ));
    }
    if !(100..=60_000).contains(&options.poll_interval_ms) {
        return Err(SettingsError(
            "JOB_POLL_INTERVAL_MS must be from 100 to 60000".into(),
        ));
    }
    if options.stall_timeout_s < 5 {
        return Err(SettingsError(
            "JOB_STALL_TIMEOUT_S must be at least 5".into(),
        ));
    }
    if !(1..=86_400).contains(&options.checkpoint_interval_s) {
        return Err(SettingsError(
            "CHECKPOINT_INTERVAL_S must be from 1 to 86400".into(),
        ));
    }
    if options.max_auto_resumes > 100 {
        return Err(SettingsError(
            "MAX_AUTO_RESUMES must be from 0 to 100".into(),
        ));
    }
    if !(1..=64).contains(&options.validation_concurrency) {
        return Err(SettingsError(
            "VALIDATION_CONCURRENCY must be from 1 to 64".into(),
        ));
    }
    if options.report_interval_ms > 60_000 {
        return Err(SettingsError(
            "JOB_REPORT_INTERVAL_MS must be from 0 to 60000".into(),
        ));
    }
    Ok(GpuSettings {
        runpod,
        executor: WorkerSettings {
            python: options.worker_python.clone(),
            worker_dir: options.worker_dir.clone(),
            slots: options.executor_slots,
            user: WorkerUser::parse(&options.worker_user)?,
        },
        processor: engine::jobs::processor::ProcessorConfig {
            poll_interval: std::time::Duration::from_millis(options.poll_interval_ms),
            stall_after: std::time::Duration::from_secs(options.stall_timeout_s),
            checkpoint_every: std::time::Duration::from_secs(options.checkpoint_interval_s),
            max_auto_resumes: options.max_auto_resumes,
            report_interval: std::time::Duration::from_millis(options.report_interval_ms),
            ..Default::default()
        },
        task_concurrency: engine::tasks::Concurrency {
            validations: options.validation_concurrency,
            ..Default::default()
        },
        webhooks: engine::webhooks::WebhookSettings {
            allow_private: options.webhook_allow_private,
        },
        retention: parse_retention(options)?,
    })
}

fn parse_retention(options: &GpuOptions) -> Result<engine::maintenance::Retention, SettingsError> {
    const HOUR: u64 = 3600;
    let days = |n: u32| std::time::Duration::from_secs(u64::from(n) * 24 * HOUR);
    let hours = |n: u32| std::time::Duration::from_secs(u64::from(n) * HOUR);
    if options.retain_finished_tasks_days == 0 || options.retain_job_events_days == 0 {
        return Err(SettingsError(
            "RETAIN_FINISHED_TASKS_DAYS and RETAIN_JOB_EVENTS_DAYS must be at least 1".into(),
        ));
    }
    let delete_orphans = match options.orphan_sweep.trim() {
        "delete" => true,
        "report" => false,
        other => {
            return Err(SettingsError(format!(
                "ORPHAN_SWEEP is {other:?}: use delete (after ORPHAN_GRACE_HOURS) or report"
            )));
        }
    };
    Ok(engine::maintenance::Retention {
        finished_tasks: days(options.retain_finished_tasks_days),
        job_events: days(options.retain_job_events_days),
        deleted_files: hours(options.retain_deleted_files_hours),
        orphan_grace: hours(options.orphan_grace_hours),
        delete_orphans,
    })
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(pub String);

/// The default DATA_DIR: /var/lib/lora-pipeline as root (the postgres user must be able to
/// reach it), else the XDG data directory.
pub fn default_data_dir() -> PathBuf {
    let root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    if root {
        return PathBuf::from("/var/lib/lora-pipeline");
    }
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("lora-pipeline");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/share/lora-pipeline"),
        None => PathBuf::from("lora-data"),
    }
}

pub fn parse_database_url(url: Option<&str>) -> Result<DatabaseSettings, SettingsError> {
    match url.map(str::trim).filter(|u| !u.is_empty()) {
        None => Ok(DatabaseSettings::Managed),
        Some(url) => {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(SettingsError(
                    "DATABASE_URL must be a PostgreSQL URL such as postgres://user:password@host:5432/dbname \
                     (or leave it unset to use the managed local database)"
                        .into(),
                ));
            }
            PgConnectOptions::from_str(url)
                .map(|options| DatabaseSettings::External(Box::new(options)))
                .map_err(|e| {
                    SettingsError(format!("DATABASE_URL is not a valid PostgreSQL URL: {e}"))
                })
        }
    }
}

pub fn parse_bind(bind: &str) -> Result<SocketAddr, SettingsError> {
    bind.to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| {
            SettingsError(format!(
                "BIND_ADDR must be host:port, such as 127.0.0.1:3000 or 0.0.0.0:8080 (got '{bind}')"
            ))
        })
}

/// PUBLIC_URL, or the bind address when unset. Must be an absolute http(s) origin.
pub fn parse_public_url(public_url: Option<&str>, bind: SocketAddr) -> Result<Url, SettingsError> {
    let raw = match public_url.map(str::trim).filter(|u| !u.is_empty()) {
        Some(url) => url.to_owned(),
        None => {
            let host = if bind.ip().is_unspecified() {
                "127.0.0.1".to_owned()
            } else {
                bind.ip().to_string()
            };
            return Url::parse(&format!("http://{host}:{}", bind.port())).map_err(|e| {
                SettingsError(format!("cannot derive PUBLIC_URL from BIND_ADDR: {e}"))
            });
        }
    };
    let url = Url::parse(&raw).map_err(|e| {
        SettingsError(format!(
            "PUBLIC_URL must be an absolute URL such as https://lora.example.com (got '{raw}': {e})"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(SettingsError(format!(
            "PUBLIC_URL must start with http:// or https:// and name a host (got '{raw}')"
        )));
    }
    if url.path() != "/" || url.query().is_some() {
        return Err(SettingsError(format!(
            "PUBLIC_URL must be an origin without a path, such as https://lora.example.com (got '{raw}')"
        )));
    }
    Ok(url)
}

impl Settings {
    /// The origin browsers send in the `Origin` header for our pages, e.g. `http://127.0.0.1:3000`.
    pub fn public_origin(&self) -> String {
        self.public_url.origin().ascii_serialization()
    }
}

/// Raw S3 options as given; [`parse_s3`] validates them.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct S3Options {
    /// S3-compatible endpoint, e.g. https://s3.eu-west-1.amazonaws.com or http://127.0.0.1:9000.
    /// Unset: the local file store in DATA_DIR.
    #[arg(long = "s3-endpoint", env = "S3_ENDPOINT")]
    pub endpoint: Option<String>,
    #[arg(long = "s3-region", env = "S3_REGION", default_value = "us-east-1")]
    pub region: String,
    #[arg(
        long = "s3-access-key-id",
        env = "S3_ACCESS_KEY_ID",
        hide_env_values = true
    )]
    pub access_key_id: Option<String>,
    #[arg(
        long = "s3-secret-access-key",
        env = "S3_SECRET_ACCESS_KEY",
        hide_env_values = true
    )]
    pub secret_access_key: Option<String>,
    /// Path-style addressing (MinIO and most self-hosted services need it).
    #[arg(long = "s3-path-style", env = "S3_PATH_STYLE", default_value_t = true, action = clap::ArgAction::Set)]
    pub path_style: bool,
    /// Prefix of the bucket names, e.g. "acme-" → acme-lora-datasets.
    #[arg(
        long = "s3-bucket-prefix",
        env = "S3_BUCKET_PREFIX",
        default_value = ""
    )]
    pub bucket_prefix: String,
}

pub fn parse_s3(options: &S3Options) -> Result<Option<engine::storage::S3Settings>, SettingsError> {
    let Some(endpoint) = options
        .endpoint
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty())
    else {
        return Ok(None);
    };
    let url = Url::parse(endpoint).map_err(|e| {
        SettingsError(format!(
            "S3_ENDPOINT must be a URL such as https://s3.amazonaws.com ({e})"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(SettingsError(
            "S3_ENDPOINT must start with http:// or https://".into(),
        ));
    }
    let (Some(key), Some(secret)) = (
        options.access_key_id.as_deref().filter(|k| !k.is_empty()),
        options
            .secret_access_key
            .as_deref()
            .filter(|k| !k.is_empty()),
    ) else {
        return Err(SettingsError(
            "S3_ENDPOINT is set, so S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY are needed too"
                .into(),
        ));
    };
    let prefix_ok = options
        .bucket_prefix
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !prefix_ok {
        return Err(SettingsError(
            "S3_BUCKET_PREFIX may contain only lower-case letters, digits and '-'".into(),
        ));
    }
    Ok(Some(engine::storage::S3Settings {
        endpoint: endpoint.trim_end_matches('/').to_owned(),
        region: options.region.clone(),
        access_key_id: key.to_owned(),
        secret_access_key: secret.to_owned(),
        path_style: options.path_style,
        bucket_prefix: options.bucket_prefix.clone(),
    }))
}

/// The signing key: the configured one (at least 32 characters), or one generated once and kept
/// in DATA_DIR (readable by the owner only).
pub fn signing_key(settings: &Settings) -> Result<Vec<u8>, SettingsError> {
    if let Some(key) = settings
        .storage_signing_key
        .as_deref()
        .map(str::trim)
        .filter(|k| !k.is_empty())
    {
        if key.len() < 32 {
            return Err(SettingsError(
                "STORAGE_SIGNING_KEY must be at least 32 characters (e.g. `openssl rand -hex 32`)"
                    .into(),
            ));
        }
        return Ok(key.as_bytes().to_vec());
    }
    stored_signing_key(&settings.data_dir)
}

/// The key kept in `data_dir/signing.key`, made on first use (mode 0600); refused when other
/// users may read it.
fn stored_signing_key(data_dir: &std::path::Path) -> Result<Vec<u8>, SettingsError> {
    let path = data_dir.join("signing.key");
    if let Ok(existing) = std::fs::read_to_string(&path)
        && existing.trim().len() >= 32
    {
        // Anyone who can read it can sign download and upload links.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)
            .map(|m| m.permissions().mode())
            .unwrap_or(0);
        if mode & 0o077 != 0 {
            return Err(SettingsError(format!(
                "{} is readable by other users (mode {:o}): run `chmod 600 {}`",
                path.display(),
                mode & 0o777,
                path.display()
            )));
        }
        return Ok(existing.trim().as_bytes().to_vec());
    }
    std::fs::create_dir_all(data_dir).map_err(|e| {
        SettingsError(format!(
            "cannot create DATA_DIR {}: {e}",
            data_dir.display()
        ))
    })?;
    let key =
        uuid::Uuid::new_v4().simple().to_string() + &uuid::Uuid::new_v4().simple().to_string();
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)?;
        file.write_all(key.as_bytes())
    };
    write().map_err(|e| SettingsError(format!("cannot write {}: {e}", path.display())))?;
    Ok(key.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signing_key_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let made = stored_signing_key(dir.path()).unwrap();
        let path = dir.path().join("signing.key");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(stored_signing_key(dir.path()).unwrap(), made, "kept");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let refused = stored_signing_key(dir.path()).unwrap_err().to_string();
        assert!(refused.contains("chmod 600"), "{refused}");
    }

    #[test]
    fn validates_with_helpful_messages() {
        assert!(matches!(
            parse_database_url(None),
            Ok(DatabaseSettings::Managed)
        ));
        assert!(
            parse_database_url(Some("mysql://x"))
                .unwrap_err()
                .0
                .contains("PostgreSQL URL")
        );
        assert!(parse_bind("nonsense").unwrap_err().0.contains("host:port"));
        let bind = parse_bind("0.0.0.0:8080").unwrap();
        assert_eq!(
            parse_public_url(None, bind).unwrap().as_str(),
            "http://127.0.0.1:8080/"
        );
        assert!(parse_public_url(Some("ftp://x"), bind).is_err());
        assert!(
            parse_public_url(Some("https://x.com/app"), bind)
                .unwrap_err()
                .0
                .contains("without a path")
        );
        assert!(parse_public_url(Some("https://lora.example.com"), bind).is_ok());
    }
}
