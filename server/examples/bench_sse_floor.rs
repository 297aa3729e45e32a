//! The floor under the SSE benchmark (docs/PERFORMANCE.md): what N open event streams cost a
//! bare axum server — the same axum, hyper and tokio as `lora-pipeline serve`, the same
//! allocator setting, `Sse` with the same keep-alive, one broadcast channel — but no database,
//! no session lookup, no middleware. Set against `bench_sse` at the same N, it tells the memory
//! hyper's connections take whatever we do from the memory our stream stack adds.
//!
//!   scripts/bench/sse.sh --floor      (or: bench_sse_floor [--subscribers N] [--events E])
//!
//! The server is this program run again as a child (`--serve`), so its memory is its own.

mod common;

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use futures::{Stream, StreamExt};
use serde_json::json;
use tokio::sync::broadcast;

/// Subscribers opened at once (as `bench_sse`).
const CONNECT_BATCH: usize = 200;

const USAGE: common::Usage =
    common::Usage("usage: bench_sse_floor [--subscribers N (10000)] [--events E (10)]");

fn main() {
    // As `lora-pipeline serve` does before anything runs (server/src/main.rs).
    // SAFETY: mallopt only adjusts the allocator's parameters; no other thread exists yet.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    if std::env::args().nth(1).as_deref() == Some("--serve") {
        runtime.block_on(serve());
    } else {
        runtime.block_on(measure());
    }
}

/// The child: `GET /events` streams an event every 100 ms to everyone; prints its port.
async fn serve() {
    let (events, _) = broadcast::channel::<String>(64);
    let publisher = events.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        for i in 0u64.. {
            tick.tick().await;
            // About the size of a job's stage event as the real stream sends it.
            let payload = json!({"kind": "stage", "id": i, "payload": {
                "stage": "training", "message": format!("floor event {i}"), "elapsed_s": 1.5,
                "total_steps": 1200, "train_examples": 9000, "eval_examples": 1000}});
            let _ = publisher.send(payload.to_string());
        }
    });
    let app = Router::new().route(
        "/events",
        get(move || {
            let receiver = events.subscribe();
            async move { Sse::new(to_events(receiver)).keep_alive(KeepAlive::default()) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    println!(
        "{}",
        listener.local_addr().expect("the bound address").port()
    );
    axum::serve(listener, app).await.expect("serve");
}

/// The channel's messages as events; a subscriber that lags skips what it missed.
fn to_events(
    receiver: broadcast::Receiver<String>,
) -> impl Stream<Item = Result<Event, Infallible>> + Send {
    futures::stream::unfold(receiver, |mut receiver| async move {
        loop {
            match receiver.recv().await {
                Ok(data) => {
                    return Some((Ok(Event::default().event("stage").data(data)), receiver));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

/// The parent: starts the child, opens the subscribers, reads the child's memory.
async fn measure() {
    let mut subscribers = 10_000usize;
    let mut events = 10u64;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--subscribers" => subscribers = USAGE.number(&flag, args.next()),
            "--events" => events = USAGE.number(&flag, args.next()),
            "-h" | "--help" => USAGE.exit(""),
            other => USAGE.exit(&format!("unknown argument {other}")),
        }
    }
    common::raise_fd_limit();
    let mut child = Command::new(std::env::current_exe().expect("this program's path"))
        .arg("--serve")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the floor server");
    let pid = child.id() as libc::pid_t;
    let mut port = String::new();
    BufReader::new(child.stdout.take().expect("the child's stdout"))
        .read_line(&mut port)
        .expect("the child's port");
    let url = format!("http://127.0.0.1:{}/events", port.trim());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (idle, _) = common::memory_mb(pid);

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("an HTTP client");
    let received = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::with_capacity(subscribers);
    let mut connected = 0usize;
    let mut remaining = subscribers;
    while remaining > 0 {
        let batch = remaining.min(CONNECT_BATCH);
        remaining -= batch;
        let mut ready = Vec::with_capacity(batch);
        for _ in 0..batch {
            let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
            let (client, url, received) = (client.clone(), url.clone(), received.clone());
            handles.push(tokio::spawn(async move {
                let Ok(response) = client.get(url).send().await else {
                    return;
                };
                let _ = ready_tx.send(response.status() == 200);
                let mut body = response.bytes_stream();
                while let Some(Ok(chunk)) = body.next().await {
                    let blocks = chunk.windows(2).filter(|w| w == b"\n\n").count();
                    received.fetch_add(blocks as u64, Ordering::Relaxed);
                }
            }));
            ready.push(ready_rx);
        }
        for answer in futures::future::join_all(ready).await {
            if answer == Ok(true) {
                connected += 1;
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (open, open_peak) = common::memory_mb(pid);
    // Let `events` more events reach every stream (one every 100 ms).
    let before = received.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(100 * events + 500)).await;
    let delivered = received.load(Ordering::Relaxed) - before;
    let (after, after_peak) = common::memory_mb(pid);
    for handle in handles {
        handle.abort();
    }
    let _ = child.kill();
    let _ = child.wait();

    let per_stream_kb = (after - idle) * 1024.0 / connected.max(1) as f64;
    println!("SSE floor — a bare axum server, {connected} of {subscribers} streams open");
    println!(
        "  server RSS   {idle:.1} MB idle; {open:.1} MB open (peak {open_peak:.1}); {after:.1} MB after {events} events (peak {after_peak:.1})"
    );
    println!("  per stream   {per_stream_kb:.1} KB");
    println!("  delivered    {delivered} event blocks in {events} intervals");
    println!(
        "{}",
        json!({
            "bench": "sse_floor",
            "subscribers": subscribers,
            "connected": connected,
            "server_rss_mb": {
                "idle": common::round(idle, 1),
                "open": common::round(open, 1),
                "open_peak": common::round(open_peak, 1),
                "after": common::round(after, 1),
                "after_peak": common::round(after_peak, 1),
            },
            "per_stream_kb": common::round(per_stream_kb, 1),
            "delivered": delivered,
        })
    );
}
