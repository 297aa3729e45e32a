//! Prometheus `/metrics` on the main listener. Counters and histograms are recorded where things
//! happen (HTTP here, tasks, jobs, validations and GPU calls in the engine) through the
//! `metrics` facade; gauges that describe the database are read from it at scrape time
//! (`engine::operations::metrics::read`), so every replica reports the same values.
//!
//! Who may read it: with `METRICS_TOKEN` set, a caller sending `Authorization: Bearer <token>`;
//! without it, only a loopback client that did not come through a proxy (a request carrying
//! forwarding headers is refused, even from a loopback proxy).

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use engine::operations::metrics as names;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::state::AppState;

/// Request latencies: 5 ms to 10 s.
const HTTP_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Tasks, validations and GPU calls: 10 ms to 30 min.
const WORK_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0,
];
/// Training runs: 1 minute to 24 hours.
const TRAINING_BUCKETS: &[f64] = &[
    60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0,
];

/// The process-wide recorder's handle. One recorder per process: tests build several apps in
/// one process, and they share it (the facade has a single global recorder).
#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
}

impl Metrics {
    /// Installs the recorder on first use; later calls return the same handle.
    pub fn install() -> Self {
        static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
        let handle = HANDLE.get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(names::HTTP_DURATION.into()), HTTP_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(names::TRAINING_DURATION.into()),
                        TRAINING_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Suffix("_seconds".into()), WORK_BUCKETS)
                })
                .expect("the bucket lists are not empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!(
                    "another metrics recorder was installed first; /metrics will miss its data"
                );
            }
            describe();
            // Registered at 0, so an alert on its increase has a series before the first error.
            metrics::counter!(names::DATABASE_ERRORS).absolute(0);
            handle
        });
        Self {
            handle: handle.clone(),
        }
    }
}

/// HELP lines for the metrics recorded in-process.
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        names::HTTP_REQUESTS,
        "HTTP requests answered, by method, route template and status."
    );
    describe_histogram!(
        names::HTTP_DURATION,
        Unit::Seconds,
        "Time to answer an HTTP request, by method and route template."
    );
    describe_counter!(
        names::TASKS,
        "Background tasks run, by kind and outcome (ok, retry, failed)."
    );
    describe_histogram!(
        names::TASK_DURATION,
        Unit::Seconds,
        "Time a background task ran, by kind."
    );
    describe_counter!(names::JOBS_ENDED, "Jobs ended by this replica, by status.");
    describe_histogram!(
        names::TRAINING_DURATION,
        Unit::Seconds,
        "Time from a job's start to its end, by status."
    );
    describe_histogram!(
        names::VALIDATION_DURATION,
        Unit::Seconds,
        "Time one dataset validation took, by outcome."
    );
    describe_counter!(
        names::VALIDATION_BYTES,
        Unit::Bytes,
        "Bytes of uploaded datasets read by validations."
    );
    describe_gauge!(
        names::SSE_STREAMS_OPEN,
        "Live event streams open on this replica."
    );
    describe_counter!(
        names::GPU_CALLS,
        "Calls to a GPU backend's API, by backend, endpoint and outcome."
    );
    describe_histogram!(
        names::GPU_CALL_DURATION,
        Unit::Seconds,
        "Time one GPU backend call took (retries included), by backend and endpoint."
    );
    describe_counter!(names::LOGIN_FAILURES, "Refused sign-ins.");
    describe_counter!(
        names::MAINTENANCE_REMOVED,
        "Rows and objects the maintenance chores removed, by chore."
    );
    describe_counter!(
        names::DATABASE_ERRORS,
        "Requests answered 500 because the database failed."
    );
    describe_gauge!(
        names::DATABASE_UP,
        "1 when this scrape could read the database, else 0."
    );
    describe_gauge!(
        names::QUEUE_DEPTH,
        "Background tasks due or running, by kind."
    );
    describe_gauge!(
        names::QUEUE_OLDEST,
        Unit::Seconds,
        "Age of the oldest due task."
    );
    describe_gauge!(names::JOBS, "Jobs by status.");
    describe_gauge!(names::JOBS_FAILED_24H, "Jobs failed in the last 24 hours.");
    describe_gauge!(
        names::JOBS_ENDED_24H,
        "Jobs completed or failed in the last 24 hours."
    );
    describe_gauge!(
        names::JOBS_STALLED,
        "Running jobs without any change for 20 minutes."
    );
    describe_gauge!(
        names::VALIDATIONS_SLOW,
        "Dataset validations running for more than 5 minutes."
    );
    describe_gauge!(
        names::COST_TODAY,
        "Dollars recorded today (UTC), all accounts."
    );
    describe_gauge!(
        names::STORAGE_BYTES,
        Unit::Bytes,
        "Bytes stored, by bucket."
    );
    describe_gauge!(
        names::BUDGET_EXCEEDED_1H,
        "Accounts told in the last hour that they passed their monthly budget."
    );
    describe_gauge!(
        names::DATA_DIR_BYTES,
        Unit::Bytes,
        "The file system holding DATA_DIR: size and free bytes."
    );
}

/// Counts and times every request by its route template (`/api/jobs/{id}`, never the id
/// itself: labels stay a bounded set).
pub async fn track_http(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    metrics::histogram!(names::HTTP_DURATION, "method" => method.clone(), "route" => route.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!(
        names::HTTP_REQUESTS,
        "method" => method,
        "route" => route,
        "status" => response.status().as_u16().to_string()
    )
    .increment(1);
    response
}

/// Headers a proxy adds: a request carrying one came from beyond this machine.
const FORWARDING_HEADERS: [&str; 3] = ["x-forwarded-for", "forwarded", "x-real-ip"];

/// Whether the caller may read the operator's figures (see the module's comment).
fn allowed(token: Option<&str>, peer: SocketAddr, headers: &HeaderMap) -> bool {
    match token {
        Some(token) => headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|sent| constant_time_eq(sent.trim().as_bytes(), token.as_bytes())),
        None => {
            peer.ip().to_canonical().is_loopback()
                && !FORWARDING_HEADERS.iter().any(|h| headers.contains_key(*h))
        }
    }
}

/// Compares without stopping at the first difference (the token is a secret).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether this request may read the operator's figures (`/metrics`, `/readyz?health=1`).
pub fn may_read(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> bool {
    allowed(state.settings.metrics_token.as_deref(), peer, headers)
}

/// What the operator's endpoints answer anyone else.
pub fn refusal(state: &AppState) -> Response {
    let message = if state.settings.metrics_token.is_some() {
        "send Authorization: Bearer <METRICS_TOKEN>"
    } else {
        "only loopback clients may read this; set METRICS_TOKEN to let a scraper elsewhere in"
    };
    (StatusCode::FORBIDDEN, message).into_response()
}

/// The Prometheus text exposition (format 0.0.4). With `METRICS_TOKEN` set it needs
/// `Authorization: Bearer <token>`; without it, it answers loopback clients only.
#[utoipa::path(get, path = "/metrics", tag = "operations", security(()),
    responses(
        (status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String),
        (status = 403, description = "Neither loopback nor a valid METRICS_TOKEN", body = String),
    ))]
pub async fn scrape(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if !may_read(&state, peer, &headers) {
        return refusal(&state);
    }
    record_database_gauges(&state).await;
    record_disk_gauges(&state.settings.data_dir);
    state.metrics.handle.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.handle.render(),
    )
        .into_response()
}

async fn record_database_gauges(state: &AppState) {
    use metrics::gauge;
    let gauges = match names::read(&state.db).await {
        Ok(gauges) => gauges,
        Err(e) => {
            tracing::warn!(error = %e, "could not read the database gauges");
            gauge!(names::DATABASE_UP).set(0.0);
            return;
        }
    };
    gauge!(names::DATABASE_UP).set(1.0);
    // Every kind is written, so a kind whose queue emptied reads 0 rather than its last value.
    for kind in engine::tasks::Lane::ALL
        .iter()
        .flat_map(|lane| lane.kinds())
    {
        let depth = gauges
            .queue_by_kind
            .iter()
            .find(|(k, _)| k == kind)
            .map_or(0, |(_, n)| *n);
        gauge!(names::QUEUE_DEPTH, "kind" => *kind).set(depth as f64);
    }
    gauge!(names::QUEUE_OLDEST).set(gauges.queue_oldest_s);
    for (status, count) in &gauges.jobs_by_status {
        gauge!(names::JOBS, "status" => status.as_str()).set(*count as f64);
    }
    gauge!(names::JOBS_FAILED_24H).set(gauges.failed_24h as f64);
    gauge!(names::JOBS_ENDED_24H).set(gauges.ended_24h as f64);
    gauge!(names::JOBS_STALLED).set(gauges.stalled as f64);
    gauge!(names::VALIDATIONS_SLOW).set(gauges.slow_validations as f64);
    gauge!(names::COST_TODAY).set(gauges.cost_today);
    gauge!(names::STORAGE_BYTES, "bucket" => "datasets").set(gauges.dataset_bytes as f64);
    gauge!(names::STORAGE_BYTES, "bucket" => "models").set(gauges.model_bytes as f64);
    gauge!(names::BUDGET_EXCEEDED_1H).set(gauges.budget_exceeded_1h as f64);
}

/// Size and free space of the file system holding DATA_DIR (the managed database, local
/// objects, scratch files): what "storage above 80%" watches.
fn record_disk_gauges(data_dir: &std::path::Path) {
    let Some((size, free)) = disk_space(data_dir) else {
        return;
    };
    metrics::gauge!(names::DATA_DIR_BYTES, "kind" => "size").set(size as f64);
    metrics::gauge!(names::DATA_DIR_BYTES, "kind" => "free").set(free as f64);
}

fn disk_space(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain data; all-zero is a valid value.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid NUL-terminated string and `stat` a writable statvfs.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    let unit = stat.f_frsize;
    Some((stat.f_blocks * unit, stat.f_bavail * unit))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 40000)
    }

    #[test]
    fn without_a_token_only_direct_loopback_clients_may_read() {
        let none = HeaderMap::new();
        assert!(allowed(None, peer("127.0.0.1"), &none));
        assert!(allowed(None, peer("::1"), &none));
        assert!(allowed(None, peer("::ffff:127.0.0.1"), &none));
        assert!(!allowed(None, peer("10.0.0.5"), &none));
        // A loopback proxy passing on a stranger's request.
        let mut forwarded = HeaderMap::new();
        forwarded.insert("x-forwarded-for", "203.0.113.9".parse().unwrap());
        assert!(!allowed(None, peer("127.0.0.1"), &forwarded));
    }

    #[test]
    fn with_a_token_anyone_sending_it_may_read_and_nobody_else() {
        let mut good = HeaderMap::new();
        good.insert(
            header::AUTHORIZATION,
            "Bearer s3cret-token".parse().unwrap(),
        );
        let mut bad = HeaderMap::new();
        bad.insert(
            header::AUTHORIZATION,
            "Bearer s3cret-tokem".parse().unwrap(),
        );
        assert!(allowed(Some("s3cret-token"), peer("198.51.100.7"), &good));
        assert!(!allowed(Some("s3cret-token"), peer("198.51.100.7"), &bad));
        // Loopback alone is not enough once a token is set.
        assert!(!allowed(
            Some("s3cret-token"),
            peer("127.0.0.1"),
            &HeaderMap::new()
        ));
    }

    #[test]
    fn disk_space_reads_the_file_system() {
        let (size, free) = disk_space(std::path::Path::new("/")).unwrap();
        assert!(size > 0 && free <= size);
    }
}
