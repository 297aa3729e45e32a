//! Datasets through the real HTTP endpoints and the local store: create → signed PUT → confirm
//! → background validation → ready (or invalid with line numbers); signed-URL tampering,
//! expiry and size enforcement; tenant isolation; a crashed validation taken over.

mod common;

use std::time::{Duration, Instant};

use common::TestApp;
use reqwest::header::ORIGIN;
use serde_json::{Value, json};
use sha2::Digest;

fn sample(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/datasets")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

async fn create(
    app: &TestApp,
    client: &reqwest::Client,
    name: &str,
    file: &str,
    size: usize,
) -> Value {
    let response = app
        .post(
            client,
            "/api/datasets",
            json!({ "name": name, "file_name": file, "file_size": size }),
        )
        .await;
    assert_eq!(response.status(), 201);
    response.json::<Value>().await.unwrap()["data"].clone()
}

async fn upload(created: &Value, bytes: Vec<u8>) -> reqwest::Response {
    put(created["uploadUrl"].as_str().unwrap().to_owned(), bytes).await
}

/// A PUT to a signed URL, as an uploader without the app's cookies sends it.
async fn put(url: String, body: Vec<u8>) -> reqwest::Response {
    reqwest::Client::new()
        .put(url)
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn confirm(app: &TestApp, client: &reqwest::Client, id: &str) -> reqwest::Response {
    app.post(client, &format!("/api/datasets/{id}/confirm"), json!({}))
        .await
}

/// Polls the dataset until validation has decided.
async fn verdict(app: &TestApp, client: &reqwest::Client, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body: Value = app.get_json(client, &format!("/api/datasets/{id}")).await;
        let status = body["data"]["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if status == "ready" || status == "invalid" {
            return body["data"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "validation did not finish: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn full_flow(app: &TestApp, client: &reqwest::Client, file: &str) -> Value {
    let bytes = sample(file);
    let created = create(app, client, file, file, bytes.len()).await;
    let id = created["dataset"]["id"].as_str().unwrap().to_owned();
    assert_eq!(created["dataset"]["status"], "uploading");
    assert!(
        created["storagePath"]
            .as_str()
            .unwrap()
            .starts_with("lora-datasets/")
    );
    let put = upload(&created, bytes).await;
    assert_eq!(put.status(), 200, "{}", put.text().await.unwrap());
    let confirmed = confirm(app, client, &id).await;
    assert_eq!(confirmed.status(), 202);
    let body: Value = confirmed.json().await.unwrap();
    assert_eq!(body["data"]["dataset"]["status"], "validating");
    verdict(app, client, &id).await
}

#[tokio::test]
async fn every_sample_gives_its_documented_outcome() {
    let app = TestApp::spawn().await;
    let (client, user) = app.signed_in_user("data@example.com").await;
    for (file, format, examples) in [
        ("openai-chat.jsonl", "openai_chat", 40),
        ("alpaca.json", "alpaca", 40),
        ("sharegpt.jsonl", "sharegpt", 40),
        ("brightrun-v4.jsonl", "brightrun_v4_jsonl", 32),
        ("brightrun-v4-full.json", "brightrun_v4_json", 32),
    ] {
        let dataset = full_flow(&app, &client, file).await;
        assert_eq!(dataset["status"], "ready", "{file}: {dataset}");
        assert_eq!(dataset["format"], format);
        assert_eq!(dataset["training_ready"], true);
        assert_eq!(dataset["total_training_pairs"], examples);
        assert!(dataset["total_tokens"].as_i64().unwrap() > 0);
        assert_eq!(dataset["validation_errors"], json!([]));
        assert_eq!(dataset["sample"].as_array().unwrap().len(), 3);
        assert_eq!(dataset["sha256"].as_str().unwrap().len(), 64);
        // The normalised training file exists, one chat example per line.
        let id = dataset["id"].as_str().unwrap();
        let normalized = app.data_dir.path().join(format!(
            "objects/lora-datasets/{user}/{id}/normalized.jsonl"
        ));
        let text = std::fs::read_to_string(&normalized).unwrap();
        assert_eq!(text.lines().count(), examples as usize, "{file}");
        assert!(text.lines().all(|l| l.starts_with("{\"messages\":[")));
    }
    for (file, code, line) in [
        ("broken-invalid-json-line.jsonl", "invalid_json", 6),
        ("broken-missing-assistant.jsonl", "missing_assistant", 4),
        ("broken-unknown-role.jsonl", "unknown_role", 3),
    ] {
        let dataset = full_flow(&app, &client, file).await;
        assert_eq!(dataset["status"], "invalid", "{file}");
        assert_eq!(dataset["training_ready"], false);
        assert_eq!(dataset["validation_errors"][0]["code"], code, "{file}");
        assert_eq!(dataset["validation_errors"][0]["line"], line, "{file}");
        assert!(
            dataset["validation_errors"][0]["suggestion"]
                .as_str()
                .unwrap()
                .len()
                > 10
        );
        assert_eq!(dataset["error_counts"][code], 1);
        assert!(
            dataset["status_message"]
                .as_str()
                .unwrap()
                .contains("must be fixed")
        );
    }
    // Each verdict produced a notification.
    let unread: i64 = {
        let mut tx = app.db.tenant(user).await.unwrap();
        sqlx::query_scalar("SELECT count(*) FROM notifications WHERE read_at IS NULL")
            .fetch_one(&mut *tx)
            .await
            .unwrap()
    };
    assert_eq!(unread, 8);
}

#[tokio::test]
async fn create_validates_and_refuses_files_over_500_mb() {
    let app = TestApp::spawn().await;
    let (client, _) = app.signed_in_user("limits@example.com").await;
    let too_big = app
        .post(
            &client,
            "/api/datasets",
            json!({ "name": "big", "file_name": "big.jsonl", "file_size": 500_000_001u64 }),
        )
        .await;
    assert_eq!(too_big.status(), 413);
    let body: Value = too_big.json().await.unwrap();
    assert!(body["details"].as_str().unwrap().contains("500 MB"));
    let bad = app
        .post(
            &client,
            "/api/datasets",
            json!({ "name": "", "file_name": "data.csv", "file_size": 10 }),
        )
        .await;
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.unwrap();
    assert!(body["details"]["fields"]["name"].is_string());
    assert!(
        body["details"]["fields"]["file_name"]
            .as_str()
            .unwrap()
            .contains(".jsonl")
    );
    let anonymous = TestApp::browser()
        .post(app.url("/api/datasets"))
        .header(ORIGIN, &app.address)
        .json(&json!({ "name": "x", "file_name": "x.jsonl", "file_size": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn signed_urls_are_bound_to_their_object_size_and_time() {
    let app = TestApp::spawn().await;
    let (client, _) = app.signed_in_user("signed@example.com").await;
    let bytes = sample("openai-chat.jsonl");
    let created = create(&app, &client, "s", "s.jsonl", bytes.len()).await;
    let url = created["uploadUrl"].as_str().unwrap().to_owned();
    let id = created["dataset"]["id"].as_str().unwrap().to_owned();

    // Tampered signature, size, key or expiry: refused.
    let tampered_sig = {
        let at = url.find("signature=").unwrap() + "signature=".len();
        let mut chars: Vec<char> = url.chars().collect();
        chars[at] = if chars[at] == '0' { '1' } else { '0' };
        chars.into_iter().collect::<String>()
    };
    assert_eq!(put(tampered_sig, bytes.clone()).await.status(), 403);
    let bigger = url.replace(
        &format!("size={}", bytes.len()),
        &format!("size={}", bytes.len() + 1),
    );
    assert_eq!(put(bigger, bytes.clone()).await.status(), 403);
    let other_key = url.replace("upload.jsonl", "other.jsonl");
    assert_eq!(put(other_key, bytes.clone()).await.status(), 403);
    let expires: i64 = url
        .split("expires=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let later = url.replace(
        &format!("expires={expires}"),
        &format!("expires={}", expires + 3600),
    );
    assert_eq!(put(later, bytes.clone()).await.status(), 403);
    // An expired link (signed with the app's own key, an hour ago) is refused with a reason.
    let key = std::fs::read(app.data_dir.path().join("signing.key")).unwrap();
    let store = engine::storage::LocalStore::new(
        app.data_dir.path().join("objects"),
        key,
        app.address.clone(),
    );
    let storage_key = created["storagePath"]
        .as_str()
        .unwrap()
        .trim_start_matches("lora-datasets/");
    let expired = store
        .presign(
            "PUT",
            engine::storage::Bucket::Datasets,
            storage_key,
            Some(bytes.len() as u64),
            chrono::Duration::hours(-1),
        )
        .unwrap();
    let response = put(expired.url, bytes.clone()).await;
    assert_eq!(response.status(), 403);
    assert!(response.text().await.unwrap().contains("expired"));
    // The upload link cannot be used to download.
    let get = reqwest::Client::new().get(&url).send().await.unwrap();
    assert_eq!(get.status(), 403);

    // Wrong sizes: more than signed → 413, fewer → 400; nothing is stored either way.
    let mut more = bytes.clone();
    more.extend_from_slice(b"\n");
    assert_eq!(put(url.clone(), more).await.status(), 413);
    assert_eq!(put(url.clone(), bytes[..10].to_vec()).await.status(), 400);
    let early = confirm(&app, &client, &id).await;
    assert_eq!(early.status(), 409, "confirm before a complete upload");
    let body: Value = early.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("no file has been uploaded")
    );

    // The right bytes go through; a signed GET serves them with Range support.
    assert_eq!(put(url.clone(), bytes.clone()).await.status(), 200);
    let download = store
        .presign(
            "GET",
            engine::storage::Bucket::Datasets,
            storage_key,
            None,
            chrono::Duration::minutes(5),
        )
        .unwrap();
    let ranged = reqwest::Client::new()
        .get(&download.url)
        .header("range", "bytes=0-9")
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.status(), 206);
    assert_eq!(ranged.bytes().await.unwrap().as_ref(), &bytes[..10]);
}

#[tokio::test]
async fn another_users_dataset_is_404_everywhere() {
    let app = TestApp::spawn().await;
    let (alice, _) = app.signed_in_user("alice@example.com").await;
    let (mallory, _) = app.signed_in_user("mallory@example.com").await;
    let dataset = full_flow(&app, &alice, "alpaca.json").await;
    let id = dataset["id"].as_str().unwrap();

    let get = mallory
        .get(app.url(&format!("/api/datasets/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 404);
    assert_eq!(confirm(&app, &mallory, id).await.status(), 404);
    let delete = mallory
        .delete(app.url(&format!("/api/datasets/{id}")))
        .header(ORIGIN, &app.address)
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 404);
    let list: Value = app.get_json(&mallory, "/api/datasets").await;
    assert_eq!(list["data"]["pagination"]["total"], 0);
    let not_uuid = mallory
        .get(app.url("/api/datasets/not-a-uuid"))
        .send()
        .await
        .unwrap();
    assert_eq!(not_uuid.status(), 404);

    // The owner still has it, then deletes it.
    let get = alice
        .get(app.url(&format!("/api/datasets/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 200);
    let delete = alice
        .delete(app.url(&format!("/api/datasets/{id}")))
        .header(ORIGIN, &app.address)
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 200);
    let gone = alice
        .get(app.url(&format!("/api/datasets/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
}

#[tokio::test]
async fn list_searches_filters_and_pages() {
    let app = TestApp::spawn().await;
    let (client, _) = app.signed_in_user("lists@example.com").await;
    full_flow(&app, &client, "openai-chat.jsonl").await;
    full_flow(&app, &client, "broken-unknown-role.jsonl").await;
    for i in 0..3 {
        create(&app, &client, &format!("pending {i}"), "p.jsonl", 10).await;
    }
    let get = |query: &str| {
        let url = app.url(&format!("/api/datasets{query}"));
        let client = client.clone();
        async move {
            client
                .get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    assert_eq!(get("").await["data"]["pagination"]["total"], 5);
    assert_eq!(
        get("?status=ready").await["data"]["datasets"][0]["name"],
        "openai-chat.jsonl"
    );
    assert_eq!(
        get("?status=invalid").await["data"]["pagination"]["total"],
        1
    );
    assert_eq!(
        get("?status=uploading").await["data"]["pagination"]["total"],
        3
    );
    assert_eq!(
        get("?format=openai_chat").await["data"]["pagination"]["total"],
        2
    );
    assert_eq!(
        get("?search=PENDING").await["data"]["pagination"]["total"],
        3
    );
    assert_eq!(
        get("?search=%25").await["data"]["pagination"]["total"],
        0,
        "% is literal"
    );
    let page = get("?limit=2&page=3").await;
    assert_eq!(page["data"]["datasets"].as_array().unwrap().len(), 1);
    let bad = client
        .get(app.url("/api/datasets?status=done&limit=500"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.unwrap();
    assert!(
        body["details"]["fields"]["status"].is_string()
            && body["details"]["fields"]["limit"].is_string()
    );
}

#[tokio::test]
async fn a_validation_left_by_a_crashed_worker_is_taken_over() {
    let app = TestApp::spawn().await;
    let (client, user) = app.signed_in_user("crash@example.com").await;
    let bytes = sample("sharegpt.jsonl");
    let created = create(&app, &client, "crash", "c.jsonl", bytes.len()).await;
    let id: uuid::Uuid = created["dataset"]["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(upload(&created, bytes).await.status(), 200);
    // What a worker that died mid-validation leaves behind: the dataset validating, its task
    // leased by a process that no longer renews the lease.
    let mut tx = app.db.tenant(user).await.unwrap();
    sqlx::query("UPDATE datasets SET status = 'validating' WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO work_queue (kind, payload, user_id, dedupe_key, status, attempts, leased_by, leased_until)
         VALUES ('validate_dataset', $1, $2, $3, 'running', 1, 'crashed-worker', now() - interval '1 second')",
    )
    .bind(json!({ "dataset_id": id }))
    .bind(user)
    .bind(format!("validate:{id}"))
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let dataset = verdict(&app, &client, &id.to_string()).await;
    assert_eq!(dataset["status"], "ready");
    let mut tx = app.db.system().await.unwrap();
    let (status, attempts): (String, i32) =
        sqlx::query_as("SELECT status, attempts FROM work_queue WHERE dedupe_key = $1")
            .bind(format!("validate:{id}"))
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    assert_eq!((status.as_str(), attempts), ("done", 2));
}

#[tokio::test]
async fn upload_confirm_ready_on_s3() {
    let app = TestApp::spawn_with_s3().await;
    let (client, _) = app.signed_in_user("s3@example.com").await;
    let endpoint = app.s3.as_ref().unwrap().endpoint.clone();

    let bytes = sample("brightrun-v4.jsonl");
    let created = create(&app, &client, "on s3", "s3.jsonl", bytes.len()).await;
    let url = created["uploadUrl"].as_str().unwrap().to_owned();
    assert!(url.starts_with(&endpoint), "a presigned S3 URL: {url}");
    assert!(url.contains("X-Amz-Signature="));
    // The signed size is enforced by S3 through the signed Content-Length.
    let put = upload(&created, bytes.clone()).await;
    assert_eq!(put.status(), 200, "{}", put.text().await.unwrap());
    let id = created["dataset"]["id"].as_str().unwrap().to_owned();
    assert_eq!(confirm(&app, &client, &id).await.status(), 202);
    // S3 cannot revoke a presigned URL: a PUT after confirmation is taken, but lands where
    // nothing reads any more (the accepted file was moved to a key no link points to).
    let mut other = bytes.clone();
    other[10] ^= 1;
    assert_eq!(upload(&created, other).await.status(), 200);
    let dataset = verdict(&app, &client, &id).await;
    assert_eq!(
        dataset["sha256"],
        format!("{:x}", sha2::Sha256::digest(&bytes)),
        "the validated file is the confirmed one"
    );
    let mut tx = app.db.system().await.unwrap();
    let key: String = sqlx::query_scalar("SELECT storage_key FROM datasets WHERE id = $1::uuid")
        .bind(&id)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut kept = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(
        &mut app
            .storage()
            .await
            .open(engine::storage::Bucket::Datasets, &key)
            .await
            .unwrap(),
        &mut kept,
    )
    .await
    .unwrap();
    assert_eq!(kept, bytes, "and it is the file kept");
    assert_eq!(dataset["status"], "ready", "{dataset}");
    assert_eq!(dataset["format"], "brightrun_v4_jsonl");
    assert_eq!(dataset["total_training_pairs"], 32);
    assert_eq!(
        dataset["sha256"].as_str().unwrap().len(),
        64,
        "hashed while validating"
    );

    // The broken file is reported the same way as on the local store.
    let dataset = full_flow(&app, &client, "broken-missing-assistant.jsonl").await;
    assert_eq!(dataset["status"], "invalid");
    assert_eq!(dataset["validation_errors"][0]["line"], 4);
}

/// The S3 server checks signatures as AWS does: our presigned URLs work, and a tampered,
/// resized, expired or unsigned request is refused there, as the local store refuses them.
#[tokio::test]
async fn s3_refuses_tampered_resized_expired_and_unsigned_requests() {
    let app = TestApp::spawn_with_s3().await;
    let (client, _) = app.signed_in_user("s3-signatures@example.com").await;
    let bytes = sample("openai-chat.jsonl");
    let created = create(&app, &client, "signed", "a.jsonl", bytes.len()).await;
    let url = created["uploadUrl"].as_str().unwrap().to_owned();
    let put = |url: String, body: Vec<u8>| async move { put(url, body).await.status() };
    let signature = url.split("X-Amz-Signature=").nth(1).unwrap().to_owned();
    let mut tampered: Vec<char> = signature.chars().collect();
    tampered[0] = if tampered[0] == 'a' { 'b' } else { 'a' };
    let tampered = url.replace(&signature, &tampered.into_iter().collect::<String>());
    assert_eq!(
        put(tampered, bytes.clone()).await,
        403,
        "tampered signature"
    );
    let other_key = url.replace("upload.jsonl", "other.jsonl");
    assert_eq!(put(other_key, bytes.clone()).await, 403, "another object");
    let mut longer = bytes.clone();
    longer.push(b'\n');
    assert_ne!(put(url.clone(), longer).await, 200, "another size");
    let unsigned = url.split('?').next().unwrap().to_owned();
    assert_eq!(put(unsigned, bytes.clone()).await, 403, "unsigned");

    // A link past its lifetime.
    let storage = app.storage().await;
    let short = storage
        .presign_put(
            engine::storage::Bucket::Datasets,
            "someone/short/upload.jsonl",
            bytes.len() as u64,
            chrono::Duration::seconds(1),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(put(short.url, bytes.clone()).await, 403, "expired");
    let download = storage
        .presign_get(
            engine::storage::Bucket::Datasets,
            "someone/short/upload.jsonl",
            chrono::Duration::seconds(1),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let expired_get = reqwest::get(download.url).await.unwrap().status();
    assert_eq!(expired_get, 403, "expired download");

    // The genuine link still works.
    assert_eq!(put(url, bytes).await, 200);
}

/// An app configured for RunPod as well as its local executor, so every GPU type is available
/// (nothing listens at the RunPod URL: jobs on RunPod GPU types are never submitted here).
async fn with_runpod() -> TestApp {
    let mut gpu = common::test_gpu_settings();
    gpu.runpod = Some(server::settings::RunpodSettings {
        endpoint_url: "http://127.0.0.1:9/v2/unused".into(),
        api_key: "unused".into(),
    });
    TestApp::spawn_with_gpu(gpu).await
}

/// A worker Python without torch (the release binary on a fresh machine) makes the local
/// executor unavailable with the reason and the command that fixes it; jobs on it are refused
/// with that message instead of failing later with "No module named 'torch'".
#[tokio::test]
async fn a_worker_python_without_torch_makes_the_local_executor_unavailable() {
    let mut gpu = common::test_gpu_settings();
    // The system's Python, without the worker's requirements.
    gpu.executor.python = Some("/usr/bin/python3".into());
    let app = TestApp::spawn_with_gpu(gpu).await;
    let (client, _) = app.signed_in_user("no-torch@example.com").await;
    let catalog: Value = app.get_json(&client, "/api/catalog").await;
    let local = catalog["data"]["gpus"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["id"] == "local")
        .unwrap()
        .clone();
    assert_eq!(local["available"], false, "{local}");
    let reason = local["unavailable_reason"].as_str().unwrap();
    assert!(
        reason.contains("torch") && reason.contains("lora-pipeline worker install"),
        "{reason}"
    );
    let dataset = full_flow(&app, &client, "openai-chat.jsonl").await;
    let refused =
        common::job_request(&app, &client, dataset["id"].as_str().unwrap(), 1, "local").await;
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    let said = body["details"]["fields"]["gpu_type"].as_str().unwrap();
    assert!(
        reason.starts_with(said.trim_end_matches('…')),
        "the job is refused with the reason: {body}"
    );
}

#[tokio::test]
async fn runpod_gpu_types_are_refused_where_runpod_is_not_configured() {
    let app = TestApp::spawn().await;
    let (client, _) = app.signed_in_user("local-only@example.com").await;
    let catalog: Value = app.get_json(&client, "/api/catalog").await;
    let gpus = catalog["data"]["gpus"].as_array().unwrap();
    let a100 = gpus.iter().find(|g| g["id"] == "A100").unwrap();
    assert_eq!(a100["available"], false, "estimable, but not runnable here");
    let local = gpus.iter().find(|g| g["id"] == "local").unwrap();
    assert_eq!(local["available"], true);
    let dataset = full_flow(&app, &client, "alpaca.json").await;
    let refused = app
        .post(
            &client,
            "/api/jobs",
            json!({
                "dataset_id": dataset["id"], "base_model": "llama-3.1-8b-instruct", "preset": "balanced",
                "hyperparameters": catalog["data"]["presets"]["balanced"], "gpu_type": "A100", "gpu_count": 1,
            }),
        )
        .await;
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["details"]["fields"]["gpu_type"]
            .as_str()
            .unwrap()
            .contains("RUNPOD_API_KEY"),
        "{body}"
    );
}

#[tokio::test]
async fn catalog_and_authoritative_estimate() {
    let app = with_runpod().await;
    let (client, _) = app.signed_in_user("estimate@example.com").await;
    let catalog: Value = app.get_json(&client, "/api/catalog").await;
    let models = catalog["data"]["models"].as_array().unwrap();
    assert!(
        models
            .iter()
            .any(|m| m["id"] == "tiny-random-llama" && m["demo"] == true)
    );
    let a100 = catalog["data"]["gpus"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["id"] == "A100")
        .unwrap()
        .clone();
    assert!((a100["price_per_hour"].as_f64().unwrap() - 2.736).abs() < 1e-9);
    let balanced = catalog["data"]["presets"]["balanced"].clone();

    let dataset = full_flow(&app, &client, "openai-chat.jsonl").await;
    let request = json!({
        "dataset_id": dataset["id"], "base_model": "llama-3.1-8b-instruct", "preset": "balanced",
        "hyperparameters": balanced, "gpu_type": "A100", "gpu_count": 1,
    });
    let response = app
        .post(&client, "/api/jobs/estimate", request.clone())
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let estimate = &body["data"]["estimate"];
    assert!(estimate["cost"]["low"].as_f64().unwrap() < estimate["cost"]["high"].as_f64().unwrap());
    assert!(estimate["total_steps"].as_u64().unwrap() > 0);

    // The same rules as the form: field errors.
    let mut bad = request.clone();
    bad["hyperparameters"]["epochs"] = json!(0);
    bad["gpu_type"] = json!("TPU");
    let response = app.post(&client, "/api/jobs/estimate", bad).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["details"]["fields"]["epochs"].is_string()
            && body["details"]["fields"]["gpu_type"].is_string()
    );

    // Another user's dataset is not found.
    let (mallory, _) = app.signed_in_user("mallory2@example.com").await;
    let response = app.post(&mallory, "/api/jobs/estimate", request).await;
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn jobs_are_created_from_ready_datasets_only_and_listed() {
    let app = with_runpod().await;
    let (client, _) = app.signed_in_user("jobs@example.com").await;
    let catalog: Value = app.get_json(&client, "/api/catalog").await;
    let mut hp = catalog["data"]["presets"]["fast"].clone();
    hp["quantization"] = json!("none");
    let ready = full_flow(&app, &client, "alpaca.json").await;
    let job = |dataset: &Value, extra: Value| {
        let mut body = json!({
            "dataset_id": dataset["id"], "base_model": "tiny-random-llama", "preset": "fast",
            "hyperparameters": hp, "gpu_type": "local", "gpu_count": 1,
        });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };

    let created = app.post(&client, "/api/jobs", job(&ready, json!({}))).await;
    assert_eq!(created.status(), 201);
    let body: Value = created.json().await.unwrap();
    let created = &body["data"]["job"];
    assert_eq!(created["status"], "queued");
    assert_eq!(created["backend"], "local");
    assert_eq!(created["base_model"], "tiny-random-llama");
    assert_eq!(created["hyperparameters"]["epochs"], 1);
    assert!(created["estimate"]["total_steps"].as_u64().unwrap() > 0);
    assert_eq!(created["dataset_name"], "alpaca.json");

    // A budget cap below the low estimate needs confirming.
    let low = app
        .post(
            &client,
            "/api/jobs",
            job(
                &ready,
                json!({ "gpu_type": "A100", "base_model": "llama-3.1-8b-instruct",
        "hyperparameters": catalog["data"]["presets"]["balanced"], "budget_cap": 0.000001 }),
            ),
        )
        .await;
    assert_eq!(low.status(), 400);
    let body: Value = low.json().await.unwrap();
    assert!(
        body["details"]["fields"]["budget_cap"]
            .as_str()
            .unwrap()
            .contains("below the lowest estimate")
    );

    // An invalid dataset cannot be trained on: 409 with the reason.
    let broken = full_flow(&app, &client, "broken-unknown-role.jsonl").await;
    let refused = app
        .post(&client, "/api/jobs", job(&broken, json!({})))
        .await;
    assert_eq!(refused.status(), 409);

    // Listed, filterable, with a queued notification; another user sees none of it.
    // (The job is being submitted meanwhile, so its status is not asserted here.)
    let done: Value = app.get_json(&client, "/api/jobs?status=completed").await;
    assert_eq!(done["data"]["pagination"]["total"], 0);
    let list: Value = app.get_json(&client, "/api/jobs").await;
    assert_eq!(list["data"]["pagination"]["total"], 1);
    let id = list["data"]["jobs"][0]["id"].as_str().unwrap().to_owned();
    let (mallory, _) = app.signed_in_user("mallory3@example.com").await;
    assert_eq!(
        mallory
            .get(app.url(&format!("/api/jobs/{id}")))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let theirs: Value = app.get_json(&mallory, "/api/jobs").await;
    assert_eq!(theirs["data"]["pagination"]["total"], 0);
    let stolen = app
        .post(&mallory, "/api/jobs", job(&ready, json!({})))
        .await;
    assert_eq!(stolen.status(), 404, "another user's dataset");
    assert_eq!(
        client
            .get(app.url("/api/jobs?status=done"))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
}

/// A dataset a job trains on cannot be deleted under it (409 naming the job); once the job
/// has ended it can, and the job's retry is then refused because its data is gone.
#[tokio::test]
async fn a_dataset_in_use_is_not_deleted_under_its_job() {
    let app = TestApp::spawn().await;
    let (client, _) = app.signed_in_user("in-use@example.com").await;
    let dataset = common::ready_dataset(&app, &client, "openai-chat.jsonl").await;
    let job = common::start_job(&app, &client, &dataset, 1).await;
    let delete = |client: reqwest::Client| {
        let url = app.url(&format!("/api/datasets/{dataset}"));
        let origin = app.address.clone();
        async move {
            client
                .delete(url)
                .header(ORIGIN, origin)
                .send()
                .await
                .unwrap()
        }
    };
    let refused = delete(client.clone()).await;
    assert_eq!(refused.status(), 409);
    let body: Value = refused.json().await.unwrap();
    assert!(body.to_string().contains(&job), "names the job: {body}");
    let still: Value = app
        .get_json(&client, &format!("/api/datasets/{dataset}"))
        .await;
    assert_eq!(still["data"]["status"], "ready", "nothing was removed");

    app.post(&client, &format!("/api/jobs/{job}/cancel"), json!({}))
        .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body: Value = app.get_json(&client, &format!("/api/jobs/{job}")).await;
        if body["data"]["job"]["status"] == "cancelled" {
            break;
        }
        assert!(Instant::now() < deadline, "cancelled: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(delete(client.clone()).await.status().is_success());
    let retried = app
        .post(&client, &format!("/api/jobs/{job}/retry"), json!({}))
        .await;
    assert_eq!(retried.status(), 409);
    let body: Value = retried.json().await.unwrap();
    assert!(body.to_string().contains("dataset was deleted"), "{body}");
}

/// Once a dataset is confirmed its upload link stops working: the file validated (and its
/// recorded sha256) is the file that stays.
#[tokio::test]
async fn the_upload_link_stops_working_once_the_dataset_is_confirmed() {
    let app = TestApp::spawn().await;
    let (client, _) = app.signed_in_user("sealed@example.com").await;
    let bytes = sample("openai-chat.jsonl");
    let created = create(&app, &client, "sealed", "openai-chat.jsonl", bytes.len()).await;
    let id = created["dataset"]["id"].as_str().unwrap().to_owned();
    // Before confirming, the upload may be sent again (a retry after a network error).
    assert_eq!(upload(&created, bytes.clone()).await.status(), 200);
    assert_eq!(upload(&created, bytes.clone()).await.status(), 200);
    assert_eq!(confirm(&app, &client, &id).await.status(), 202);
    let mut other = bytes.clone();
    other[10] ^= 1;
    let replaced = upload(&created, other).await;
    assert_eq!(replaced.status(), 409);
    let done = verdict(&app, &client, &id).await;
    assert_eq!(done["status"], "ready");
    let sha = format!("{:x}", sha2::Sha256::digest(&bytes));
    assert_eq!(
        done["sha256"], sha,
        "the validated file is the uploaded one"
    );
}

/// An upload never confirmed is expired after its link's lifetime (and an hour's grace): the
/// dataset goes, its file is removed, and its bytes stop counting against the quota.
#[tokio::test]
async fn unconfirmed_uploads_expire_and_their_files_go() {
    let app = TestApp::spawn().await;
    let (client, _) = app.signed_in_user("abandoned@example.com").await;
    let bytes = sample("openai-chat.jsonl");
    let old = create(&app, &client, "abandoned", "a.jsonl", bytes.len()).await;
    assert_eq!(upload(&old, bytes.clone()).await.status(), 200);
    let fresh = create(&app, &client, "in progress", "b.jsonl", bytes.len()).await;
    let old_id = old["dataset"]["id"].as_str().unwrap().to_owned();
    let fresh_id = fresh["dataset"]["id"].as_str().unwrap().to_owned();
    let file = |created: &Value| {
        app.data_dir
            .path()
            .join("objects")
            .join(created["storagePath"].as_str().unwrap())
    };
    assert!(file(&old).exists());
    // Three hours pass for the first one.
    let mut tx = app.db.system().await.unwrap();
    sqlx::query(
        "UPDATE datasets SET created_at = now() - interval '3 hours 1 minute' WHERE id = $1::uuid",
    )
    .bind(&old_id)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let expired = engine::datasets::service::expire_uploads(&app.db, &app.storage().await)
        .await
        .unwrap();
    assert_eq!(expired, 1);
    assert!(!file(&old).exists(), "the file is removed");
    let gone = client
        .get(app.url(&format!("/api/datasets/{old_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
    assert_eq!(confirm(&app, &client, &old_id).await.status(), 404);
    // The recent one is untouched and still works.
    assert_eq!(upload(&fresh, bytes).await.status(), 200);
    assert_eq!(confirm(&app, &client, &fresh_id).await.status(), 202);
    assert_eq!(verdict(&app, &client, &fresh_id).await["status"], "ready");
    // Running again finds nothing more.
    assert_eq!(
        engine::datasets::service::expire_uploads(&app.db, &app.storage().await)
            .await
            .unwrap(),
        0
    );
}

/// An account's storage quota counts its datasets' files (pending uploads too) and its models;
/// a dataset that would pass it is refused at creation, with the numbers.
#[tokio::test]
async fn a_dataset_past_the_storage_quota_is_refused() {
    let app = TestApp::spawn().await;
    let (client, user) = app.signed_in_user("quota@example.com").await;
    // 49.9 GB already kept (the built-in quota is 50 GB): 100 files of 499 MB.
    let mut tx = app.db.system().await.unwrap();
    sqlx::query(
        "INSERT INTO datasets (user_id, name, file_name, file_size, storage_key)
         SELECT $1, 'big', 'big.jsonl', 499000000, 'k' FROM generate_series(1, 100)",
    )
    .bind(user)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let refused = app
        .post(
            &client,
            "/api/datasets",
            json!({ "name": "one more", "file_name": "x.jsonl", "file_size": 200_000_000u64 }),
        )
        .await;
    assert_eq!(refused.status(), 409);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("does not fit"),
        "{body}"
    );
    let small = create(&app, &client, "small", "small.jsonl", 1000).await;
    assert!(
        small["dataset"]["id"].is_string(),
        "a file that fits is accepted"
    );
}
