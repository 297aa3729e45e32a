//! The user's live stream, `GET /api/events`: it starts with the unread notification count,
//! then carries the caller's dataset status changes, notification counts and job events — and
//! nothing of anyone else's. A reconnect with `Last-Event-ID` replays the job events missed.

mod common;

use std::time::Duration;

use common::{TestApp, read_events, ready_dataset, start_job};
use serde_json::Value;

#[tokio::test]
async fn the_users_stream_carries_their_datasets_notifications_and_jobs_only() {
    let app = TestApp::spawn().await;
    let (alice, alice_id) = app.signed_in_user("alice@example.com").await;
    let (bob, bob_id) = app.signed_in_user("bob@example.com").await;

    let stream = alice.get(app.url("/api/events")).send().await.unwrap();
    assert_eq!(stream.status(), 200);
    let anonymous = reqwest::Client::new()
        .get(app.url("/api/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    // Bob's work happens while Alice listens; hers too.
    let bobs = ready_dataset(&app, &bob, "alpaca.json").await;
    let dataset = ready_dataset(&app, &alice, "openai-chat.jsonl").await;
    let job = start_job(&app, &alice, &dataset, 1).await;

    let events = read_events(stream, Duration::from_secs(60), |e| {
        e.kind == "status" && e.data["job_id"] == job.as_str()
    })
    .await;
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();

    // First the count, before anything happened.
    assert_eq!(kinds.first(), Some(&"notification"), "{kinds:?}");
    assert_eq!(events[0].data["unread"], 0);
    // Her dataset, live: validation started, then the verdict.
    let statuses: Vec<&str> = events
        .iter()
        .filter(|e| e.kind == "dataset" && e.data["dataset_id"] == dataset.as_str())
        .filter_map(|e| e.data["status"].as_str())
        .collect();
    assert_eq!(statuses, ["validating", "ready"], "{kinds:?}");
    // The bell's count rose with each notification (dataset ready, job queued).
    let counts: Vec<i64> = events
        .iter()
        .filter(|e| e.kind == "notification")
        .filter_map(|e| e.data["unread"].as_i64())
        .collect();
    assert!(counts.windows(2).all(|w| w[0] < w[1]), "{counts:?}");
    assert!(counts.last().is_some_and(|c| *c >= 2), "{counts:?}");
    // Her job's queued status, as a job event with an id.
    let queued = events.last().unwrap();
    assert_eq!(queued.data["payload"]["status"], "queued");
    assert!(queued.id > 0);
    // Nothing of Bob's.
    for event in &events {
        assert_eq!(
            event.data["user_id"],
            alice_id.to_string(),
            "{}: {}",
            event.kind,
            event.data
        );
        assert_ne!(event.data["dataset_id"], bobs.as_str());
    }
    assert!(
        !events
            .iter()
            .any(|e| e.data["user_id"] == bob_id.to_string())
    );

    // A reconnect replays the job events after its Last-Event-ID, after the current count.
    let resumed = alice
        .get(app.url("/api/events"))
        .header("Last-Event-ID", (queued.id - 1).to_string())
        .send()
        .await
        .unwrap();
    let replayed = read_events(resumed, Duration::from_secs(10), |e| e.id == queued.id).await;
    assert_eq!(replayed[0].kind, "notification");
    assert!(replayed[0].data["unread"].as_i64().unwrap() >= 2);
    assert!(
        replayed.iter().any(|e| e.id == queued.id),
        "{:?}",
        replayed.iter().map(|e| (&e.kind, e.id)).collect::<Vec<_>>()
    );

    // Bob's stream never carries Alice's job.
    let bobs_stream = bob
        .get(app.url("/api/events"))
        .header("Last-Event-ID", "0")
        .send()
        .await
        .unwrap();
    let seen: Vec<Value> = read_events(bobs_stream, Duration::from_secs(3), |_| false)
        .await
        .into_iter()
        .map(|e| e.data)
        .collect();
    assert!(
        seen.iter().all(|d| d["user_id"] == bob_id.to_string()),
        "{seen:?}"
    );

    // Stop the training so nothing outlives the test.
    let _ = app
        .post(
            &alice,
            &format!("/api/jobs/{job}/cancel"),
            serde_json::json!({}),
        )
        .await;
}

/// One user may hold at most 16 live streams open on a replica; a 17th is refused (429), and a
/// closed one gives its slot back.
#[tokio::test]
async fn open_streams_per_user_are_capped() {
    let app = TestApp::spawn().await;
    let (client, _) = app.signed_in_user("many-tabs@example.com").await;
    let mut open = Vec::new();
    for _ in 0..server::routes::live::DEFAULT_STREAMS_PER_USER {
        let stream = client.get(app.url("/api/events")).send().await.unwrap();
        assert_eq!(stream.status(), 200);
        // A reverse proxy (nginx) is told not to buffer the stream.
        assert_eq!(stream.headers()["x-accel-buffering"], "no");
        open.push(stream);
    }
    let refused = client.get(app.url("/api/events")).send().await.unwrap();
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    // Someone else is not affected.
    let (other, _) = app.signed_in_user("one-tab@example.com").await;
    assert_eq!(
        other
            .get(app.url("/api/events"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Closing one frees its slot (once the server notices the connection is gone).
    drop(open.pop());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let again = client.get(app.url("/api/events")).send().await.unwrap();
        if again.status() == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the slot came back");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
