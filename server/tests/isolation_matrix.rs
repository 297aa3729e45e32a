//! The isolation matrix. Every REST route (listed by the router itself, each path asked for its
//! methods), every server function (from the server-function registry), both live streams and
//! every kind of signed URL is called by user B with user A's ids. Anything but 404/403 fails;
//! so does an answer to B's own lists that mentions A's rows, and so does a route or server
//! function the matrix does not know how to call — a new one must be added here.

mod common;

use std::time::{Duration, Instant};

use common::TestApp;
use reqwest::Method;
use reqwest::header::{CONTENT_TYPE, ORIGIN};
use serde_json::{Value, json};

/// What user A owns, by id.
struct Owned {
    dataset: String,
    job: String,
    model: String,
    notification: String,
    token: String,
    dataset_key: String,
    model_key: String,
    /// A complete set, for job requests.
    hyperparameters: Value,
}

impl Owned {
    fn ids(&self) -> [&str; 5] {
        [
            &self.dataset,
            &self.job,
            &self.model,
            &self.notification,
            &self.token,
        ]
    }

    /// The REST path with A's ids in place of its parameters; `None` for a path that takes
    /// none. Panics on a parameter this matrix does not know.
    fn fill(&self, path: &str) -> Option<String> {
        if !path.contains('{') {
            return None;
        }
        let owner = if path.starts_with("/api/datasets/") {
            &self.dataset
        } else if path.starts_with("/api/jobs/") {
            &self.job
        } else if path.starts_with("/api/models/") {
            &self.model
        } else if path.starts_with("/api/notifications/") {
            &self.notification
        } else if path.starts_with("/api/tokens/") {
            &self.token
        } else {
            panic!("the isolation matrix does not know how to call {path}: add it here");
        };
        let filled = path
            .replace("{id}", owner)
            .replace("{name}", "adapter_config.json");
        assert!(
            !filled.contains('{'),
            "the isolation matrix does not know a parameter of {path}: add it here"
        );
        Some(filled)
    }
}

/// REST paths without an id: B's own data (checked to hold none of A's rows), or none at all.
const OWN_OR_PUBLIC: &[&str] = &[
    "/api/auth/register",
    "/api/auth/login",
    "/api/auth/logout",
    "/api/auth/logout-all",
    "/api/invites",
    "/api/auth/me",
    "/api/account/budget",
    "/api/tokens",
    "/api/datasets",
    "/api/catalog",
    "/api/jobs/estimate",
    "/api/jobs",
    "/api/models",
    "/api/costs",
    "/api/notifications",
    "/api/notifications/read-all",
    "/api/events",
    "/api/webhook",
    "/api/webhook/test",
    "/healthz",
    "/readyz",
    "/metrics",
    "/api/openapi.json",
];

/// Calls that end B's session: made last.
const ENDS_SESSION: &[&str] = &["/api/auth/logout", "/api/auth/logout-all"];

/// A job on A's dataset, otherwise valid.
fn job_on(a: &Owned) -> Value {
    json!({
        "dataset_id": a.dataset, "base_model": "tiny-random-llama", "preset": "custom",
        "hyperparameters": a.hyperparameters, "gpu_type": "local", "gpu_count": 1,
    })
}

/// The body B sends: where a body names a subject, it names A's.
fn body_for(path: &str, method: &Method, a: &Owned) -> Value {
    match (path, method.as_str()) {
        ("/api/jobs" | "/api/jobs/estimate", "POST") => job_on(a),
        ("/api/datasets", "POST") => {
            json!({ "name": "b's", "file_name": "b.jsonl", "file_size": 100 })
        }
        ("/api/tokens", "POST") => json!({ "name": "b's token" }),
        ("/api/account/budget", "PUT") => json!({ "monthly_budget": 10 }),
        ("/api/auth/login" | "/api/auth/register", _) => {
            json!({ "email": "b@example.com", "password": common::PASSWORD })
        }
        (_, "PATCH") => json!({ "name": "renamed by b" }),
        _ => json!({}),
    }
}

fn mentions_a(body: &str, a: &Owned) -> Option<String> {
    a.ids()
        .into_iter()
        .find(|id| body.contains(*id))
        .map(str::to_owned)
}

async fn call(
    app: &TestApp,
    client: &reqwest::Client,
    method: Method,
    path: &str,
    body: &Value,
) -> (u16, String) {
    let mut request = client
        .request(method.clone(), app.url(path))
        .header(ORIGIN, &app.address);
    if method != Method::GET && method != Method::DELETE {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    // A live stream: its first bytes are enough.
    let text = if path.ends_with("events") && status == 200 {
        let mut stream = response.bytes_stream();
        use futures::StreamExt;
        match tokio::time::timeout(Duration::from_millis(500), stream.next()).await {
            Ok(Some(Ok(bytes))) => String::from_utf8_lossy(&bytes).into_owned(),
            _ => String::new(),
        }
    } else {
        response.text().await.unwrap_or_default()
    };
    (status, text)
}

/// A's account with one of everything: a dataset, a finished job, its model, a notification
/// and an API token.
async fn owner(app: &TestApp) -> (reqwest::Client, Owned) {
    let (alice, alice_id) = app.signed_in_user("alice@example.com").await;
    let dataset = common::ready_dataset(app, &alice, "openai-chat.jsonl").await;
    let job = common::start_job(app, &alice, &dataset, 1).await;
    let deadline = Instant::now() + Duration::from_secs(240);
    let model = loop {
        let detail: Value = app.get_json(&alice, &format!("/api/jobs/{job}")).await;
        if let Some(model) = detail["data"]["job"]["artifact_id"].as_str() {
            break model.to_owned();
        }
        let status = detail["data"]["job"]["status"].as_str().unwrap_or_default();
        assert!(
            !matches!(status, "failed" | "cancelled"),
            "A's job ended {status}: {detail}"
        );
        assert!(Instant::now() < deadline, "A's job did not finish");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let notifications: Value = app.get_json(&alice, "/api/notifications").await;
    let notification = notifications["data"]["notifications"][0]["id"]
        .as_str()
        .or_else(|| notifications["data"][0]["id"].as_str())
        .unwrap_or_else(|| panic!("A has a notification: {notifications}"))
        .to_owned();
    let token: Value = app
        .post(&alice, "/api/tokens", json!({ "name": "a's" }))
        .await
        .json()
        .await
        .unwrap();
    let token = token["data"]["id"].as_str().unwrap().to_owned();
    let mut tx = app.db.tenant(alice_id).await.unwrap();
    let dataset_key: String =
        sqlx::query_scalar("SELECT storage_key FROM datasets WHERE id = $1::uuid")
            .bind(&dataset)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    let model_key: String = sqlx::query_scalar(
        "SELECT f->>'key' FROM model_artifacts a, jsonb_array_elements(a.files) f
          WHERE a.id = $1::uuid LIMIT 1",
    )
    .bind(&model)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let catalog: Value = app.get_json(&alice, "/api/catalog").await;
    let mut hyperparameters = catalog["data"]["presets"]["fast"].clone();
    hyperparameters["quantization"] = json!("none");
    (
        alice,
        Owned {
            dataset,
            job,
            model,
            notification,
            token,
            dataset_key,
            model_key,
            hyperparameters,
        },
    )
}

#[tokio::test]
async fn another_users_ids_answer_404_on_every_route_function_stream_and_signed_url() {
    let app = TestApp::spawn().await;
    let (alice, a) = owner(&app).await;
    let (bob, _) = app.signed_in_user("bob@example.com").await;
    let mut failures = Vec::new();

    // REST, from the router.
    let api = server::routes::api();
    let paths: Vec<&str> = api.paths().to_vec();
    assert!(paths.len() >= 30, "the router lists its routes: {paths:?}");
    let mut called = 0;
    for path in paths {
        if path.starts_with("/storage/") || ENDS_SESSION.contains(&path) {
            continue; // signed URLs and session-ending calls: below
        }
        let filled = a.fill(path);
        if filled.is_none() {
            assert!(
                OWN_OR_PUBLIC.contains(&path),
                "the isolation matrix does not know how to call {path}: add it here"
            );
        }
        let target = filled.clone().unwrap_or_else(|| path.to_owned());
        for method in common::served_methods(&app, &bob, path).await {
            let body = body_for(path, &method, &a);
            let (status, text) = call(&app, &bob, method.clone(), &target, &body).await;
            called += 1;
            let names_a = filled.is_some() || path.starts_with("/api/jobs");
            if names_a && !(status == 404 || status == 403) {
                // A collection POST that names A's dataset must not find it either.
                if filled.is_some() || method == Method::POST {
                    failures.push(format!("{method} {target} → {status}: {text:.200}"));
                    continue;
                }
            }
            if let Some(id) = mentions_a(&text, &a) {
                failures.push(format!("{method} {target} → {status} mentions A's {id}"));
            }
        }
    }
    assert!(called >= 35, "{called} REST calls");

    // Server functions, from the registry.
    let functions: Vec<(&str, _)> = leptos::server_fn::axum::server_fn_paths().collect();
    assert!(functions.len() >= 30, "{functions:?}");
    let mut ordered = functions.clone();
    ordered.sort_by_key(|(path, _)| path.contains("logout"));
    for (path, _) in ordered {
        let name = path.trim_start_matches("/rpc/");
        let a_job = a.job.as_str();
        let (form, names_a): (Vec<(&str, &str)>, bool) = match name {
            "job_monitor" | "cancel_job" | "retry_job" => (vec![("id", a_job)], true),
            // A job to copy settings from that is not the caller's reads as no job at all:
            // checked below to answer exactly as an id that never existed does.
            "train_context" => (vec![("from_job", a_job)], false),
            "get_dataset" | "confirm_dataset" | "delete_dataset" => {
                (vec![("id", a.dataset.as_str())], true)
            }
            "mark_notification_read" => (vec![("id", a.notification.as_str())], true),
            "revoke_token" => (vec![("id", a.token.as_str())], true),
            "model_page" | "delete_model" => (vec![("id", a.model.as_str())], true),
            "update_model" => (
                vec![
                    ("id", a.model.as_str()),
                    ("name", "renamed by b"),
                    ("description", ""),
                ],
                true,
            ),
            "create_job" => (vec![], true),
            "overview_data"
            | "unread_count"
            | "mark_all_notifications_read"
            | "list_tokens"
            | "spending_summary"
            | "current_user"
            | "can_invite"
            | "create_invite"
            | "logout"
            | "logout_everywhere"
            | "read_webhook"
            | "remove_webhook"
            | "test_webhook" => (vec![], false),
            "list_jobs" | "list_models" => (vec![("page", "1")], false),
            "list_notifications" => (vec![("unread_only", "false"), ("page", "1")], false),
            "list_datasets" | "costs_page" => (vec![], false),
            "create_dataset" => (
                vec![
                    ("name", "b's"),
                    ("file_name", "b.jsonl"),
                    ("file_size", "100"),
                ],
                false,
            ),
            "create_token" => (vec![("name", "b's")], false),
            "save_webhook" => (vec![("url", "https://hooks.invalid/b")], false),
            "save_spending" => (vec![("monthly_budget", "5"), ("time_zone", "UTC")], false),
            "keep_time_zone" => (vec![("time_zone", "UTC")], false),
            "login" | "register" => (
                vec![("email", "b@example.com"), ("password", "wrong password")],
                false,
            ),
            other => panic!(
                "the isolation matrix does not know the server function {other}: add it here"
            ),
        };
        let request = bob.post(app.url(path)).header(ORIGIN, &app.address);
        let request = if name == "create_job" {
            request
                .header(CONTENT_TYPE, "application/json")
                .body(json!({ "job": job_on(&a) }).to_string())
        } else {
            request.form(&form)
        };
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        if names_a && (status < 400 || !(text.contains("NotFound") || text.contains("Forbidden"))) {
            failures.push(format!("rpc {name} → {status}: {text:.200}"));
        }
        if let Some(id) = mentions_a(&text, &a) {
            failures.push(format!("rpc {name} → {status} mentions A's {id}"));
        }
        if name == "train_context" {
            let unknown = uuid::Uuid::new_v4().to_string();
            let answer = bob
                .post(app.url(path))
                .header(ORIGIN, &app.address)
                .form(&[("from_job", unknown.as_str())])
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            if answer != text {
                failures.push(format!(
                    "rpc {name} answers A's job unlike a job that never existed"
                ));
            }
        }
    }

    // Signed URLs: B's own signature carried over to A's objects, in every bucket and method.
    let (bob2, _) = app.signed_in_user("bob2@example.com").await;
    let created: Value = app
        .post(
            &bob2,
            "/api/datasets",
            json!({ "name": "b", "file_name": "b.jsonl", "file_size": 10 }),
        )
        .await
        .json()
        .await
        .unwrap();
    let url = created["data"]["uploadUrl"].as_str().unwrap().to_owned();
    let own_path = created["data"]["storagePath"].as_str().unwrap().to_owned();
    for (bucket_key, method) in [
        (format!("lora-datasets/{}", a.dataset_key), Method::PUT),
        (format!("lora-datasets/{}", a.dataset_key), Method::GET),
        (format!("lora-models/{}", a.model_key), Method::PUT),
        (format!("lora-models/{}", a.model_key), Method::GET),
    ] {
        let forged = url.replace(&own_path, &bucket_key);
        assert_ne!(forged, url);
        let status = reqwest::Client::new()
            .request(method.clone(), &forged)
            .body(vec![b'x'; 10])
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if status != 403 {
            failures.push(format!("signed {method} {bucket_key} → {status}"));
        }
    }

    // The calls that end B's session, last.
    for path in ENDS_SESSION {
        assert!(api.paths().contains(path), "{path} is still a route");
        let (status, text) = call(&app, &bob, Method::POST, path, &json!({})).await;
        if let Some(id) = mentions_a(&text, &a) {
            failures.push(format!("POST {path} → {status} mentions A's {id}"));
        }
    }

    // A's rows are untouched by everything B did.
    let job: Value = app.get_json(&alice, &format!("/api/jobs/{}", a.job)).await;
    assert_eq!(job["data"]["job"]["status"], "completed");
    let model: Value = app
        .get_json(&alice, &format!("/api/models/{}", a.model))
        .await;
    assert_ne!(model["data"]["model"]["name"], "renamed by b");
    let dataset: Value = app
        .get_json(&alice, &format!("/api/datasets/{}", a.dataset))
        .await;
    assert_eq!(dataset["data"]["status"], "ready");
    let tokens: Value = app.get_json(&alice, "/api/tokens").await;
    assert_eq!(tokens["data"].as_array().unwrap().len(), 1);

    assert!(
        failures.is_empty(),
        "B reached A's data:\n{}",
        failures.join("\n")
    );
}
