//! SSE fan-out benchmark (docs/PERFORMANCE.md): the real release server as a child process on a
//! fresh database, N subscribers on one job's event stream (`GET /api/jobs/{id}/events`), and a
//! publisher that records an event every interval through the job event log — the same INSERT +
//! NOTIFY the processor uses — so every event travels the production path: Postgres NOTIFY, the
//! server's hub, one broadcast per job, one SSE stream per subscriber.
//!
//! It reports delivery latency (from just before the INSERT to the arrival of the bytes at the
//! subscriber), the deliveries missing, and the server's memory (VmRSS, VmHWM) and CPU.
//!
//! Targets: p99 delivery ≤ 250 ms with 1,000 subscribers; server RSS ≤ 200 MB with 10,000.
//!
//!   scripts/bench/sse.sh
//!   LORA_PIPELINE_BIN=… LP_TEST_ADMIN_URL=… bench_sse [--subscribers N] [--events E] [--interval-ms MS]
//!
//! The subscribers run in this process and share the machine's cores with the server and
//! Postgres, so on a small machine the latency includes time spent waiting for a core.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use engine::db::Db;
use engine::jobs::events;
use futures::StreamExt;
use reqwest::header::{CONTENT_TYPE, ORIGIN};
use serde_json::{Value, json};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use tokio::sync::{oneshot, watch};

/// The role the server connects as: an ordinary one, as `serve` refuses a superuser.
const APP_ROLE: &str = "lora_bench_app";
const PASSWORD: &str = "correct horse battery staple";
/// The sample dataset (the repository's shared test data).
const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/datasets/openai-chat.jsonl"
);
/// Subscribers opened at once: enough to be quick, few enough not to overflow the listen backlog.
const CONNECT_BATCH: usize = 200;
/// How long one subscriber may take to get its 200 before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long after the last event the subscribers may still receive it.
const DRAIN: Duration = Duration::from_secs(5);

struct Args {
    subscribers: usize,
    events: usize,
    interval: Duration,
}

impl Args {
    fn parse() -> Self {
        let mut args = Self {
            subscribers: 1000,
            events: 50,
            interval: Duration::from_millis(100),
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            match flag.as_str() {
                "--subscribers" => args.subscribers = number(&flag, it.next()),
                "--events" => args.events = number(&flag, it.next()),
                "--interval-ms" => args.interval = Duration::from_millis(number(&flag, it.next())),
                "-h" | "--help" => usage(""),
                other => usage(&format!("unknown argument {other}")),
            }
        }
        if args.subscribers == 0 || args.events == 0 {
            usage("--subscribers and --events must be at least 1");
        }
        args
    }
}

fn number<T: FromStr>(flag: &str, value: Option<String>) -> T {
    value
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| usage(&format!("{flag} needs a whole number")))
}

fn usage(problem: &str) -> ! {
    if !problem.is_empty() {
        eprintln!("error: {problem}");
    }
    eprintln!(
        "usage: bench_sse [--subscribers N (1000)] [--events E (50)] [--interval-ms MS (100)]"
    );
    eprintln!(
        "environment: LORA_PIPELINE_BIN (the server binary), LP_TEST_ADMIN_URL (a superuser URL)"
    );
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let fd_limit = raise_fd_limit();
    // Every subscriber holds one socket here and one in the server (which inherits the limit).
    if fd_limit < (args.subscribers + 256) as libc::rlim_t {
        eprintln!(
            "warning: the open-file limit is {fd_limit}; {} subscribers need more (ulimit -n 65536)",
            args.subscribers
        );
    }

    let database_url = fresh_database().await;
    // RunPod is configured but points at a port nobody listens on: the job is never submitted
    // and stays queued while the submission retries. We only need a job row to publish to.
    let server = Server::start(
        &database_url,
        &[
            ("RUNPOD_API_KEY", "bench".to_owned()),
            ("RUNPOD_ENDPOINT_ID", "bench".to_owned()),
            ("RUNPOD_API_URL", "http://127.0.0.1:9/v2".to_owned()),
            ("EXECUTOR_SLOTS", "0".to_owned()),
        ],
    )
    .await;
    let (rss_idle, _) = server.memory_mb();
    let (client, user) = register(&server.base).await;
    let dataset = ready_dataset(&client, &server.base).await;
    let body = job_body(&client, &server.base, &dataset).await;
    let job = create_job(&client, &server.base, &body).await;
    println!(
        "server pid {}, job {job}, {} subscribers × {} events every {} ms",
        server.pid,
        args.subscribers,
        args.events,
        args.interval.as_millis()
    );

    // Open the subscribers in batches; each reports once it has its 200 and headers.
    let delivered = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let url = format!("{}/api/jobs/{job}/events", server.base);
    let mut handles = Vec::with_capacity(args.subscribers);
    let mut connected = 0u64;
    let mut failures: Vec<String> = Vec::new();
    let connect_started = Instant::now();
    let mut remaining = args.subscribers;
    while remaining > 0 {
        let batch = remaining.min(CONNECT_BATCH);
        remaining -= batch;
        let mut ready = Vec::with_capacity(batch);
        for _ in 0..batch {
            let (ready_tx, ready_rx) = oneshot::channel();
            handles.push(tokio::spawn(subscribe(
                client.clone(),
                url.clone(),
                ready_tx,
                stop_rx.clone(),
                delivered.clone(),
            )));
            ready.push(tokio::time::timeout(CONNECT_TIMEOUT, ready_rx));
        }
        for outcome in futures::future::join_all(ready).await {
            match outcome {
                Ok(Ok(Ok(()))) => connected += 1,
                Ok(Ok(Err(e))) => failures.push(e),
                Ok(Err(_)) => failures.push("the subscriber ended before connecting".into()),
                Err(_) => failures.push(format!("no answer within {CONNECT_TIMEOUT:?}")),
            }
        }
    }
    let connect_s = connect_started.elapsed().as_secs_f64();
    println!(
        "connected {connected} of {} subscribers in {connect_s:.1} s",
        args.subscribers
    );
    if let Some(first) = failures.first() {
        eprintln!("{} subscribers failed; the first: {first}", failures.len());
    }
    assert!(connected > 0, "no subscriber connected");
    // Let the replays of the job's earlier events (its creation) finish before measuring.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss_connected, hwm_connected) = server.memory_mb();

    // The publisher: its own pool on the same database, as a second replica's processor would.
    let options = PgConnectOptions::from_str(&database_url).expect("the database URL parses");
    let db = Db::connect(options, 2)
        .await
        .expect("the publisher connects as the app role");
    let cpu_before = server.cpu_seconds();
    let publish_started = Instant::now();
    let mut ticker = tokio::time::interval(args.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut published = 0u64;
    for i in 0..args.events {
        ticker.tick().await;
        let mut tx = db.system().await.expect("begin the publisher transaction");
        // Stamped just before the INSERT: the latency covers the write, the commit, NOTIFY, the
        // hub, the SSE stream and the socket.
        let sent = now_us();
        let recorded = events::record(
            &mut tx,
            user,
            job,
            "bench",
            &format!("bench:{i}"),
            json!({ "sent_us": sent }),
        )
        .await
        .expect("record a bench event");
        tx.commit().await.expect("commit the bench event");
        if recorded.is_some() {
            published += 1;
        }
    }
    let expected = connected * published;
    let drain_until = Instant::now() + DRAIN;
    while delivered.load(Ordering::Relaxed) < expected && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let publish_s = publish_started.elapsed().as_secs_f64();
    let cpu_publish_s = server.cpu_seconds() - cpu_before;
    let (rss_after, hwm_after) = server.memory_mb();

    // Stop the subscribers and collect what each measured. One still waiting for its headers
    // (counted as failed above) would never end by itself: it is aborted.
    let _ = stop_tx.send(true);
    let collect_until = Instant::now() + Duration::from_secs(10);
    let mut latencies: Vec<u64> = Vec::new();
    for handle in handles {
        let abort = handle.abort_handle();
        match tokio::time::timeout_at(collect_until.into(), handle).await {
            Ok(Ok(measured)) => latencies.extend(measured),
            Ok(Err(_)) => {}
            Err(_) => abort.abort(),
        }
    }
    latencies.sort_unstable();
    let deliveries = latencies.len() as u64;
    let missing = expected.saturating_sub(deliveries);
    let ms = |p: f64| percentile(&latencies, p) / 1000.0;
    let (p50, p90, p99) = (ms(50.0), ms(90.0), ms(99.0));
    let max = latencies.last().copied().unwrap_or(0) as f64 / 1000.0;
    let cpu_percent = cpu_publish_s / publish_s * 100.0;

    db.close().await;
    let (warnings, errors, first_lines) = server.log_summary();
    server.stop().await;

    println!();
    println!("SSE fan-out — one job, {connected} subscribers");
    println!(
        "  subscribers   {connected} connected of {} ({} failed) in {connect_s:.1} s",
        args.subscribers,
        failures.len()
    );
    println!(
        "  events        {published} published, one every {} ms",
        args.interval.as_millis()
    );
    println!("  deliveries    {deliveries} of {expected} expected ({missing} missing)");
    println!(
        "  latency       p50 {p50:.1} ms   p90 {p90:.1} ms   p99 {p99:.1} ms   max {max:.1} ms"
    );
    println!(
        "  server RSS    {rss_idle:.1} MB idle; {rss_connected:.1} MB connected (peak {hwm_connected:.1}); {rss_after:.1} MB after the run (peak {hwm_after:.1})"
    );
    println!(
        "  server CPU    {cpu_publish_s:.2} s over {publish_s:.1} s of publishing ({cpu_percent:.0}% of one core)"
    );
    println!("  server log    {warnings} warnings, {errors} errors");
    for line in &first_lines {
        println!("    {line}");
    }
    println!("  targets       p99 ≤ 250 ms at 1,000 subscribers; RSS ≤ 200 MB at 10,000");
    println!(
        "{}",
        json!({
            "bench": "sse",
            "subscribers": args.subscribers,
            "connected": connected,
            "connect_failures": failures.len(),
            "connect_s": round(connect_s, 2),
            "events_published": published,
            "interval_ms": args.interval.as_millis() as u64,
            "deliveries": deliveries,
            "expected": expected,
            "missing": missing,
            "latency_ms": {
                "p50": round(p50, 2), "p90": round(p90, 2), "p99": round(p99, 2), "max": round(max, 2),
            },
            "server_rss_mb": {
                "idle": round(rss_idle, 1),
                "connected": round(rss_connected, 1),
                "connected_peak": round(hwm_connected, 1),
                "after": round(rss_after, 1),
                "after_peak": round(hwm_after, 1),
            },
            "server_cpu_s_publish": round(cpu_publish_s, 3),
            "publish_s": round(publish_s, 2),
            "server_cpu_percent_publish": round(cpu_percent, 1),
            "server_log": { "warnings": warnings, "errors": errors },
        })
    );
}

/// One subscriber: opens the stream, says when it has its headers, then stamps the arrival of
/// every `bench` event until told to stop. Returns its latencies in microseconds.
async fn subscribe(
    client: reqwest::Client,
    url: String,
    ready: oneshot::Sender<Result<(), String>>,
    mut stop: watch::Receiver<bool>,
    delivered: Arc<AtomicU64>,
) -> Vec<u64> {
    let response = match client.get(url).send().await {
        Ok(r) if r.status() == 200 => r,
        Ok(r) => {
            let _ = ready.send(Err(format!("HTTP {}", r.status())));
            return Vec::new();
        }
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return Vec::new();
        }
    };
    if ready.send(Ok(())).is_err() {
        // The benchmark stopped waiting for us and counted us as failed.
        return Vec::new();
    }
    let mut body = response.bytes_stream();
    let mut buffer: Vec<u8> = Vec::new();
    let mut latencies = Vec::new();
    loop {
        let chunk = tokio::select! {
            chunk = body.next() => chunk,
            _ = stop.changed() => break,
        };
        // Stamped before any parsing, so our own work is not counted as delivery time.
        let arrived = now_us();
        let Some(Ok(chunk)) = chunk else {
            break; // the server ended the stream
        };
        buffer.extend_from_slice(&chunk);
        while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
            if let Some(sent) = bench_sent_us(&buffer[..end]) {
                latencies.push(arrived.saturating_sub(sent));
                delivered.fetch_add(1, Ordering::Relaxed);
            }
            buffer.drain(..end + 2);
        }
    }
    latencies
}

/// `payload.sent_us` of an SSE block whose event is `bench`; `None` for anything else
/// (the job's own events, keep-alive comments).
fn bench_sent_us(block: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(block).ok()?;
    let mut kind = "message";
    let mut data = String::new();
    for line in text.lines() {
        if let Some(value) = line.strip_prefix("event:") {
            kind = value.trim_start();
        } else if let Some(value) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(value.strip_prefix(' ').unwrap_or(value));
        }
    }
    if kind != "bench" {
        return None;
    }
    let event: Value = serde_json::from_str(&data).ok()?;
    event["payload"]["sent_us"].as_u64()
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)] as f64
}

fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

// ---------------------------------------------------------------------------------------------
// Shared with bench_processor.rs (examples cannot share a module without an extra file).
// ---------------------------------------------------------------------------------------------

/// Raises the soft open-file limit to the hard one (the server inherits it); returns it.
fn raise_fd_limit() -> libc::rlim_t {
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
async fn fresh_database() -> String {
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
struct Server {
    child: Child,
    pid: libc::pid_t,
    /// `http://127.0.0.1:<port>`: the origin of its pages, too.
    base: String,
    log: PathBuf,
    /// DATA_DIR (objects, signing key, the log); removed after the server has stopped.
    _data_dir: tempfile::TempDir,
}

impl Server {
    /// Starts the server on a free port with `extra` environment, and waits for `/readyz`.
    async fn start(database_url: &str, extra: &[(&str, String)]) -> Self {
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

    async fn wait_ready(&mut self) {
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

    fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut tail: Vec<&str> = text.lines().rev().take(lines).collect();
        tail.reverse();
        tail.join("\n")
    }

    /// Warning and error lines in the server's log, and the first few of them.
    fn log_summary(&self) -> (usize, usize, Vec<String>) {
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
    fn memory_mb(&self) -> (f64, f64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
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

    /// CPU time (user + system) the server has used, in seconds, from /proc/<pid>/stat.
    fn cpu_seconds(&self) -> f64 {
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
    async fn stop(mut self) {
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
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client")
}

/// A same-origin JSON POST, as the app's own pages make it.
async fn post(client: &reqwest::Client, base: &str, path: &str, body: &Value) -> reqwest::Response {
    client
        .post(format!("{base}{path}"))
        .header(ORIGIN, base)
        .header(CONTENT_TYPE, "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"))
}

async fn get_json(client: &reqwest::Client, base: &str, path: &str) -> Value {
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
async fn register(base: &str) -> (reqwest::Client, uuid::Uuid) {
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
async fn ready_dataset(client: &reqwest::Client, base: &str) -> String {
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
async fn job_body(client: &reqwest::Client, base: &str, dataset: &str) -> Value {
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

async fn create_job(client: &reqwest::Client, base: &str, body: &Value) -> uuid::Uuid {
    let response = post(client, base, "/api/jobs", body).await;
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or_default();
    assert_eq!(status, 201, "create the job: {answer}");
    answer["data"]["job"]["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("the job answer names its id")
}
