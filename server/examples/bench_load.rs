//! Load test (docs/PERFORMANCE.md, issue 16): the real release server as a child process on a
//! fresh database, a simulated RunPod endpoint in this process that feeds every job a stage and
//! then a training-metrics chunk on each `/stream`, N jobs running on it with their owners'
//! browsers following each job's live events, and U simulated users browsing the pages and the
//! API with a think time between requests — for a fixed time.
//!
//! It reports, per route: requests, errors (anything but 2xx, or a transport error), p50 and
//! p99 latency; the live events delivered over SSE; the server's CPU and memory. Loopback only.
//!
//!   scripts/bench/load.sh
//!   LORA_PIPELINE_BIN=… LP_TEST_ADMIN_URL=… bench_load [--users U] [--jobs J] [--seconds S]
//!       [--think-ms MS]

mod common;

use common::*;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::{get, post as route_post};
use futures::StreamExt;
use serde_json::{Value, json};

/// An account may run this many jobs at once (the catalog's default limit).
const JOBS_PER_OWNER: usize = 3;
/// Training steps a simulated job announces: more than a run reaches, so none ends.
const TOTAL_STEPS: u64 = 1_000_000;

struct Args {
    users: usize,
    jobs: usize,
    seconds: u64,
    think: Duration,
}

const USAGE: Usage = Usage(
    "usage: bench_load [--users U (200)] [--jobs J (50)] [--seconds S (300)] [--think-ms MS (2000)]",
);

impl Args {
    fn parse() -> Self {
        let mut args = Self {
            users: 200,
            jobs: 50,
            seconds: 300,
            think: Duration::from_millis(2000),
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            match flag.as_str() {
                "--users" => args.users = USAGE.number(&flag, it.next()),
                "--jobs" => args.jobs = USAGE.number(&flag, it.next()),
                "--seconds" => args.seconds = USAGE.number(&flag, it.next()),
                "--think-ms" => args.think = Duration::from_millis(USAGE.number(&flag, it.next())),
                "-h" | "--help" => USAGE.exit(""),
                other => USAGE.exit(&format!("unknown argument {other}")),
            }
        }
        if args.users == 0 || args.seconds == 0 {
            USAGE.exit("--users and --seconds must be at least 1");
        }
        args
    }
}

// ---------------------------------------------------------------------------------------------
// The simulated RunPod endpoint: every job trains forever, one step per `/stream`.
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Endpoint {
    /// Steps reported so far, by job id.
    steps: Mutex<HashMap<String, u64>>,
    calls: AtomicU64,
}

type Shared = Arc<Endpoint>;

async fn start_endpoint() -> (Shared, std::net::SocketAddr) {
    let endpoint: Shared = Arc::default();
    let router = Router::new()
        .route("/v2/bench/run", route_post(on_run))
        .route("/v2/bench/status/{id}", get(on_status))
        .route("/v2/bench/stream/{id}", get(on_stream))
        .route("/v2/bench/cancel/{id}", route_post(on_cancel))
        .with_state(endpoint.clone());
    (endpoint, serve_locally(router).await)
}

async fn on_run(State(endpoint): State<Shared>, _body: Bytes) -> Json<Value> {
    endpoint.calls.fetch_add(1, Ordering::Relaxed);
    let mut steps = endpoint.steps.lock().expect("not poisoned");
    let id = format!("load-{}", steps.len() + 1);
    steps.insert(id.clone(), 0);
    Json(json!({ "id": id, "status": "IN_QUEUE" }))
}

async fn on_status(State(endpoint): State<Shared>, Path(id): Path<String>) -> Json<Value> {
    endpoint.calls.fetch_add(1, Ordering::Relaxed);
    Json(json!({ "id": id, "status": "IN_PROGRESS", "delayTime": 100, "executionTime": 1000 }))
}

/// The stage on the first call, then one step's metrics per call.
async fn on_stream(State(endpoint): State<Shared>, Path(id): Path<String>) -> Json<Value> {
    endpoint.calls.fetch_add(1, Ordering::Relaxed);
    let step = {
        let mut steps = endpoint.steps.lock().expect("not poisoned");
        let step = steps.entry(id).or_default();
        *step += 1;
        *step
    };
    let output = if step == 1 {
        json!({
            "type": "stage", "stage": "training", "message": "training", "elapsed_s": 1.0,
            "total_steps": TOTAL_STEPS, "train_examples": 9, "eval_examples": 1,
        })
    } else {
        json!({
            "type": "metrics", "step": step, "total_steps": TOTAL_STEPS,
            "epoch": step as f64 / TOTAL_STEPS as f64,
            "train_loss": 2.0 / (1.0 + step as f64 / 100.0), "learning_rate": 0.0001,
            "grad_norm": 0.5, "tokens_per_sec": 1000.0, "gpu_util": 90.0, "elapsed_s": step as f64,
        })
    };
    Json(json!({ "status": "IN_PROGRESS", "stream": [{ "output": output }] }))
}

async fn on_cancel(State(endpoint): State<Shared>, Path(id): Path<String>) -> Json<Value> {
    endpoint.calls.fetch_add(1, Ordering::Relaxed);
    Json(json!({ "id": id, "status": "CANCELLED" }))
}

// ---------------------------------------------------------------------------------------------
// Users
// ---------------------------------------------------------------------------------------------

/// Latencies (ms) and errors per route label.
#[derive(Default)]
struct Results {
    latencies: BTreeMap<&'static str, Vec<f64>>,
    errors: BTreeMap<&'static str, u64>,
    /// The first few errors, to show.
    samples: Vec<String>,
}

type SharedResults = Arc<Mutex<Results>>;

fn record(results: &SharedResults, route: &'static str, ms: f64, error: Option<String>) {
    let mut r = results.lock().expect("not poisoned");
    r.latencies.entry(route).or_default().push(ms);
    if let Some(error) = error {
        *r.errors.entry(route).or_default() += 1;
        if r.samples.len() < 10 {
            r.samples.push(format!("{route}: {error}"));
        }
    }
}

/// One signed-in user's view of the platform.
struct User {
    client: reqwest::Client,
    jobs: Vec<uuid::Uuid>,
}

/// What a browsing user asks for, with its route label (the server's route template).
fn pick(user: &User, n: u64) -> (&'static str, String) {
    let job = user.jobs.get(n as usize % user.jobs.len().max(1));
    match n % 12 {
        0 => ("page /", "/".into()),
        1 => ("page /jobs", "/jobs".into()),
        2 => ("page /datasets", "/datasets".into()),
        3 => ("page /models", "/models".into()),
        4 => ("page /costs", "/costs".into()),
        5 => match job {
            Some(job) => ("page /jobs/{id}", format!("/jobs/{job}")),
            None => ("page /train", "/train".into()),
        },
        6 => ("GET /api/jobs", "/api/jobs?limit=25".into()),
        7 => ("GET /api/datasets", "/api/datasets".into()),
        8 => ("GET /api/notifications", "/api/notifications".into()),
        9 => match job {
            Some(job) => ("GET /api/jobs/{id}", format!("/api/jobs/{job}")),
            None => ("GET /api/catalog", "/api/catalog".into()),
        },
        10 => ("GET /api/costs", "/api/costs".into()),
        _ => ("GET /api/auth/me", "/api/auth/me".into()),
    }
}

async fn browse(
    user: Arc<User>,
    base: String,
    think: Duration,
    until: Instant,
    seed: u64,
    results: SharedResults,
) {
    let mut n = seed;
    while Instant::now() < until {
        // Think times spread from 0.5× to 1.5× so users do not move in step.
        n = n
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let jitter = 0.5 + (n >> 33) as f64 / (1u64 << 31) as f64;
        tokio::time::sleep(think.mul_f64(jitter)).await;
        if Instant::now() >= until {
            break;
        }
        let (route, path) = pick(&user, n >> 40);
        let started = Instant::now();
        let outcome = match user.client.get(format!("{base}{path}")).send().await {
            Ok(response) => {
                let status = response.status();
                // The whole body: a page is only served once it is all sent.
                match response.bytes().await {
                    Ok(_) if status.is_success() => None,
                    Ok(_) => Some(format!("{status} for {path}")),
                    Err(e) => Some(format!("body of {path}: {e}")),
                }
            }
            Err(e) => Some(format!("{path}: {e}")),
        };
        record(
            &results,
            route,
            started.elapsed().as_secs_f64() * 1000.0,
            outcome,
        );
    }
}

/// Follows one job's live events until `until`; returns the events received.
async fn follow(
    client: reqwest::Client,
    base: String,
    job: uuid::Uuid,
    until: Instant,
    results: SharedResults,
) -> u64 {
    let started = Instant::now();
    let response = match client
        .get(format!("{base}/api/jobs/{job}/events"))
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => r,
        Ok(r) => {
            record(
                &results,
                "SSE /api/jobs/{id}/events",
                0.0,
                Some(format!("{}", r.status())),
            );
            return 0;
        }
        Err(e) => {
            record(
                &results,
                "SSE /api/jobs/{id}/events",
                0.0,
                Some(e.to_string()),
            );
            return 0;
        }
    };
    record(
        &results,
        "SSE /api/jobs/{id}/events",
        started.elapsed().as_secs_f64() * 1000.0,
        None,
    );
    let mut body = response.bytes_stream();
    let mut events = 0;
    // Frames end with a blank line and may arrive split: count those carrying data (a
    // keep-alive is a comment line only).
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, body.next()).await {
            Ok(Some(Ok(chunk))) => {
                pending.extend_from_slice(&chunk);
                while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
                    let frame: Vec<u8> = pending.drain(..end + 2).collect();
                    if frame.starts_with(b"data:") || frame.windows(6).any(|w| w == b"\ndata:") {
                        events += 1;
                    }
                }
            }
            Ok(Some(Err(e))) => {
                record(
                    &results,
                    "SSE /api/jobs/{id}/events",
                    0.0,
                    Some(format!("stream broke: {e}")),
                );
                return events;
            }
            Ok(None) => {
                record(
                    &results,
                    "SSE /api/jobs/{id}/events",
                    0.0,
                    Some("stream ended early".into()),
                );
                return events;
            }
            Err(_) => return events,
        }
    }
}

/// Registers a user (open registration), signed in.
async fn register_user(base: &str, i: usize) -> reqwest::Client {
    let client = browser();
    let response = post(
        &client,
        base,
        "/api/auth/register",
        &json!({ "email": format!("load{i}@example.com"), "password": PASSWORD }),
    )
    .await;
    assert_eq!(response.status(), 201, "register user {i}");
    client
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    raise_fd_limit();
    let (endpoint, endpoint_addr) = start_endpoint().await;
    let database_url = fresh_database().await;
    let env = vec![
        ("RUNPOD_API_KEY", "bench".to_owned()),
        ("RUNPOD_ENDPOINT_ID", "bench".to_owned()),
        ("RUNPOD_API_URL", format!("http://{endpoint_addr}/v2")),
        ("EXECUTOR_SLOTS", "0".to_owned()),
        ("REGISTRATION", "open".to_owned()),
        ("REGISTRATIONS_PER_HOUR", "100000".to_owned()),
        ("STREAMS_PER_USER", "100".to_owned()),
    ];
    let server = Server::start(&database_url, &env).await;
    let base = server.base.clone();

    // Accounts: the first ones own the jobs (a few each, as the limit allows).
    let setup = Instant::now();
    let owners = args.jobs.div_ceil(JOBS_PER_OWNER);
    let clients: Vec<reqwest::Client> = futures::stream::iter(0..args.users.max(owners))
        .map(|i| register_user(&base, i))
        .buffered(8)
        .collect()
        .await;
    let mut users: Vec<User> = clients
        .into_iter()
        .map(|client| User {
            client,
            jobs: Vec::new(),
        })
        .collect();
    let mut remaining = args.jobs;
    for user in users.iter_mut().take(owners) {
        let dataset = ready_dataset(&user.client, &base).await;
        let body = job_body(&user.client, &base, &dataset).await;
        for _ in 0..remaining.min(JOBS_PER_OWNER) {
            user.jobs.push(create_job(&user.client, &base, &body).await);
        }
        remaining -= remaining.min(JOBS_PER_OWNER);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while endpoint.steps.lock().expect("not poisoned").len() < args.jobs {
        assert!(
            Instant::now() < deadline,
            "the jobs did not all reach the simulated RunPod"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "server pid {}: {} users, {} jobs running on the simulated RunPod (set up in {:.0} s); load for {} s, think time {} ms",
        server.pid,
        users.len(),
        args.jobs,
        setup.elapsed().as_secs_f64(),
        args.seconds,
        args.think.as_millis()
    );

    let results: SharedResults = Arc::default();
    let until = Instant::now() + Duration::from_secs(args.seconds);
    let cpu_before = server.cpu_seconds();
    let from = Instant::now();
    let users: Vec<Arc<User>> = users.into_iter().map(Arc::new).collect();
    let mut tasks = tokio::task::JoinSet::new();
    let mut streams = tokio::task::JoinSet::new();
    for (i, user) in users.iter().enumerate() {
        for job in &user.jobs {
            streams.spawn(follow(
                user.client.clone(),
                base.clone(),
                *job,
                until,
                results.clone(),
            ));
        }
        tasks.spawn(browse(
            user.clone(),
            base.clone(),
            args.think,
            until,
            i as u64 * 7919 + 1,
            results.clone(),
        ));
    }
    let mut peak_rss: f64 = 0.0;
    while Instant::now() < until {
        tokio::time::sleep(
            Duration::from_secs(5).min(until.saturating_duration_since(Instant::now())),
        )
        .await;
        peak_rss = peak_rss.max(server.memory_mb().0);
    }
    while tasks.join_next().await.is_some() {}
    let mut events = 0;
    while let Some(received) = streams.join_next().await {
        events += received.unwrap_or(0);
    }
    let wall_s = from.elapsed().as_secs_f64();
    let cpu_s = server.cpu_seconds() - cpu_before;
    let (rss, hwm) = server.memory_mb();
    let (warnings, errors_logged, first_lines) = server.log_summary();
    server.stop().await;

    let results = Arc::try_unwrap(results)
        .ok()
        .expect("every user finished")
        .into_inner()
        .expect("not poisoned");
    let total: usize = results.latencies.values().map(Vec::len).sum();
    let errors: u64 = results.errors.values().sum();
    println!();
    println!(
        "Load — {} users (think {} ms), {} jobs streaming live events, {wall_s:.0} s",
        users.len(),
        args.think.as_millis(),
        args.jobs
    );
    println!(
        "  requests      {total} ({:.1}/s), errors {errors}",
        total as f64 / wall_s
    );
    println!(
        "  {:<30} {:>8} {:>7} {:>9} {:>9} {:>9}",
        "route", "requests", "errors", "p50 ms", "p99 ms", "max ms"
    );
    let mut per_route = serde_json::Map::new();
    for (route, latencies) in &results.latencies {
        let mut sorted = latencies.clone();
        sorted.sort_by(f64::total_cmp);
        let errs = results.errors.get(route).copied().unwrap_or(0);
        let (p50, p99, max) = (
            percentile(&sorted, 50.0),
            percentile(&sorted, 99.0),
            sorted.last().copied().unwrap_or(0.0),
        );
        println!(
            "  {route:<30} {:>8} {errs:>7} {p50:>9.1} {p99:>9.1} {max:>9.1}",
            sorted.len()
        );
        per_route.insert(
            (*route).to_owned(),
            json!({ "requests": sorted.len(), "errors": errs, "p50_ms": round(p50, 1), "p99_ms": round(p99, 1), "max_ms": round(max, 1) }),
        );
    }
    for sample in &results.samples {
        println!("    {sample}");
    }
    let cpu_percent = cpu_s / wall_s * 100.0;
    println!(
        "  live events   {events} delivered over {} streams ({:.1}/s); simulated RunPod answered {} calls",
        args.jobs,
        events as f64 / wall_s,
        endpoint.calls.load(Ordering::Relaxed)
    );
    println!(
        "  server CPU    {cpu_s:.1} s over {wall_s:.0} s = {cpu_percent:.0}% of one core (the load generator shares the machine)"
    );
    println!(
        "  server RSS    {rss:.1} MB at the end, {peak_rss:.1} MB sampled peak, {hwm:.1} MB high-water mark"
    );
    println!("  server log    {warnings} warnings, {errors_logged} errors");
    for line in &first_lines {
        println!("    {line}");
    }
    println!(
        "{}",
        json!({
            "bench": "load",
            "users": users.len(),
            "jobs": args.jobs,
            "think_ms": args.think.as_millis() as u64,
            "seconds": round(wall_s, 1),
            "requests": total,
            "requests_per_s": round(total as f64 / wall_s, 1),
            "errors": errors,
            "routes": per_route,
            "sse_events": events,
            "server_cpu_percent": round(cpu_percent, 1),
            "server_rss_mb": round(rss, 1),
            "server_hwm_mb": round(hwm, 1),
            "server_log": { "warnings": warnings, "errors": errors_logged },
        })
    );
    if errors > 0 {
        std::process::exit(1);
    }
}
