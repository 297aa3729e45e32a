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
    // The zone sent became the account's: a report without one is in it.
    let kept: Value = app
        .get_json(
            &client,
            "/api/costs?start_date=2026-03-10&end_date=2026-03-10",
        )
        .await;
    assert_eq!(kept["data"]["time_zone"], "Europe/Paris");
    assert_eq!(kept["data"]["total"], 1.25);
    // In UTC both records are on March 10th (22:59:59 and 23:00).
    let utc: Value = app
        .get_json(
            &client,
            "/api/costs?start_date=2026-03-10&end_date=2026-03-10&tz=UTC",
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

/// The `type`s of the user's notifications, oldest first.
async fn notification_types(app: &TestApp, client: &reqwest::Client) -> Vec<String> {
    let body: Value = app.get_json(client, "/api/notifications?limit=100").await;
    let mut types: Vec<String> = body["data"]["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["type"].as_str().unwrap().to_owned())
        .collect();
    types.reverse();
    types
}

fn count(types: &[String], kind: &str) -> usize {
    types.iter().filter(|t| *t == kind).count()
}

#[tokio::test]
async fn the_month_budget_alerts_at_80_and_100_percent_once_each() {
    let app = TestApp::spawn().await;
    let (client, _) = app.signed_in_user("alerts@example.com").await;
    let (other, _) = app.signed_in_user("other-alerts@example.com").await;
    // The account's own budget and zone; the month is counted in that zone.
    let set = client
        .put(app.url("/api/account/budget"))
        .header("Origin", app.address.as_str())
        .json(&json!({ "monthly_budget": 10.0, "time_zone": "Europe/Paris" }))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 200);
    let budget: Value = set.json().await.unwrap();
    assert_eq!(budget["data"]["monthly_budget"], 10.0);
    assert_eq!(budget["data"]["own_budget"], true);
    assert_eq!(budget["data"]["time_zone"], "Europe/Paris");
    let dataset = ready_dataset(&app, &client, "openai-chat.jsonl").await;
    let now = chrono::Utc::now().to_rfc3339();

    // 79%: nothing to say.
    let first = ended_job(&app, &client, &dataset).await;
    place(&app, first, 7.9, "L4", &now).await;
    ended_job(&app, &client, &dataset).await;
    let types = notification_types(&app, &client).await;
    assert_eq!(count(&types, "budget_warning"), 0, "{types:?}");

    // 85% once a job ends: one warning, however many jobs end after it.
    place(&app, first, 8.5, "L4", &now).await;
    ended_job(&app, &client, &dataset).await;
    let third = ended_job(&app, &client, &dataset).await;
    let types = notification_types(&app, &client).await;
    assert_eq!(count(&types, "budget_warning"), 1, "{types:?}");
    assert_eq!(count(&types, "budget_exceeded"), 0, "{types:?}");
    let list: Value = app
        .get_json(&client, "/api/notifications?type=budget_warning")
        .await;
    let warning = &list["data"]["notifications"][0];
    assert_eq!(warning["priority"], "medium");
    assert_eq!(warning["action_url"], "/costs");
    assert!(
        warning["message"]
            .as_str()
            .unwrap()
            .contains("$8.50 of your $10.00"),
        "{warning}"
    );

    // Past 100% (a job starts while there is room; its ending passes the budget): one alert.
    place(&app, third, 1.4, "L4", &now).await;
    let fourth = start_job(&app, &client, &dataset, 1).await;
    place(&app, third, 2.0, "L4", &now).await;
    app.post(&client, &format!("/api/jobs/{fourth}/cancel"), json!({}))
        .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&notification_types(&app, &client).await, "budget_exceeded") == 0 {
        assert!(Instant::now() < deadline, "no budget_exceeded alert");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let types = notification_types(&app, &client).await;
    assert_eq!(count(&types, "budget_exceeded"), 1, "{types:?}");
    assert_eq!(count(&types, "budget_warning"), 1, "{types:?}");

    // Over the budget, a new job is refused with the numbers.
    let refused = common::job_request(&app, &client, &dataset, 1, "local").await;
    let status = refused.status();
    let body: Value = refused.json().await.unwrap();
    assert_eq!(status, 409, "{body}");
    assert!(
        body.to_string().contains("monthly budget of $10.00"),
        "{body}"
    );

    // Nobody else was told.
    let theirs = notification_types(&app, &other).await;
    assert!(
        !theirs.iter().any(|t| t.starts_with("budget_")),
        "{theirs:?}"
    );
    let bad = client
        .put(app.url("/api/account/budget"))
        .header("Origin", app.address.as_str())
        .json(&json!({ "time_zone": "Mars/Olympus" }))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let after: Value = app.get_json(&client, "/api/account/budget").await;
    assert_eq!(after["data"]["time_zone"], "Europe/Paris", "unchanged");
    assert_eq!(after["data"]["monthly_budget"], 10.0, "absent: kept");
}
