//! The job processor against a fault-injecting fake RunPod Serverless endpoint: rate limits,
//! server errors, malformed answers, forgotten jobs, every terminal status RunPod reports, a
//! budget cap and a stalled run. Each scenario must end in the right job state with a clear
//! message, and never with a duplicate status event or metric point.
//!
//! The fake is an axum app on 127.0.0.1:0 that speaks the endpoint's API
//! (`POST /run`, `GET /status/{id}`, `GET /stream/{id}`, `POST /cancel/{id}`). Each endpoint
//! answers from a queue of scripted replies, then from its default reply; every call is logged.

mod common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use common::{TestApp, ready_dataset, start_job_on};
use serde_json::{Value, json};

/// The API key the platform is configured with; the fake refuses any other.
const API_KEY: &str = "test-key";
/// The id the fake gives every job it accepts.
const FAKE_ID: &str = "fake-job-1";
/// The sample every scenario trains on.
const SAMPLE: &str = "openai-chat.jsonl";
/// Job statuses that end a job.
const TERMINAL: [&str; 3] = ["completed", "failed", "cancelled"];
/// How long a scenario may take from job creation to its end.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// The fake RunPod endpoint
// ---------------------------------------------------------------------------------------------

/// The four routes the processor uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ep {
    Run,
    Status,
    Stream,
    Cancel,
}

/// One scripted answer.
#[derive(Debug, Clone)]
enum Reply {
    /// A status code and a JSON body.
    Json(u16, Value),
    /// A status code and a raw text body (e.g. not JSON at all).
    Text(u16, String),
}

impl Reply {
    fn render(self) -> Response {
        match self {
            Reply::Json(code, body) => (
                status_code(code),
                [(header::CONTENT_TYPE, "application/json")],
                body.to_string(),
            )
                .into_response(),
            Reply::Text(code, body) => (
                status_code(code),
                [(header::CONTENT_TYPE, "text/plain")],
                body,
            )
                .into_response(),
        }
    }
}

fn status_code(code: u16) -> StatusCode {
    StatusCode::from_u16(code).expect("a valid HTTP status code")
}

/// What one endpoint answers: the queue first, then the default forever.
#[derive(Debug)]
struct Endpoint {
    queue: VecDeque<Reply>,
    default: Reply,
}

impl Endpoint {
    fn new(default: Reply) -> Self {
        Self {
            queue: VecDeque::new(),
            default,
        }
    }
}

/// One request the fake received.
#[derive(Debug, Clone)]
struct Call {
    ep: Ep,
    path: String,
}

/// The fake's whole state, shared with its handlers.
#[derive(Debug)]
struct Script {
    run: Endpoint,
    status: Endpoint,
    stream: Endpoint,
    cancel: Endpoint,
    calls: Vec<Call>,
    /// The JSON bodies of `POST /run`, in order.
    run_bodies: Vec<Value>,
    /// Requests without `Authorization: Bearer test-key`.
    unauthorized: usize,
    /// The files the fake worker uploads when a job is submitted.
    upload: Vec<(&'static str, Vec<u8>)>,
}

impl Script {
    /// A healthy endpoint: accepts the job, and reports it in progress forever.
    fn new() -> Self {
        Self {
            run: Endpoint::new(Reply::Json(
                200,
                json!({ "id": FAKE_ID, "status": "IN_QUEUE" }),
            )),
            status: Endpoint::new(status_reply("IN_PROGRESS", json!({}))),
            stream: Endpoint::new(stream_reply("IN_PROGRESS", &[])),
            cancel: Endpoint::new(Reply::Json(
                200,
                json!({ "id": FAKE_ID, "status": "CANCELLED" }),
            )),
            calls: Vec::new(),
            run_bodies: Vec::new(),
            unauthorized: 0,
            upload: common::fake_adapter(RANK, ALPHA),
        }
    }

    fn endpoint(&mut self, ep: Ep) -> &mut Endpoint {
        match ep {
            Ep::Run => &mut self.run,
            Ep::Status => &mut self.status,
            Ep::Stream => &mut self.stream,
            Ep::Cancel => &mut self.cancel,
        }
    }

    /// The next scripted reply of an endpoint.
    fn next(&mut self, ep: Ep) -> Reply {
        let endpoint = self.endpoint(ep);
        match endpoint.queue.pop_front() {
            Some(reply) => reply,
            None => endpoint.default.clone(),
        }
    }
}

type Shared = Arc<Mutex<Script>>;

/// A running fake endpoint.
#[derive(Clone)]
struct Fake {
    script: Shared,
    addr: SocketAddr,
}

impl Fake {
    async fn start() -> Self {
        let script: Shared = Arc::new(Mutex::new(Script::new()));
        let router = Router::new()
            .route("/v2/fake/run", post(on_run))
            .route("/v2/fake/status/{id}", get(on_status))
            .route("/v2/fake/stream/{id}", get(on_stream))
            .route("/v2/fake/cancel/{id}", post(on_cancel))
            .with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake RunPod endpoint");
        let addr = listener.local_addr().expect("the fake's address");
        tokio::spawn(async move {
            axum::serve(listener, router)
                .await
                .expect("the fake RunPod endpoint runs");
        });
        Self { script, addr }
    }

    /// The endpoint URL the platform is configured with (the client appends `/run` etc.).
    fn endpoint_url(&self) -> String {
        format!("http://{}/v2/fake", self.addr)
    }

    /// Queues a reply: answered once, before the endpoint's default.
    fn push(&self, ep: Ep, reply: Reply) {
        self.script
            .lock()
            .unwrap()
            .endpoint(ep)
            .queue
            .push_back(reply);
    }

    /// What the endpoint answers once its queue is empty.
    fn set_default(&self, ep: Ep, reply: Reply) {
        self.script.lock().unwrap().endpoint(ep).default = reply;
    }

    /// How many requests an endpoint received.
    fn count(&self, ep: Ep) -> usize {
        self.script
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|c| c.ep == ep)
            .count()
    }

    /// Every request, as `ENDPOINT path`, for failure messages.
    fn log(&self) -> Vec<String> {
        self.script
            .lock()
            .unwrap()
            .calls
            .iter()
            .map(|c| format!("{:?} {}", c.ep, c.path))
            .collect()
    }

    fn run_bodies(&self) -> Vec<Value> {
        self.script.lock().unwrap().run_bodies.clone()
    }

    fn unauthorized(&self) -> usize {
        self.script.lock().unwrap().unauthorized
    }

    /// What the fake worker uploads from now on.
    fn set_upload(&self, files: Vec<(&'static str, Vec<u8>)>) {
        self.script.lock().unwrap().upload = files;
    }
}

/// Logs the call, checks the API key and answers from the script.
fn answer(
    fake: &Shared,
    ep: Ep,
    path: String,
    headers: &HeaderMap,
    body: Option<Value>,
) -> Response {
    let expected = format!("Bearer {API_KEY}");
    let authorized = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(expected.as_str());
    let reply = {
        let mut script = fake.lock().unwrap();
        script.calls.push(Call { ep, path });
        if let Some(body) = body {
            script.run_bodies.push(body);
        }
        if !authorized {
            script.unauthorized += 1;
            None
        } else {
            Some(script.next(ep))
        }
    };
    match reply {
        Some(reply) => reply.render(),
        None => (StatusCode::UNAUTHORIZED, "missing or wrong API key").into_response(),
    }
}

async fn on_run(State(fake): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    // Like a worker that trains at once: the adapter goes to the signed upload URLs, so a
    // succeeded result names real files (finalisation reads them back).
    let upload = fake.lock().unwrap().upload.clone();
    for (name, bytes) in upload {
        if let Some(url) = body["input"]["upload_urls"][name].as_str() {
            let put = reqwest::Client::new().put(url).body(bytes).send().await;
            assert!(
                put.is_ok_and(|r| r.status().is_success()),
                "the fake worker uploads {name}"
            );
        }
    }
    answer(
        &fake,
        Ep::Run,
        "/v2/fake/run".to_owned(),
        &headers,
        Some(body),
    )
}

async fn on_status(
    State(fake): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    answer(
        &fake,
        Ep::Status,
        format!("/v2/fake/status/{id}"),
        &headers,
        None,
    )
}

async fn on_stream(
    State(fake): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    answer(
        &fake,
        Ep::Stream,
        format!("/v2/fake/stream/{id}"),
        &headers,
        None,
    )
}

async fn on_cancel(
    State(fake): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    answer(
        &fake,
        Ep::Cancel,
        format!("/v2/fake/cancel/{id}"),
        &headers,
        None,
    )
}

// ---------------------------------------------------------------------------------------------
// RunPod answers and worker events
// ---------------------------------------------------------------------------------------------

/// `GET /status/{id}`: `{id, status, delayTime, executionTime}` plus the fields of `extra`
/// (`output`, `error`, or a different `executionTime`).
fn status_reply(status: &str, extra: Value) -> Reply {
    let mut body = json!({
        "id": FAKE_ID, "status": status, "delayTime": 1200, "executionTime": 3000,
    });
    if let (Some(fields), Value::Object(extra)) = (body.as_object_mut(), extra) {
        for (key, value) in extra {
            fields.insert(key, value);
        }
    }
    Reply::Json(200, body)
}

/// `GET /stream/{id}`: the chunks not delivered before.
fn stream_reply(status: &str, chunks: &[Value]) -> Reply {
    let stream: Vec<Value> = chunks.iter().map(|c| json!({ "output": c })).collect();
    Reply::Json(200, json!({ "status": status, "stream": stream }))
}

/// A RunPod error answer (429, 5xx, 404).
fn error_reply(code: u16, message: &str) -> Reply {
    Reply::Json(code, json!({ "error": message }))
}

fn stage_training(total_steps: u32) -> Value {
    json!({
        "type": "stage", "stage": "training", "message": "go", "elapsed_s": 1.0,
        "total_steps": total_steps, "train_examples": 9, "eval_examples": 1,
    })
}

fn metrics(step: u32, total_steps: u32) -> Value {
    json!({
        "type": "metrics", "step": step, "total_steps": total_steps,
        "epoch": f64::from(step) / f64::from(total_steps),
        "train_loss": 2.0 - f64::from(step) * 0.1, "learning_rate": 0.0001, "grad_norm": 0.5,
        "tokens_per_sec": 100.0, "gpu_util": 90.0, "elapsed_s": 1.0 + f64::from(step),
    })
}

fn eval(step: u32, total_steps: u32) -> Value {
    json!({
        "type": "eval", "step": step, "epoch": f64::from(step) / f64::from(total_steps),
        "eval_loss": 1.7, "elapsed_s": 2.0 + f64::from(step),
    })
}

fn succeeded(total_steps: u32) -> Value {
    succeeded_with(
        total_steps,
        common::reported_files(&common::fake_adapter(RANK, ALPHA)),
    )
}

/// A succeeded result that reports `files` (name, size, sha256).
fn succeeded_with(total_steps: u32, files: Value) -> Value {
    json!({
        "type": "result", "status": "succeeded",
        "files": files,
        "metrics": {
            "final_train_loss": 1.5, "final_eval_loss": 1.7, "total_steps": total_steps,
            "train_runtime_s": 5.0, "tokens_per_sec": 100.0, "train_tokens": 1000,
        },
        "quantization_used": "none", "device": "cuda",
    })
}

/// The whole life of a successful run, as COMPLETED's aggregate `output` holds it.
fn full_output(total_steps: u32) -> Vec<Value> {
    let mut out = vec![stage_training(total_steps)];
    out.extend((1..=total_steps).map(|s| metrics(s, total_steps)));
    out.push(eval(total_steps, total_steps));
    out.push(succeeded(total_steps));
    out
}

/// The jobs of these tests run on a RunPod GPU type, so they go to the (fake) RunPod backend.
const RUNPOD_GPU: &str = "A4000";
/// The LoRA rank and alpha of `start_job_on`'s jobs (the Fast preset's).
const RANK: u64 = 8;
const ALPHA: u64 = 16;

// ---------------------------------------------------------------------------------------------
// The platform under test
// ---------------------------------------------------------------------------------------------

/// An app whose GPU backend is the fake, polling every 100 ms; `tweak` adjusts the settings.
async fn spawn_app(
    fake: &Fake,
    tweak: impl FnOnce(&mut server::settings::GpuSettings),
) -> (TestApp, reqwest::Client) {
    let mut gpu = common::test_gpu_settings();
    gpu.runpod = Some(server::settings::RunpodSettings {
        endpoint_url: fake.endpoint_url(),
        api_key: API_KEY.into(),
    });
    gpu.processor.poll_interval = Duration::from_millis(100);
    tweak(&mut gpu);
    let app = TestApp::spawn_with_gpu(gpu).await;
    let (client, _) = app.signed_in_user("faults@example.com").await;
    (app, client)
}

/// An app on the fake with a ready dataset and one job (the demo model) submitted to it.
/// Script the fake before calling this: the job is submitted at once.
async fn job_on(
    fake: &Fake,
    tweak: impl FnOnce(&mut server::settings::GpuSettings),
) -> (TestApp, reqwest::Client, String) {
    let (app, client) = spawn_app(fake, tweak).await;
    let dataset = ready_dataset(&app, &client, SAMPLE).await;
    let job = start_job_on(&app, &client, &dataset, 1, RUNPOD_GPU).await;
    (app, client, job)
}

/// Polls `GET /api/jobs/{id}` every 100 ms until the job has one of `statuses`; returns the job.
async fn wait_for_status(
    app: &TestApp,
    client: &reqwest::Client,
    job: &str,
    statuses: &[&str],
    timeout: Duration,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let body: Value = app.get_json(client, &format!("/api/jobs/{job}")).await;
        let detail = &body["data"]["job"];
        if statuses.iter().any(|s| detail["status"] == *s) {
            return detail.clone();
        }
        assert!(
            Instant::now() < deadline,
            "job {job} did not reach {statuses:?} within {timeout:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for the job to end and checks its status and error code.
async fn expect_end(
    app: &TestApp,
    client: &reqwest::Client,
    fake: &Fake,
    job: &str,
    status: &str,
    error_code: Option<&str>,
) -> Value {
    let detail = wait_for_status(app, client, job, &TERMINAL, SCENARIO_TIMEOUT).await;
    assert_eq!(
        detail["status"],
        status,
        "job {job} ended {}: {detail}\nfake calls: {:?}",
        detail["status"],
        fake.log()
    );
    match error_code {
        Some(code) => assert_eq!(detail["error_code"], code, "{detail}"),
        None => assert!(detail["error_code"].is_null(), "{detail}"),
    }
    assert_eq!(fake.unauthorized(), 0, "every call carried the API key");
    detail
}

/// What the database holds about a finished job.
#[derive(Debug)]
struct Stored {
    /// `metrics_points` rows.
    points: i64,
    /// `metrics` events.
    metric_events: i64,
    /// The status values that have an event.
    statuses: Vec<String>,
}

/// No duplicates: one `status` event per status value, one metric point per step and one
/// `metrics` event per step; the queued and final statuses have their event.
async fn assert_no_duplicates(app: &TestApp, job: &str, final_status: &str) -> Stored {
    let id: uuid::Uuid = job.parse().expect("a job id");
    let mut tx = app.db.system().await.expect("a system transaction");
    let status_counts: Vec<(Option<String>, i64)> = sqlx::query_as(
        "SELECT payload->>'status', count(*) FROM job_events
          WHERE job_id = $1 AND kind = 'status' GROUP BY 1 ORDER BY 1",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await
    .expect("status events");
    let (points, point_steps): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT step) FROM metrics_points WHERE job_id = $1",
    )
    .bind(id)
    .fetch_one(&mut *tx)
    .await
    .expect("metric points");
    let (metric_events, event_steps): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT payload->>'step') FROM job_events
          WHERE job_id = $1 AND kind = 'metrics'",
    )
    .bind(id)
    .fetch_one(&mut *tx)
    .await
    .expect("metrics events");
    tx.commit().await.expect("commit");

    for (status, count) in &status_counts {
        assert_eq!(
            *count, 1,
            "exactly one status event for {status:?}: {status_counts:?}"
        );
    }
    let statuses: Vec<String> = status_counts
        .iter()
        .filter_map(|(s, _)| s.clone())
        .collect();
    for expected in ["queued", final_status] {
        assert!(
            statuses.iter().any(|s| s == expected),
            "a {expected} status event: {statuses:?}"
        );
    }
    assert_eq!(points, point_steps, "one metric point per step");
    assert_eq!(metric_events, event_steps, "one metrics event per step");
    Stored {
        points,
        metric_events,
        statuses,
    }
}

fn message(detail: &Value) -> String {
    detail["error_message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

/// 1. `/run` is rate limited twice: the client backs off and retries, the job is submitted once
/// and runs to the end.
#[tokio::test]
async fn run_rate_limited_twice_is_retried_and_the_job_proceeds() {
    let fake = Fake::start().await;
    fake.push(Ep::Run, error_reply(429, "rate limited"));
    fake.push(Ep::Run, error_reply(429, "rate limited"));
    fake.set_default(Ep::Stream, stream_reply("COMPLETED", &[]));
    fake.set_default(
        Ep::Status,
        status_reply("COMPLETED", json!({ "output": full_output(2) })),
    );
    let (app, client, job) = job_on(&fake, |_| {}).await;

    let detail = expect_end(&app, &client, &fake, &job, "completed", None).await;
    assert_eq!(detail["progress"], 100.0, "{detail}");
    assert_eq!(fake.count(Ep::Run), 3, "two 429s, then accepted");
    // The three attempts sent the same, well-formed request.
    let bodies = fake.run_bodies();
    assert_eq!(bodies.len(), 3);
    for body in &bodies {
        assert_eq!(body["input"]["job_id"], job.as_str(), "{body}");
        assert_eq!(body["input"]["contract_version"], 1, "{body}");
        assert!(
            body["policy"]["executionTimeout"].as_u64().is_some(),
            "{body}"
        );
    }
    let stored = assert_no_duplicates(&app, &job, "completed").await;
    assert_eq!(
        stored.points, 2,
        "both steps stored from the aggregate output"
    );
    assert_eq!(stored.metric_events, 2);
    for status in ["initializing", "running", "completed"] {
        assert!(stored.statuses.iter().any(|s| s == status), "{stored:?}");
    }
    assert_eq!(fake.count(Ep::Cancel), 0);
}

/// 2. `/stream` answers 500/503 five times (more than one call's four attempts, so the
/// processor's own retry is exercised too), then normally: the job completes, and a chunk
/// `/stream` delivers twice is stored once.
#[tokio::test]
async fn stream_server_errors_are_retried_and_metrics_are_stored_once() {
    let fake = Fake::start().await;
    for code in [500, 503, 500, 503, 500] {
        fake.push(Ep::Stream, error_reply(code, "internal error"));
    }
    fake.push(
        Ep::Stream,
        stream_reply(
            "IN_PROGRESS",
            &[stage_training(3), metrics(1, 3), metrics(2, 3)],
        ),
    );
    // A replayed chunk (step 2) with the next one.
    fake.push(
        Ep::Stream,
        stream_reply("IN_PROGRESS", &[metrics(2, 3), metrics(3, 3)]),
    );
    fake.set_default(Ep::Stream, stream_reply("COMPLETED", &[]));
    // /status is asked every third poll: report progress until the stream says it is done.
    fake.push(Ep::Status, status_reply("IN_PROGRESS", json!({})));
    fake.push(Ep::Status, status_reply("IN_PROGRESS", json!({})));
    fake.set_default(
        Ep::Status,
        status_reply("COMPLETED", json!({ "output": full_output(3) })),
    );
    let (app, client, job) = job_on(&fake, |_| {}).await;

    let detail = expect_end(&app, &client, &fake, &job, "completed", None).await;
    assert_eq!(detail["current_step"], 3, "{detail}");
    assert!(fake.count(Ep::Stream) >= 7, "{:?}", fake.log());
    let stored = assert_no_duplicates(&app, &job, "completed").await;
    assert_eq!(stored.points, 3, "one point per step");
    assert_eq!(stored.metric_events, 3, "one metrics event per step");
}

/// 3. `/stream` and `/status` answer 200 with a body that is not JSON: after
/// `max_poll_errors` polls the job fails as unreachable, saying the answers were malformed.
#[tokio::test]
async fn malformed_answers_fail_the_job_after_max_poll_errors() {
    let fake = Fake::start().await;
    fake.set_default(Ep::Stream, Reply::Text(200, "not json".into()));
    fake.set_default(Ep::Status, Reply::Text(200, "not json".into()));
    let (app, client, job) = job_on(&fake, |gpu| gpu.processor.max_poll_errors = 3).await;

    let detail = expect_end(
        &app,
        &client,
        &fake,
        &job,
        "failed",
        Some("backend_unreachable"),
    )
    .await;
    let text = message(&detail);
    assert!(
        text.contains("malformed") && text.contains("GPU backend"),
        "{text}"
    );
    assert!(text.contains("after 3 attempts"), "{text}");
    // A 2xx that does not parse is not retried inside the client: one call per poll.
    assert_eq!(fake.count(Ep::Stream), 3, "{:?}", fake.log());
    let stored = assert_no_duplicates(&app, &job, "failed").await;
    assert_eq!(stored.points, 0);
    assert_eq!(fake.count(Ep::Cancel), 0);
}

/// 4. `/stream` answers 404 (the backend lost the run: it restarted, or forgot the job after
/// its ttl): the next attempt starts at once, automatically, until the budget is spent; then the
/// job fails as lost.
#[tokio::test]
async fn a_run_the_backend_lost_is_resumed_then_fails_as_lost() {
    let fake = Fake::start().await;
    fake.push(
        Ep::Stream,
        stream_reply("IN_PROGRESS", &[stage_training(10)]),
    );
    fake.set_default(Ep::Stream, error_reply(404, "request does not exist"));
    let (app, client, job) = job_on(&fake, |gpu| gpu.processor.max_auto_resumes = 2).await;

    let detail = expect_end(&app, &client, &fake, &job, "failed", Some("backend_lost")).await;
    assert!(
        message(&detail).contains("lost this run again after the automatic resumes"),
        "{detail}"
    );
    assert_eq!(detail["retry_count"], 2, "{detail}");
    assert_eq!(
        fake.count(Ep::Run),
        3,
        "the first run and two automatic resumes: {:?}",
        fake.log()
    );
    // A 404 is final for each attempt: not retried inside the client.
    assert_eq!(fake.count(Ep::Stream), 4, "{:?}", fake.log());
    assert_eq!(fake.count(Ep::Cancel), 0);
    let id: uuid::Uuid = job.parse().expect("a job id");
    let mut tx = app.db.system().await.expect("a system transaction");
    let resumes: Vec<String> = sqlx::query_scalar(
        "SELECT payload->>'message' FROM job_events
          WHERE job_id = $1 AND kind = 'status' AND payload->>'status' = 'queued'
            AND dedupe_key <> 'a0:status:queued' ORDER BY id",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await
    .expect("status events");
    tx.commit().await.expect("commit");
    assert_eq!(resumes.len(), 2, "{resumes:?}");
    for (n, text) in resumes.iter().enumerate() {
        assert!(
            text.contains("resuming from the start (no checkpoint was saved yet)")
                && text.contains(&format!("automatic resume {} of 2", n + 1)),
            "{text}"
        );
    }
}

/// 5. COMPLETED, but the worker's result says it failed: the job fails with the worker's code,
/// message and hint.
#[tokio::test]
async fn completed_with_a_failed_result_fails_with_the_workers_hint() {
    let fake = Fake::start().await;
    let output = json!([
        stage_training(10),
        metrics(1, 10),
        {
            "type": "result", "status": "failed", "error_code": "out_of_memory",
            "message": "CUDA out of memory",
            "hint": "reduce batch_size or max_seq_len, or pick a GPU with more memory",
        },
    ]);
    fake.set_default(Ep::Stream, stream_reply("COMPLETED", &[]));
    fake.set_default(
        Ep::Status,
        status_reply("COMPLETED", json!({ "output": output })),
    );
    let (app, client, job) = job_on(&fake, |_| {}).await;

    let detail = expect_end(&app, &client, &fake, &job, "failed", Some("out_of_memory")).await;
    let text = message(&detail);
    assert!(text.contains("CUDA out of memory"), "{text}");
    assert!(
        text.contains("reduce batch_size or max_seq_len, or pick a GPU with more memory"),
        "{text}"
    );
    let stored = assert_no_duplicates(&app, &job, "failed").await;
    assert_eq!(stored.points, 1, "the one reported step is kept");
}

/// 6. `/stream` delivered only some metrics; COMPLETED's aggregate output holds all of them
/// (again including those already delivered): the missing ones are backfilled, none doubled.
#[tokio::test]
async fn completed_output_backfills_missed_metrics_without_duplicates() {
    const STEPS: u32 = 4;
    let fake = Fake::start().await;
    fake.push(
        Ep::Stream,
        stream_reply("IN_PROGRESS", &[stage_training(STEPS), metrics(1, STEPS)]),
    );
    fake.push(
        Ep::Stream,
        stream_reply("IN_PROGRESS", &[metrics(2, STEPS)]),
    );
    // Steps 3 and 4 (and the eval) never come through /stream.
    fake.set_default(Ep::Stream, stream_reply("COMPLETED", &[]));
    fake.push(Ep::Status, status_reply("IN_PROGRESS", json!({})));
    fake.set_default(
        Ep::Status,
        status_reply("COMPLETED", json!({ "output": full_output(STEPS) })),
    );
    let (app, client, job) = job_on(&fake, |_| {}).await;

    let detail = expect_end(&app, &client, &fake, &job, "completed", None).await;
    assert_eq!(detail["current_step"], STEPS, "{detail}");
    assert_eq!(detail["progress"], 100.0, "{detail}");
    let stored = assert_no_duplicates(&app, &job, "completed").await;
    assert_eq!(
        stored.points,
        i64::from(STEPS),
        "one point per distinct step"
    );
    assert_eq!(
        stored.metric_events,
        i64::from(STEPS),
        "one metrics event per step"
    );
    // The curve, as the API shows it: every step, with the eval loss on the last.
    let body: Value = app
        .get_json(&client, &format!("/api/jobs/{job}/metrics"))
        .await;
    let points = body["data"]["metrics"].as_array().expect("metric points");
    let steps: Vec<i64> = points.iter().filter_map(|p| p["step"].as_i64()).collect();
    assert_eq!(steps, vec![1, 2, 3, 4], "{body}");
    assert!(points.iter().any(|p| p["eval_loss"].is_number()), "{body}");
}

/// 7. The backend reports CANCELLED (someone cancelled it on RunPod): the job is cancelled.
#[tokio::test]
async fn cancelled_on_the_backend_cancels_the_job() {
    let fake = Fake::start().await;
    fake.set_default(Ep::Stream, stream_reply("CANCELLED", &[]));
    fake.set_default(Ep::Status, status_reply("CANCELLED", json!({})));
    let (app, client, job) = job_on(&fake, |_| {}).await;

    let detail = expect_end(
        &app,
        &client,
        &fake,
        &job,
        "cancelled",
        Some("cancelled_on_backend"),
    )
    .await;
    assert!(
        message(&detail).contains("cancelled on the GPU backend"),
        "{detail}"
    );
    assert_no_duplicates(&app, &job, "cancelled").await;
    assert_eq!(
        fake.count(Ep::Cancel),
        0,
        "nothing to cancel: it already is"
    );
}

/// 8. TIMED_OUT: the job fails as timed out.
#[tokio::test]
async fn timed_out_on_the_backend_fails_the_job() {
    let fake = Fake::start().await;
    fake.push(
        Ep::Stream,
        stream_reply("IN_PROGRESS", &[stage_training(10), metrics(1, 10)]),
    );
    fake.set_default(Ep::Stream, stream_reply("TIMED_OUT", &[]));
    fake.set_default(Ep::Status, status_reply("TIMED_OUT", json!({})));
    let (app, client, job) = job_on(&fake, |_| {}).await;

    let detail = expect_end(&app, &client, &fake, &job, "failed", Some("timed_out")).await;
    assert!(message(&detail).contains("execution timeout"), "{detail}");
    let stored = assert_no_duplicates(&app, &job, "failed").await;
    assert_eq!(
        stored.points, 1,
        "the step /stream delivered is kept: {stored:?}"
    );
}

/// 9. FAILED with RunPod's JSON error string: the job fails with "type: message".
#[tokio::test]
async fn failed_on_the_backend_reports_the_workers_error() {
    let fake = Fake::start().await;
    let error = json!({
        "error_type": "RuntimeError", "error_message": "boom",
        "error_traceback": "Traceback (most recent call last):\n  ...\nRuntimeError: boom",
    })
    .to_string();
    fake.set_default(Ep::Stream, stream_reply("FAILED", &[]));
    fake.set_default(
        Ep::Status,
        status_reply("FAILED", json!({ "error": error })),
    );
    let (app, client, job) = job_on(&fake, |_| {}).await;

    let detail = expect_end(&app, &client, &fake, &job, "failed", Some("worker_failed")).await;
    assert!(message(&detail).contains("RuntimeError: boom"), "{detail}");
    assert_no_duplicates(&app, &job, "failed").await;
}

/// 10. The cost (execution time × the A100's price) passes the budget cap: the platform
/// cancels the run on the backend and the job is cancelled with the reason.
#[tokio::test]
async fn reaching_the_budget_cap_cancels_the_run_on_the_backend() {
    let fake = Fake::start().await;
    // First 5 s of execution (under the $0.01 cap at $0.00076/s), then 1,000 s (about $0.76).
    fake.push(
        Ep::Status,
        status_reply("IN_PROGRESS", json!({ "executionTime": 5_000 })),
    );
    fake.set_default(
        Ep::Status,
        status_reply("IN_PROGRESS", json!({ "executionTime": 1_000_000 })),
    );
    let (app, client) = spawn_app(&fake, |_| {}).await;
    let dataset = ready_dataset(&app, &client, SAMPLE).await;
    let catalog: Value = app.get_json(&client, "/api/catalog").await;
    let hyperparameters = catalog["data"]["presets"]["balanced"].clone();
    assert!(hyperparameters.is_object(), "{catalog}");
    let response = app
        .post(
            &client,
            "/api/jobs",
            json!({
                "dataset_id": dataset, "base_model": "llama-3.1-8b-instruct", "preset": "balanced",
                "hyperparameters": hyperparameters, "gpu_type": "A100", "gpu_count": 1,
                "budget_cap": 0.01, "confirm_low_budget": true,
            }),
        )
        .await;
    let code = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(code, 201, "{body}");
    let job = body["data"]["job"]["id"]
        .as_str()
        .expect("job id")
        .to_owned();

    let detail = expect_end(
        &app,
        &client,
        &fake,
        &job,
        "cancelled",
        Some("budget_cap_reached"),
    )
    .await;
    assert!(message(&detail).contains("budget cap"), "{detail}");
    let final_cost = detail["final_cost"].as_f64().expect("a final cost");
    assert!(final_cost >= 0.01, "the cost passed the cap: {detail}");
    assert!(fake.count(Ep::Status) >= 2, "{:?}", fake.log());
    assert_eq!(
        fake.count(Ep::Cancel),
        1,
        "the run was cancelled on the backend: {:?}",
        fake.log()
    );
    assert!(
        fake.log()
            .contains(&format!("Cancel /v2/fake/cancel/{FAKE_ID}")),
        "{:?}",
        fake.log()
    );
    assert_no_duplicates(&app, &job, "cancelled").await;
}

/// 11. The run reports one stage, then nothing: after `stall_after` the platform cancels it on
/// the backend and fails the job as stalled.
#[tokio::test]
async fn a_run_without_progress_is_stopped_as_stalled() {
    let fake = Fake::start().await;
    // One chunk starts the stall clock (the job turns running); IN_PROGRESS, silent, forever.
    fake.push(
        Ep::Stream,
        stream_reply("IN_PROGRESS", &[stage_training(10)]),
    );
    let (app, client, job) = job_on(&fake, |gpu| {
        gpu.processor.stall_after = Duration::from_secs(2);
    })
    .await;

    let detail = expect_end(&app, &client, &fake, &job, "failed", Some("stalled")).await;
    assert!(message(&detail).contains("no progress"), "{detail}");
    // The stall clock started with the stage chunk; the job was stopped no earlier than
    // stall_after later (a little slack: the two timestamps come from two clocks' reads).
    let at = |field: &str| {
        detail[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field} is set: {detail}"))
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap_or_else(|e| panic!("{field} is a timestamp: {e}"))
    };
    let stalled_for = at("completed_at") - at("started_at");
    assert!(
        stalled_for >= chrono::Duration::milliseconds(1900),
        "stopped only after stall_after: {stalled_for}"
    );
    assert_eq!(
        fake.count(Ep::Cancel),
        1,
        "the stalled run was cancelled on the backend: {:?}",
        fake.log()
    );
    let stored = assert_no_duplicates(&app, &job, "failed").await;
    assert!(stored.statuses.iter().any(|s| s == "running"), "{stored:?}");
}

#[tokio::test]
async fn two_replicas_follow_a_job_once() {
    const STEPS: u32 = 6;
    let fake = Fake::start().await;
    // The stream hands out one step per poll, so polls by both replicas interleave.
    fake.push(
        Ep::Stream,
        stream_reply("IN_PROGRESS", &[stage_training(STEPS)]),
    );
    for step in 1..=STEPS {
        fake.push(
            Ep::Stream,
            stream_reply("IN_PROGRESS", &[metrics(step, STEPS)]),
        );
    }
    fake.set_default(Ep::Stream, stream_reply("COMPLETED", &[]));
    fake.set_default(
        Ep::Status,
        status_reply("IN_PROGRESS", json!({ "executionTime": 1000 })),
    );
    let (app, client) = spawn_app(&fake, |_| {}).await;
    let dataset = ready_dataset(&app, &client, SAMPLE).await;
    // A second replica on the same database, its worker leasing from the same queue.
    let mut gpu = common::test_gpu_settings();
    gpu.runpod = Some(server::settings::RunpodSettings {
        endpoint_url: fake.endpoint_url(),
        api_key: API_KEY.into(),
    });
    gpu.processor.poll_interval = Duration::from_millis(100);
    let _replica = app.replica(gpu).await;
    let job = start_job_on(&app, &client, &dataset, 1, RUNPOD_GPU).await;

    // Once every step was delivered, the backend reports completion.
    let deadline = Instant::now() + Duration::from_secs(30);
    while fake.count(Ep::Stream) <= STEPS as usize {
        assert!(
            Instant::now() < deadline,
            "the replicas polled: {:?}",
            fake.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fake.set_default(
        Ep::Status,
        status_reply(
            "COMPLETED",
            json!({ "output": full_output(STEPS), "executionTime": 2000 }),
        ),
    );
    expect_end(&app, &client, &fake, &job, "completed", None).await;
    assert_eq!(fake.count(Ep::Run), 1, "submitted once");
    let stored = assert_no_duplicates(&app, &job, "completed").await;
    assert_eq!(stored.points, i64::from(STEPS));
    assert_eq!(stored.metric_events, i64::from(STEPS));
    // One record per cost type, whichever replica ended the job.
    let costs = cost_records(&app, &job).await;
    let types: Vec<&str> = costs.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(types, ["compute", "storage"], "{costs:?}");
}

/// A job's ending and its cost records are one transaction: when recording fails (a fault
/// injected in the database, where a crash between the two would strike), the job does not
/// end; the processor's retry ends it once, with one record per type and the billed time.
#[tokio::test]
async fn an_ending_whose_cost_records_fail_is_retried_whole() {
    let fake = Fake::start().await;
    fake.set_default(Ep::Stream, stream_reply("FAILED", &[]));
    fake.set_default(
        Ep::Status,
        status_reply("FAILED", json!({ "error": "boom", "executionTime": 3000 })),
    );
    let (app, client) = spawn_app(&fake, |_| {}).await;
    // The first cost record insert fails (a sequence counts: its value survives the rollback).
    let mut owner = sqlx::ConnectOptions::connect(&app.options).await.unwrap();
    sqlx::raw_sql(
        "CREATE SEQUENCE cost_fault;
         GRANT USAGE, SELECT, UPDATE ON SEQUENCE cost_fault TO PUBLIC;
         CREATE FUNCTION cost_fault() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF nextval('cost_fault') = 1 THEN RAISE EXCEPTION 'injected fault'; END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER cost_fault BEFORE INSERT ON cost_records
             FOR EACH ROW EXECUTE FUNCTION cost_fault();",
    )
    .execute(&mut owner)
    .await
    .unwrap();
    let dataset = ready_dataset(&app, &client, SAMPLE).await;
    let job = start_job_on(&app, &client, &dataset, 1, RUNPOD_GPU).await;
    expect_end(&app, &client, &fake, &job, "failed", Some("worker_failed")).await;
    let inserts: i64 = sqlx::query_scalar("SELECT last_value FROM cost_fault")
        .fetch_one(&mut owner)
        .await
        .unwrap();
    assert!(
        inserts >= 3,
        "the fault struck, then both records were written: {inserts}"
    );
    assert_no_duplicates(&app, &job, "failed").await;
    let costs = cost_records(&app, &job).await;
    let rate = runpod_rate();
    assert_eq!(costs.len(), 2, "{costs:?}");
    assert!((costs[0].1 - 3.0 * rate).abs() < 1e-6, "{costs:?}");
    let told: Value = app
        .get_json(&client, "/api/notifications?type=job_failed")
        .await;
    assert_eq!(
        told["data"]["notifications"].as_array().unwrap().len(),
        1,
        "told once: {told}"
    );
}

/// 13. The owner cancels a run on RunPod: `/cancel` is called, and the job ends cancelled
/// with the owner's reason, once.
#[tokio::test]
async fn an_owners_cancel_stops_the_run_on_runpod() {
    let fake = Fake::start().await;
    fake.set_default(
        Ep::Stream,
        stream_reply("IN_PROGRESS", &[stage_training(100)]),
    );
    let (app, client, job) = job_on(&fake, |_| {}).await;
    wait_for_status(&app, &client, &job, &["running"], SCENARIO_TIMEOUT).await;

    let response = app
        .post(&client, &format!("/api/jobs/{job}/cancel"), json!({}))
        .await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"]["job"]["current_stage"], "cancelling");
    assert_eq!(body["data"]["job"]["cancel_requested"], true);
    let detail = expect_end(&app, &client, &fake, &job, "cancelled", Some("cancelled")).await;
    assert!(message(&detail).contains("your request"), "{detail}");
    assert!(fake.count(Ep::Cancel) >= 1, "{:?}", fake.log());
    assert_no_duplicates(&app, &job, "cancelled").await;
}

/// 14. A job cancelled before its submission went through ends at once, and is never sent:
/// `/run` keeps answering 429, so the submission waits in the queue when the owner cancels.
#[tokio::test]
async fn a_job_cancelled_before_it_was_sent_is_never_sent() {
    let fake = Fake::start().await;
    fake.set_default(Ep::Run, error_reply(429, "slow down"));
    let (app, client, job) = job_on(&fake, |_| {}).await;
    // The client tries /run 4 times (429 is retried), then the task waits in the queue.
    let deadline = Instant::now() + SCENARIO_TIMEOUT;
    while fake.count(Ep::Run) < 4 {
        assert!(Instant::now() < deadline, "the submission was tried");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    let response = app
        .post(&client, &format!("/api/jobs/{job}/cancel"), json!({}))
        .await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    let detail = &body["data"]["job"];
    assert_eq!(detail["status"], "cancelled", "{body}");
    assert_eq!(detail["error_code"], "cancelled");
    assert!(message(detail).contains("before it started"), "{body}");

    // The submission task, when it runs again, sends nothing.
    fake.set_default(
        Ep::Run,
        Reply::Json(200, json!({ "id": FAKE_ID, "status": "IN_QUEUE" })),
    );
    let sent = fake.count(Ep::Run);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(fake.count(Ep::Run), sent, "{:?}", fake.log());
    assert_eq!(fake.count(Ep::Cancel), 0);
    assert_no_duplicates(&app, &job, "cancelled").await;
}

/// 15. A failed job is retried and runs to completion as a new attempt, with its own curve.
#[tokio::test]
async fn a_failed_job_retried_runs_to_completion() {
    let fake = Fake::start().await;
    fake.set_default(Ep::Stream, stream_reply("FAILED", &[]));
    fake.set_default(
        Ep::Status,
        status_reply("FAILED", json!({ "error": "boom" })),
    );
    let (app, client, job) = job_on(&fake, |_| {}).await;
    expect_end(&app, &client, &fake, &job, "failed", Some("worker_failed")).await;

    fake.set_default(Ep::Stream, stream_reply("COMPLETED", &[]));
    fake.set_default(
        Ep::Status,
        status_reply("COMPLETED", json!({ "output": full_output(4) })),
    );
    let response = app
        .post(&client, &format!("/api/jobs/{job}/retry"), json!({}))
        .await;
    assert_eq!(response.status(), 202);
    let detail = expect_end(&app, &client, &fake, &job, "completed", None).await;
    assert_eq!(detail["retry_count"], 1);
    assert_eq!(detail["current_step"], 4);
    assert_eq!(detail["progress"], 100.0);
    assert_eq!(fake.count(Ep::Run), 2, "one run per attempt");
    let metrics: Value = app
        .get_json(&client, &format!("/api/jobs/{job}/metrics"))
        .await;
    let steps: Vec<i64> = metrics["data"]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["step"].as_i64().unwrap())
        .collect();
    assert_eq!(steps, [1, 2, 3, 4], "one point per step of the new attempt");
    // One compute record for the job, adding up both attempts' billed time (3 s each at the
    // A4000's rate), and one storage record.
    let costs = cost_records(&app, &job).await;
    let rate = runpod_rate();
    assert_eq!(costs.len(), 2, "{costs:?}");
    assert_eq!(costs[0].0, "compute");
    assert!((costs[0].1 - 6.0 * rate).abs() < 1e-6, "{costs:?}");
    assert!((costs[0].2 - 6.0).abs() < 1e-9, "billed seconds: {costs:?}");
    assert_eq!(costs[1].0, "storage");
    assert!(costs[1].1 > 0.0, "{costs:?}");
}

/// Dollars per second of the RunPod GPU type the jobs here run on.
fn runpod_rate() -> f64 {
    engine::training::Catalog::builtin()
        .gpu(RUNPOD_GPU)
        .unwrap()
        .price_per_second
}

/// A job's cost records: `(type, amount, seconds)`, by type.
async fn cost_records(app: &TestApp, job: &str) -> Vec<(String, f64, f64)> {
    let id: uuid::Uuid = job.parse().unwrap();
    let mut tx = app.db.system().await.unwrap();
    let rows: Vec<(String, f64, Option<f64>)> = sqlx::query_as(
        "SELECT cost_type, amount::float8, seconds FROM cost_records WHERE job_id = $1 ORDER BY cost_type",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    rows.into_iter()
        .map(|(t, a, s)| (t, a, s.unwrap_or(0.0)))
        .collect()
}

/// 16. A succeeded run becomes a model once: its files are read back and checked, it is rated
/// from the run's curve, it gets a card, and the owner is told — and a finaliser that runs
/// again (a crash after its commit, a duplicate task) changes nothing.
#[tokio::test]
async fn a_succeeded_run_becomes_a_rated_model_exactly_once() {
    const STEPS: u32 = 6;
    let fake = Fake::start().await;
    fake.set_default(
        Ep::Status,
        status_reply("COMPLETED", json!({ "output": full_output(STEPS) })),
    );
    fake.set_default(Ep::Stream, stream_reply("COMPLETED", &[]));
    let (app, client, job) = job_on(&fake, |_| {}).await;
    let detail = expect_end(&app, &client, &fake, &job, "completed", None).await;
    let model_id = detail["artifact_id"]
        .as_str()
        .expect("the job links its model")
        .to_owned();

    let model: Value = app
        .get_json(&client, &format!("/api/models/{model_id}"))
        .await;
    let model = &model["data"]["model"];
    assert_eq!(model["job_id"], job.as_str());
    let names: Vec<&str> = model["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "adapter_config.json",
            "adapter_model.safetensors",
            "README.md"
        ]
    );
    assert!(
        model["files"][0].get("key").is_none(),
        "storage keys stay private"
    );
    // Train loss 1.9 → 1.4 over six steps: 26% lower → 3 stars; eval 1.7 is 0.3 above train.
    let quality = &model["quality_metrics"];
    assert_eq!(quality["overall_score"], 3, "{quality}");
    assert!(
        quality["explanation"]
            .as_str()
            .unwrap()
            .starts_with("3 stars: loss fell 2"),
        "{quality}"
    );
    assert!((quality["perplexity"].as_f64().unwrap() - 1.7f64.exp()).abs() < 1e-3);
    let card = model["model_card"].as_str().unwrap();
    assert!(
        card.starts_with("---\nbase_model: \"tiny-random-llama\"") && card.contains("PeftModel"),
        "{card}"
    );

    // The finaliser runs again, as after a crash between its commit and the task's completion.
    let id: uuid::Uuid = job.parse().unwrap();
    let mut tx = app.db.system().await.unwrap();
    sqlx::query(
        "INSERT INTO work_queue (kind, payload, user_id, dedupe_key) SELECT 'model_finalize', $1, user_id, 'rerun:' || id FROM training_jobs WHERE id = $2",
    )
    .bind(json!({ "job_id": id, "attempt": 0 }))
    .bind(id)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut tx = app.db.system().await.unwrap();
        let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM work_queue WHERE dedupe_key = 'rerun:' || $1::text AND status <> 'done'")
            .bind(id)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        if pending == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the rerun finished");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut tx = app.db.system().await.unwrap();
    let (models, notes): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM model_artifacts WHERE job_id = $1),
                (SELECT count(*) FROM notifications n JOIN training_jobs j ON j.user_id = n.user_id
                  WHERE j.id = $1 AND n.type = 'artifact_ready')",
    )
    .bind(id)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!((models, notes), (1, 1), "one model, one notification");
    // Its costs were recorded once, with the model's files in storage: compute is the billed
    // 3 s at the A4000's rate, the same figure as the job's final cost.
    let costs = cost_records(&app, &job).await;
    assert_eq!(costs.len(), 2, "{costs:?}");
    assert!(
        (costs[0].1 - detail["final_cost"].as_f64().unwrap()).abs() < 1e-9,
        "{costs:?} {detail}"
    );
    assert!((costs[0].2 - 3.0).abs() < 1e-9);
    let model_bytes: u64 = model["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["size"].as_u64().unwrap())
        .sum();
    assert!(
        costs[1].1 > engine::costs::storage_cost(model_bytes as f64) - 1e-12,
        "{costs:?}"
    );
    assert_no_duplicates(&app, &job, "completed").await;
}

/// 17. Files that are not the adapter the job asked for fail the job with a precise code and
/// message, and no model is made: a missing file, a wrong sha256, a config that disagrees with
/// the job, a truncated safetensors file.
#[tokio::test]
async fn adapters_that_do_not_check_out_fail_the_job_precisely() {
    let good = common::fake_adapter(RANK, ALPHA);
    let config = good[0].clone();
    let weights = good[1].clone();
    let truncated = (
        "adapter_model.safetensors",
        weights.1[..weights.1.len() - 64].to_vec(),
    );
    let other_rank = common::fake_adapter(4, ALPHA);
    // (case, what the worker uploads, what it reports, code, message part)
    type Files = Vec<(&'static str, Vec<u8>)>;
    let cases: Vec<(&str, Files, Value, &str, &str)> = vec![
        (
            "missing",
            vec![weights.clone()],
            common::reported_files(&good),
            "artifact_missing",
            "adapter_config.json was reported uploaded but is not in storage",
        ),
        (
            "wrong sha256",
            good.clone(),
            {
                let mut files = common::reported_files(&good);
                files[1]["sha256"] = json!("0".repeat(64));
                files
            },
            "artifact_corrupt",
            "adapter_model.safetensors has sha256",
        ),
        (
            "config mismatch",
            other_rank.clone(),
            common::reported_files(&other_rank),
            "artifact_mismatch",
            "rank r = 4; the job asked for 8",
        ),
        (
            "truncated",
            vec![config.clone(), truncated.clone()],
            common::reported_files(&[config.clone(), truncated.clone()]),
            "artifact_corrupt",
            "truncated or corrupt",
        ),
    ];
    for (case, upload, reported, code, expected) in cases {
        let fake = Fake::start().await;
        fake.set_upload(upload);
        let mut output = full_output(4);
        *output.last_mut().unwrap() = succeeded_with(4, reported);
        fake.set_default(
            Ep::Status,
            status_reply("COMPLETED", json!({ "output": output })),
        );
        fake.set_default(Ep::Stream, stream_reply("COMPLETED", &[]));
        let (app, client, job) = job_on(&fake, |_| {}).await;
        let detail = expect_end(&app, &client, &fake, &job, "failed", Some(code)).await;
        assert!(message(&detail).contains(expected), "{case}: {detail}");
        assert!(detail["artifact_id"].is_null(), "{case}: no model");
        let models: Value = app.get_json(&client, "/api/models").await;
        assert_eq!(models["data"]["pagination"]["total"], 0, "{case}: {models}");
    }
}

/// 18. Spending limits hold under parallel requests: of 20 job creations at once, exactly as
/// many pass as the monthly budget allows (then as the active-job limit allows), and the
/// refusals say which limit and with what numbers.
#[tokio::test]
async fn spending_limits_hold_under_twenty_parallel_creations() {
    let fake = Fake::start().await;
    let (app, client) = spawn_app(&fake, |_| {}).await;
    let dataset = ready_dataset(&app, &client, SAMPLE).await;
    let catalog: Value = app.get_json(&client, "/api/catalog").await;
    let mut hp = catalog["data"]["presets"]["fast"].clone();
    hp["quantization"] = json!("none");
    hp["epochs"] = json!(1);
    let put_budget = |budget: Value| {
        client
            .put(app.url("/api/account/budget"))
            .header("Origin", app.address.as_str())
            .json(&json!({ "monthly_budget": budget }))
            .send()
    };
    let create_twenty = || {
        let requests = (0..20).map(|_| {
            app.post(
                &client,
                "/api/jobs",
                json!({
                    "dataset_id": dataset, "base_model": "tiny-random-llama", "preset": "custom",
                    "hyperparameters": hp, "gpu_type": RUNPOD_GPU, "gpu_count": 1,
                    "budget_cap": 0.05, "confirm_low_budget": true,
                }),
            )
        });
        futures::future::join_all(requests)
    };

    // $0.10 a month and a $0.05 cap per job: two jobs fit.
    assert_eq!(put_budget(json!(0.10)).await.unwrap().status(), 200);
    let mut created = 0;
    for response in create_twenty().await {
        match response.status().as_u16() {
            201 => created += 1,
            409 => {
                let body: Value = response.json().await.unwrap();
                let text = body.to_string();
                assert!(text.contains("monthly budget of $0.10"), "{text}");
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(created, 2, "exactly the budget's worth");

    // With room in the budget, the active-job limit (3) holds instead.
    assert_eq!(put_budget(json!(1000)).await.unwrap().status(), 200);
    let mut more = 0;
    for response in create_twenty().await {
        match response.status().as_u16() {
            201 => more += 1,
            409 => {
                let text = response.json::<Value>().await.unwrap().to_string();
                assert!(text.contains("the limit is 3"), "{text}");
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(more, 1, "three active jobs at most");
    let budget: Value = app.get_json(&client, "/api/account/budget").await;
    assert_eq!(budget["data"]["active_jobs"], 3);
    assert!((budget["data"]["reserved_by_active_jobs"].as_f64().unwrap() - 0.15).abs() < 1e-9);
    assert_eq!(put_budget(json!(-1)).await.unwrap().status(), 400);

    // A paid GPU without a cap gets one: the high estimate with a margin.
    let (other, _) = app.signed_in_user("no-cap@example.com").await;
    let theirs = ready_dataset(&app, &other, SAMPLE).await;
    let uncapped = app
        .post(
            &other,
            "/api/jobs",
            json!({
                "dataset_id": theirs, "base_model": "tiny-random-llama", "preset": "custom",
                "hyperparameters": hp, "gpu_type": RUNPOD_GPU, "gpu_count": 1,
            }),
        )
        .await;
    assert_eq!(uncapped.status(), 201);
    let job: Value = uncapped.json().await.unwrap();
    let cap = job["data"]["job"]["budget_cap"]
        .as_f64()
        .expect("a cap was set");
    let high = job["data"]["job"]["estimate"]["cost"]["high"]
        .as_f64()
        .unwrap();
    // The high estimate × 1.5, in whole cents rounded up (what the Train page prefills).
    assert!(
        cap >= high * 1.5
            && cap - high * 1.5 < 0.01
            && (cap * 100.0 - (cap * 100.0).round()).abs() < 1e-6,
        "cap {cap} for a high estimate of {high}"
    );
}
