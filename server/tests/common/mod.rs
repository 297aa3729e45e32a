//! Test harness: each test gets a fresh database on the throwaway PostgreSQL cluster that
//! `scripts/test` starts (LP_TEST_ADMIN_URL, a superuser URL), and an app on a free port.

#![allow(dead_code)]

use std::str::FromStr;
use std::time::{Duration, Instant};

use futures::StreamExt;

use engine::db::Db;
use reqwest::header::{CONTENT_TYPE, ORIGIN};
use serde_json::{Value, json};
use server::settings::{DatabaseSettings, LogFormat, Settings};
use server::startup::Application;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

pub const PASSWORD: &str = "correct horse battery staple";
const APP_ROLE: &str = "lora_test_app";

pub fn admin_options() -> PgConnectOptions {
    let url = std::env::var("LP_TEST_ADMIN_URL").expect(
        "LP_TEST_ADMIN_URL is not set: run the tests with scripts/test, which starts a throwaway \
         PostgreSQL cluster, or export a superuser URL such as postgres://postgres@127.0.0.1:5432/postgres",
    );
    PgConnectOptions::from_str(&url).expect("LP_TEST_ADMIN_URL is a valid URL")
}

/// Creates an empty database owned by an ordinary (non-superuser) role; returns the options the
/// app should connect with.
pub async fn fresh_database() -> PgConnectOptions {
    let admin = admin_options();
    let mut conn = admin
        .connect()
        .await
        .expect("connect to the test cluster as superuser");
    // Roles are cluster-wide; tolerate a concurrent test creating it first.
    let _ = sqlx::query(
        "DO $$ BEGIN CREATE ROLE lora_test_app LOGIN NOSUPERUSER NOBYPASSRLS; \
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$",
    )
    .execute(&mut conn)
    .await;
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {name} OWNER {APP_ROLE}"
    )))
    .execute(&mut conn)
    .await
    .expect("create test database");
    conn.close().await.ok();
    admin.username(APP_ROLE).password("").database(&name)
}

pub struct TestApp {
    pub address: String,
    pub db: Db,
    pub client: reqwest::Client,
    /// DATA_DIR of this app (objects, scratch files); removed when the test ends.
    pub data_dir: tempfile::TempDir,
    /// How the app connects to its database (a replica connects the same way).
    pub options: PgConnectOptions,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(None, test_gpu_settings()).await
    }

    /// An app whose GPU backend is configured by the test (e.g. a fake RunPod server).
    #[allow(dead_code)]
    pub async fn spawn_with_gpu(gpu: server::settings::GpuSettings) -> Self {
        Self::spawn_with(None, gpu).await
    }

    /// An app whose object storage is the S3-compatible server that scripts/test starts.
    pub async fn spawn_with_s3() -> Self {
        let endpoint = std::env::var("LP_TEST_S3_ENDPOINT").expect(
            "LP_TEST_S3_ENDPOINT is not set: run the tests with scripts/test, which starts an \
             S3-compatible server (moto), or export its URL",
        );
        let prefix = format!("t{}-", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        Self::spawn_with(
            Some(engine::storage::S3Settings {
                endpoint,
                region: "us-east-1".into(),
                access_key_id: "test".into(),
                secret_access_key: "test".into(),
                path_style: true,
                bucket_prefix: prefix,
            }),
            test_gpu_settings(),
        )
        .await
    }

    async fn spawn_with(
        s3: Option<engine::storage::S3Settings>,
        gpu: server::settings::GpuSettings,
    ) -> Self {
        Self::spawn_on(fresh_database().await, s3, gpu).await
    }

    /// A second server replica on this app's database, with its own GPU settings.
    pub async fn replica(&self, gpu: server::settings::GpuSettings) -> Self {
        Self::spawn_on(self.options.clone(), None, gpu).await
    }

    async fn spawn_on(
        options: PgConnectOptions,
        s3: Option<engine::storage::S3Settings>,
        gpu: server::settings::GpuSettings,
    ) -> Self {
        let bind = "127.0.0.1:0".parse().expect("bind address");
        let data_dir = tempfile::Builder::new()
            .prefix("lp-test-")
            .tempdir()
            .expect("data dir");
        let settings = Settings {
            database: DatabaseSettings::External(Box::new(options.clone())),
            data_dir: data_dir.path().to_owned(),
            storage_signing_key: None,
            s3,
            catalog_file: None,
            gpu,
            bind,
            public_url: server::settings::parse_public_url(None, bind).expect("url"),
            log_format: LogFormat::Text,
        };
        let app = Application::build(settings).await.expect("build app");
        let address = format!("http://127.0.0.1:{}", app.port());
        tokio::spawn(app.run_until_stopped(std::future::pending()));
        let db = Db::connect(options.clone(), 4).await.expect("test pool");
        Self {
            address,
            db,
            client: Self::browser(),
            data_dir,
            options,
        }
    }

    /// A client that keeps cookies, like a browser.
    pub fn browser() -> reqwest::Client {
        reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// `GET path` as `client`, read as JSON.
    pub async fn get_json(&self, client: &reqwest::Client, path: &str) -> Value {
        client
            .get(self.url(path))
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("a JSON body")
    }

    /// A same-origin JSON POST, as our own pages make it.
    pub async fn post(
        &self,
        client: &reqwest::Client,
        path: &str,
        body: Value,
    ) -> reqwest::Response {
        client
            .post(self.url(path))
            .header(ORIGIN, &self.address)
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("request")
    }

    pub async fn register(&self, client: &reqwest::Client, email: &str) -> Value {
        let response = self
            .post(
                client,
                "/api/auth/register",
                json!({ "email": email, "password": PASSWORD }),
            )
            .await;
        assert_eq!(response.status(), 201, "register {email}");
        response.json().await.expect("json")
    }

    /// Registers a user in a fresh browser; returns the client and the user id.
    pub async fn signed_in_user(&self, email: &str) -> (reqwest::Client, uuid::Uuid) {
        let client = Self::browser();
        let body = self.register(&client, email).await;
        let id = body["data"]["user"]["id"]
            .as_str()
            .expect("id")
            .parse()
            .expect("uuid");
        (client, id)
    }
}

/// The embedded local executor running the real worker from the repository, with the Python
/// environment scripts/test prepared (WORKER_PYTHON), polling fast.
pub fn test_gpu_settings() -> server::settings::GpuSettings {
    let mut gpu = server::settings::GpuSettings::default();
    gpu.executor.python = std::env::var("WORKER_PYTHON")
        .unwrap_or_else(|_| "python3".into())
        .into();
    gpu.executor.worker_dir = Some(concat!(env!("CARGO_MANIFEST_DIR"), "/../worker").into());
    gpu.processor.poll_interval = std::time::Duration::from_millis(200);
    gpu
}

pub fn sample(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/datasets")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Uploads a sample and waits until it is ready to train.
pub async fn ready_dataset(app: &TestApp, client: &reqwest::Client, file: &str) -> String {
    let bytes = sample(file);
    let created: Value = app
        .post(
            client,
            "/api/datasets",
            json!({ "name": file, "file_name": file, "file_size": bytes.len() }),
        )
        .await
        .json()
        .await
        .unwrap();
    let id = created["data"]["dataset"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let put = reqwest::Client::new()
        .put(created["data"]["uploadUrl"].as_str().unwrap())
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let confirmed = app
        .post(client, &format!("/api/datasets/{id}/confirm"), json!({}))
        .await;
    assert_eq!(confirmed.status(), 202);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body: Value = app.get_json(client, &format!("/api/datasets/{id}")).await;
        match body["data"]["status"].as_str() {
            Some("ready") => return id,
            Some("invalid") => panic!("{file} is invalid: {body}"),
            _ => {}
        }
        assert!(Instant::now() < deadline, "validation did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn start_job(
    app: &TestApp,
    client: &reqwest::Client,
    dataset: &str,
    epochs: u32,
) -> String {
    start_job_on(app, client, dataset, epochs, "local").await
}

/// A job on the demo model on `gpu` (a RunPod GPU type goes to the configured RunPod backend).
pub async fn start_job_on(
    app: &TestApp,
    client: &reqwest::Client,
    dataset: &str,
    epochs: u32,
    gpu: &str,
) -> String {
    let catalog: Value = app.get_json(client, "/api/catalog").await;
    let mut hp = catalog["data"]["presets"]["fast"].clone();
    hp["quantization"] = json!("none");
    hp["epochs"] = json!(epochs);
    hp["batch_size"] = json!(4);
    hp["gradient_accumulation_steps"] = json!(1);
    hp["max_seq_len"] = json!(256);
    hp["eval_fraction"] = json!(0.1);
    let response = app
        .post(
            client,
            "/api/jobs",
            json!({
                "dataset_id": dataset, "base_model": "tiny-random-llama", "preset": "custom",
                "hyperparameters": hp, "gpu_type": gpu, "gpu_count": 1,
            }),
        )
        .await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    body["data"]["job"]["id"].as_str().unwrap().to_owned()
}

/// A parsed SSE event.
#[derive(Debug, Clone)]
pub struct Sse {
    pub id: i64,
    pub kind: String,
    pub data: Value,
}

/// Reads SSE events until `stop` says so or the deadline passes.
pub async fn read_events(
    response: reqwest::Response,
    deadline: Duration,
    mut stop: impl FnMut(&Sse) -> bool,
) -> Vec<Sse> {
    let mut events = Vec::new();
    let mut buffer = String::new();
    let mut body = response.bytes_stream();
    let until = Instant::now() + deadline;
    while Instant::now() < until {
        let chunk = match tokio::time::timeout_at(until.into(), body.next()).await {
            Ok(Some(Ok(chunk))) => chunk,
            _ => break,
        };
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut event = Sse {
                id: 0,
                kind: "message".into(),
                data: Value::Null,
            };
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    event.id = v.parse().unwrap_or(0);
                } else if let Some(v) = line.strip_prefix("event: ") {
                    event.kind = v.to_owned();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    event.data = serde_json::from_str(v).unwrap_or(Value::Null);
                }
            }
            if event.data.is_null() {
                continue; // keep-alive comment
            }
            let done = stop(&event);
            events.push(event);
            if done {
                return events;
            }
        }
    }
    events
}

pub fn terminal(event: &Sse) -> bool {
    event.kind == "status"
        && matches!(
            event.data["payload"]["status"].as_str(),
            Some("completed" | "failed" | "cancelled")
        )
}
