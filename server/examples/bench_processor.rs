//! Job processor benchmark (docs/PERFORMANCE.md): the real release server as a child process,
//! configured for RunPod, against a simulated RunPod endpoint in this process that answers every
//! call after a fixed latency. N jobs are created through the API; once all were submitted
//! (`/run`), the benchmark watches the calls the server makes for a while and reports:
//!
//! - the achieved refresh interval of each job (the gaps between its `/stream` or `/status`
//!   calls: either brings its current status) and how often its metrics are collected
//!   (`/stream`);
//! - the most `/status` and `/stream` calls in any 10 s window, and the calls per second;
//! - with `--rate-limit`, the 429s the simulated endpoint answered when the server went over
//!   RunPod's per-endpoint limits (the server must back off and stay under them);
//! - the server's CPU use (% of one core) over the window, and its memory.
//!
//! Targets: 1,000 active jobs, 50 ms latency: refresh ≤ 5 s per job, server CPU ≤ 25% of a core,
//! never more than 2,000 `/status` and 2,000 `/stream` calls per 10 s.
//!
//!   scripts/bench/processor.sh
//!   LORA_PIPELINE_BIN=… LP_TEST_ADMIN_URL=… bench_processor [--jobs N] [--latency-ms MS]
//!       [--measure-s S] [--rate-limit] [--poll-interval-ms MS]

mod common;

use common::*;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post as route_post};
use futures::StreamExt;
use serde_json::{Value, json};

/// The role the server connects as: an ordinary one, as `serve` refuses a superuser.
/// Jobs created at once through the API.
const CREATE_CONCURRENCY: usize = 16;
/// RunPod's rate-limit window.
const WINDOW: Duration = Duration::from_secs(10);
/// How long all jobs may take to reach the simulated endpoint.
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(600);

struct Args {
    jobs: usize,
    latency: Duration,
    measure: Duration,
    rate_limit: bool,
    /// JOB_POLL_INTERVAL_MS for the server; unset: its default (1 s).
    poll_interval_ms: Option<u64>,
}

impl Args {
    fn parse() -> Self {
        let mut args = Self {
            jobs: 1000,
            latency: Duration::from_millis(50),
            measure: Duration::from_secs(60),
            rate_limit: false,
            poll_interval_ms: None,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            match flag.as_str() {
                "--jobs" => args.jobs = USAGE.number(&flag, it.next()),
                "--latency-ms" => {
                    args.latency = Duration::from_millis(USAGE.number(&flag, it.next()))
                }
                "--measure-s" => args.measure = Duration::from_secs(USAGE.number(&flag, it.next())),
                "--rate-limit" => args.rate_limit = true,
                "--poll-interval-ms" => {
                    args.poll_interval_ms = Some(USAGE.number(&flag, it.next()))
                }
                "-h" | "--help" => USAGE.exit(""),
                other => USAGE.exit(&format!("unknown argument {other}")),
            }
        }
        if args.jobs == 0 || args.measure.is_zero() {
            USAGE.exit("--jobs and --measure-s must be at least 1");
        }
        args
    }
}

const USAGE: Usage = Usage(
    "usage: bench_processor [--jobs N (1000)] [--latency-ms MS (50)] [--measure-s S (60)] \
     [--rate-limit] [--poll-interval-ms MS (server default)]",
);

// ---------------------------------------------------------------------------------------------
// The simulated RunPod endpoint
// ---------------------------------------------------------------------------------------------

/// The routes of the endpoint the processor uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Run,
    Status,
    Stream,
    Cancel,
}

const ROUTES: [Route; 4] = [Route::Run, Route::Status, Route::Stream, Route::Cancel];

impl Route {
    fn name(self) -> &'static str {
        match self {
            Self::Run => "run",
            Self::Status => "status",
            Self::Stream => "stream",
            Self::Cancel => "cancel",
        }
    }

    /// RunPod's documented limit per 10 s for this route (cancel: not enforced here).
    fn limit(self) -> usize {
        match self {
            Self::Run => 1000,
            Self::Status | Self::Stream => 2000,
            Self::Cancel => usize::MAX,
        }
    }
}

/// Everything the endpoint saw. Times are taken under the lock, so every list is in order.
#[derive(Default)]
struct CallLog {
    /// Arrival of every request, per route, 429s included: they are calls the server made.
    arrivals: [Vec<Instant>; 4],
    /// Requests answered 429, per route.
    rejected: [u64; 4],
    /// Requests admitted in the last 10 s, per route (the enforced limit).
    recent: [VecDeque<Instant>; 4],
    /// When each job was accepted by `/run`, by its id.
    started: HashMap<String, Instant>,
    /// Admitted `/stream` and `/status` calls of each job: its refreshes (either brings the
    /// job's current status).
    refreshes: HashMap<String, Vec<Instant>>,
    /// Admitted `/stream` calls of each job: when its metric chunks are collected.
    streams: HashMap<String, Vec<Instant>>,
}

struct Endpoint {
    latency: Duration,
    rate_limit: bool,
    log: Mutex<CallLog>,
}

type Shared = Arc<Endpoint>;

impl Endpoint {
    fn lock(&self) -> std::sync::MutexGuard<'_, CallLog> {
        self.log
            .lock()
            .expect("the call log's lock is not poisoned")
    }

    /// Logs a request; `false` when the enforced limit answers it 429.
    fn admit(&self, route: Route, job: Option<&str>) -> bool {
        let mut guard = self.lock();
        let log = &mut *guard;
        let now = Instant::now();
        let r = route as usize;
        log.arrivals[r].push(now);
        if self.rate_limit {
            // A sliding window, as RunPod documents its limits.
            let recent = &mut log.recent[r];
            while recent
                .front()
                .is_some_and(|&t| now.duration_since(t) >= WINDOW)
            {
                recent.pop_front();
            }
            if recent.len() >= route.limit() {
                log.rejected[r] += 1;
                return false;
            }
            recent.push_back(now);
        }
        if let Some(job) = job
            && matches!(route, Route::Stream | Route::Status)
        {
            log.refreshes.entry(job.to_owned()).or_default().push(now);
            if route == Route::Stream {
                log.streams.entry(job.to_owned()).or_default().push(now);
            }
        }
        true
    }

    /// Jobs accepted by `/run`.
    fn submitted(&self) -> usize {
        self.lock().started.len()
    }
}

async fn start_endpoint(latency: Duration, rate_limit: bool) -> (Shared, SocketAddr) {
    let endpoint: Shared = Arc::new(Endpoint {
        latency,
        rate_limit,
        log: Mutex::new(CallLog::default()),
    });
    let router = Router::new()
        .route("/v2/bench/run", route_post(on_run))
        .route("/v2/bench/status/{id}", get(on_status))
        .route("/v2/bench/stream/{id}", get(on_stream))
        .route("/v2/bench/cancel/{id}", route_post(on_cancel))
        .with_state(endpoint.clone());
    (endpoint, serve_locally(router).await)
}

fn too_many_requests() -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        Json(json!({ "error": "rate limit exceeded" })),
    )
        .into_response()
}

/// `POST /run`: a new job, in the queue.
async fn on_run(State(endpoint): State<Shared>, _body: Bytes) -> Response {
    let admitted = endpoint.admit(Route::Run, None);
    tokio::time::sleep(endpoint.latency).await;
    if !admitted {
        return too_many_requests();
    }
    let id = {
        let mut log = endpoint.lock();
        let id = format!("bench-{}", log.started.len() + 1);
        log.started.insert(id.clone(), Instant::now());
        id
    };
    Json(json!({ "id": id, "status": "IN_QUEUE" })).into_response()
}

/// `GET /stream/{id}`: running, nothing new to report.
async fn on_stream(State(endpoint): State<Shared>, Path(id): Path<String>) -> Response {
    let admitted = endpoint.admit(Route::Stream, Some(id.as_str()));
    tokio::time::sleep(endpoint.latency).await;
    if !admitted {
        return too_many_requests();
    }
    Json(json!({ "status": "IN_PROGRESS", "stream": [] })).into_response()
}

/// `GET /status/{id}`: running since its `/run`.
async fn on_status(State(endpoint): State<Shared>, Path(id): Path<String>) -> Response {
    let admitted = endpoint.admit(Route::Status, Some(id.as_str()));
    tokio::time::sleep(endpoint.latency).await;
    if !admitted {
        return too_many_requests();
    }
    let execution_ms = endpoint
        .lock()
        .started
        .get(&id)
        .map_or(0, |t| t.elapsed().as_millis() as u64);
    Json(json!({
        "id": id, "status": "IN_PROGRESS", "delayTime": 100, "executionTime": execution_ms,
    }))
    .into_response()
}

/// `POST /cancel/{id}`.
async fn on_cancel(State(endpoint): State<Shared>, Path(id): Path<String>) -> Response {
    let admitted = endpoint.admit(Route::Cancel, None);
    tokio::time::sleep(endpoint.latency).await;
    if !admitted {
        return too_many_requests();
    }
    Json(json!({ "id": id, "status": "CANCELLED" })).into_response()
}

/// What the endpoint saw between `from` and `to`.
struct Report {
    /// Each job's mean time between two refreshes, in seconds, sorted.
    intervals: Vec<f64>,
    /// The longest time any job went without a refresh, in seconds.
    max_gap_s: f64,
    /// Jobs refreshed fewer than twice in the window (counted at the window's length).
    starved: usize,
    /// The mean over jobs of the mean time between two `/stream` calls (metric delivery).
    stream_interval_s: f64,
    /// Per route: the most calls in any 10 s window of the whole run.
    max_per_window: [usize; 4],
    /// Per route: calls inside the measured window.
    in_window: [usize; 4],
    /// Per route: 429s over the whole run.
    rejected: [u64; 4],
}

impl Endpoint {
    fn report(&self, from: Instant, to: Instant, jobs: usize) -> Report {
        let log = self.lock();
        let window_s = to.duration_since(from).as_secs_f64();
        let mut intervals = Vec::with_capacity(jobs);
        let mut max_gap_s = 0.0f64;
        let mut starved = 0;
        for times in log.refreshes.values() {
            let inside: Vec<Instant> = times
                .iter()
                .filter(|t| (from..=to).contains(*t))
                .copied()
                .collect();
            if inside.len() < 2 {
                starved += 1;
                continue;
            }
            let span = inside[inside.len() - 1].duration_since(inside[0]);
            intervals.push(span.as_secs_f64() / (inside.len() - 1) as f64);
            for pair in inside.windows(2) {
                max_gap_s = max_gap_s.max(pair[1].duration_since(pair[0]).as_secs_f64());
            }
        }
        // Jobs never refreshed at all are not in the map; they waited the whole window. Every
        // starved job counts at the window's length: a lower bound of its real interval.
        starved += jobs.saturating_sub(log.refreshes.len());
        let counted = jobs.max(intervals.len());
        intervals.resize(counted, window_s);
        if starved > 0 {
            max_gap_s = max_gap_s.max(window_s);
        }
        intervals.sort_by(f64::total_cmp);
        let mut max_per_window = [0; 4];
        let mut in_window = [0; 4];
        let stream_means: Vec<f64> = log
            .streams
            .values()
            .filter_map(|times| {
                let inside: Vec<&Instant> =
                    times.iter().filter(|t| (from..=to).contains(*t)).collect();
                (inside.len() >= 2).then(|| {
                    inside[inside.len() - 1]
                        .duration_since(*inside[0])
                        .as_secs_f64()
                        / (inside.len() - 1) as f64
                })
            })
            .collect();
        let stream_interval_s = if stream_means.is_empty() {
            window_s
        } else {
            stream_means.iter().sum::<f64>() / stream_means.len() as f64
        };
        for route in ROUTES {
            let times = &log.arrivals[route as usize];
            max_per_window[route as usize] = max_in_window(times);
            in_window[route as usize] = times.iter().filter(|t| (from..=to).contains(*t)).count();
        }
        Report {
            intervals,
            max_gap_s,
            starved,
            stream_interval_s,
            max_per_window,
            in_window,
            rejected: log.rejected,
        }
    }
}

/// The most entries of an ordered list of times within any `WINDOW`.
fn max_in_window(times: &[Instant]) -> usize {
    let mut best = 0;
    let mut start = 0;
    for (end, &t) in times.iter().enumerate() {
        while t.duration_since(times[start]) >= WINDOW {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

// ---------------------------------------------------------------------------------------------
// The benchmark
// ---------------------------------------------------------------------------------------------

#[tokio::main]
async fn main() {
    let args = Args::parse();
    raise_fd_limit();
    let (endpoint, endpoint_addr) = start_endpoint(args.latency, args.rate_limit).await;
    let database_url = fresh_database().await;
    let mut env = vec![
        ("RUNPOD_API_KEY", "bench".to_owned()),
        ("RUNPOD_ENDPOINT_ID", "bench".to_owned()),
        ("RUNPOD_API_URL", format!("http://{endpoint_addr}/v2")),
        // No embedded executor: every job here goes to the simulated RunPod.
        ("EXECUTOR_SLOTS", "0".to_owned()),
        // Nothing reports progress here: keep the stall watchdog from failing the jobs.
        ("JOB_STALL_TIMEOUT_S", "100000".to_owned()),
    ];
    if let Some(ms) = args.poll_interval_ms {
        env.push(("JOB_POLL_INTERVAL_MS", ms.to_string()));
    }
    let server = Server::start(&database_url, &env).await;
    let (client, _user) = register(&server.base).await;
    let dataset = ready_dataset(&client, &server.base).await;
    let body = job_body(&client, &server.base, &dataset).await;
    println!(
        "server pid {}, simulated RunPod at {endpoint_addr} ({} ms latency{}); creating {} jobs",
        server.pid,
        args.latency.as_millis(),
        if args.rate_limit {
            ", RunPod's rate limits enforced"
        } else {
            ""
        },
        args.jobs
    );

    // Create the jobs through the API, a few at a time, as many users would.
    let create_started = Instant::now();
    let created = futures::stream::iter(0..args.jobs)
        .map(|_| create_job(&client, &server.base, &body))
        .buffer_unordered(CREATE_CONCURRENCY)
        .count()
        .await;
    let create_s = create_started.elapsed().as_secs_f64();
    println!("created {created} jobs in {create_s:.1} s; waiting for all to be submitted");

    // The processor submits them in the background (its client paces /run).
    let deadline = Instant::now() + SUBMIT_TIMEOUT;
    let mut last_report = Instant::now();
    loop {
        let submitted = endpoint.submitted();
        if submitted >= created {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {submitted} of {created} jobs reached the endpoint in {SUBMIT_TIMEOUT:?}"
        );
        if last_report.elapsed() >= Duration::from_secs(5) {
            println!("  {submitted} of {created} submitted");
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let submit_s = create_started.elapsed().as_secs_f64();
    println!(
        "all {created} submitted {submit_s:.1} s after the first was created; measuring for {} s",
        args.measure.as_secs()
    );

    // The measured window: every job is active and polled.
    let from = Instant::now();
    let cpu_before = server.cpu_seconds();
    tokio::time::sleep(args.measure).await;
    let cpu_s = server.cpu_seconds() - cpu_before;
    let to = Instant::now();
    let wall_s = to.duration_since(from).as_secs_f64();
    let (rss, hwm) = server.memory_mb();
    let report = endpoint.report(from, to, created);
    let (warnings, errors, first_lines) = server.log_summary();
    server.stop().await;

    let cpu_percent = cpu_s / wall_s * 100.0;
    let intervals = &report.intervals;
    let mean = intervals.iter().sum::<f64>() / intervals.len().max(1) as f64;
    let (p50, p95) = (percentile(intervals, 50.0), percentile(intervals, 95.0));
    let max = intervals.last().copied().unwrap_or(0.0);
    let per_s = |route: Route| report.in_window[route as usize] as f64 / wall_s;
    let total_per_s: f64 = ROUTES.iter().map(|&r| per_s(r)).sum();
    let rejected_total: u64 = report.rejected.iter().sum();

    println!();
    println!(
        "Job processor — {created} active jobs, {} ms simulated RunPod latency{}",
        args.latency.as_millis(),
        if args.rate_limit {
            ", limits enforced"
        } else {
            ""
        }
    );
    println!(
        "  submission     {created} jobs created in {create_s:.1} s, all submitted after {submit_s:.1} s"
    );
    println!(
        "  refresh        per job (mean between /stream or /status calls): mean {mean:.2} s  p50 {p50:.2} s  p95 {p95:.2} s  max {max:.2} s"
    );
    println!(
        "  metrics        collected through /stream every {:.2} s per job (mean)",
        report.stream_interval_s
    );
    println!(
        "                 longest gap {:.2} s; {} jobs refreshed fewer than twice in {wall_s:.0} s",
        report.max_gap_s, report.starved
    );
    println!(
        "  calls/s        {total_per_s:.0} in all: /stream {:.0}  /status {:.0}  /run {:.1}  /cancel {:.1}",
        per_s(Route::Stream),
        per_s(Route::Status),
        per_s(Route::Run),
        per_s(Route::Cancel)
    );
    println!(
        "  max per 10 s   /stream {}  /status {}  /run {}  (RunPod: 2000, 2000, 1000)",
        report.max_per_window[Route::Stream as usize],
        report.max_per_window[Route::Status as usize],
        report.max_per_window[Route::Run as usize]
    );
    println!(
        "  429 answered   {rejected_total} (/stream {}, /status {}, /run {})",
        report.rejected[Route::Stream as usize],
        report.rejected[Route::Status as usize],
        report.rejected[Route::Run as usize]
    );
    println!("  server CPU     {cpu_s:.2} s over {wall_s:.1} s = {cpu_percent:.1}% of one core");
    println!("  server RSS     {rss:.1} MB (peak {hwm:.1} MB)");
    println!("  server log     {warnings} warnings, {errors} errors");
    for line in &first_lines {
        println!("    {line}");
    }
    println!(
        "  targets        refresh ≤ 5 s per job; CPU ≤ 25% of a core; ≤ 2000 /status and /stream per 10 s"
    );
    let max_per_10s = per_route(|r| json!(report.max_per_window[r as usize]));
    let calls_per_s = per_route(|r| json!(round(per_s(r), 2)));
    let rejected_429 = per_route(|r| json!(report.rejected[r as usize]));
    println!(
        "{}",
        json!({
            "bench": "processor",
            "jobs": args.jobs,
            "created": created,
            "latency_ms": args.latency.as_millis() as u64,
            "rate_limit": args.rate_limit,
            "poll_interval_ms": args.poll_interval_ms,
            "create_s": round(create_s, 2),
            "submit_s": round(submit_s, 2),
            "measure_s": round(wall_s, 2),
            "refresh_s": {
                "mean": round(mean, 3), "p50": round(p50, 3), "p95": round(p95, 3), "max": round(max, 3),
                "longest_gap": round(report.max_gap_s, 3),
            },
            "stream_interval_s": round(report.stream_interval_s, 3),
            "starved_jobs": report.starved,
            "max_per_10s": max_per_10s,
            "calls_per_s": calls_per_s,
            "calls_per_s_total": round(total_per_s, 2),
            "rejected_429": rejected_429,
            "rejected_429_total": rejected_total,
            "server_cpu_percent": round(cpu_percent, 2),
            "server_cpu_s": round(cpu_s, 3),
            "server_rss_mb": round(rss, 1),
            "server_hwm_mb": round(hwm, 1),
            "server_log": { "warnings": warnings, "errors": errors },
        })
    );
}

/// A JSON object with one value per route, by the route's name.
fn per_route(value: impl Fn(Route) -> Value) -> Value {
    Value::Object(
        ROUTES
            .iter()
            .map(|&r| (r.name().to_owned(), value(r)))
            .collect(),
    )
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}
