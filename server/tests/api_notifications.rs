//! `/api/notifications`: the original's shape (`{notifications, unread_count}`, `read` on each,
//! priorities low|medium|high), marking one or all read — which lowers the bell's count live —
//! and nobody else's.

mod common;

use std::time::Duration;

use common::{TestApp, read_events, ready_dataset};
use serde_json::{Value, json};

#[tokio::test]
async fn notifications_read_and_mark_read_with_the_count_pushed_live() {
    let app = TestApp::spawn().await;
    let (client, _) = app.signed_in_user("bell@example.com").await;
    ready_dataset(&app, &client, "openai-chat.jsonl").await;
    ready_dataset(&app, &client, "alpaca.json").await;

    let body: Value = app.get_json(&client, "/api/notifications?limit=10").await;
    let list = body["data"]["notifications"].as_array().unwrap().clone();
    assert_eq!(list.len(), 2, "{body}");
    assert_eq!(body["data"]["unread_count"], 2);
    for n in &list {
        assert_eq!(n["type"], "dataset_ready", "{n}");
        assert_eq!(n["read"], false);
        assert_eq!(n["priority"], "medium");
        assert!(
            n["action_url"].as_str().unwrap().starts_with("/datasets/"),
            "{n}"
        );
    }
    let first = list[0]["id"].as_str().unwrap().to_owned();

    // Someone else can neither read nor mark them.
    let (mallory, _) = app.signed_in_user("mallory-bell@example.com").await;
    let theirs: Value = app.get_json(&mallory, "/api/notifications").await;
    assert_eq!(theirs["data"]["notifications"].as_array().unwrap().len(), 0);
    let marked = mallory
        .patch(app.url(&format!("/api/notifications/{first}/read")))
        .header("Origin", app.address.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(marked.status(), 404);

    // Marking one read pushes the new count to the owner's open stream.
    let stream = client.get(app.url("/api/events")).send().await.unwrap();
    assert_eq!(stream.status(), 200);
    let reader = tokio::spawn(read_events(stream, Duration::from_secs(10), |e| {
        e.kind == "notification" && e.data["unread"] == 1
    }));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let marked = client
        .patch(app.url(&format!("/api/notifications/{first}/read")))
        .header("Origin", app.address.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(marked.status(), 200);
    let marked: Value = marked.json().await.unwrap();
    assert_eq!(marked["data"]["unread_count"], 1);
    let events = reader.await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == "notification" && e.data["unread"] == 1),
        "the bell's count arrived live: {:?}",
        events
            .iter()
            .map(|e| (&e.kind, &e.data))
            .collect::<Vec<_>>()
    );

    let unread: Value = app
        .get_json(&client, "/api/notifications?unread=true")
        .await;
    assert_eq!(unread["data"]["notifications"].as_array().unwrap().len(), 1);
    let all = app
        .post(&client, "/api/notifications/read-all", json!({}))
        .await;
    assert_eq!(all.status(), 200);
    let after: Value = app.get_json(&client, "/api/notifications").await;
    assert_eq!(after["data"]["unread_count"], 0);
    assert!(
        after["data"]["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["read"] == true)
    );
    for q in ["unread=maybe", "type=dataset_lost"] {
        let bad = client
            .get(app.url(&format!("/api/notifications?{q}")))
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), 400, "{q}");
    }

    // A file with problems: a high-priority `dataset_invalid`, and the type filter finds it.
    let (broken, verdict) =
        common::validated_dataset(&app, &client, "broken-invalid-json-line.jsonl").await;
    assert_eq!(verdict["data"]["status"], "invalid");
    let invalid: Value = app
        .get_json(&client, "/api/notifications?type=dataset_invalid")
        .await;
    let list = invalid["data"]["notifications"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{invalid}");
    assert_eq!(list[0]["priority"], "high");
    assert_eq!(list[0]["action_url"], format!("/datasets/{broken}"));
    assert_eq!(invalid["data"]["unread_count"], 1);
    let theirs: Value = app.get_json(&mallory, "/api/notifications").await;
    assert_eq!(theirs["data"]["unread_count"], 0);
}
