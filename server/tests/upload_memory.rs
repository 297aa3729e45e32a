//! A 500 MB upload through the local store's signed PUT endpoint stays in constant memory.
//! Alone in its test binary, so the RSS it measures is this upload's.

mod common;

use std::time::Instant;

use common::TestApp;
use serde_json::{Value, json};

#[tokio::test]
async fn a_500_mb_upload_streams_in_constant_memory() {
    let app = TestApp::spawn().await;
    let (client, _) = app.signed_in_user("big@example.com").await;
    const SIZE: usize = 500 * 1000 * 1000;
    let response = app
        .post(
            &client,
            "/api/datasets",
            json!({ "name": "big", "file_name": "big.jsonl", "file_size": SIZE }),
        )
        .await;
    assert_eq!(response.status(), 201);
    let created = response.json::<Value>().await.unwrap()["data"].clone();
    let rss = || {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok())
            .unwrap()
    };
    let before = rss();
    // The body is generated as it is sent: 1 MB chunks, never the whole file.
    let chunk = bytes::Bytes::from(vec![b'x'; 1_000_000]);
    let stream = futures::stream::iter(
        (0..SIZE / 1_000_000).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    );
    let started = Instant::now();
    let response = reqwest::Client::new()
        .put(created["uploadUrl"].as_str().unwrap())
        .header("content-length", SIZE)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let grown_mb = (rss().saturating_sub(before)) / 1024;
    eprintln!(
        "500 MB upload: {:.1} s, RSS growth {grown_mb} MB",
        started.elapsed().as_secs_f64()
    );
    assert!(grown_mb < 64, "RSS grew by {grown_mb} MB");
    let stored = std::fs::metadata(
        app.data_dir
            .path()
            .join("objects")
            .join(created["storagePath"].as_str().unwrap()),
    )
    .unwrap();
    assert_eq!(stored.len(), SIZE as u64);
}
