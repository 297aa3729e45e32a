//! What the benchmark programs share: a fresh database on the throwaway cluster, the real
//! server as a child process, and the API calls that make a user, a ready dataset and jobs.

#![allow(dead_code)] // each benchmark uses its own part

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use reqwest::header::{CONTENT_TYPE, ORIGIN};
use serde_json::{Value, json};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

pub const APP_ROLE: &str = "lora_bench_app";
pub const PASSWORD: &str = "correct horse battery staple";
/// The sample dataset (the repository's shared test data).
pub const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/datasets/openai-chat.jsonl"
);

/// A benchmark's command line, by its usage line (printed on an error and for `--help`).
pub struct Usage(pub &'static str);

impl Usage {
    /// The whole-number value given to `flag`, or the usage with the problem.
    pub fn number<T: FromStr>(&self, flag: &str, value: Option<String>) -> T {
        value
            .as_deref()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| self.exit(&format!("{flag} needs a whole number")))
    }

    /// Prints the problem (none for `--help`), the usage and the environment every benchmark
    /// reads, and exits with status 2.
    pub fn exit(&self, problem: &str) -> ! {
        if !problem.is_empty() {
            eprintln!("error: {problem}");
        }
        eprintln!("{}", self.0);
        eprintln!(
            "environment: LORA_PIPELINE_BIN (the server binary), LP_TEST_ADMIN_URL (a superuser URL)"
        );
        std::process::exit(2)
    }
}

pub fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

/// Raises the soft open-file limit to the hard one (the server inherits it); returns it.
pub fn raise_fd_limit() -> libc::rlim_t {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        }
    }
    limit.rlim_cur
}

/// Creates an empty database owned by an ordinary role on the cluster of LP_TEST_ADMIN_URL (as
/// server/tests/common does); returns the URL the server connects with.
pub async fn fresh_database() -> String {
    let admin_url = std::env::var("LP_TEST_ADMIN_URL").expect(
        "LP_TEST_ADMIN_URL is not set: run scripts/bench/*.sh, which starts a throwaway \
         PostgreSQL cluster, or export a superuser URL",
    );
    let admin = PgConnectOptions::from_str(&admin_url).expect("LP_TEST_ADMIN_URL is a valid URL");
    let mut conn = admin
        .connect()
        .await
        .expect("connect to the cluster as superuser");
    // Roles are cluster-wide: tolerate one left by an earlier run.
    let _ = sqlx::query(
        "DO $$ BEGIN CREATE ROLE lora_bench_app LOGIN NOSUPERUSER NOBYPASSRLS; \
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$",
    )
    .execute(&mut conn)
    .await;
    let name = format!("bench_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {name} OWNER {APP_ROLE}"
    )))
    .execute(&mut conn)
    .await
    .expect("create the benchmark database");
    conn.close().await.ok();
    let mut url = url::Url::parse(&admin_url).expect("LP_TEST_ADMIN_URL is a valid URL");
    url.set_username(APP_ROLE)
        .expect("the admin URL can carry a user name");
    url.set_password(None)
        .expect("the admin URL can drop its password");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// The release server, run as `lora-pipeline serve` in a child process.
pub struct Server {
    child: Child,
    pub pid: libc::pid_t,
    /// `http://127.0.0.1:<port>`: the origin of its pages, too.
    pub base: String,
    pub log: PathBuf,
    /// DATA_DIR (objects, signing key, the log); removed after the server has stopped.
    _data_dir: tempfile::TempDir,
}

impl Server {
    /// Starts the server on a free port with `extra` environment, and waits for `/readyz`.
    pub async fn start(database_url: &str, extra: &[(&str, String)]) -> Self {
        let bin = std::env::var("LORA_PIPELINE_BIN").expect(
            "LORA_PIPELINE_BIN is not set: point it at the release lora-pipeline binary \
             (scripts/bench/*.sh do)",
        );
        let data_dir = tempfile::Builder::new()
            .prefix("lp-bench-")
            .tempdir()
            .expect("a temporary DATA_DIR");
        let log = data_dir.path().join("server.log");
        let stdout = std::fs::File::create(&log).expect("create the server log");
        let stderr = stdout.try_clone().expect("share the server log");
        // Bind port 0 to learn a free port, then let it go for the server.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|probe| probe.local_addr())
            .expect("find a free port")
            .port();
        let mut command = Command::new(&bin);
        command
            .arg("serve")
            // Away from any .env of the checkout: only what we set here configures it.
            .current_dir(data_dir.path())
            .env("DATABASE_URL", database_url)
            .env("DATA_DIR", data_dir.path())
            .env("BIND_ADDR", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr));
        for (key, value) in extra {
            command.env(key, value);
        }
        // If the benchmark dies (a failed expect), the server goes with it.
        let die_with_parent = || -> std::io::Result<()> {
            // SAFETY: prctl is async-signal-safe, as code between fork and exec must be.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
            Ok(())
        };
        // SAFETY: the hook only calls prctl.
        unsafe { command.pre_exec(die_with_parent) };
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let mut server = Self {
            pid: child.id() as libc::pid_t,
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
            _data_dir: data_dir,
        };
        server.wait_ready().await;
        server
    }

    pub async fn wait_ready(&mut self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the server exited ({status}) before it was ready; its log:\n{}",
                    self.log_tail(40)
                );
            }
            if let Ok(response) = client.get(format!("{}/readyz", self.base)).send().await
                && response.status() == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the server was not ready within 120 s; its log:\n{}",
                self.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut tail: Vec<&str> = text.lines().rev().take(lines).collect();
        tail.reverse();
        tail.join("\n")
    }

    /// Warning and error lines in the server's log, and the first few of them.
    pub fn log_summary(&self) -> (usize, usize, Vec<String>) {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let warnings = text.lines().filter(|l| l.contains(" WARN ")).count();
        let errors = text.lines().filter(|l| l.contains(" ERROR ")).count();
        let first: Vec<String> = text
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .take(3)
            .map(|l| l.chars().take(300).collect::<String>())
            .collect();
        (warnings, errors, first)
    }

    /// (VmRSS, VmHWM) in MB, from /proc/<pid>/status.
    pub fn memory_mb(&self) -> (f64, f64) {
        memory_mb(self.pid)
    }

    /// CPU time (user + system) the server has used, in seconds, from /proc/<pid>/stat.
    pub fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        // Field 2, the command name, is in parentheses and may hold spaces: count after it.
        // There, utime and stime (fields 14 and 15) are the 12th and 13th.
        let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = [11, 12]
            .iter()
            .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
            .sum();
        // SAFETY: sysconf only reads a constant of the system.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
        ticks as f64 / per_second as f64
    }

    /// SIGTERM (a graceful shutdown), then waits; SIGKILL if it takes too long.
    pub async fn stop(mut self) {
        // SAFETY: sends a signal to our own child.
        unsafe { libc::kill(self.pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(45);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("the server did not stop within 45 s of SIGTERM; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A panic on the way: do not leave the server running.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A client that keeps cookies, like a browser.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client")
}

/// A same-origin JSON POST, as the app's own pages make it.
pub async fn post(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    body: &Value,
) -> reqwest::Response {
    client
        .post(format!("{base}{path}"))
        .header(ORIGIN, base)
        .header(CONTENT_TYPE, "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"))
}

pub async fn get_json(client: &reqwest::Client, base: &str, path: &str) -> Value {
    client
        .get(format!("{base}{path}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: not JSON: {e}"))
}

/// Registers the benchmark's user; returns its signed-in client and id.
pub async fn register(base: &str) -> (reqwest::Client, uuid::Uuid) {
    let client = browser();
    let response = post(
        &client,
        base,
        "/api/auth/register",
        &json!({ "email": "bench@example.com", "password": PASSWORD }),
    )
    .await;
    assert_eq!(response.status(), 201, "register the benchmark user");
    let body: Value = response.json().await.expect("the register answer is JSON");
    let id = body["data"]["user"]["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("the register answer names the user's id");
    (client, id)
}

/// Uploads the sample dataset and waits until it is ready to train; returns its id.
pub async fn ready_dataset(client: &reqwest::Client, base: &str) -> String {
    let bytes = std::fs::read(SAMPLE).unwrap_or_else(|e| panic!("{SAMPLE}: {e}"));
    let response = post(
        client,
        base,
        "/api/datasets",
        &json!({ "name": "bench", "file_name": "openai-chat.jsonl", "file_size": bytes.len() }),
    )
    .await;
    assert_eq!(response.status(), 201, "create the dataset");
    let created: Value = response.json().await.expect("the dataset answer is JSON");
    let id = created["data"]["dataset"]["id"]
        .as_str()
        .expect("the dataset answer names its id")
        .to_owned();
    let upload_url = created["data"]["uploadUrl"]
        .as_str()
        .expect("the dataset answer has an upload URL");
    let put = reqwest::Client::new()
        .put(upload_url)
        .body(bytes)
        .send()
        .await
        .expect("upload the sample");
    assert_eq!(put.status(), 200, "upload the sample");
    let confirmed = post(
        client,
        base,
        &format!("/api/datasets/{id}/confirm"),
        &json!({}),
    )
    .await;
    assert_eq!(confirmed.status(), 202, "confirm the upload");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let body = get_json(client, base, &format!("/api/datasets/{id}")).await;
        match body["data"]["status"].as_str() {
            Some("ready") => return id,
            Some("invalid") => panic!("the sample is invalid: {body}"),
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "validation did not finish in 120 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The body of `POST /api/jobs`: the demo model on a RunPod GPU type (so the job goes to the
/// configured RunPod endpoint), the "fast" preset without quantization.
pub async fn job_body(client: &reqwest::Client, base: &str, dataset: &str) -> Value {
    let catalog = get_json(client, base, "/api/catalog").await;
    let mut hyperparameters = catalog["data"]["presets"]["fast"].clone();
    assert!(
        hyperparameters.is_object(),
        "the catalog has a fast preset: {catalog}"
    );
    hyperparameters["quantization"] = json!("none");
    json!({
        "dataset_id": dataset, "base_model": "tiny-random-llama", "preset": "fast",
        "hyperparameters": hyperparameters, "gpu_type": "A4000", "gpu_count": 1,
    })
}

pub async fn create_job(client: &reqwest::Client, base: &str, body: &Value) -> uuid::Uuid {
    let response = post(client, base, "/api/jobs", body).await;
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or_default();
    assert_eq!(status, 201, "create the job: {answer}");
    answer["data"]["job"]["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("the job answer names its id")
}

/// Serves `router` on a free loopback port in this process (a simulated GPU backend); returns
/// its address.
pub async fn serve_locally(router: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the simulated endpoint");
    let addr = listener.local_addr().expect("the endpoint's address");
    tokio::spawn(async move {
        axum::serve(listener, router)
            .await
            .expect("the simulated endpoint runs");
    });
    addr
}

/// A process's resident memory now and at its peak (VmRSS, VmHWM), in MB.
pub fn memory_mb(pid: libc::pid_t) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}
