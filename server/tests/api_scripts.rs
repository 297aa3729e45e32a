//! The API as scripts use it (issue 15): the original's job bodies and names accepted, a
//! preset plus any subset of hyperparameters, the original's estimate keys, a job's detail
//! with its metrics and cost records, and `Idempotency-Key` on every write that creates
//! something or starts paid work.

mod common;

use std::time::{Duration, Instant};

use common::{TestApp, ready_dataset};
use reqwest::header::{CONTENT_TYPE, ORIGIN};
use serde_json::{Value, json};

/// A POST with an `Idempotency-Key`, as a script retrying after a timeout sends it.
async fn post_with_key(
    app: &TestApp,
    client: &reqwest::Client,
    path: &str,
    key: &str,
    body: &Value,
) -> (u16, Value) {
    let response = client
        .post(app.url(path))
        .header(ORIGIN, app.url(""))
        .header(CONTENT_TYPE, "application/json")
        .header("Idempotency-Key", key)
        .body(body.to_string())
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

async fn job_total(app: &TestApp, client: &reqwest::Client) -> u64 {
    let list = app.get_json(client, "/api/jobs?limit=100").await;
    list["data"]["pagination"]["total"].as_u64().unwrap()
}

#[tokio::test]
async fn the_originals_job_body_is_estimated_and_created_with_the_preset_filling_the_rest() {
    let app = TestApp::spawn().await;
    let (client, _) = app.signed_in_user("script@example.com").await;
    let dataset = ready_dataset(&app, &client, "openai-chat.jsonl").await;

    // The original's names: model, preset_id, gpu_config, num_epochs, max_seq_length.
    let original = json!({
        "dataset_id": dataset,
        "model": "tiny-random-llama",
        "preset_id": "fast",
        "gpu_config": {"type": "local", "count": 1},
        "hyperparameters": {"num_epochs": 1, "max_seq_length": 256, "lora_rank": 4},
    });
    let response = app
        .post(&client, "/api/jobs/estimate", original.clone())
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let data = &body["data"];
    let hp = &data["config"]["hyperparameters"];
    assert_eq!(
        (&hp["epochs"], &hp["max_seq_len"], &hp["rank"]),
        (&json!(1), &json!(256), &json!(4))
    );
    // The rest is the model's Fast preset.
    assert_eq!(hp["learning_rate"], json!(0.01), "{data}");
    assert_eq!(hp["batch_size"], json!(4));
    // The local executor trains plain LoRA: the preset's nf4 is adapted, and said.
    assert_eq!(hp["quantization"], "none");
    let adjusted: Vec<&str> = data["adjustments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["field"].as_str().unwrap())
        .collect();
    assert_eq!(adjusted, ["hyperparameters.quantization"]);
    // The original's estimate keys next to ours.
    let point = data["estimated_cost"].as_f64().unwrap();
    assert_eq!(data["cost_breakdown"]["total"].as_f64().unwrap(), point);
    assert!(point <= data["estimate"]["cost"]["high"].as_f64().unwrap());
    assert!(data["estimated_duration_hours"].as_f64().unwrap() > 0.0);
    assert_eq!(data["hourly_rate"].as_f64().unwrap(), 0.0, "local is free");
    assert_eq!(
        data["training_details"]["total_steps"],
        data["estimate"]["total_steps"]
    );
    assert!(data["training_details"]["total_steps"].as_u64().unwrap() > 0);

    // Creating with the same body: the job carries the merged set.
    let response = app.post(&client, "/api/jobs", original).await;
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    let job = &created["data"]["job"];
    assert_eq!(job["hyperparameters"], *hp);
    assert_eq!(job["preset"], "custom", "hyperparameters were given");
    assert_eq!(
        created["data"]["adjustments"][0]["field"],
        "hyperparameters.quantization"
    );

    // Only a dataset, a model and a preset: the cheapest GPU type that can run it is chosen.
    let minimal =
        json!({"dataset_id": dataset, "base_model": "tiny-random-llama", "preset": "fast"});
    let response = app.post(&client, "/api/jobs/estimate", minimal).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"]["config"]["gpu_type"], "local");
    assert_eq!(body["data"]["config"]["preset"], "fast");
    assert!(
        body["data"]["adjustments"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["field"] == "gpu_type"),
        "{body}"
    );

    // Unknown fields are refused by name, at the top and inside hyperparameters.
    for (bad, name) in [
        (
            json!({"dataset_id": dataset, "base_model": "tiny-random-llama", "epochz": 2}),
            "epochz",
        ),
        (
            json!({"dataset_id": dataset, "base_model": "tiny-random-llama", "hyperparameters": {"ranc": 2}}),
            "ranc",
        ),
    ] {
        let response = app.post(&client, "/api/jobs", bad).await;
        assert_eq!(response.status(), 400);
        let body: Value = response.json().await.unwrap();
        assert!(
            body["details"]
                .as_str()
                .unwrap()
                .contains(&format!("unknown field `{name}`")),
            "{body}"
        );
    }
    // Our name and the original's for one thing must agree.
    let response = app
        .post(
            &client,
            "/api/jobs",
            json!({"dataset_id": dataset, "base_model": "tiny-random-llama",
                   "gpu_type": "local", "gpu_config": {"type": "A4000"}}),
        )
        .await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(body["details"]["fields"]["gpu_type"].is_string(), "{body}");
    // An explicit nf4 on the local executor is kept, and refused with the reason.
    let response = app
        .post(
            &client,
            "/api/jobs",
            json!({"dataset_id": dataset, "base_model": "tiny-random-llama", "gpu_type": "local",
                   "hyperparameters": {"quantization": "nf4"}}),
        )
        .await;
    assert_eq!(response.status(), 400);

    // The detail carries the curve and the cost records, as the original's did.
    let id = job["id"].as_str().unwrap();
    let detail = app.get_json(&client, &format!("/api/jobs/{id}")).await;
    assert_eq!(detail["data"]["job"]["id"], id);
    assert!(detail["data"]["metrics"].is_array(), "{detail}");
    assert!(detail["data"]["cost_records"].is_array(), "{detail}");
}

#[tokio::test]
async fn an_idempotency_key_sent_again_answers_with_the_first_job_and_creates_nothing() {
    let app = TestApp::spawn().await;
    let (client, _) = app.signed_in_user("retrying@example.com").await;
    let dataset = ready_dataset(&app, &client, "openai-chat.jsonl").await;
    let body = json!({
        "dataset_id": dataset, "base_model": "tiny-random-llama", "preset": "fast",
        "hyperparameters": {"epochs": 1, "max_seq_len": 256},
    });

    let (status, first) = post_with_key(&app, &client, "/api/jobs", "run-1", &body).await;
    assert_eq!(status, 201, "{first}");
    let id = first["data"]["job"]["id"].as_str().unwrap().to_owned();
    // The same key and body again, however it is spelled: the first job, nothing new.
    let respelled = json!({
        "hyperparameters": {"max_seq_length": 256, "num_epochs": 1},
        "preset_id": "fast", "model": "tiny-random-llama", "dataset_id": dataset,
    });
    let (status, again) = post_with_key(&app, &client, "/api/jobs", "run-1", &respelled).await;
    assert_eq!(status, 201);
    assert_eq!(again["data"]["job"]["id"], id.as_str());
    assert_eq!(
        again["data"]["job"]["created_at"],
        first["data"]["job"]["created_at"]
    );
    assert_eq!(job_total(&app, &client).await, 1);

    // The same key with another body is a client's mistake: 409, nothing created.
    let other =
        json!({"dataset_id": dataset, "base_model": "tiny-random-llama", "preset": "quality"});
    let (status, conflict) = post_with_key(&app, &client, "/api/jobs", "run-1", &other).await;
    assert_eq!(status, 409, "{conflict}");
    assert!(
        conflict["error"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key"),
        "{conflict}"
    );
    assert_eq!(job_total(&app, &client).await, 1);

    // Twenty at once with one key: one job, and every answer names it.
    let answers = futures::future::join_all(
        (0..20).map(|_| post_with_key(&app, &client, "/api/jobs", "run-2", &other)),
    )
    .await;
    let ids: std::collections::BTreeSet<String> = answers
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, 201, "{body}");
            body["data"]["job"]["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(job_total(&app, &client).await, 2);

    // Keys are per account: another user's identical key is theirs alone.
    let (mallory, _) = app.signed_in_user("mallory@example.com").await;
    let (status, _) = post_with_key(&app, &mallory, "/api/jobs", "run-1", &body).await;
    assert_eq!(
        status, 404,
        "another user's dataset is not found, key or not"
    );

    // A malformed key is refused before anything happens.
    let (status, refused) =
        post_with_key(&app, &client, "/api/jobs", &"k".repeat(256), &body).await;
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["details"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key"),
        "{refused}"
    );

    // Dataset creation: the same upload link, one dataset.
    let new = json!({"name": "again", "file_name": "again.jsonl", "file_size": 100});
    let (status, a) = post_with_key(&app, &client, "/api/datasets", "ds-1", &new).await;
    assert_eq!(status, 201, "{a}");
    let (status, b) = post_with_key(&app, &client, "/api/datasets", "ds-1", &new).await;
    assert_eq!(status, 201);
    assert_eq!(a["data"]["dataset"]["id"], b["data"]["dataset"]["id"]);
    assert_eq!(a["data"]["uploadUrl"], b["data"]["uploadUrl"]);
    let datasets = app.get_json(&client, "/api/datasets?limit=100").await;
    assert_eq!(datasets["data"]["pagination"]["total"], 2, "{datasets}");

    // Retry: a cancelled job retried twice with one key runs one new attempt.
    let cancelled = app
        .post(&client, &format!("/api/jobs/{id}/cancel"), json!({}))
        .await;
    assert_eq!(cancelled.status(), 202);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let job = app.get_json(&client, &format!("/api/jobs/{id}")).await;
        if job["data"]["job"]["status"] == "cancelled" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the job was not cancelled: {job}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let retry = format!("/api/jobs/{id}/retry");
    let (status, first) = post_with_key(&app, &client, &retry, "retry-1", &json!({})).await;
    assert_eq!(status, 202, "{first}");
    let (status, again) = post_with_key(&app, &client, &retry, "retry-1", &json!({})).await;
    assert_eq!(status, 202, "{again}");
    assert_eq!(first["data"]["job"]["retry_count"], 1);
    assert_eq!(again["data"]["job"]["retry_count"], 1);
    // Without the key, the second retry is refused: the job is queued again.
    let response = app.post(&client, &retry, json!({})).await;
    assert_eq!(response.status(), 409);
}
