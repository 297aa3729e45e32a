//! Test harness: each test gets a database of its own on the throwaway PostgreSQL cluster that
//! `scripts/test` starts (LP_TEST_ADMIN_URL, a superuser URL), copied from a template database
//! that is migrated once per run, and an app on a free port.

#![allow(dead_code)]

use engine::accounts::store::{RegistrationMode, RegistrationPolicy};
use std::str::FromStr;
use std::time::{Duration, Instant};

use futures::StreamExt;

use engine::db::Db;
use reqwest::header::{CONTENT_TYPE, ORIGIN};
use serde_json::{Value, json};
use server::settings::{DatabaseSettings, LogFormat, Settings};
use server::startup::Application;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};

pub const PASSWORD: &str = "correct horse battery staple";
const APP_ROLE: &str = "lora_test_app";

pub fn admin_options() -> PgConnectOptions {
    let url = std::env::var("LP_TEST_ADMIN_URL").expect(
        "LP_TEST_ADMIN_URL is not set: run the tests with scripts/test, which starts a throwaway \
         PostgreSQL cluster, or export a superuser URL such as postgres://postgres@127.0.0.1:5432/postgres",
    );
    PgConnectOptions::from_str(&url).expect("LP_TEST_ADMIN_URL is a valid URL")
}

/// Set to give every test an empty database that the app migrates itself (the behaviour before
/// the template), e.g. to measure what the template saves.
const NO_TEMPLATE_ENV: &str = "LP_TEST_NO_TEMPLATE";
/// Key of the session advisory lock under which one test process builds the template database
/// while the others (nextest runs each test in its own process) wait for it.
const TEMPLATE_LOCK: i64 = 0x6c70_5f74_706c_0001;

/// A database of its own for one test, owned by an ordinary (non-superuser) role, with every
/// migration applied: a copy of a template database that the first test of the run migrates
/// (see [`template_database`]). The app's own migrations on startup then find nothing to do.
/// With LP_TEST_NO_TEMPLATE set it is an empty database instead, as [`empty_database`] makes.
/// Returns the options the app should connect with.
pub async fn fresh_database() -> PgConnectOptions {
    if std::env::var_os(NO_TEMPLATE_ENV).is_some() {
        return empty_database().await;
    }
    create_database(true).await
}

/// Creates an empty database (no migrations applied) owned by an ordinary (non-superuser) role;
/// returns the options the app should connect with.
pub async fn empty_database() -> PgConnectOptions {
    create_database(false).await
}

/// A new database owned by the app role, a copy of the migrated template or empty.
async fn create_database(from_template: bool) -> PgConnectOptions {
    let admin = admin_options();
    let mut conn = admin
        .connect()
        .await
        .expect("connect to the test cluster as superuser");
    ensure_app_role(&mut conn).await;
    let template = if from_template {
        format!(" TEMPLATE {}", template_database(&admin, &mut conn).await)
    } else {
        String::new()
    };
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {name}{template} OWNER {APP_ROLE}"
    )))
    .execute(&mut conn)
    .await
    .expect("create the test database");
    conn.close().await.ok();
    admin.username(APP_ROLE).password("").database(&name)
}

/// The app's role. Roles are cluster-wide; tolerate a concurrent test creating it first.
async fn ensure_app_role(conn: &mut PgConnection) {
    let _ = sqlx::query(
        "DO $$ BEGIN CREATE ROLE lora_test_app LOGIN NOSUPERUSER NOBYPASSRLS; \
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$",
    )
    .execute(&mut *conn)
    .await;
}

/// The name of a template database holding every migration in `migrations/`, built on first use
/// in this cluster. It is named after a hash of the migrations, so an edited migration gets a new
/// template rather than a stale one. The first test process to need it builds it under a
/// temporary name while holding an advisory lock (the others wait on the lock, then find it),
/// migrating it as the app's role through the app's own migrator, exactly as the app would, and
/// renames it only once it is complete. `conn` is a superuser connection.
async fn template_database(admin: &PgConnectOptions, conn: &mut PgConnection) -> String {
    let template = format!("lp_tpl_{:016x}", migrations_hash());
    // Fast path: an earlier test of this run built it.
    if template_state(conn, &template).await == Some(true) {
        return template;
    }
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(TEMPLATE_LOCK)
        .execute(&mut *conn)
        .await
        .expect("take the template lock");
    match template_state(conn, &template).await {
        Some(true) => {}
        // Renamed, but its builder stopped before marking it a template.
        Some(false) => mark_template(conn, &template).await,
        None => {
            let building = format!("{template}_build");
            // Left over from a test process that died while building it (nobody else touches
            // it: we hold the lock).
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {building} WITH (FORCE)"
            )))
            .execute(&mut *conn)
            .await
            .expect("drop a half-built template database");
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE DATABASE {building} OWNER {APP_ROLE}"
            )))
            .execute(&mut *conn)
            .await
            .expect("create the template database");
            let db = Db::connect(
                admin
                    .clone()
                    .username(APP_ROLE)
                    .password("")
                    .database(&building),
                1,
            )
            .await
            .expect("connect to the template database as the app's role");
            db.migrate().await.expect("migrate the template database");
            // Postgres refuses to rename, or to copy, a database that a session is connected to.
            db.close().await;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "ALTER DATABASE {building} RENAME TO {template}"
            )))
            .execute(&mut *conn)
            .await
            .expect("rename the template database");
            mark_template(conn, &template).await;
        }
    }
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(TEMPLATE_LOCK)
        .execute(&mut *conn)
        .await
        .expect("release the template lock");
    template
}

/// None when the database does not exist; otherwise whether it is marked a template.
async fn template_state(conn: &mut PgConnection, name: &str) -> Option<bool> {
    sqlx::query_scalar("SELECT datistemplate FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_optional(&mut *conn)
        .await
        .expect("look up the template database")
}

/// Marks a database a template and closes it to connections, so no stray session can make
/// `CREATE DATABASE … TEMPLATE` fail. (Its copies allow connections and are no templates.)
async fn mark_template(conn: &mut PgConnection, name: &str) {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {name} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"
    )))
    .execute(&mut *conn)
    .await
    .expect("mark the template database");
}

/// FNV-1a (64-bit) over the names and contents of the files in `migrations/`, in name order:
/// stable across builds and toolchains, unlike std's `DefaultHasher`.
fn migrations_hash() -> u64 {
    fn fnv1a(hash: &mut u64, bytes: &[u8]) {
        for &b in bytes {
            *hash ^= u64::from(b);
            *hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a migrations entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    // Bump to rebuild templates when the way they are built changes.
    fnv1a(&mut hash, b"lp-template-v1");
    for path in files {
        let name = path.file_name().expect("a file name").to_string_lossy();
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        fnv1a(&mut hash, &(name.len() as u64).to_le_bytes());
        fnv1a(&mut hash, name.as_bytes());
        fnv1a(&mut hash, &(bytes.len() as u64).to_le_bytes());
        fnv1a(&mut hash, &bytes);
    }
    hash
}

/// A URL for `options` (a test database reached as the tests' ordinary role, as
/// [`fresh_database`] returns), for the binary's DATABASE_URL: it refuses a superuser.
pub fn database_url(options: &PgConnectOptions) -> String {
    format!(
        "postgres://{}@{}:{}/{}",
        options.get_username(),
        options.get_host(),
        options.get_port(),
        options.get_database().expect("a database name")
    )
}

pub struct TestApp {
    pub address: String,
    pub db: Db,
    pub client: reqwest::Client,
    /// DATA_DIR of this app (objects, scratch files); removed when the test ends.
    pub data_dir: tempfile::TempDir,
    /// How the app connects to its database (a replica connects the same way).
    pub options: PgConnectOptions,
    /// Its S3 settings, when it stores objects on S3.
    pub s3: Option<engine::storage::S3Settings>,
    /// The S3 server it uses, kept running as long as the app.
    pub s3_server: Option<std::sync::Arc<TestS3>>,
}

/// An S3 server (s3s-fs over a temporary directory) that checks every request's SigV4
/// signature against one key pair: a tampered, expired or unsigned request is refused (403).
pub struct TestS3 {
    pub endpoint: String,
    _root: tempfile::TempDir,
    accept: tokio::task::JoinHandle<()>,
}

impl TestS3 {
    pub const ACCESS_KEY: &str = "lp-test-access-key";
    pub const SECRET_KEY: &str = "lp-test-secret-key-0123456789";

    pub async fn start() -> Self {
        use hyper_util::rt::{TokioExecutor, TokioIo};
        let root = tempfile::tempdir().expect("s3 root");
        let fs = s3s_fs::FileSystem::new(root.path()).expect("s3s-fs");
        let service = {
            let mut builder = s3s::service::S3ServiceBuilder::new(fs);
            builder.set_auth(s3s::auth::SimpleAuth::from_single(
                Self::ACCESS_KEY,
                Self::SECRET_KEY,
            ));
            builder.build()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind s3");
        let address = listener.local_addr().expect("s3 address");
        let accept = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let service = service.clone();
                tokio::spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        Self {
            endpoint: format!("http://{address}"),
            _root: root,
            accept,
        }
    }

    pub fn settings(&self, bucket_prefix: &str) -> engine::storage::S3Settings {
        engine::storage::S3Settings {
            endpoint: self.endpoint.clone(),
            region: "us-east-1".into(),
            access_key_id: Self::ACCESS_KEY.into(),
            secret_access_key: Self::SECRET_KEY.into(),
            path_style: true,
            bucket_prefix: bucket_prefix.into(),
        }
    }
}

impl Drop for TestS3 {
    fn drop(&mut self) {
        self.accept.abort();
    }
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

    /// An app whose object storage is S3: a server in this test process that verifies SigV4
    /// signatures (header-signed requests and presigned URLs, their expiry included), as AWS
    /// does.
    pub async fn spawn_with_s3() -> Self {
        let server = TestS3::start().await;
        let prefix = format!("t{}-", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let mut app = Self::spawn_with(Some(server.settings(&prefix)), test_gpu_settings()).await;
        app.s3_server = Some(std::sync::Arc::new(server));
        app
    }

    async fn spawn_with(
        s3: Option<engine::storage::S3Settings>,
        gpu: server::settings::GpuSettings,
    ) -> Self {
        Self::spawn_on(
            fresh_database().await,
            s3,
            gpu,
            None,
            policy(RegistrationMode::Open),
        )
        .await
    }

    /// An app whose registration is `mode` (the others let anyone register: tests make many
    /// accounts).
    pub async fn spawn_with_registration(mode: RegistrationMode) -> Self {
        Self::spawn_with_policy(policy(mode)).await
    }

    pub async fn spawn_with_policy(registration: RegistrationPolicy) -> Self {
        Self::spawn_on(
            fresh_database().await,
            None,
            test_gpu_settings(),
            None,
            registration,
        )
        .await
    }

    /// A second server replica on this app's database, with its own GPU settings.
    /// Another replica of this app: the same database and the same object store (replicas
    /// share storage, as they share S3 in production).
    pub async fn replica(&self, gpu: server::settings::GpuSettings) -> Self {
        Self::spawn_on(
            self.options.clone(),
            None,
            gpu,
            Some(self.data_dir.path()),
            policy(RegistrationMode::Open),
        )
        .await
    }

    /// An app whose settings the test adjusts before it starts.
    pub async fn spawn_tweaked(tweak: impl FnOnce(&mut Settings)) -> Self {
        Self::spawn_configured(
            fresh_database().await,
            None,
            test_gpu_settings(),
            None,
            policy(RegistrationMode::Open),
            tweak,
        )
        .await
    }

    async fn spawn_on(
        options: PgConnectOptions,
        s3: Option<engine::storage::S3Settings>,
        gpu: server::settings::GpuSettings,
        shared_data: Option<&std::path::Path>,
        registration: RegistrationPolicy,
    ) -> Self {
        Self::spawn_configured(options, s3, gpu, shared_data, registration, |_| {}).await
    }

    async fn spawn_configured(
        options: PgConnectOptions,
        s3: Option<engine::storage::S3Settings>,
        gpu: server::settings::GpuSettings,
        shared_data: Option<&std::path::Path>,
        registration: RegistrationPolicy,
        tweak: impl FnOnce(&mut Settings),
    ) -> Self {
        let bind = "127.0.0.1:0".parse().expect("bind address");
        let data_dir = tempfile::Builder::new()
            .prefix("lp-test-")
            .tempdir()
            .expect("data dir");
        let mut settings = Settings {
            database: DatabaseSettings::External(Box::new(options.clone())),
            data_dir: shared_data.unwrap_or(data_dir.path()).to_owned(),
            storage_signing_key: None,
            // The tests stand in for a proxy: X-Forwarded-For names their "clients".
            trusted_proxies: server::client_addr::parse_trusted("127.0.0.1").unwrap(),
            registration,
            s3: s3.clone(),
            catalog_file: None,
            gpu,
            bind,
            public_url: server::settings::parse_public_url(None, bind).expect("url"),
            log_format: LogFormat::Text,
            compression_level: server::settings::DEFAULT_COMPRESSION_LEVEL,
            streams_per_user: server::routes::live::DEFAULT_STREAMS_PER_USER,
            metrics_token: None,
        };
        tweak(&mut settings);
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
            s3,
            s3_server: None,
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

    /// The app's object storage, reached as the app reaches it.
    pub async fn storage(&self) -> engine::storage::Storage {
        match &self.s3 {
            Some(s3) => engine::storage::Storage::s3(s3).await.expect("s3 storage"),
            None => engine::storage::Storage::local(
                self.data_dir.path().join("objects"),
                std::fs::read(self.data_dir.path().join("signing.key")).expect("signing key"),
                self.address.clone(),
            ),
        }
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
    /// Logs `client` in as `email` (with the tests' password).
    pub async fn log_in(&self, client: &reqwest::Client, email: &str) -> reqwest::Response {
        self.post(
            client,
            "/api/auth/login",
            json!({ "email": email, "password": PASSWORD }),
        )
        .await
    }

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
/// `mode` with a registration limit no test of many accounts reaches.
pub fn policy(mode: RegistrationMode) -> RegistrationPolicy {
    RegistrationPolicy {
        mode,
        per_address: 10_000,
    }
}

pub fn test_gpu_settings() -> server::settings::GpuSettings {
    let mut gpu = server::settings::GpuSettings::default();
    gpu.executor.python = Some(
        std::env::var("WORKER_PYTHON")
            .unwrap_or_else(|_| "python3".into())
            .into(),
    );
    gpu.executor.worker_dir = Some(concat!(env!("CARGO_MANIFEST_DIR"), "/../worker").into());
    // The server's own user (tests that check the worker's sandbox ask for their own).
    gpu.executor.user = server::settings::WorkerUser::Same;
    gpu.processor.poll_interval = std::time::Duration::from_millis(200);
    // Every step reported: the tests count them.
    gpu.processor.report_interval = std::time::Duration::ZERO;
    // The tests' webhook receivers listen on loopback.
    gpu.webhooks.allow_private = true;
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
    let (id, body) = validated_dataset(app, client, file).await;
    assert_eq!(body["data"]["status"], "ready", "{file} is invalid: {body}");
    id
}

/// Uploads a sample and waits for its verdict; the dataset's id and `GET /api/datasets/{id}`.
pub async fn validated_dataset(
    app: &TestApp,
    client: &reqwest::Client,
    file: &str,
) -> (String, Value) {
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
        if matches!(body["data"]["status"].as_str(), Some("ready" | "invalid")) {
            return (id, body);
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
    let response = job_request(app, client, dataset, epochs, gpu).await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    body["data"]["job"]["id"].as_str().unwrap().to_owned()
}

/// Asks for a job on the demo model on `gpu`; the server's answer, whatever it is.
pub async fn job_request(
    app: &TestApp,
    client: &reqwest::Client,
    dataset: &str,
    epochs: u32,
    gpu: &str,
) -> reqwest::Response {
    let catalog: Value = app.get_json(client, "/api/catalog").await;
    let mut hp = catalog["data"]["presets"]["fast"].clone();
    hp["quantization"] = json!("none");
    hp["epochs"] = json!(epochs);
    hp["batch_size"] = json!(4);
    hp["gradient_accumulation_steps"] = json!(1);
    hp["max_seq_len"] = json!(256);
    hp["eval_fraction"] = json!(0.1);
    app.post(
        client,
        "/api/jobs",
        json!({
            "dataset_id": dataset, "base_model": "tiny-random-llama", "preset": "custom",
            "hyperparameters": hp, "gpu_type": gpu, "gpu_count": 1,
        }),
    )
    .await
}

/// Polls `GET /api/jobs/{job}` until `done` holds for its `data.job` (at most `within`); a job
/// that fails instead is a test failure. Returns the last answer.
pub async fn wait_for_job(
    app: &TestApp,
    client: &reqwest::Client,
    job: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let body = app.get_json(client, &format!("/api/jobs/{job}")).await;
        if done(&body["data"]["job"]) {
            return body;
        }
        assert_ne!(body["data"]["job"]["status"], "failed", "{body}");
        assert!(
            Instant::now() < deadline,
            "the job did not get there: {body}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
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

/// The demo model's dimensions (catalog `shape` of tiny-random-llama).
const DEMO_LAYERS: u64 = 2;
const DEMO_HIDDEN: u64 = 64;
const DEMO_INTERMEDIATE: u64 = 128;
const DEMO_KV: u64 = 32;

/// A structurally valid LoRA adapter for the demo model, as PEFT writes it: `adapter_config.json`
/// and `adapter_model.safetensors` (zeros) for the seven projections of both layers. What a fake
/// worker uploads so that finalisation has real files to check.
pub fn fake_adapter(rank: u64, alpha: u64) -> Vec<(&'static str, Vec<u8>)> {
    let modules: [(&str, &str, u64, u64); 7] = [
        ("self_attn", "q_proj", DEMO_HIDDEN, DEMO_HIDDEN),
        ("self_attn", "k_proj", DEMO_HIDDEN, DEMO_KV),
        ("self_attn", "v_proj", DEMO_HIDDEN, DEMO_KV),
        ("self_attn", "o_proj", DEMO_HIDDEN, DEMO_HIDDEN),
        ("mlp", "gate_proj", DEMO_HIDDEN, DEMO_INTERMEDIATE),
        ("mlp", "up_proj", DEMO_HIDDEN, DEMO_INTERMEDIATE),
        ("mlp", "down_proj", DEMO_INTERMEDIATE, DEMO_HIDDEN),
    ];
    let mut header = serde_json::Map::new();
    let mut offset = 0u64;
    for layer in 0..DEMO_LAYERS {
        for (block, module, input, output) in modules {
            let prefix = format!("base_model.model.model.layers.{layer}.{block}.{module}");
            for (kind, shape) in [("A", [rank, input]), ("B", [output, rank])] {
                let len = shape[0] * shape[1] * 4;
                header.insert(
                    format!("{prefix}.lora_{kind}.weight"),
                    json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len]}),
                );
                offset += len;
            }
        }
    }
    let json_header = serde_json::to_vec(&header).unwrap();
    let mut weights = (json_header.len() as u64).to_le_bytes().to_vec();
    weights.extend(json_header);
    weights.extend(vec![0u8; offset as usize]);
    let config = json!({
        "base_model_name_or_path": "tiny-random-llama", "peft_type": "LORA", "task_type": "CAUSAL_LM",
        "r": rank, "lora_alpha": alpha, "lora_dropout": 0.05, "bias": "none",
        "target_modules": modules.iter().map(|m| m.1).collect::<Vec<_>>(),
    });
    vec![
        (
            "adapter_config.json",
            serde_json::to_vec_pretty(&config).unwrap(),
        ),
        ("adapter_model.safetensors", weights),
    ]
}

/// `files` of a worker's succeeded result for `files`: name, size and sha256.
pub fn reported_files(files: &[(&str, Vec<u8>)]) -> Value {
    use sha2::Digest;
    Value::Array(
        files
            .iter()
            .map(|(name, bytes)| {
                json!({"name": name, "size": bytes.len(), "sha256": hex::encode(sha2::Sha256::digest(bytes))})
            })
            .collect(),
    )
}

/// The methods the router serves at `path`, from its 405 answer's `Allow` header (HEAD left
/// out: axum answers it with GET).
#[allow(dead_code)]
pub async fn served_methods(
    app: &TestApp,
    client: &reqwest::Client,
    path: &str,
) -> Vec<reqwest::Method> {
    let probe = client
        .request(
            reqwest::Method::from_bytes(b"PROBE").unwrap(),
            app.url(path),
        )
        .header(ORIGIN, &app.address)
        .send()
        .await
        .unwrap();
    assert_eq!(probe.status(), 405, "{path} answers an unknown method");
    let allow = probe.headers()["allow"].to_str().unwrap().to_owned();
    allow
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty() && *m != "HEAD")
        .map(|m| reqwest::Method::from_bytes(m.as_bytes()).unwrap())
        .collect()
}
