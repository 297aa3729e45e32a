//! The platform's health for a person on call (issue 16 item 2): `lora-pipeline health` and
//! `/readyz?health=1` read the same figures, judged against the documented thresholds; red exits 1.

mod common;

use common::TestApp;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_lora-pipeline");

async fn health(app: &TestApp, json: bool) -> (i32, String, String) {
    let mut command = tokio::process::Command::new(BIN);
    command
        .arg("health")
        .env("DATABASE_URL", common::database_url(&app.options));
    if json {
        command.arg("--json");
    }
    let output = command.output().await.expect("run lora-pipeline health");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn figure<'a>(report: &'a Value, key: &str) -> &'a Value {
    report["figures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["key"] == key)
        .unwrap_or_else(|| panic!("no figure {key}: {report}"))
}

#[tokio::test]
async fn health_reads_the_queue_and_turns_red_past_the_originals_threshold() {
    let app = TestApp::spawn().await;
    // The maintenance chores queued at start run at once and reschedule themselves: wait for
    // the queue to be quiet.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let mut tx = app.db.system().await.unwrap();
        let due: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM work_queue WHERE status = 'running' OR (status = 'pending' AND run_at <= now())",
        )
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
        if due == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{due} tasks still due"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // A quiet platform: green, exit 0, the same figures in /readyz?health=1.
    let (code, stdout, stderr) = health(&app, true).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["level"], "green", "{report}");
    // A load balancer's probe gets readiness only; the operator asks for the figures.
    let probe: Value = reqwest::get(app.url("/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(probe["status"], "ready");
    assert!(probe["health"].is_null(), "{probe}");
    let ready: Value = reqwest::get(app.url("/readyz?health=1"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["health"]["level"], "green");
    // Through a proxy (a stranger's request), the figures are refused.
    let proxied = reqwest::Client::new()
        .get(app.url("/readyz?health=1"))
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(proxied.status(), 403);
    assert_eq!(figure(&ready["health"], "queue_depth")["value"], 0.0);

    // 60 tasks due that no replica takes (a kind no lane leases): red, exit 1.
    let mut tx = app.db.system().await.unwrap();
    for i in 0..60 {
        sqlx::query("INSERT INTO work_queue (kind, payload, dedupe_key, run_at) VALUES ('stuck', '{}', $1, now() - interval '10 minutes')")
            .bind(format!("stuck:{i}"))
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();

    let (code, stdout, _) = health(&app, true).await;
    assert_eq!(code, 1);
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["level"], "red");
    let depth = figure(&report, "queue_depth");
    assert_eq!(
        (depth["value"].as_f64(), &depth["level"]),
        (Some(60.0), &Value::from("red"))
    );
    assert!(depth["hint"].as_str().is_some());
    let oldest = figure(&report, "oldest_pending_s");
    assert!(oldest["value"].as_f64().unwrap() >= 600.0, "{oldest}");
    assert_eq!(oldest["level"], "red");

    // For people: one line a figure, the level first, and what to look at.
    let (code, text, stderr) = health(&app, false).await;
    assert_eq!(code, 1);
    assert!(text.starts_with("health RED"), "{text}");
    assert!(text.contains("work queue: tasks due or running"), "{text}");
    assert!(text.contains("→ tasks wait for a replica"), "{text}");
    assert!(stderr.contains("red"), "{stderr}");

    // Readiness does not depend on them, and shows the same.
    let response = reqwest::get(app.url("/readyz?health=1")).await.unwrap();
    assert_eq!(response.status(), 200);
    let ready: Value = response.json().await.unwrap();
    assert_eq!(ready["health"]["level"], "red");
    assert_eq!(figure(&ready["health"], "queue_depth")["value"], 60.0);
}
