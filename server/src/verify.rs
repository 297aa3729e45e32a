//! `lora-pipeline verify`: what an operator runs after deploying, before the platform takes
//! traffic. Each check says pass or fail and, when it fails, what fixes it; a check that needs
//! an earlier one (row-level security needs the database) is skipped when that one failed.
//! Exits 1 when any check failed.

use std::time::Duration;

use engine::runpod::{RetryPolicy, RunpodClient, RunpodError};
use engine::storage::{Bucket, Storage};
use serde::Serialize;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::io::AsyncReadExt;

use crate::settings::{DatabaseSettings, Settings};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    Fail,
    /// Not run: an earlier check it needs failed, or the part is not configured.
    Skip,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Stable name, for scripts: `configuration`, `database`, `database_role`, `migrations`,
    /// `row_level_security`, `bucket_datasets`, `bucket_models`, `gpu_runpod`, `gpu_local`.
    pub name: &'static str,
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do about a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub ok: bool,
    pub checks: Vec<Check>,
}

impl Check {
    fn pass(name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Pass,
            detail: detail.into(),
            fix: None,
        }
    }

    fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    fn skip(name: &'static str, why: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Skip,
            detail: why.into(),
            fix: None,
        }
    }
}

/// Every check that needs the database, in order.
const DATABASE_CHECKS: [&str; 4] = [
    "database",
    "database_role",
    "migrations",
    "row_level_security",
];

/// Runs the checks, prints them (a table, or JSON) and fails when any failed.
pub async fn run(settings: anyhow::Result<Settings>, json: bool) -> anyhow::Result<()> {
    let report = checks(settings).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", text(&report));
    }
    let failed = report
        .checks
        .iter()
        .filter(|c| c.status == Status::Fail)
        .count();
    if failed > 0 {
        anyhow::bail!(
            "{failed} of {} checks failed: see what to fix above",
            report.checks.len()
        );
    }
    Ok(())
}

pub async fn checks(settings: anyhow::Result<Settings>) -> Report {
    let mut checks = Vec::new();
    let settings = match settings.and_then(|s| crate::wiring::catalog(&s).map(|c| (s, c))) {
        Ok((settings, catalog)) => {
            checks.push(Check::pass(
                "configuration",
                format!(
                    "PUBLIC_URL {}, storage {}, {} GPU types, {} base models, GPU backends: {}",
                    settings.public_origin(),
                    if settings.s3.is_some() { "S3" } else { "local" },
                    catalog.gpus.len(),
                    catalog.models.len(),
                    backends(&settings)
                ),
            ));
            settings
        }
        Err(e) => {
            checks.push(Check::fail(
                "configuration",
                format!("{e:#}"),
                "correct the setting the message names (flags, environment or .env) and run verify again",
            ));
            for name in DATABASE_CHECKS.into_iter().chain([
                "bucket_datasets",
                "bucket_models",
                "gpu_runpod",
                "gpu_local",
            ]) {
                checks.push(Check::skip(name, "needs a valid configuration"));
            }
            return finish(checks);
        }
    };
    database_checks(&settings, &mut checks).await;
    storage_checks(&settings, &mut checks).await;
    checks.push(runpod_check(&settings).await);
    checks.push(local_check(&settings).await);
    finish(checks)
}

fn finish(checks: Vec<Check>) -> Report {
    Report {
        ok: checks.iter().all(|c| c.status != Status::Fail),
        checks,
    }
}

fn backends(settings: &Settings) -> String {
    let mut names = Vec::new();
    if settings.gpu.runpod.is_some() {
        names.push("RunPod");
    }
    if settings.gpu.executor.slots > 0 {
        names.push("local executor");
    }
    if names.is_empty() {
        "none (no job can run)".into()
    } else {
        names.join(" and ")
    }
}

async fn database_checks(settings: &Settings, checks: &mut Vec<Check>) {
    let (pool, managed) = match connect(settings).await {
        Ok(connected) => connected,
        Err((detail, fix)) => {
            checks.push(Check::fail("database", detail, fix));
            for name in &DATABASE_CHECKS[1..] {
                checks.push(Check::skip(name, "needs the database"));
            }
            return;
        }
    };
    let version: Result<String, _> = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&pool)
        .await;
    checks.push(match version {
        Ok(version) => Check::pass("database", format!("PostgreSQL {version} answers")),
        Err(e) => Check::fail(
            "database",
            format!("connected, but a query failed: {e}"),
            "check the server's log",
        ),
    });
    checks.push(match engine::operations::verify::role(&pool).await {
        Ok(role) if role.superuser || role.bypass_rls => Check::fail(
            "database_role",
            format!(
                "the role {} is {}: row-level security would not bind it, and tenants could see each other's rows",
                role.name,
                if role.superuser { "a superuser" } else { "BYPASSRLS" }
            ),
            format!(
                "connect as an ordinary role that owns the database, e.g. CREATE ROLE lora_app LOGIN PASSWORD '…'; ALTER DATABASE <name> OWNER TO lora_app; — or ALTER ROLE {} NOSUPERUSER NOBYPASSRLS",
                role.name
            ),
        ),
        Ok(role) => Check::pass(
            "database_role",
            format!("{}: neither superuser nor BYPASSRLS", role.name),
        ),
        Err(e) => Check::fail("database_role", format!("cannot read the role: {e}"), "check the server's log"),
    });
    let pending = engine::operations::verify::pending_migrations(&pool).await;
    checks.push(match &pending {
        Ok(pending) if pending.is_empty() => Check::pass(
            "migrations",
            format!("all {} applied", engine::db::MIGRATOR.iter().count()),
        ),
        Ok(pending) => Check::fail(
            "migrations",
            format!(
                "{} of {} not applied (versions {})",
                pending.len(),
                engine::db::MIGRATOR.iter().count(),
                pending
                    .iter()
                    .map(i64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "run `lora-pipeline migrate` (serve also applies them at start)",
        ),
        Err(e) => Check::fail(
            "migrations",
            format!("cannot read the applied migrations: {e}"),
            "check the server's log",
        ),
    });
    checks.push(rls_check(&pool).await);
    pool.close().await;
    if let Some(managed) = managed {
        let _ = managed.stop().await;
    }
}

/// A bare pool (not `Db::connect`, which refuses a privileged role: here that is a finding to
/// report, with the rest still checked).
async fn connect(
    settings: &Settings,
) -> Result<(PgPool, Option<engine::db::managed::ManagedPostgres>), (String, String)> {
    match &settings.database {
        DatabaseSettings::External(options) => PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with((**options).clone())
            .await
            .map(|pool| (pool, None))
            .map_err(|e| {
                (
                    format!(
                        "cannot connect to {}:{}: {e}",
                        options.get_host(),
                        options.get_port()
                    ),
                    "check DATABASE_URL (host, port, user, password, database name) and that PostgreSQL accepts connections from this machine".into(),
                )
            }),
        DatabaseSettings::Managed => crate::database::open_for_command(settings)
            .await
            .map(|(db, managed)| (db.pool().clone(), managed))
            .map_err(|e| {
                (
                    format!("cannot start or reach the managed database in DATA_DIR: {e:#}"),
                    "see the message; DATA_DIR must be writable by this user (or set DATABASE_URL)".into(),
                )
            }),
    }
}

async fn rls_check(pool: &PgPool) -> Check {
    let tables = match engine::operations::verify::tenant_tables(pool).await {
        Ok(tables) => tables,
        Err(e) => {
            return Check::fail(
                "row_level_security",
                format!("cannot read the catalog: {e}"),
                "check the server's log",
            );
        }
    };
    if tables.is_empty() {
        return Check::skip(
            "row_level_security",
            "no tenant tables yet: apply the migrations first",
        );
    }
    let unprotected: Vec<String> = tables
        .iter()
        .filter(|t| !t.enabled || !t.forced)
        .map(|t| {
            format!(
                "{} ({})",
                t.table,
                if t.enabled { "not forced" } else { "disabled" }
            )
        })
        .collect();
    if unprotected.is_empty() {
        Check::pass(
            "row_level_security",
            format!("enabled and forced on all {} tenant tables", tables.len()),
        )
    } else {
        let names: Vec<&str> = tables
            .iter()
            .filter(|t| !t.enabled || !t.forced)
            .map(|t| t.table.as_str())
            .collect();
        Check::fail(
            "row_level_security",
            format!("not protected: {}", unprotected.join(", ")),
            format!(
                "someone turned it off by hand: {}",
                names
                    .iter()
                    .map(|t| format!(
                        "ALTER TABLE {t} ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;"
                    ))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        )
    }
}

async fn storage_checks(settings: &Settings, checks: &mut Vec<Check>) {
    let names = [
        (Bucket::Datasets, "bucket_datasets"),
        (Bucket::Models, "bucket_models"),
    ];
    let fix = if settings.s3.is_some() {
        "check S3_ENDPOINT, S3_REGION, the access key's permissions (PutObject, GetObject, DeleteObject) and that the buckets exist"
    } else {
        "DATA_DIR/objects must be a directory this user can write (or configure S3)"
    };
    let storage = match crate::wiring::storage(settings).await {
        Ok(storage) => storage,
        Err(e) => {
            for (_, name) in names {
                checks.push(Check::fail(name, format!("{e:#}"), fix));
            }
            return;
        }
    };
    for (bucket, name) in names {
        checks.push(match round_trip(&storage, bucket).await {
            Ok(detail) => Check::pass(name, detail),
            Err(detail) => Check::fail(name, detail, fix),
        });
    }
}

/// Writes a small object, reads it back, deletes it and checks it is gone.
async fn round_trip(storage: &Storage, bucket: Bucket) -> Result<String, String> {
    let key = format!("verify/{}.txt", uuid::Uuid::new_v4().simple());
    let body = format!("lora-pipeline verify {key}");
    storage
        .put_bytes(bucket, &key, body.as_bytes())
        .await
        .map_err(|e| format!("cannot write {key}: {e}"))?;
    let read = async {
        let mut reader = storage.open(bucket, &key).await?;
        let mut read = String::new();
        reader.read_to_string(&mut read).await.map_err(|source| {
            engine::storage::StorageError::Io {
                key: key.clone(),
                source,
            }
        })?;
        Ok::<_, engine::storage::StorageError>(read)
    }
    .await;
    let deleted = storage.delete(bucket, &key).await;
    let read = read.map_err(|e| format!("wrote {key} but cannot read it back: {e}"))?;
    if read != body {
        return Err(format!("{key} read back different bytes than were written"));
    }
    deleted.map_err(|e| format!("wrote and read {key} but cannot delete it: {e}"))?;
    match storage.info(bucket, &key).await {
        Ok(None) => Ok(format!(
            "{} ({}): wrote, read back and deleted an object",
            bucket.name(),
            storage.backend_name()
        )),
        Ok(Some(_)) => Err(format!("{key} is still there after its deletion")),
        Err(e) => Err(format!("cannot confirm {key} was deleted: {e}")),
    }
}

async fn runpod_check(settings: &Settings) -> Check {
    let Some(runpod) = &settings.gpu.runpod else {
        return Check::skip(
            "gpu_runpod",
            "not configured (RUNPOD_API_KEY and RUNPOD_ENDPOINT_ID unset)",
        );
    };
    let once = RetryPolicy {
        attempts: 1,
        timeout: Duration::from_secs(15),
        ..RetryPolicy::default()
    };
    let client = match RunpodClient::new(&runpod.endpoint_url, &runpod.api_key, once) {
        Ok(client) => client,
        Err(e) => return Check::fail("gpu_runpod", e.to_string(), "see the message"),
    };
    match client.health().await {
        Ok(health) => Check::pass(
            "gpu_runpod",
            format!(
                "{}/health answered: {} workers idle, {} running, {} jobs queued",
                runpod.endpoint_url,
                health.workers.idle,
                health.workers.running,
                health.jobs.in_queue
            ),
        ),
        Err(e) => {
            let fix = match &e {
                RunpodError::Rejected {
                    status: 401 | 403, ..
                } => {
                    "the endpoint refuses RUNPOD_API_KEY: copy a key with access to this endpoint from RunPod's console (Settings → API Keys)"
                }
                RunpodError::NotFound => {
                    "no such endpoint: check RUNPOD_ENDPOINT_ID (and RUNPOD_API_URL)"
                }
                _ => {
                    "check RUNPOD_API_URL and RUNPOD_ENDPOINT_ID, and that this machine reaches the endpoint"
                }
            };
            Check::fail(
                "gpu_runpod",
                format!("{}/health: {e}", runpod.endpoint_url),
                fix,
            )
        }
    }
}

async fn local_check(settings: &Settings) -> Check {
    if settings.gpu.executor.slots == 0 {
        return Check::skip(
            "gpu_local",
            "no local executor on this server (EXECUTOR_SLOTS=0)",
        );
    }
    match crate::executor::check_worker(&settings.gpu.executor, &settings.data_dir).await {
        Ok(Ok(versions)) => Check::pass("gpu_local", format!("the worker imports {versions}")),
        Ok(Err(problem)) => Check::fail(
            "gpu_local",
            problem,
            "run `lora-pipeline worker install` (or set WORKER_PYTHON to a Python with worker/requirements.txt installed), or EXECUTOR_SLOTS=0 to run no local executor",
        ),
        Err(e) => Check::fail(
            "gpu_local",
            format!("{e:#}"),
            "see the message (WORKER_DIR, WORKER_USER)",
        ),
    }
}

/// One line per check, its status first, and what to fix under a failure.
fn text(report: &Report) -> String {
    let mut text = String::new();
    for check in &report.checks {
        let status = match check.status {
            Status::Pass => "pass",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        };
        text.push_str(&format!(
            "{status:<4}  {:<20}  {}\n",
            check.name, check.detail
        ));
        if let Some(fix) = &check.fix {
            text.push_str(&format!("      {:<20}  → {fix}\n", ""));
        }
    }
    let failed = report
        .checks
        .iter()
        .filter(|c| c.status == Status::Fail)
        .count();
    text.push_str(&if failed == 0 {
        "all checks passed\n".to_owned()
    } else {
        format!("{failed} failed\n")
    });
    text
}
