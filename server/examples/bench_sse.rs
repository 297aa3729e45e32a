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

mod common;

use common::*;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use engine::db::Db;
use engine::jobs::event::StageChange;
use engine::jobs::{JobEvent, JobStage, events};
use futures::StreamExt;
use serde_json::{Value, json};
use sqlx::postgres::PgConnectOptions;
use tokio::sync::{oneshot, watch};

/// The role the server connects as: an ordinary one, as `serve` refuses a superuser.
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
                "--subscribers" => args.subscribers = USAGE.number(&flag, it.next()),
                "--events" => args.events = USAGE.number(&flag, it.next()),
                "--interval-ms" => {
                    args.interval = Duration::from_millis(USAGE.number(&flag, it.next()))
                }
                "-h" | "--help" => USAGE.exit(""),
                other => USAGE.exit(&format!("unknown argument {other}")),
            }
        }
        if args.subscribers == 0 || args.events == 0 {
            USAGE.exit("--subscribers and --events must be at least 1");
        }
        args
    }
}

const USAGE: Usage =
    Usage("usage: bench_sse [--subscribers N (1000)] [--events E (50)] [--interval-ms MS (100)]");

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
            // Every subscriber is the same user: lift the per-user cap for them.
            ("STREAMS_PER_USER", args.subscribers.to_string()),
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
        // A stage event (any kind fans out alike) whose message carries the send time.
        let event = JobEvent::Stage(StageChange {
            stage: JobStage::Training,
            message: format!("{BENCH_PREFIX}{sent}"),
            elapsed_s: None,
            total_steps: None,
            train_examples: None,
            eval_examples: None,
            resumed_from_step: None,
        });
        let recorded = events::record(&mut tx, user, job, &format!("bench:{i}"), &event)
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

/// What a bench event's message starts with, before its send time in µs.
const BENCH_PREFIX: &str = "bench sent_us=";

/// The send time of an SSE block that carries a bench event; `None` for anything else
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
    if kind != "stage" {
        return None;
    }
    let event: Value = serde_json::from_str(&data).ok()?;
    event["payload"]["message"]
        .as_str()?
        .strip_prefix(BENCH_PREFIX)?
        .parse()
        .ok()
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
