//! `kill -9` of the server mid-training: the GPU backend (a standalone `lora-pipeline executor`,
//! as RunPod would be) keeps training; the restarted server takes the job over from the durable
//! queue, backfills what it missed, and the job completes with every metric step stored once.
//! Then SIGTERM with a live SSE stream open: the stream ends and the server exits promptly.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{PASSWORD, fresh_database, read_events, sample};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_lora-pipeline");
const KEY: &str = "crash-test-executor-key";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn worker_python() -> String {
    std::env::var("WORKER_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// `lora-pipeline executor` on a free port; returns it and its API base.
fn start_executor(data: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(BIN)
        .args(["executor", "--bind", "127.0.0.1:0", "--api-key", KEY])
        .args(["--worker-python", &worker_python()])
        .args([
            "--worker-dir",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../worker"),
        ])
        .env("DATA_DIR", data)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the executor");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the executor prints its address");
    let base = line
        .trim()
        .strip_prefix("executor listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (child, base)
}

fn start_server(database_url: &str, data: &std::path::Path, port: u16, executor: &str) -> Child {
    Command::new(BIN)
        .arg("serve")
        .env("DATABASE_URL", database_url)
        .env("DATA_DIR", data)
        .env("BIND_ADDR", format!("127.0.0.1:{port}"))
        .env("RUNPOD_API_URL", executor)
        .env("RUNPOD_API_KEY", KEY)
        .env("RUNPOD_ENDPOINT_ID", "local")
        .env("JOB_POLL_INTERVAL_MS", "200")
        .env("JOB_REPORT_INTERVAL_MS", "0")
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("start the server")
}

async fn wait_ready(base: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(r) = reqwest::get(format!("{base}/readyz")).await
            && r.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the server did not become ready");
}

fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

async fn post(client: &reqwest::Client, base: &str, path: &str, body: Value) -> reqwest::Response {
    client
        .post(format!("{base}{path}"))
        .header("Origin", base)
        .json(&body)
        .send()
        .await
        .expect("request")
}

async fn job(client: &reqwest::Client, base: &str, id: &str) -> Value {
    let body: Value = client
        .get(format!("{base}/api/jobs/{id}"))
        .send()
        .await
        .expect("job")
        .json()
        .await
        .expect("json");
    body["data"]["job"].clone()
}

/// Registers `email`, uploads a sample, waits for its validation and starts a demo job long
/// enough to be interrupted; returns the job's id.
async fn create_job(client: &reqwest::Client, base: &str, email: &str, gpu_type: &str) -> String {
    let registered = post(
        client,
        base,
        "/api/auth/register",
        json!({ "email": email, "password": PASSWORD }),
    )
    .await;
    assert_eq!(registered.status(), 201);
    let bytes = sample("openai-chat.jsonl");
    let created: Value = post(
        client,
        base,
        "/api/datasets",
        json!({ "name": "crash", "file_name": "crash.jsonl", "file_size": bytes.len() }),
    )
    .await
    .json()
    .await
    .expect("json");
    let dataset = created["data"]["dataset"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let put = reqwest::Client::new()
        .put(created["data"]["uploadUrl"].as_str().expect("url"))
        .body(bytes)
        .send()
        .await
        .expect("upload");
    assert_eq!(put.status(), 200);
    post(
        client,
        base,
        &format!("/api/datasets/{dataset}/confirm"),
        json!({}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body: Value = client
            .get(format!("{base}/api/datasets/{dataset}"))
            .send()
            .await
            .expect("dataset")
            .json()
            .await
            .expect("json");
        if body["data"]["status"] == "ready" {
            break;
        }
        assert!(Instant::now() < deadline, "validation finished: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let catalog: Value = client
        .get(format!("{base}/api/catalog"))
        .send()
        .await
        .expect("catalog")
        .json()
        .await
        .expect("json");
    let mut hp = catalog["data"]["presets"]["fast"].clone();
    hp["quantization"] = json!("none");
    hp["epochs"] = json!(12);
    hp["batch_size"] = json!(4);
    hp["gradient_accumulation_steps"] = json!(1);
    hp["max_seq_len"] = json!(256);
    let created: Value = post(
        client,
        base,
        "/api/jobs",
        json!({
            "dataset_id": dataset, "base_model": "tiny-random-llama", "preset": "custom",
            "hyperparameters": hp, "gpu_type": gpu_type, "gpu_count": 1,
        }),
    )
    .await
    .json()
    .await
    .expect("json");
    created["data"]["job"]["id"]
        .as_str()
        .expect("job id")
        .to_owned()
}

#[tokio::test]
async fn a_killed_server_takes_its_job_over_after_restart_without_duplicates() {
    let options = fresh_database().await;
    let database_url = format!(
        "postgres://{}@{}:{}/{}",
        options.get_username(),
        options.get_host(),
        options.get_port(),
        options.get_database().expect("database name")
    );
    let data = tempfile::tempdir().expect("data dir");
    let executor_data = tempfile::tempdir().expect("executor data dir");
    let (mut executor, executor_url) = start_executor(executor_data.path());
    // The same port across restarts: the worker's signed upload URLs name it.
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = start_server(&database_url, data.path(), port, &executor_url);
    wait_ready(&base).await;

    let client = common::TestApp::browser();
    // A RunPod GPU type: the standalone executor stands in for RunPod.
    let id = create_job(&client, &base, "crash@example.com", "A4000").await;

    // Kill the server once training is under way.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let j = job(&client, &base, &id).await;
        if j["current_step"].as_i64().unwrap_or(0) >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline
                && !matches!(j["status"].as_str(), Some("failed" | "cancelled")),
            "training started: {j}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    signal(&server, "-KILL");
    let _ = server.wait();
    // The backend trains on meanwhile; nobody reads its stream.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut server = start_server(&database_url, data.path(), port, &executor_url);
    wait_ready(&base).await;
    let deadline = Instant::now() + Duration::from_secs(180);
    let finished = loop {
        let j = job(&client, &base, &id).await;
        if matches!(
            j["status"].as_str(),
            Some("completed" | "failed" | "cancelled")
        ) {
            break j;
        }
        assert!(
            Instant::now() < deadline,
            "the job finished after the restart: {j}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(finished["status"], "completed", "{finished}");
    let total = finished["total_steps"].as_i64().expect("total steps");

    let db = engine::db::Db::connect(options, 2).await.expect("pool");
    let mut tx = db.system().await.expect("tx");
    let job_id: uuid::Uuid = id.parse().expect("uuid");
    let (rows, steps): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT step) FROM metrics_points WHERE job_id = $1",
    )
    .bind(job_id)
    .fetch_one(&mut *tx)
    .await
    .expect("metrics");
    let (events, event_steps): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT payload->>'step') FROM job_events WHERE job_id = $1 AND kind = 'metrics'",
    )
    .bind(job_id)
    .fetch_one(&mut *tx)
    .await
    .expect("events");
    tx.commit().await.expect("commit");
    assert_eq!(
        (rows, steps),
        (total, total),
        "every step once in metrics_points"
    );
    assert_eq!(
        (events, event_steps),
        (total, total),
        "every step once in the event log"
    );

    // SIGTERM with a live stream open: the stream ends, the server exits promptly.
    let stream = client
        .get(format!("{base}/api/jobs/{id}/events"))
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), 200);
    let reader = tokio::spawn(read_events(stream, Duration::from_secs(30), |_| false));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopping = Instant::now();
    signal(&server, "-TERM");
    let status = tokio::task::spawn_blocking(move || server.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(status.success(), "clean exit: {status}");
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "exited in {:?}",
        stopping.elapsed()
    );
    let replayed = reader.await.expect("reader");
    assert!(
        !replayed.is_empty(),
        "the stream replayed the run before it ended"
    );
    signal(&executor, "-TERM");
    let _ = executor.wait();
}

/// `serve` on embedded defaults: its own local executor, whose worker dies with it.
fn start_embedded(database_url: &str, data: &std::path::Path, port: u16) -> Child {
    Command::new(BIN)
        .arg("serve")
        .env("DATABASE_URL", database_url)
        .env("DATA_DIR", data)
        .env("BIND_ADDR", format!("127.0.0.1:{port}"))
        .env_remove("RUNPOD_API_KEY")
        .env_remove("RUNPOD_ENDPOINT_ID")
        .env("WORKER_PYTHON", worker_python())
        .env(
            "WORKER_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../worker"),
        )
        .env("JOB_POLL_INTERVAL_MS", "200")
        .env("JOB_REPORT_INTERVAL_MS", "0")
        .env("CHECKPOINT_INTERVAL_S", "1")
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("start the server")
}

/// `kill -9` of `serve` on embedded defaults mid-training: the run dies with it. After the
/// restart the processor finds the run lost, starts the next attempt from the latest
/// checkpoint by itself, and the job completes: one metric row per step, and no step before
/// the checkpoint trained twice.
#[tokio::test]
async fn a_run_lost_with_the_server_resumes_from_its_latest_checkpoint() {
    let options = fresh_database().await;
    let database_url = format!(
        "postgres://{}@{}:{}/{}",
        options.get_username(),
        options.get_host(),
        options.get_port(),
        options.get_database().expect("database name")
    );
    let data = tempfile::tempdir().expect("data dir");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = start_embedded(&database_url, data.path(), port);
    wait_ready(&base).await;
    let client = common::TestApp::browser();
    let id = create_job(&client, &base, "lost@example.com", "local").await;

    // Kill the server once a checkpoint is saved and training has gone past it.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let j = job(&client, &base, &id).await;
        let saved = j["checkpoint_step"].as_i64().unwrap_or(0);
        if saved >= 1 && j["current_step"].as_i64().unwrap_or(0) > saved {
            break;
        }
        assert!(
            Instant::now() < deadline && j["status"] != "completed" && j["status"] != "failed",
            "a checkpoint was saved mid-training: {j}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    signal(&server, "-KILL");
    let _ = server.wait();

    let mut server = start_embedded(&database_url, data.path(), port);
    wait_ready(&base).await;
    let deadline = Instant::now() + Duration::from_secs(240);
    let finished = loop {
        let j = job(&client, &base, &id).await;
        if matches!(
            j["status"].as_str(),
            Some("completed" | "failed" | "cancelled")
        ) {
            break j;
        }
        assert!(Instant::now() < deadline, "the job finished: {j}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(finished["status"], "completed", "{finished}");
    assert_eq!(finished["retry_count"], 1, "one automatic resume");
    let total = finished["total_steps"].as_i64().expect("total steps");

    let db = engine::db::Db::connect(options, 2).await.expect("pool");
    let mut tx = db.system().await.expect("tx");
    let job_id: uuid::Uuid = id.parse().expect("uuid");
    let (rows, steps): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT step) FROM metrics_points WHERE job_id = $1 AND train_loss IS NOT NULL",
    )
    .bind(job_id)
    .fetch_one(&mut *tx)
    .await
    .expect("metrics");
    // The latest checkpoint of the lost attempt, and the steps each attempt trained.
    let (checkpoint, lost_last, first_resumed): (Option<i64>, Option<i64>, Option<i64>) =
        sqlx::query_as(
            "SELECT max((payload->>'step')::bigint) FILTER (WHERE dedupe_key LIKE 'a0:checkpoint:%'),
                    max((payload->>'step')::bigint) FILTER (WHERE dedupe_key LIKE 'a0:metrics:%'),
                    min((payload->>'step')::bigint) FILTER (WHERE dedupe_key LIKE 'a1:metrics:%')
               FROM job_events WHERE job_id = $1",
        )
        .bind(job_id)
        .fetch_one(&mut *tx)
        .await
        .expect("events");
    let auto_resumes: i32 =
        sqlx::query_scalar("SELECT auto_resumes FROM training_jobs WHERE id = $1")
            .bind(job_id)
            .fetch_one(&mut *tx)
            .await
            .expect("job");
    tx.commit().await.expect("commit");
    let checkpoint = checkpoint.expect("the lost attempt saved a checkpoint");
    let lost_last = lost_last.expect("the lost attempt trained");
    // The latest recorded checkpoint, or a newer one of the same attempt whose event the kill
    // cut off (the worker finds it in the attempt's file).
    let resumed = finished["resumed_from_step"]
        .as_i64()
        .expect("the job says where it resumed");
    assert!(resumed >= checkpoint, "resumed from the latest checkpoint");
    assert_eq!(
        first_resumed,
        Some(resumed + 1),
        "no step up to the checkpoint trained again"
    );
    assert_eq!(auto_resumes, 1);
    assert_eq!(
        (rows, steps),
        (total, total),
        "one metric row per step, across both attempts"
    );
    println!(
        "resume: lost at step {lost_last} of {total} (checkpoint recorded at {checkpoint}), resumed from step {resumed}; {} steps trained twice",
        (lost_last - resumed).max(0)
    );
    signal(&server, "-TERM");
    let _ = server.wait();
}
