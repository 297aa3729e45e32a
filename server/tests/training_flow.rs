//! Training end to end: the embedded local executor runs the real Python worker on the demo
//! model; progress arrives over SSE; the job ends completed with every metric step stored once;
//! a stream resumed with Last-Event-ID replays only what it missed; cancel kills the worker.

mod common;

use std::time::{Duration, Instant};

use common::{TestApp, read_events, ready_dataset, start_job, terminal};
use engine::jobs::{JobEventRecord, JobStage, JobStatus, JobView};
use serde_json::{Value, json};

#[tokio::test]
async fn a_job_trains_on_the_local_executor_and_streams_progress_to_the_end() {
    let app = TestApp::spawn().await;
    let (client, _) = app.signed_in_user("trainer@example.com").await;
    let dataset = ready_dataset(&app, &client, "openai-chat.jsonl").await;
    let job = start_job(&app, &client, &dataset, 2).await;

    let stream = client
        .get(app.url(&format!("/api/jobs/{job}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert!(
        stream.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = read_events(stream, Duration::from_secs(240), terminal).await;
    let last = events.last().expect("events arrived");
    assert_eq!(
        last.data["payload"]["status"],
        "completed",
        "the job completed: {:?}",
        events
            .iter()
            .map(|e| (&e.kind, &e.data["payload"]))
            .collect::<Vec<_>>()
    );

    // Metrics arrived live, once per step, in order, ending at the last step.
    let steps: Vec<i64> = events
        .iter()
        .filter(|e| e.kind == "metrics")
        .map(|e| e.data["payload"]["step"].as_i64().unwrap())
        .collect();
    assert!(steps.len() >= 2, "several metric events: {steps:?}");
    assert!(
        steps.windows(2).all(|w| w[0] < w[1]),
        "strictly increasing: {steps:?}"
    );
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    for kind in ["stage", "metrics", "eval", "result", "status"] {
        assert!(kinds.contains(&kind), "a {kind} event arrived: {kinds:?}");
    }
    let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "event ids increase: {ids:?}"
    );

    // The job's row agrees, and the store holds exactly one metric point per step.
    let body: Value = app.get_json(&client, &format!("/api/jobs/{job}")).await;
    let detail = &body["data"]["job"];
    assert_eq!(detail["status"], "completed");
    assert_eq!(detail["progress"], 100.0);
    let total = detail["total_steps"].as_i64().unwrap();
    assert_eq!(*steps.last().unwrap(), total);
    assert_eq!(
        detail["final_cost"], 0.0,
        "the local executor's default price is 0"
    );
    let metrics: Value = app
        .get_json(&client, &format!("/api/jobs/{job}/metrics"))
        .await;
    let points = metrics["data"]["metrics"].as_array().unwrap();
    assert_eq!(points.len() as i64, total, "one point per step");
    assert!(
        points.iter().any(|p| p["eval_loss"].is_number()),
        "eval loss stored"
    );

    // The page's reducer, replaying the whole stream from the job as created, reaches exactly
    // the job the API returns at the end.
    let final_view: JobView = serde_json::from_value(detail.clone()).unwrap();
    let mut replayed = JobView {
        status: JobStatus::Queued,
        current_stage: JobStage::Queued,
        progress: 0.0,
        current_step: 0,
        current_cost: 0.0,
        final_cost: None,
        current_epoch: None,
        current_metrics: None,
        last_event_id: 0,
        ..final_view.clone()
    };
    for event in &events {
        let record: JobEventRecord = serde_json::from_value(event.data.clone())
            .unwrap_or_else(|e| panic!("a typed event: {e}: {}", event.data));
        replayed.follow(&record);
    }
    assert_eq!(replayed, final_view);

    // The adapter files were uploaded to the models bucket through signed URLs.
    let models = app.data_dir.path().join("objects/lora-models");
    let uploaded: Vec<String> = walk(&models)
        .into_iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    assert!(
        uploaded.contains(&"adapter_model.safetensors".to_owned()),
        "{uploaded:?}"
    );
    assert!(
        uploaded.contains(&"adapter_config.json".to_owned()),
        "{uploaded:?}"
    );

    // Its measured throughput feeds the catalog's calibration.
    let measured = engine::training::calibration::measurements(&app.db)
        .await
        .unwrap();
    assert!(
        measured.iter().any(|m| m.gpu_type == "local"
            && m.base_model == "tiny-random-llama"
            && m.jobs == 1
            && m.tokens_per_sec > 0.0),
        "{measured:?}"
    );

    // A stream resumed with Last-Event-ID replays only what came after.
    let middle = events[events.len() / 2].id;
    let resumed = client
        .get(app.url(&format!("/api/jobs/{job}/events")))
        .header("Last-Event-ID", middle.to_string())
        .send()
        .await
        .unwrap();
    let replayed = read_events(resumed, Duration::from_secs(10), terminal).await;
    assert_eq!(
        replayed.iter().map(|e| e.id).collect::<Vec<_>>(),
        events
            .iter()
            .filter(|e| e.id > middle)
            .map(|e| e.id)
            .collect::<Vec<_>>()
    );

    // Another user's stream and controls answer 404.
    let (mallory, _) = app.signed_in_user("mallory-sse@example.com").await;
    for path in [
        format!("/api/jobs/{job}/events"),
        format!("/api/jobs/{job}/metrics"),
    ] {
        let status = mallory.get(app.url(&path)).send().await.unwrap().status();
        assert_eq!(status, 404, "{path}");
    }
    for path in [
        format!("/api/jobs/{job}/cancel"),
        format!("/api/jobs/{job}/retry"),
    ] {
        let status = app.post(&mallory, &path, json!({})).await.status();
        assert_eq!(status, 404, "{path}");
    }
    // A finished job cannot be cancelled; a completed one cannot be retried.
    assert_eq!(
        app.post(&client, &format!("/api/jobs/{job}/cancel"), json!({}))
            .await
            .status(),
        409
    );
    assert_eq!(
        app.post(&client, &format!("/api/jobs/{job}/retry"), json!({}))
            .await
            .status(),
        409
    );

    // The job became a model: rated from its curve, with before/after samples.
    let model_id = detail["artifact_id"]
        .as_str()
        .expect("the job links its model")
        .to_owned();
    let body: Value = app
        .get_json(&client, &format!("/api/models/{model_id}"))
        .await;
    let model = &body["data"]["model"];
    let score = model["quality_metrics"]["overall_score"].as_u64().unwrap();
    assert!((1..=5).contains(&score), "{model}");
    assert!(
        model["quality_metrics"]["explanation"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{score} star")),
        "{model}"
    );
    let samples = model["samples"].as_array().unwrap();
    assert!((1..=5).contains(&samples.len()), "{samples:?}");
    for sample in samples {
        for key in ["prompt", "reference", "base", "adapter"] {
            assert!(sample[key].is_string(), "{sample}");
        }
    }

    // A signed link downloads one file as an attachment.
    let links: Value = app
        .post(
            &client,
            &format!("/api/models/{model_id}/download"),
            json!({ "files": ["adapter_config.json"] }),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(links["data"]["model_id"], model_id.as_str());
    assert_eq!(links["data"]["expires_in_seconds"], 3600);
    let url = links["data"]["download_urls"]["adapter_config.json"]
        .as_str()
        .unwrap();
    let one = reqwest::get(url).await.unwrap();
    assert_eq!(one.status(), 200);
    assert_eq!(
        one.headers()["content-disposition"],
        "attachment; filename=\"adapter_config.json\""
    );
    assert_eq!(one.headers()["x-content-type-options"], "nosniff");

    // The bundle unpacks to byte-identical files, and PEFT loads them onto the base model.
    let bundle = client
        .get(app.url(&format!("/api/models/{model_id}/bundle")))
        .send()
        .await
        .unwrap();
    assert_eq!(bundle.status(), 200);
    assert_eq!(bundle.headers()["content-type"], "application/gzip");
    assert_eq!(bundle.headers()["x-content-type-options"], "nosniff");
    let gz = bundle.bytes().await.unwrap();
    let mut tar = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut tar).unwrap();
    let unpacked = tempfile::tempdir().unwrap();
    let folder = untar(&tar, unpacked.path());
    for file in model["files"].as_array().unwrap() {
        use sha2::Digest;
        let name = file["name"].as_str().unwrap();
        let bytes = std::fs::read(folder.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            hex::encode(sha2::Sha256::digest(&bytes)),
            file["sha256"].as_str().unwrap(),
            "{name} is byte-identical"
        );
    }
    let loaded = std::process::Command::new(
        std::env::var("WORKER_PYTHON").unwrap_or_else(|_| "python3".into()),
    )
    .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../worker"))
    .env("HF_HUB_OFFLINE", "1")
    .args([
        "-c",
        "import sys\n\
         from lora_worker.demo_model import ensure_demo_model\n\
         from transformers import AutoModelForCausalLM\n\
         from peft import PeftModel\n\
         base = AutoModelForCausalLM.from_pretrained(ensure_demo_model())\n\
         model = PeftModel.from_pretrained(base, sys.argv[1])\n\
         print(sum(p.numel() for n, p in model.named_parameters() if 'lora_' in n))",
    ])
    .arg(&folder)
    .output()
    .unwrap();
    assert!(
        loaded.status.success(),
        "PEFT loads the bundle: {}",
        String::from_utf8_lossy(&loaded.stderr)
    );
    let adapter_params: u64 = String::from_utf8_lossy(&loaded.stdout)
        .trim()
        .lines()
        .last()
        .unwrap()
        .parse()
        .unwrap();
    assert!(adapter_params > 0);

    // Another user's model answers 404 on every route.
    let mallory_get = |path: String| mallory.get(app.url(&path)).send();
    for path in [
        format!("/api/models/{model_id}"),
        format!("/api/models/{model_id}/bundle"),
        format!("/api/models/{model_id}/files/adapter_config.json"),
    ] {
        assert_eq!(
            mallory_get(path.clone()).await.unwrap().status(),
            404,
            "{path}"
        );
    }
    let download = app
        .post(
            &mallory,
            &format!("/api/models/{model_id}/download"),
            json!({}),
        )
        .await;
    assert_eq!(download.status(), 404);
    let renamed = mallory
        .patch(app.url(&format!("/api/models/{model_id}")))
        .header("Origin", app.address.as_str())
        .json(&json!({ "name": "mine" }))
        .send()
        .await
        .unwrap();
    assert_eq!(renamed.status(), 404);
    let deleted = mallory
        .delete(app.url(&format!("/api/models/{model_id}")))
        .header("Origin", app.address.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 404);
    let listed: Value = app.get_json(&mallory, "/api/models").await;
    assert_eq!(listed["data"]["pagination"]["total"], 0);

    // The owner renames and describes it, then deletes it: gone from the list and downloads.
    let renamed = client
        .patch(app.url(&format!("/api/models/{model_id}")))
        .header("Origin", app.address.as_str())
        .json(&json!({ "name": "  coach v1 ", "description": "first try" }))
        .send()
        .await
        .unwrap();
    assert_eq!(renamed.status(), 200);
    // The owner was told of every step once; nobody else was told anything.
    let told: Value = app.get_json(&client, "/api/notifications?limit=100").await;
    let mut types: Vec<&str> = told["data"]["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["type"].as_str().unwrap())
        .collect();
    types.sort_unstable();
    assert_eq!(
        types,
        [
            "artifact_ready",
            "dataset_ready",
            "job_completed",
            "job_queued",
            "job_started",
        ]
    );
    let (stranger, _) = app.signed_in_user("stranger-flow@example.com").await;
    let theirs: Value = app.get_json(&stranger, "/api/notifications").await;
    assert_eq!(theirs["data"]["notifications"], json!([]));
    let renamed: Value = renamed.json().await.unwrap();
    assert_eq!(renamed["data"]["model"]["name"], "coach v1");
    assert_eq!(renamed["data"]["model"]["description"], "first try");
    let blank = client
        .patch(app.url(&format!("/api/models/{model_id}")))
        .header("Origin", app.address.as_str())
        .json(&json!({ "name": "" }))
        .send()
        .await
        .unwrap();
    assert_eq!(blank.status(), 400, "a blank name is refused");
    let deleted = client
        .delete(app.url(&format!("/api/models/{model_id}")))
        .header("Origin", app.address.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let gone = client
        .get(app.url(&format!("/api/models/{model_id}/bundle")))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
}

/// The demo model's Fast preset, as the Train page offers it, on a shared sample dataset: the
/// run must visibly learn (the loss at least halves) so that the rating, the chart and the
/// samples show something.
#[tokio::test]
async fn the_demo_models_fast_preset_halves_the_loss() {
    let app = TestApp::spawn().await;
    let (client, _) = app.signed_in_user("demo-learns@example.com").await;
    let dataset = ready_dataset(&app, &client, "openai-chat.jsonl").await;
    let catalog: Value = app.get_json(&client, "/api/catalog").await;
    let demo = catalog["data"]["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "tiny-random-llama")
        .unwrap()
        .clone();
    let mut hp = catalog["data"]["presets"]["fast"].clone();
    for (key, value) in demo["presets"]["fast"]
        .as_object()
        .expect("the demo's Fast preset")
    {
        if !value.is_null() {
            hp[key] = value.clone();
        }
    }
    hp["quantization"] = json!("none");
    let started = Instant::now();
    let created = app
        .post(
            &client,
            "/api/jobs",
            json!({
                "dataset_id": dataset, "base_model": "tiny-random-llama", "preset": "fast",
                "hyperparameters": hp, "gpu_type": "local", "gpu_count": 1,
            }),
        )
        .await;
    assert_eq!(created.status(), 201);
    let job = created.json::<Value>().await.unwrap()["data"]["job"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let detail = loop {
        let body: Value = app.get_json(&client, &format!("/api/jobs/{job}")).await;
        let detail = body["data"]["job"].clone();
        if detail["status"] == "completed" || detail["status"] == "failed" {
            break detail;
        }
        assert!(started.elapsed() < Duration::from_secs(240), "{detail}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(detail["status"], "completed", "{detail}");
    let model: Value = app
        .get_json(
            &client,
            &format!("/api/models/{}", detail["artifact_id"].as_str().unwrap()),
        )
        .await;
    let quality = &model["data"]["model"]["quality_metrics"];
    let reduction = quality["loss_reduction"].as_f64().unwrap();
    println!(
        "demo Fast preset: loss {:.3} -> {:.3} ({:.0}% lower), {} in {:.1} s",
        quality["initial_train_loss"].as_f64().unwrap(),
        quality["final_train_loss"].as_f64().unwrap(),
        reduction * 100.0,
        quality["explanation"],
        started.elapsed().as_secs_f64()
    );
    assert!(reduction >= 0.5, "the loss at least halves: {quality}");
}

/// Unpacks a ustar archive into `into`; returns the folder the files are in.
fn untar(archive: &[u8], into: &std::path::Path) -> std::path::PathBuf {
    let mut folder = into.to_owned();
    let mut at = 0;
    while at + 512 <= archive.len() && archive[at..at + 512].iter().any(|b| *b != 0) {
        let header = &archive[at..at + 512];
        let name = String::from_utf8_lossy(&header[..100])
            .trim_end_matches('\0')
            .to_owned();
        let size_text = String::from_utf8_lossy(&header[124..135]).into_owned();
        let size =
            usize::from_str_radix(size_text.trim_matches(|c: char| c == '\0' || c == ' '), 8)
                .expect("an octal size");
        let path = into.join(&name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &archive[at + 512..at + 512 + size]).unwrap();
        folder = path.parent().unwrap().to_owned();
        at += 512 + size.div_ceil(512) * 512;
    }
    folder
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// Processes whose command line mentions `needle` (the worker runs with `--job-id <id>`).
fn processes_with(needle: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains("harness.py") && cmdline.contains(needle) {
            pids.push(pid);
        }
    }
    pids
}

#[tokio::test]
async fn cancel_stops_the_worker_process_and_retry_runs_it_again() {
    let app = TestApp::spawn().await;
    let (client, _) = app.signed_in_user("canceller@example.com").await;
    let dataset = ready_dataset(&app, &client, "openai-chat.jsonl").await;
    // Many epochs: still training when we cancel.
    let job = start_job(&app, &client, &dataset, 20).await;
    let stream = client
        .get(app.url(&format!("/api/jobs/{job}/events")))
        .send()
        .await
        .unwrap();
    let seen = read_events(stream, Duration::from_secs(120), |e| e.kind == "metrics").await;
    assert!(
        seen.iter().any(|e| e.kind == "metrics"),
        "training started: {seen:?}"
    );
    // This job's own worker (other tests' workers run on the same machine).
    let external: String = {
        let mut tx = app.db.system().await.unwrap();
        let id: String =
            sqlx::query_scalar("SELECT external_job_id FROM training_jobs WHERE id = $1::uuid")
                .bind(&job)
                .fetch_one(&mut *tx)
                .await
                .unwrap();
        tx.commit().await.unwrap();
        id
    };
    let running = processes_with(&external);
    assert!(!running.is_empty(), "the worker process of {external} runs");

    let cancelled = app
        .post(&client, &format!("/api/jobs/{job}/cancel"), json!({}))
        .await;
    assert_eq!(cancelled.status(), 202);
    let deadline = Instant::now() + Duration::from_secs(30);
    let detail = loop {
        let body: Value = app.get_json(&client, &format!("/api/jobs/{job}")).await;
        if body["data"]["job"]["status"] == "cancelled" {
            break body["data"]["job"].clone();
        }
        assert!(Instant::now() < deadline, "cancel took effect: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        detail["error_message"]
            .as_str()
            .unwrap()
            .contains("your request")
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while running
        .iter()
        .any(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
    {
        assert!(
            Instant::now() < deadline,
            "the worker process {running:?} is gone"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Retry: a new attempt starts from step 0 with its own curve.
    let retried = app
        .post(&client, &format!("/api/jobs/{job}/retry"), json!({}))
        .await;
    assert_eq!(retried.status(), 202);
    let body: Value = retried.json().await.unwrap();
    assert_eq!(body["data"]["job"]["status"], "queued");
    assert_eq!(body["data"]["job"]["retry_count"], 1);
    assert_eq!(body["data"]["job"]["current_step"], 0);
    // Stop it again so no training outlives the test.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let response = app
            .post(&client, &format!("/api/jobs/{job}/cancel"), json!({}))
            .await;
        if response.status() == 202 {
            break;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every normalised format trains to the end, not only OpenAI chat: the validator's training
/// file is what the worker reads, whatever was uploaded.
#[tokio::test]
async fn a_demo_job_trains_on_every_supported_format() {
    let app = TestApp::spawn().await;
    let (client, _) = app.signed_in_user("formats@example.com").await;
    let mut jobs = Vec::new();
    for file in ["alpaca.json", "sharegpt.jsonl", "brightrun-v4.jsonl"] {
        let dataset = ready_dataset(&app, &client, file).await;
        jobs.push((file, start_job(&app, &client, &dataset, 1).await));
    }
    for (file, job) in jobs {
        let deadline = Instant::now() + Duration::from_secs(240);
        let detail = loop {
            let body: Value = app.get_json(&client, &format!("/api/jobs/{job}")).await;
            let detail = body["data"]["job"].clone();
            if matches!(
                detail["status"].as_str(),
                Some("completed" | "failed" | "cancelled")
            ) {
                break detail;
            }
            assert!(Instant::now() < deadline, "{file}: the job ended: {detail}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        assert_eq!(detail["status"], "completed", "{file}: {detail}");
        assert_eq!(detail["progress"], 100.0, "{file}");
    }
}
