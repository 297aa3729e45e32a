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
    let first = queue::lease(&db, "worker-a", 10)
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
    let second = queue::lease(&db, "worker-a", 10)
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
        queue::fail(&db, &first, "late failure")
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
        queue::lease(&db, "worker-a", 10)
            .await
            .expect("lease")
            .is_empty()
    );
}
