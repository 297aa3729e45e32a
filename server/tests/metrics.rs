//! Prometheus `/metrics` (issue 16 item 3) after real work — a refused sign-in, a validation, a
//! job trained by the local executor, a live stream — and the alert rules
//! (`deploy/prometheus/alerts.yml`, item 4): promtool checks them and runs their unit tests, and
//! every metric they name is one this server exports.

mod common;

use std::time::Duration;

use common::{TestApp, ready_dataset, start_job};
use serde_json::Value;

/// The value of the first sample of `name` whose labels contain every `labels` pair.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(series, _)| {
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            metric == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|(_, value)| value.parse().ok())
}

async fn scrape(app: &TestApp) -> String {
    let response = reqwest::get(app.url("/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    response.text().await.unwrap()
}

#[tokio::test]
async fn metrics_count_real_work_and_the_alert_rules_name_only_exported_metrics() {
    let app = TestApp::spawn().await;
    let (client, _) = app.signed_in_user("metrics@example.com").await;

    // A refused sign-in, and a request for a job that is not there (labelled by its template).
    let refused = app
        .post(
            &TestApp::browser(),
            "/api/auth/login",
            serde_json::json!({"email": "metrics@example.com", "password": "not the password"}),
        )
        .await;
    assert_eq!(refused.status(), 401);
    let missing = client
        .get(app.url(&format!("/api/jobs/{}", uuid::Uuid::new_v4())))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    // A validation and a job on the local executor, to its end, with its live stream open.
    let dataset = ready_dataset(&app, &client, "openai-chat.jsonl").await;
    let job = start_job(&app, &client, &dataset, 1).await;
    let stream = client
        .get(app.url(&format!("/api/jobs/{job}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let during = scrape(&app).await;
    assert_eq!(sample(&during, "lora_sse_streams_open", &[]), Some(1.0));
    common::wait_for_job(&app, &client, &job, Duration::from_secs(180), |job| {
        job["status"] == "completed"
    })
    .await;
    drop(stream);
    // Model finalization is the job's last task; let it finish.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let text = scrape(&app).await;
    let has = |name: &str, labels: &[(&str, &str)]| {
        sample(&text, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in:\n{text}"))
    };
    // HTTP by route template, never by id.
    assert!(
        has(
            "lora_http_requests_total",
            &[("route", "/api/jobs/{id}"), ("status", "404")]
        ) >= 1.0
    );
    assert!(
        !text.contains(&format!("/api/jobs/{job}\"")),
        "an id became a label"
    );
    assert!(
        has(
            "lora_http_request_duration_seconds_count",
            &[("route", "/api/datasets")]
        ) >= 1.0
    );
    assert!(
        has(
            "lora_login_failures_total",
            &[("reason", "invalid_credentials")]
        ) >= 1.0
    );
    // Tasks, validation, the job's end and its GPU backend calls.
    assert!(
        has(
            "lora_tasks_total",
            &[("kind", "validate_dataset"), ("outcome", "ok")]
        ) >= 1.0
    );
    assert!(
        has(
            "lora_tasks_total",
            &[("kind", "job_submit"), ("outcome", "ok")]
        ) >= 1.0
    );
    assert!(has("lora_task_duration_seconds_count", &[("kind", "job_poll")]) >= 1.0);
    assert_eq!(
        has(
            "lora_validation_duration_seconds_count",
            &[("outcome", "ready")]
        ),
        1.0
    );
    let bytes = common::sample("openai-chat.jsonl").len() as f64;
    assert_eq!(has("lora_validation_bytes_total", &[]), bytes);
    assert_eq!(
        has("lora_jobs_ended_total", &[("status", "completed")]),
        1.0
    );
    assert_eq!(
        has(
            "lora_training_duration_seconds_count",
            &[("status", "completed")]
        ),
        1.0
    );
    assert!(
        has(
            "lora_gpu_backend_calls_total",
            &[("backend", "local"), ("endpoint", "run"), ("outcome", "ok")]
        ) >= 1.0
    );
    assert!(
        has(
            "lora_gpu_backend_call_duration_seconds_count",
            &[("backend", "local"), ("endpoint", "status")]
        ) >= 1.0
    );
    assert_eq!(has("lora_sse_streams_open", &[]), 0.0);
    // Gauges read from the database at the scrape.
    assert_eq!(has("lora_database_up", &[]), 1.0);
    assert_eq!(has("lora_jobs", &[("status", "completed")]), 1.0);
    assert_eq!(has("lora_jobs", &[("status", "queued")]), 0.0);
    assert_eq!(has("lora_jobs_ended_24h", &[]), 1.0);
    assert_eq!(has("lora_jobs_failed_24h", &[]), 0.0);
    assert_eq!(has("lora_queue_depth", &[("kind", "webhook_deliver")]), 0.0);
    assert_eq!(has("lora_storage_bytes", &[("bucket", "datasets")]), bytes);
    assert!(has("lora_storage_bytes", &[("bucket", "models")]) > 0.0);
    assert!(has("lora_cost_today_dollars", &[]) >= 0.0);
    assert!(has("lora_data_dir_bytes", &[("kind", "size")]) > 0.0);

    // Every metric an alert names is exported (histograms and counters under their own names).
    let rules = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/prometheus/alerts.yml"
    ))
    .unwrap();
    let mut named: Vec<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("lora_"))
        .collect();
    named.sort_unstable();
    named.dedup();
    assert!(named.len() >= 10, "{named:?}");
    for metric in named {
        // A counter that only moves on failures is registered at 0 from the start.
        assert!(
            text.contains(&format!("# TYPE {metric} ")),
            "alerts.yml names {metric}, which /metrics does not export"
        );
    }
}

#[tokio::test]
async fn metrics_answer_loopback_or_the_token_holder_only() {
    let app = TestApp::spawn().await;
    let through_proxy = reqwest::Client::new()
        .get(app.url("/metrics"))
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(through_proxy.status(), 403);
    assert!(
        through_proxy
            .text()
            .await
            .unwrap()
            .contains("METRICS_TOKEN")
    );

    let token = "metrics-token-0123456789";
    let guarded = TestApp::spawn_tweaked(|settings| {
        settings.metrics_token = Some(token.into());
    })
    .await;
    let plain = reqwest::get(guarded.url("/metrics")).await.unwrap();
    assert_eq!(
        plain.status(),
        403,
        "loopback alone is not enough once a token is set"
    );
    let wrong = reqwest::Client::new()
        .get(guarded.url("/metrics"))
        .bearer_auth("metrics-token-0123456780")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 403);
    let right = reqwest::Client::new()
        .get(guarded.url("/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    assert!(right.text().await.unwrap().contains("lora_database_up 1"));
    let health = reqwest::Client::new()
        .get(guarded.url("/readyz?health=1"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let body: Value = health.json().await.unwrap();
    assert_eq!(body["health"]["level"], "green");
}

/// promtool (Debian's, fetched by scripts/test) checks the rules and runs their unit tests
/// (`alerts.test.yml`: each alert fires past its threshold and stays quiet below it).
#[test]
fn promtool_checks_the_alert_rules_and_runs_their_tests() {
    let promtool = std::env::var("PROMTOOL").expect(
        "PROMTOOL names promtool: run the tests with scripts/test, which fetches it \
         (or export PROMTOOL=/path/to/promtool)",
    );
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/prometheus");
    for args in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts.test.yml"],
    ] {
        let output = std::process::Command::new(&promtool)
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run promtool");
        assert!(
            output.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
