//! `/api/costs`: a job's records in a date range of the caller's time zone (both ends in), the
//! groupings, CSV equal to JSON, and nobody else's costs.

mod common;

use std::time::{Duration, Instant};

use common::{TestApp, ready_dataset, start_job};
use serde_json::{Value, json};

/// Creates a job and cancels it: it ends at once, with its cost records.
async fn ended_job(app: &TestApp, client: &reqwest::Client, dataset: &str) -> uuid::Uuid {
    let job = start_job(app, client, dataset, 1).await;
    app.post(client, &format!("/api/jobs/{job}/cancel"), json!({}))
        .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body: Value = app.get_json(client, &format!("/api/jobs/{job}")).await;
        if body["data"]["job"]["status"] == "cancelled" {
            return job.parse().unwrap();
        }
        assert!(Instant::now() < deadline, "cancelled: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sets a job's compute record to `amount` at `at` (a timestamp with its zone), and moves its
/// storage record out of the way.
async fn place(app: &TestApp, job: uuid::Uuid, amount: f64, gpu: &str, at: &str) {
    let mut tx = app.db.system().await.unwrap();
    let compute = sqlx::query(
        "UPDATE cost_records SET amount = $2, gpu_type = $3, created_at = $4::timestamptz
          WHERE job_id = $1 AND cost_type = 'compute'",
    )
    .bind(job)
    .bind(amount)
    .bind(gpu)
    .bind(at)
    .execute(&mut *tx)
    .await
    .unwrap();
    assert_eq!(
        compute.rows_affected(),
        1,
        "the ended job has its compute record"
    );
    sqlx::query("UPDATE cost_records SET created_at = '2020-01-01T00:00:00Z' WHERE job_id = $1 AND cost_type = 'storage'")
        .bind(job)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn costs_cover_the_users_days_with_both_ends_included() {
    let app = TestApp::spawn().await;
    let (client, _) = app.signed_in_user("costs@example.com").await;
    let dataset = ready_dataset(&app, &client, "openai-chat.jsonl").await;
    let late = ended_job(&app, &client, &dataset).await;
    let next_day = ended_job(&app, &client, &dataset).await;
    // 23:59:59 on March 10th in Paris, and midnight starting March 11th.
    place(&app, late, 1.25, "L4", "2026-03-10T23:59:59+01:00").await;
    place(&app, next_day, 2.5, "A100", "2026-03-11T00:00:00+01:00").await;

    let march10: Value = app
        .get_json(
            &client,
            "/api/costs?start_date=2026-03-01&end_date=2026-03-10&tz=Europe/Paris",
        )
        .await;
    let r = &march10["data"];
    assert_eq!(r["total"], 1.25, "{r}");
    assert_eq!(r["records"].as_array().unwrap().len(), 1);
    assert_eq!(r["records"][0]["date"], "2026-03-10");
    assert_eq!(r["cost_by_type"]["compute"], 1.25);
    assert_eq!(
        r["by_day"].as_array().unwrap().len(),
        10,
        "every day, zero included"
    );
    assert_eq!(r["by_day"][9]["amount"], 1.25);
    let both: Value = app
        .get_json(
            &client,
            "/api/costs?start_date=2026-03-10&end_date=2026-03-11&tz=Europe/Paris&group_by=gpu",
        )
        .await;
    assert_eq!(both["data"]["total"], 3.75);
    let series: Vec<(&str, f64)> = both["data"]["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["key"].as_str().unwrap(), p["amount"].as_f64().unwrap()))
        .collect();
    assert_eq!(series, [("A100", 2.5), ("L4", 1.25)]);
    assert_eq!(both["data"]["top_jobs"][0]["job_id"], next_day.to_string());
    // In UTC both records are on March 10th (22:59:59 and 23:00).
    let utc: Value = app
        .get_json(
            &client,
            "/api/costs?start_date=2026-03-10&end_date=2026-03-10",
        )
        .await;
    assert_eq!(utc["data"]["total"], 3.75);
    assert_eq!(utc["data"]["time_zone"], "UTC");

    // CSV: the same records as the JSON, as an attachment.
    let csv =
        client
            .get(app.url(
                "/api/costs?start_date=2026-03-10&end_date=2026-03-11&tz=Europe/Paris&format=csv",
            ))
            .send()
            .await
            .unwrap();
    assert_eq!(csv.status(), 200);
    assert!(
        csv.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );
    let text = csv.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "date,job_id,dataset_name,cost_type,amount,gpu_type,gpu_count,seconds,rate_per_s"
    );
    let records = both["data"]["records"].as_array().unwrap();
    assert_eq!(lines.len(), records.len() + 1);
    for (line, record) in lines[1..].iter().zip(records) {
        let cells: Vec<&str> = line.split(',').collect();
        assert_eq!(cells[0], record["date"].as_str().unwrap());
        assert_eq!(cells[1], record["job_id"].as_str().unwrap());
        assert_eq!(
            cells[4].parse::<f64>().unwrap(),
            record["amount"].as_f64().unwrap()
        );
    }

    // Bad input says what is wrong.
    for (q, field) in [
        ("tz=Mars/Olympus", "tz"),
        ("start_date=2026-03-12&end_date=2026-03-11", "start_date"),
        ("start_date=12/03/2026", "start_date"),
        ("group_by=week", "group_by"),
        ("period=decade", "period"),
    ] {
        let response = client
            .get(app.url(&format!("/api/costs?{q}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{q}");
        let body: Value = response.json().await.unwrap();
        assert!(body["details"]["fields"][field].is_string(), "{q}: {body}");
    }

    // Nobody else's costs.
    let (mallory, _) = app.signed_in_user("mallory-costs@example.com").await;
    let theirs: Value = app
        .get_json(
            &mallory,
            "/api/costs?start_date=2026-03-01&end_date=2026-03-31&tz=Europe/Paris",
        )
        .await;
    assert_eq!(theirs["data"]["total"], 0.0);
    assert!(theirs["data"]["records"].as_array().unwrap().is_empty());
}
