//! Webhooks (issue 15): a receiver in the test gets signed POSTs for dataset verdicts and job
//! endings, delivered by the durable queue and retried after a 500; deliveries are listed per
//! account; internal targets are refused unless the operator allows them.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use common::{TestApp, ready_dataset};
use serde_json::{Value, json};

/// What the receiver got: headers and body of each request, in order.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    /// Requests answered 500 before it starts answering 200.
    failures: Arc<Mutex<usize>>,
}

impl Receiver {
    async fn start(failures: usize) -> (Self, String) {
        let receiver = Self {
            got: Arc::default(),
            failures: Arc::new(Mutex::new(failures)),
        };
        let state = receiver.clone();
        let router = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let state = state.clone();
                async move {
                    state.got.lock().unwrap().push((headers, body));
                    let mut failures = state.failures.lock().unwrap();
                    if *failures > 0 {
                        *failures -= 1;
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::NO_CONTENT
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        (receiver, url)
    }

    fn requests(&self) -> Vec<(HeaderMap, Bytes)> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until `n` requests arrived (deliveries run in the background).
    async fn wait_for(&self, n: usize, within: Duration) -> Vec<(HeaderMap, Bytes)> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.requests();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} webhook requests arrived",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} header"))
}

async fn put_webhook(app: &TestApp, client: &reqwest::Client, url: &str) -> reqwest::Response {
    client
        .put(app.url("/api/webhook"))
        .header(reqwest::header::ORIGIN, &app.address)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(json!({ "url": url }).to_string())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn events_are_signed_delivered_and_retried_after_a_500() {
    let app = TestApp::spawn().await;
    let (client, _) = app.signed_in_user("hooks@example.com").await;
    let (receiver, url) = Receiver::start(1).await;

    let response = put_webhook(&app, &client, &url).await;
    assert_eq!(response.status(), 200);
    let webhook: Value = response.json().await.unwrap();
    let secret = webhook["data"]["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));

    // A dataset's verdict: the first attempt is answered 500, the retry (5 s later) 204.
    let dataset = ready_dataset(&app, &client, "openai-chat.jsonl").await;
    let got = receiver.wait_for(2, Duration::from_secs(30)).await;
    let (first, second) = (&got[0], &got[1]);
    assert_eq!(first.1, second.1, "every attempt sends the same body");
    assert_eq!(
        header(&first.0, "lora-pipeline-delivery"),
        header(&second.0, "lora-pipeline-delivery")
    );
    let now = chrono::Utc::now().timestamp();
    for (headers, body) in [first, second] {
        assert_eq!(header(headers, "lora-pipeline-event"), "dataset.ready");
        let signature = header(headers, "lora-pipeline-signature");
        assert!(
            engine::webhooks::verify(&secret, signature, body, now, Duration::from_secs(300)),
            "the signature verifies: {signature}"
        );
        assert!(!engine::webhooks::verify(
            "whsec_wrong",
            signature,
            body,
            now,
            Duration::from_secs(300)
        ));
    }
    let event: Value = serde_json::from_slice(&second.1).unwrap();
    assert_eq!(event["type"], "dataset.ready");
    assert_eq!(event["data"]["dataset_id"], json!(dataset));
    assert_eq!(
        event["id"],
        json!(header(&second.0, "lora-pipeline-delivery"))
    );

    // The deliveries as Settings shows them.
    let deadline = Instant::now() + Duration::from_secs(10);
    let delivery = loop {
        let state = app.get_json(&client, "/api/webhook").await;
        let delivery = state["data"]["deliveries"][0].clone();
        if delivery["status"] == "delivered" || Instant::now() > deadline {
            break delivery;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(delivery["status"], "delivered", "{delivery}");
    assert_eq!(delivery["attempts"], 2);
    assert_eq!(delivery["last_status_code"], 204);

    // A job's end: a queued job cancelled ends at once.
    let job = common::start_job(&app, &client, &dataset, 1).await;
    let cancelled = app
        .post(&client, &format!("/api/jobs/{job}/cancel"), json!({}))
        .await;
    assert_eq!(cancelled.status(), 202);
    let got = receiver.wait_for(3, Duration::from_secs(120)).await;
    let ended: Value = serde_json::from_slice(&got[2].1).unwrap();
    assert_eq!(ended["type"], "job.cancelled", "{ended}");
    assert_eq!(ended["data"]["job_id"], json!(job));

    // A test event.
    let ping = app.post(&client, "/api/webhook/test", json!({})).await;
    assert_eq!(ping.status(), 202);
    let got = receiver.wait_for(4, Duration::from_secs(30)).await;
    assert_eq!(header(&got[3].0, "lora-pipeline-event"), "ping");

    // Another account sees none of it, and has no webhook to test.
    let (other, _) = app.signed_in_user("other-hooks@example.com").await;
    let theirs = app.get_json(&other, "/api/webhook").await;
    assert_eq!(theirs["data"], json!({ "webhook": null, "deliveries": [] }));
    let ping = app.post(&other, "/api/webhook/test", json!({})).await;
    assert_eq!(ping.status(), 404);

    // Removed: nothing more is sent.
    let removed = client
        .delete(app.url("/api/webhook"))
        .header(reqwest::header::ORIGIN, &app.address)
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 204);
    ready_dataset(&app, &client, "alpaca.json").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.requests().len(), 4);
}

#[tokio::test]
async fn internal_targets_are_refused_unless_the_operator_allows_them() {
    let mut gpu = common::test_gpu_settings();
    gpu.webhooks.allow_private = false;
    let app = TestApp::spawn_with_gpu(gpu).await;
    let (client, _) = app.signed_in_user("ssrf@example.com").await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://[::1]:9/hook",
        "http://169.254.169.254/latest/meta-data",
    ] {
        let response = put_webhook(&app, &client, url).await;
        assert_eq!(response.status(), 400, "{url}");
        let body: Value = response.json().await.unwrap();
        let reason = body["details"]["fields"]["url"]
            .as_str()
            .unwrap_or_default();
        assert!(reason.contains("WEBHOOK_ALLOW_PRIVATE"), "{url}: {body}");
    }
    for bad in [
        "ftp://example.com/x",
        "not a url",
        "https://user:pw@example.com/",
    ] {
        let response = put_webhook(&app, &client, bad).await;
        assert_eq!(response.status(), 400, "{bad}");
    }
    let state = app.get_json(&client, "/api/webhook").await;
    assert_eq!(state["data"]["webhook"], Value::Null);
}
