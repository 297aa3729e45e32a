//! SSR and API throughput benchmark (docs/PERFORMANCE.md, issue 14): the real release server as
//! a child process on a fresh database, one user with 50 jobs (one made through the API, the
//! others copied from it by SQL with a mix of outcomes and live metrics, so the list is full
//! without training 50 runs), and wrk at 64 connections, signed in, on:
//!
//! - `GET /jobs?per_page=50`, the Jobs page as a browser asks for it, with and without brotli;
//! - `GET /api/jobs?limit=50`, the same page of jobs as JSON, with and without brotli;
//! - `GET /api/auth/me`, the floor: authentication and a tiny answer.
//!
//! It prints requests per second, latency percentiles, errors, the answer's size as sent, and
//! the server's memory (VmRSS, VmHWM) and CPU during each run.
//!
//!   scripts/bench/ssr.sh
//!   LORA_PIPELINE_BIN=… LP_TEST_ADMIN_URL=… bench_ssr [--connections N] [--seconds S] [--jobs J]
//!
//! wrk runs on the same machine as the server and Postgres (loopback), so the numbers are for
//! the three sharing its cores.

mod common;

use common::*;
use std::process::Command;
use std::str::FromStr;

use reqwest::header::{ACCEPT_ENCODING, CONTENT_TYPE, ORIGIN, SET_COOKIE};
use serde_json::json;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

struct Args {
    connections: usize,
    seconds: u64,
    jobs: usize,
}

impl Args {
    fn parse() -> Self {
        let mut args = Self {
            connections: 64,
            seconds: 10,
            jobs: 50,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            match flag.as_str() {
                "--connections" => args.connections = USAGE.number(&flag, it.next()),
                "--seconds" => args.seconds = USAGE.number(&flag, it.next()),
                "--jobs" => args.jobs = USAGE.number(&flag, it.next()),
                "-h" | "--help" => USAGE.exit(""),
                other => USAGE.exit(&format!("unknown argument {other}")),
            }
        }
        if args.connections == 0 || args.seconds == 0 || !(1..=100).contains(&args.jobs) {
            USAGE.exit("--connections and --seconds must be at least 1, --jobs 1 to 100");
        }
        args
    }
}

const USAGE: Usage =
    Usage("usage: bench_ssr [--connections N (64)] [--seconds S (10)] [--jobs J (50)]");

#[tokio::main]
async fn main() {
    let args = Args::parse();
    raise_fd_limit();
    if Command::new("wrk").arg("--version").output().is_err() {
        eprintln!("wrk is not installed (apt-get install wrk; scripts/bench/ssr.sh does)");
        std::process::exit(2);
    }
    let database_url = fresh_database().await;
    // RunPod points at a port nobody listens on and the seed job is cancelled at once: nothing
    // trains or retries in the background while wrk measures.
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
    let (client, user) = register(&server.base).await;
    let dataset = ready_dataset(&client, &server.base).await;
    let body = job_body(&client, &server.base, &dataset).await;
    let seed = create_job(&client, &server.base, &body).await;
    let cancelled = post(
        &client,
        &server.base,
        &format!("/api/jobs/{seed}/cancel"),
        &json!({}),
    )
    .await;
    assert!(
        cancelled.status().is_success(),
        "cancel the seed job: {}",
        cancelled.status()
    );
    copy_jobs(&database_url, seed, user, args.jobs - 1).await;
    let cookie = session_cookie(&server.base).await;

    let (rss_idle, _) = server.memory_mb();
    println!(
        "server pid {}, {} jobs, wrk: {} connections × {} s per run, {} cores; idle RSS {rss_idle:.1} MB",
        server.pid,
        args.jobs,
        args.connections,
        args.seconds,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );
    println!(
        "{:<28} {:>6} {:>9} {:>8} {:>8} {:>8} {:>7} {:>8} {:>8} {:>6}",
        "request",
        "enc",
        "req/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "errors",
        "bytes",
        "RSS MB",
        "CPU %"
    );
    let limit = args.jobs;
    let runs = [
        (format!("/jobs?per_page={limit}"), true),
        (format!("/jobs?per_page={limit}"), false),
        (format!("/api/jobs?limit={limit}"), true),
        (format!("/api/jobs?limit={limit}"), false),
        ("/api/auth/me".to_owned(), false),
    ];
    for (path, brotli) in runs {
        let url = format!("{}{path}", server.base);
        let size = answer_size(&url, &cookie, brotli, args.jobs).await;
        let cpu_before = server.cpu_seconds();
        let wall = std::time::Instant::now();
        let result = wrk(&url, &cookie, brotli, &args);
        let cpu = (server.cpu_seconds() - cpu_before) / wall.elapsed().as_secs_f64() * 100.0;
        let (rss, _) = server.memory_mb();
        println!(
            "{path:<28} {:>6} {:>9.0} {:>8.1} {:>8.1} {:>8.1} {:>7} {:>8} {:>8.1} {:>6.0}",
            if brotli { "br" } else { "none" },
            result.requests_per_s,
            result.p50_ms,
            result.p99_ms,
            result.max_ms,
            result.errors,
            size,
            rss,
            cpu,
        );
    }
    let (_, hwm) = server.memory_mb();
    println!("server peak RSS (VmHWM) {hwm:.1} MB");
    server.stop().await;
}

/// Copies the seed job `copies` times under the same user, a minute apart, as a mix of
/// completed, failed, cancelled and running jobs with metrics, as a busy account's list is.
async fn copy_jobs(database_url: &str, seed: uuid::Uuid, user: uuid::Uuid, copies: usize) {
    // As superuser on the benchmark's database: row-level security does not apply.
    let admin_url = std::env::var("LP_TEST_ADMIN_URL").expect("LP_TEST_ADMIN_URL is set");
    let name = url::Url::parse(database_url)
        .expect("the database URL parses")
        .path()
        .trim_start_matches('/')
        .to_owned();
    let mut conn = PgConnectOptions::from_str(&admin_url)
        .expect("LP_TEST_ADMIN_URL is a URL")
        .database(&name)
        .connect()
        .await
        .expect("connect to the benchmark database as superuser");
    let metrics = json!({
        "step": 96, "total_steps": 120, "epoch": 2.4, "train_loss": 1.2345,
        "learning_rate": 0.000123, "grad_norm": 0.87, "tokens_per_sec": 5321.5,
        "gpu_util": 97.0, "elapsed_s": 812.4, "gpu_memory_gb": 21.3,
        "progress": 80.0, "eta_s": 203.1, "current_cost": 0.0912
    });
    let mut tx = conn.begin().await.expect("begin");
    sqlx::query(
        "CREATE TEMP TABLE seed ON COMMIT DROP AS SELECT * FROM training_jobs WHERE id = $1",
    )
    .bind(seed)
    .execute(&mut *tx)
    .await
    .expect("copy the seed job");
    for i in 1..=copies {
        let (status, stage) = match i % 4 {
            0 => ("completed", "completed"),
            1 => ("failed", "failed"),
            2 => ("cancelled", "cancelled"),
            _ => ("running", "training"),
        };
        let done = status != "running";
        sqlx::query(
            "UPDATE seed SET id = gen_random_uuid(), created_at = now() - make_interval(mins => $1),
                    status = $2, current_stage = $3, progress = CASE WHEN $4 THEN 100 ELSE 80 END,
                    current_step = 96, total_steps = 120, current_epoch = 2.4, current_metrics = $5,
                    current_cost = 0.0912, final_cost = CASE WHEN $4 THEN 0.1123 END,
                    started_at = now() - make_interval(mins => $1 + 20),
                    completed_at = CASE WHEN $4 THEN now() - make_interval(mins => $1) END,
                    error_code = CASE WHEN $2 = 'failed' THEN 'out_of_memory' END,
                    error_message = CASE WHEN $2 = 'failed'
                        THEN 'The GPU ran out of memory at step 96: lower the batch size.' END,
                    execution_ms = 812400, user_id = $6",
        )
        .bind(i as i32)
        .bind(status)
        .bind(stage)
        .bind(done)
        .bind(&metrics)
        .bind(user)
        .execute(&mut *tx)
        .await
        .expect("vary the copy");
        sqlx::query("INSERT INTO training_jobs SELECT * FROM seed")
            .execute(&mut *tx)
            .await
            .expect("insert the copy");
    }
    tx.commit().await.expect("commit the copies");
}

/// Signs in again without a cookie store, to hand wrk the session cookie.
async fn session_cookie(base: &str) -> String {
    let response = reqwest::Client::new()
        .post(format!("{base}/api/auth/login"))
        .header(ORIGIN, base)
        .header(CONTENT_TYPE, "application/json")
        .body(json!({ "email": "bench@example.com", "password": PASSWORD }).to_string())
        .send()
        .await
        .expect("sign in");
    assert!(
        response.status().is_success(),
        "sign in: {}",
        response.status()
    );
    let set_cookie = response
        .headers()
        .get(SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .expect("the sign-in answer sets the session cookie");
    set_cookie
        .split(';')
        .next()
        .unwrap_or(set_cookie)
        .to_owned()
}

/// One request as wrk will make it: checks it succeeds (a page with every job) and returns
/// the body's size as sent.
async fn answer_size(url: &str, cookie: &str, brotli: bool, jobs: usize) -> usize {
    // No automatic decompression: the size is what travels.
    let client = reqwest::Client::builder()
        .no_brotli()
        .no_gzip()
        .build()
        .expect("an HTTP client");
    let mut request = client.get(url).header("cookie", cookie);
    if brotli {
        request = request.header(ACCEPT_ENCODING, "br");
    }
    let response = request.send().await.expect("the request is answered");
    assert_eq!(response.status(), 200, "GET {url}");
    let encoding = response
        .headers()
        .get("content-encoding")
        .map(|v| v.to_str().unwrap_or("").to_owned());
    let bytes = response.bytes().await.expect("the body is read");
    assert_eq!(
        encoding.as_deref(),
        brotli.then_some("br"),
        "GET {url}: content-encoding"
    );
    if !brotli && url.contains("jobs") {
        // Every job is there: a link to it on the page, its model in the JSON.
        let text = String::from_utf8_lossy(&bytes);
        let marker = if url.contains("/api/") {
            "\"base_model\""
        } else {
            "href=\"/jobs/"
        };
        let found = text.matches(marker).count();
        assert!(found >= jobs, "GET {url}: {found} jobs, {jobs} expected");
    }
    bytes.len()
}

struct WrkResult {
    requests_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    errors: u64,
}

fn wrk(url: &str, cookie: &str, brotli: bool, args: &Args) -> WrkResult {
    let mut command = Command::new("wrk");
    command
        .arg("-t2")
        .arg(format!("-c{}", args.connections))
        .arg(format!("-d{}s", args.seconds))
        .arg("--latency")
        .arg("-H")
        .arg(format!("Cookie: {cookie}"));
    if brotli {
        command.arg("-H").arg("Accept-Encoding: br");
    }
    let output = command
        .arg(url)
        .output()
        .unwrap_or_else(|e| panic!("run wrk: {e}"));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "wrk failed: {text}");
    let find = |prefix: &str| -> Option<&str> {
        text.lines()
            .map(str::trim)
            .find_map(|line| line.strip_prefix(prefix))
            .map(str::trim)
    };
    let errors = find("Non-2xx or 3xx responses:")
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0)
        + find("Socket errors:")
            .map(|s| {
                s.split(',')
                    .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                    .sum()
            })
            .unwrap_or(0);
    WrkResult {
        requests_per_s: find("Requests/sec:")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("wrk printed no rate: {text}")),
        p50_ms: find("50%").map_or(f64::NAN, duration_ms),
        p99_ms: find("99%").map_or(f64::NAN, duration_ms),
        max_ms: text
            .lines()
            .map(str::trim)
            .find(|line| line.starts_with("Latency"))
            .and_then(|line| line.split_whitespace().nth(3))
            .map_or(f64::NAN, duration_ms),
        errors,
    }
}

/// wrk's durations: `812.00us`, `1.23ms`, `2.01s`, `1.50m`.
fn duration_ms(text: &str) -> f64 {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => value / 1000.0,
        "ms" => value,
        "s" => value * 1000.0,
        "m" => value * 60_000.0,
        _ => f64::NAN,
    }
}
