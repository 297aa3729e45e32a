//! `lora-pipeline verify` (issue 16 item 1), through the real binary: every check passes on a
//! good deployment (S3, RunPod, the local worker), and each one fails in turn on a deployment
//! broken in its own way, saying what to fix, with exit code 1.

mod common;

use std::collections::HashMap;

use common::TestS3;
use serde_json::Value;
use sqlx::{ConnectOptions, Connection};

const BIN: &str = env!("CARGO_BIN_EXE_lora-pipeline");
const RUNPOD_KEY: &str = "verify-test-key-0123456789";

/// A stand-in for a RunPod endpoint's `/health`, answering only the right key.
async fn fake_runpod() -> String {
    use axum::http::{HeaderMap, StatusCode};
    let health = |headers: HeaderMap| async move {
        let authorized = headers.get("authorization").and_then(|v| v.to_str().ok())
            == Some(&format!("Bearer {RUNPOD_KEY}") as &str);
        if !authorized {
            return (
                StatusCode::UNAUTHORIZED,
                axum::Json(serde_json::json!({"error": "unauthorized"})),
            );
        }
        (
            StatusCode::OK,
            axum::Json(serde_json::json!({
                "jobs": {"completed": 4, "failed": 0, "inProgress": 0, "inQueue": 1, "retried": 0},
                "workers": {"idle": 2, "running": 0}
            })),
        )
    };
    let router = axum::Router::new().route("/v2/ep123/health", axum::routing::get(health));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{address}/v2")
}

/// Runs `verify --json` with exactly `env` (nothing inherited but PATH); returns the exit
/// code and each check by name.
async fn verify(env: &[(&str, String)]) -> (i32, HashMap<String, Value>, String) {
    let data_dir = tempfile::tempdir().unwrap();
    let mut command = tokio::process::Command::new(BIN);
    command
        .args(["verify", "--json"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATA_DIR", data_dir.path())
        .env("WORKER_USER", "none")
        .env("EXECUTOR_SLOTS", "0");
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().await.expect("run lora-pipeline verify");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("verify --json printed no JSON ({e}):\n{stdout}\n{stderr}"));
    let checks = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap().to_owned(), c.clone()))
        .collect::<HashMap<_, _>>();
    assert_eq!(checks.len(), 9, "{report}");
    assert_eq!(
        report["ok"].as_bool().unwrap(),
        output.status.success(),
        "{report}"
    );
    (output.status.code().unwrap_or(-1), checks, stderr)
}

fn status<'a>(checks: &'a HashMap<String, Value>, name: &str) -> &'a str {
    checks[name]["status"].as_str().unwrap()
}

/// The check failed, and says what fixes it, containing `fix`.
fn failed(checks: &HashMap<String, Value>, name: &str, fix: &str) {
    let check = &checks[name];
    assert_eq!(check["status"], "fail", "{name}: {check}");
    let says = check["fix"].as_str().unwrap_or_default();
    assert!(
        says.contains(fix),
        "{name}'s fix should say {fix:?}: {check}"
    );
}

/// Every check but `except` passed (or, for those listed in `skipped`, was skipped).
fn others_pass(checks: &HashMap<String, Value>, except: &[&str], skipped: &[&str]) {
    for (name, check) in checks {
        if except.contains(&name.as_str()) {
            continue;
        }
        let want = if skipped.contains(&name.as_str()) {
            "skip"
        } else {
            "pass"
        };
        assert_eq!(check["status"], want, "{name}: {check}");
    }
}

fn superuser_url(options: &sqlx::postgres::PgConnectOptions) -> String {
    let admin = common::admin_options();
    format!(
        "postgres://{}@{}:{}/{}",
        admin.get_username(),
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap()
    )
}

/// Skipped without a local executor or RunPod: the checks that the settings switch off.
const UNCONFIGURED: [&str; 2] = ["gpu_runpod", "gpu_local"];

#[tokio::test]
async fn verify_passes_a_good_deployment_with_s3_runpod_and_the_local_worker() {
    let database = common::fresh_database().await;
    let s3 = TestS3::start().await;
    let runpod = fake_runpod().await;
    let worker_python = std::env::var("WORKER_PYTHON")
        .expect("WORKER_PYTHON names the worker's Python environment (scripts/test sets it)");
    let (code, checks, stderr) = verify(&[
        ("DATABASE_URL", common::database_url(&database)),
        ("S3_ENDPOINT", s3.endpoint.clone()),
        ("S3_ACCESS_KEY_ID", TestS3::ACCESS_KEY.into()),
        ("S3_SECRET_ACCESS_KEY", TestS3::SECRET_KEY.into()),
        ("S3_BUCKET_PREFIX", "verify-".into()),
        ("RUNPOD_API_KEY", RUNPOD_KEY.into()),
        ("RUNPOD_ENDPOINT_ID", "ep123".into()),
        ("RUNPOD_API_URL", runpod),
        ("EXECUTOR_SLOTS", "1".into()),
        ("WORKER_PYTHON", worker_python),
        (
            "WORKER_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../worker").into(),
        ),
    ])
    .await;
    assert_eq!(code, 0, "{checks:#?}\n{stderr}");
    others_pass(&checks, &[], &[]);
    let detail = |name: &str| checks[name]["detail"].as_str().unwrap().to_owned();
    assert!(
        detail("configuration").contains("storage S3"),
        "{}",
        detail("configuration")
    );
    assert!(detail("configuration").contains("RunPod and local executor"));
    assert!(detail("row_level_security").contains("enabled and forced on all"));
    assert!(detail("bucket_models").contains("wrote, read back and deleted"));
    assert!(
        detail("gpu_runpod").contains("2 workers idle"),
        "{}",
        detail("gpu_runpod")
    );
    assert!(
        detail("gpu_local").contains("torch"),
        "{}",
        detail("gpu_local")
    );
    assert!(detail("gpu_local").contains("peft"));
}

#[tokio::test]
async fn verify_fails_each_check_in_turn_and_says_what_to_fix() {
    let good = common::fresh_database().await;
    let good_url = common::database_url(&good);

    // The human form: a line per check, the fix under a failure, exit 1.
    let output = tokio::process::Command::new(BIN)
        .arg("verify")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", &good_url)
        .env("DATA_DIR", tempfile::tempdir().unwrap().path())
        .env("EXECUTOR_SLOTS", "0")
        .env("CATALOG_FILE", "/nonexistent/catalog.toml")
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.starts_with("FAIL  configuration"), "{text}");
    assert!(text.contains("→ correct the setting"), "{text}");
    assert!(text.contains("skip  database"), "{text}");

    // 1. Configuration: nothing else can be checked.
    let (code, checks, _) = verify(&[
        ("DATABASE_URL", good_url.clone()),
        ("CATALOG_FILE", "/nonexistent/catalog.toml".into()),
    ])
    .await;
    assert_eq!(code, 1);
    failed(&checks, "configuration", "correct the setting");
    assert!(
        checks["configuration"]["detail"]
            .as_str()
            .unwrap()
            .contains("CATALOG_FILE")
    );
    for (name, check) in &checks {
        if name != "configuration" {
            assert_eq!(check["status"], "skip", "{name}: {check}");
        }
    }
    let (code, checks, _) = verify(&[
        ("DATABASE_URL", good_url.clone()),
        ("RUNPOD_API_KEY", "only-the-key".into()),
    ])
    .await;
    assert_eq!(code, 1);
    assert!(
        checks["configuration"]["detail"]
            .as_str()
            .unwrap()
            .contains("RUNPOD_ENDPOINT_ID")
    );

    // 2. The database cannot be reached: the checks that need it are skipped.
    let (code, checks, _) = verify(&[(
        "DATABASE_URL",
        "postgres://lora_test_app@127.0.0.1:1/nothing".into(),
    )])
    .await;
    assert_eq!(code, 1);
    failed(&checks, "database", "check DATABASE_URL");
    for name in ["database_role", "migrations", "row_level_security"] {
        assert_eq!(status(&checks, name), "skip", "{name}");
    }
    others_pass(
        &checks,
        &[
            "database",
            "database_role",
            "migrations",
            "row_level_security",
        ],
        &UNCONFIGURED,
    );

    // 3. A superuser: row-level security would not bind it.
    let (code, checks, _) = verify(&[("DATABASE_URL", superuser_url(&good))]).await;
    assert_eq!(code, 1);
    failed(&checks, "database_role", "NOSUPERUSER NOBYPASSRLS");
    others_pass(&checks, &["database_role"], &UNCONFIGURED);

    // 4. Migrations not applied.
    let empty = common::empty_database().await;
    let (code, checks, _) = verify(&[("DATABASE_URL", common::database_url(&empty))]).await;
    assert_eq!(code, 1);
    failed(&checks, "migrations", "lora-pipeline migrate");
    assert!(
        checks["migrations"]["detail"]
            .as_str()
            .unwrap()
            .contains("not applied")
    );
    assert_eq!(status(&checks, "row_level_security"), "skip");

    // 5. Row-level security switched off on one tenant table, and no longer forced on another.
    let broken = common::fresh_database().await;
    let mut admin = common::admin_options()
        .database(broken.get_database().unwrap())
        .connect()
        .await
        .unwrap();
    sqlx::query("ALTER TABLE datasets NO FORCE ROW LEVEL SECURITY")
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query("ALTER TABLE webhooks DISABLE ROW LEVEL SECURITY")
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
    let (code, checks, _) = verify(&[("DATABASE_URL", common::database_url(&broken))]).await;
    assert_eq!(code, 1);
    failed(
        &checks,
        "row_level_security",
        "ALTER TABLE datasets ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;",
    );
    let detail = checks["row_level_security"]["detail"].as_str().unwrap();
    assert!(detail.contains("datasets (not forced)"), "{detail}");
    assert!(detail.contains("webhooks (disabled)"), "{detail}");
    others_pass(&checks, &["row_level_security"], &UNCONFIGURED);

    // 6. Storage: the local store's directory cannot be made (a file stands in its way) …
    let blocked = tempfile::tempdir().unwrap();
    std::fs::write(blocked.path().join("objects"), b"not a directory").unwrap();
    let mut command = tokio::process::Command::new(BIN);
    let output = command
        .args(["verify", "--json"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", &good_url)
        .env("DATA_DIR", blocked.path())
        .env("EXECUTOR_SLOTS", "0")
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    for name in ["bucket_datasets", "bucket_models"] {
        let check = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap();
        assert_eq!(check["status"], "fail", "{check}");
        assert!(check["fix"].as_str().unwrap().contains("DATA_DIR/objects"));
    }
    // … and S3 refuses the access key.
    let s3 = TestS3::start().await;
    let (code, checks, _) = verify(&[
        ("DATABASE_URL", good_url.clone()),
        ("S3_ENDPOINT", s3.endpoint.clone()),
        ("S3_ACCESS_KEY_ID", TestS3::ACCESS_KEY.into()),
        ("S3_SECRET_ACCESS_KEY", "not-the-secret-key-000000".into()),
    ])
    .await;
    assert_eq!(code, 1);
    failed(&checks, "bucket_datasets", "S3_ENDPOINT");
    failed(&checks, "bucket_models", "PutObject");
    others_pass(
        &checks,
        &["bucket_datasets", "bucket_models"],
        &UNCONFIGURED,
    );

    // 7. RunPod refuses the key; then nobody answers at all.
    let runpod = fake_runpod().await;
    let (code, checks, _) = verify(&[
        ("DATABASE_URL", good_url.clone()),
        ("RUNPOD_API_KEY", "a-key-the-endpoint-refuses".into()),
        ("RUNPOD_ENDPOINT_ID", "ep123".into()),
        ("RUNPOD_API_URL", runpod),
    ])
    .await;
    assert_eq!(code, 1);
    failed(&checks, "gpu_runpod", "refuses RUNPOD_API_KEY");
    others_pass(&checks, &["gpu_runpod"], &["gpu_local"]);
    let (code, checks, _) = verify(&[
        ("DATABASE_URL", good_url.clone()),
        ("RUNPOD_API_KEY", RUNPOD_KEY.into()),
        ("RUNPOD_ENDPOINT_ID", "ep123".into()),
        ("RUNPOD_API_URL", "http://127.0.0.1:1/v2".into()),
    ])
    .await;
    assert_eq!(code, 1);
    failed(&checks, "gpu_runpod", "reaches the endpoint");

    // 8. The local executor's Python lacks torch (the system's, without the worker's packages).
    let (code, checks, _) = verify(&[
        ("DATABASE_URL", good_url.clone()),
        ("EXECUTOR_SLOTS", "1".into()),
        ("WORKER_PYTHON", "/usr/bin/python3".into()),
        (
            "WORKER_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../worker").into(),
        ),
    ])
    .await;
    assert_eq!(code, 1);
    failed(&checks, "gpu_local", "lora-pipeline worker install");
    assert!(
        checks["gpu_local"]["detail"]
            .as_str()
            .unwrap()
            .contains("torch")
    );
    others_pass(&checks, &["gpu_local"], &["gpu_runpod"]);
}
