//! Work-queue leases are per lease, not per replica: a task that re-queued itself as its
//! successor (a poll scheduling the next poll) can neither complete, fail nor renew that
//! successor, even when the same worker leased both.

mod common;

use std::time::Duration;

use engine::db::Db;
use engine::queue;

#[tokio::test]
async fn a_run_never_touches_the_successor_it_queued() {
    let db = Db::connect(common::fresh_database().await, 2)
        .await
        .expect("pool");
    db.migrate().await.expect("migrations");
    let payload = serde_json::json!({ "n": 1 });

    let mut tx = db.system().await.expect("tx");
    queue::enqueue(&mut tx, "test_task", payload.clone(), None, "subject:1")
        .await
        .expect("enqueue");
    tx.commit().await.expect("commit");
    let first = queue::lease(&db, "worker-a", &["test_task"], 10)
        .await
        .expect("lease")
        .remove(0);

    // The running task queues its successor under the same key, due at once.
    let mut tx = db.system().await.expect("tx");
    queue::enqueue_after(
        &mut tx,
        "test_task",
        payload,
        None,
        "subject:1",
        Duration::ZERO,
    )
    .await
    .expect("successor");
    tx.commit().await.expect("commit");
    let second = queue::lease(&db, "worker-a", &["test_task"], 10)
        .await
        .expect("lease")
        .remove(0);
    assert_eq!(second.id, first.id, "the same row, leased again");
    assert_ne!(second.lease, first.lease, "under a new lease");

    // The first run's bookkeeping changes nothing of the second's.
    assert!(
        !queue::heartbeat(&db, first.id, &first.lease)
            .await
            .expect("heartbeat")
    );
    queue::complete(&db, first.id, &first.lease)
        .await
        .expect("complete");
    assert!(
        queue::fail(&db, &first, "late failure", true)
            .await
            .expect("fail"),
        "a lost lease is not given up on"
    );
    let mut tx = db.system().await.expect("tx");
    let (status, leased_by): (String, Option<String>) =
        sqlx::query_as("SELECT status, leased_by FROM work_queue WHERE id = $1")
            .bind(second.id)
            .fetch_one(&mut *tx)
            .await
            .expect("row");
    tx.commit().await.expect("commit");
    assert_eq!(status, "running");
    assert_eq!(leased_by.as_deref(), Some(second.lease.as_str()));

    assert!(
        queue::heartbeat(&db, second.id, &second.lease)
            .await
            .expect("heartbeat")
    );
    queue::complete(&db, second.id, &second.lease)
        .await
        .expect("complete");
    assert!(
        queue::lease(&db, "worker-a", &["test_task"], 10)
            .await
            .expect("lease")
            .is_empty()
    );
}

/// Each lane leases only its own kinds, so job polls are never queued behind a pile of
/// validations; within a kind, an account with nothing running goes before one already served.
#[tokio::test]
async fn lanes_keep_job_tasks_apart_and_accounts_take_turns() {
    use engine::tasks::Lane;
    // No app on this database: nothing else leases these rows.
    let db = Db::connect(common::fresh_database().await, 2)
        .await
        .expect("pool");
    db.migrate().await.expect("migrations");
    let mut tx = db.system().await.expect("tx");
    let heavy: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO users (email, password_hash) VALUES ('heavy@example.com', 'x') RETURNING id",
    )
    .fetch_one(&mut *tx)
    .await
    .expect("user");
    let light: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO users (email, password_hash) VALUES ('light@example.com', 'x') RETURNING id",
    )
    .fetch_one(&mut *tx)
    .await
    .expect("user");
    // Ten validations of one account, queued first; then one of another; then a job poll.
    for i in 0..10 {
        queue::enqueue(
            &mut tx,
            "validate_dataset",
            serde_json::json!({ "i": i }),
            Some(heavy),
            &format!("validate:heavy-{i}"),
        )
        .await
        .expect("enqueue");
    }
    queue::enqueue(
        &mut tx,
        "validate_dataset",
        serde_json::json!({}),
        Some(light),
        "validate:light",
    )
    .await
    .expect("enqueue");
    queue::enqueue(
        &mut tx,
        "job_poll",
        serde_json::json!({}),
        Some(light),
        "job:light",
    )
    .await
    .expect("enqueue");
    tx.commit().await.expect("commit");

    let jobs = queue::lease(&db, "w", Lane::Jobs.kinds(), 32)
        .await
        .expect("lease");
    assert_eq!(jobs.len(), 1, "only the job's task");
    assert_eq!(jobs[0].kind, "job_poll");

    let first = queue::lease(&db, "w", Lane::Validation.kinds(), 1)
        .await
        .expect("lease");
    assert_eq!(first[0].user_id, Some(heavy), "the oldest first");
    let second = queue::lease(&db, "w", Lane::Validation.kinds(), 1)
        .await
        .expect("lease");
    assert_eq!(
        second[0].user_id,
        Some(light),
        "then the account with none running, though queued after nine others"
    );
    let third = queue::lease(&db, "w", Lane::Validation.kinds(), 1)
        .await
        .expect("lease");
    assert_eq!(third[0].user_id, Some(heavy));
}

#[tokio::test]
async fn a_job_left_without_a_task_is_requeued() {
    let app = common::TestApp::spawn().await;
    let (client, _) = app.signed_in_user("orphan@example.com").await;
    let dataset = common::ready_dataset(&app, &client, "openai-chat.jsonl").await;
    let job = common::start_job(&app, &client, &dataset, 1).await;
    let job: uuid::Uuid = job.parse().expect("uuid");
    // An operator deletes the job's task: nothing would ever move it again. (A new attempt
    // number also makes any task of this app still in flight for the job stand down.)
    let mut tx = app.db.system().await.expect("tx");
    sqlx::query("DELETE FROM work_queue WHERE dedupe_key = $1")
        .bind(format!("job:{job}"))
        .execute(&mut *tx)
        .await
        .expect("delete");
    sqlx::query("UPDATE training_jobs SET status = 'queued', external_job_id = NULL, retry_count = retry_count + 1 WHERE id = $1")
        .bind(job)
        .execute(&mut *tx)
        .await
        .expect("reset");
    tx.commit().await.expect("commit");

    let catalog = std::sync::Arc::new(engine::training::Catalog::builtin());
    let storage = engine::storage::Storage::local(
        app.data_dir.path().join("objects"),
        vec![7; 32],
        app.address.clone(),
    );
    let client = engine::runpod::RunpodClient::new(
        "http://127.0.0.1:9/v2/x",
        "x",
        engine::runpod::RetryPolicy::default(),
    )
    .expect("client");
    let processor = engine::jobs::processor::Processor::new(
        app.db.clone(),
        storage,
        catalog,
        engine::jobs::processor::Backends {
            runpod: None,
            local: Some(client),
        },
        Default::default(),
    );
    assert_eq!(processor.reconcile().await.expect("reconcile"), 1);
    let mut tx = app.db.system().await.expect("tx");
    let kind: String = sqlx::query_scalar("SELECT kind FROM work_queue WHERE dedupe_key = $1")
        .bind(format!("job:{job}"))
        .fetch_one(&mut *tx)
        .await
        .expect("a task again");
    tx.commit().await.expect("commit");
    // The app's own worker may already have taken the new submission and turned it into a poll.
    assert!(kind == "job_submit" || kind == "job_poll", "{kind}");
    assert_eq!(
        processor.reconcile().await.expect("reconcile"),
        0,
        "nothing else orphaned"
    );
}
