//! Retention and maintenance (issue 16 item 5): the chores are durable tasks scheduled once per
//! database that queue their own next run, and each removes what is past its retention and
//! nothing else — on real rows and real files made by a real upload and a trained job.

mod common;

use std::time::Duration;

use common::{TestApp, ready_dataset, start_job};
use engine::maintenance::{Chore, Retention};
use engine::storage::Bucket;
use serde_json::{Value, json};
use sqlx::{ConnectOptions, PgConnection};
use uuid::Uuid;

/// A superuser connection to the app's database: it may back-date rows past their triggers.
async fn admin(app: &TestApp) -> PgConnection {
    let mut conn = common::admin_options()
        .database(app.options.get_database().unwrap())
        .connect()
        .await
        .unwrap();
    // Back-dating must not be undone by the updated_at triggers.
    sqlx::query("SET session_replication_role = replica")
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

async fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(conn)
        .await
        .unwrap()
}

async fn run(app: &TestApp, retention: &Retention, chore: Chore) -> engine::maintenance::Outcome {
    engine::maintenance::run(&app.db, &app.storage().await, retention, chore)
        .await
        .unwrap()
}

#[tokio::test]
async fn chores_are_scheduled_once_and_queue_their_own_next_run() {
    let app = TestApp::spawn().await;
    let mut conn = admin(&app).await;
    // Started, the app queued all six; its worker runs each at once and queues the next.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let later = count(
            &mut conn,
            "SELECT count(*) FROM work_queue WHERE kind = 'maintenance' AND status = 'pending' AND run_at > now() + interval '4 minutes'",
        )
        .await;
        if later == 6 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{later} of 6 chores rescheduled"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let keys: Vec<String> = sqlx::query_scalar(
        "SELECT dedupe_key FROM work_queue WHERE kind = 'maintenance' ORDER BY dedupe_key",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        keys,
        [
            "maintenance:deleted_files",
            "maintenance:expired_uploads",
            "maintenance:finished_tasks",
            "maintenance:job_events",
            "maintenance:orphans",
            "maintenance:sessions"
        ]
    );
    let weekly = count(
        &mut conn,
        "SELECT count(*) FROM work_queue WHERE dedupe_key = 'maintenance:orphans' AND run_at > now() + interval '6 days'",
    )
    .await;
    assert_eq!(weekly, 1, "the orphan sweep runs weekly");

    // Another replica (a restart) queues nothing new and does not bring the next runs forward.
    let replica = app.replica(common::test_gpu_settings()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        count(&mut conn, "SELECT count(*) FROM work_queue WHERE kind = 'maintenance' AND run_at > now() + interval '4 minutes'").await,
        6
    );
    // A chore the queue gave up on is brought back at the next start.
    sqlx::query(
        "UPDATE work_queue SET status = 'failed' WHERE dedupe_key = 'maintenance:sessions'",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    assert_eq!(engine::maintenance::schedule(&replica.db).await.unwrap(), 1);
    assert_eq!(engine::maintenance::schedule(&replica.db).await.unwrap(), 0);
}

#[tokio::test]
async fn chores_remove_what_is_past_retention_and_nothing_else() {
    let app = TestApp::spawn().await;
    let (client, user) = app.signed_in_user("keeper@example.com").await;
    let retention = Retention::default();
    let storage = app.storage().await;
    let dataset = ready_dataset(&app, &client, "openai-chat.jsonl").await;
    let job = start_job(&app, &client, &dataset, 1).await;
    common::wait_for_job(&app, &client, &job, Duration::from_secs(180), |job| {
        job["status"] == "completed" && !job["artifact_id"].is_null()
    })
    .await;
    let mut conn = admin(&app).await;

    // Finished tasks: only those past 7 days go.
    let done = count(
        &mut conn,
        "SELECT count(*) FROM work_queue WHERE status = 'done'",
    )
    .await;
    assert!(done >= 2, "validation and job tasks are done: {done}");
    sqlx::query("UPDATE work_queue SET updated_at = now() - interval '8 days' WHERE kind = 'validate_dataset'")
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(run(&app, &retention, Chore::FinishedTasks).await.removed, 1);
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) FROM work_queue WHERE status = 'done'"
        )
        .await,
        done - 1
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) FROM work_queue WHERE kind = 'maintenance'"
        )
        .await,
        6
    );

    // Job events of a job ended 91 days ago go; its metric points (the charts) stay.
    let job_sql = format!("SELECT count(*) FROM job_events WHERE job_id = '{job}'");
    let points_sql = format!("SELECT count(*) FROM metrics_points WHERE job_id = '{job}'");
    let (events, points) = (
        count(&mut conn, &job_sql).await,
        count(&mut conn, &points_sql).await,
    );
    assert!(events > 0 && points > 0);
    assert_eq!(
        run(&app, &retention, Chore::JobEvents).await.removed,
        0,
        "ended today: kept"
    );
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE training_jobs SET completed_at = now() - interval '91 days' WHERE id = '{job}'"
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        run(&app, &retention, Chore::JobEvents).await.removed,
        events as u64
    );
    assert_eq!(count(&mut conn, &job_sql).await, 0);
    assert_eq!(count(&mut conn, &points_sql).await, points);

    // Sessions, attempts, invites and idempotency keys past their time; the live session stays.
    for sql in [
        format!("INSERT INTO sessions (user_id, token_hash, expires_at) VALUES ('{user}', 'expired-hash', now() - interval '1 minute')"),
        "INSERT INTO login_attempts (email, ip, attempted_at) VALUES ('x@example.com', '203.0.113.1', now() - interval '2 days')".into(),
        "INSERT INTO login_attempts (email, ip) VALUES ('x@example.com', '203.0.113.1')".into(),
        "INSERT INTO registration_attempts (ip, attempted_at) VALUES ('203.0.113.1', now() - interval '2 days')".into(),
        "INSERT INTO invites (token_hash, expires_at) VALUES ('old-invite', now() - interval '31 days')".into(),
        "INSERT INTO invites (token_hash, expires_at) VALUES ('live-invite', now() + interval '1 day')".into(),
        format!("INSERT INTO idempotency_keys (user_id, key, fingerprint, created_at) VALUES ('{user}', 'old-key', '\\x00', now() - interval '25 hours')"),
        format!("INSERT INTO idempotency_keys (user_id, key, fingerprint) VALUES ('{user}', 'new-key', '\\x00')"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await.unwrap();
    }
    assert_eq!(run(&app, &retention, Chore::Sessions).await.removed, 5);
    assert_eq!(
        count(&mut conn, "SELECT count(*) FROM login_attempts").await,
        1
    );
    assert_eq!(count(&mut conn, "SELECT count(*) FROM invites").await, 1);
    assert_eq!(
        count(&mut conn, "SELECT count(*) FROM idempotency_keys").await,
        1
    );
    let me = app.get_json(&client, "/api/auth/me").await;
    assert_eq!(
        me["data"]["user"]["id"],
        user.to_string(),
        "the live session still works: {me}"
    );

    // An upload never confirmed: expired with its row.
    let created: Value = app
        .post(
            &client,
            "/api/datasets",
            json!({"name": "never sent", "file_name": "n.jsonl", "file_size": 100}),
        )
        .await
        .json()
        .await
        .unwrap();
    let pending = created["data"]["dataset"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        run(&app, &retention, Chore::ExpiredUploads).await.removed,
        0
    );
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE datasets SET created_at = now() - interval '3 hours' WHERE id = '{pending}'"
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        run(&app, &retention, Chore::ExpiredUploads).await.removed,
        1
    );

    // A dataset deleted two days ago whose files are still there (their removal failed).
    let gone = ready_dataset(&app, &client, "alpaca.json").await;
    let keys: (String, Option<String>) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT storage_key, normalized_key FROM datasets WHERE id = '{gone}'"
    )))
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let normalized = keys.1.clone().unwrap();
    let size = storage
        .info(Bucket::Datasets, &keys.0)
        .await
        .unwrap()
        .unwrap()
        .size
        + storage
            .info(Bucket::Datasets, &normalized)
            .await
            .unwrap()
            .unwrap()
            .size;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE datasets SET deleted_at = now() - interval '2 days' WHERE id = '{gone}'"
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    let purged = run(&app, &retention, Chore::DeletedFiles).await;
    assert_eq!((purged.removed, purged.bytes), (2, size));
    assert!(!stored(&storage, Bucket::Datasets, &keys.0).await);
    assert!(!stored(&storage, Bucket::Datasets, &normalized).await);
    assert_eq!(
        run(&app, &retention, Chore::DeletedFiles).await.removed,
        0,
        "marked purged"
    );
    // The live dataset's files are untouched.
    let live_key: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT storage_key FROM datasets WHERE id = '{dataset}'"
    )))
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(stored(&storage, Bucket::Datasets, &live_key).await);

    // Orphans: reported first, deleted by a later sweep after the grace period; young objects,
    // owned ones and keys of no scheme of ours are left alone.
    let objects = app.data_dir.path().join("objects");
    let old = std::time::SystemTime::now() - Duration::from_secs(2 * 3600);
    // Owned files are old too: judged, and kept.
    for entry in walk(&objects) {
        let _ = std::fs::File::options()
            .write(true)
            .open(&entry)
            .and_then(|f| f.set_modified(old));
    }
    let orphan_dataset = format!("{user}/{}/original.jsonl", Uuid::new_v4());
    let orphan_model = format!(
        "{user}/jobs/{}/a0/adapter_model.safetensors",
        Uuid::new_v4()
    );
    let young = format!("{user}/{}/upload.jsonl", Uuid::new_v4());
    for (bucket, key, aged) in [
        (Bucket::Datasets, &orphan_dataset, true),
        (Bucket::Models, &orphan_model, true),
        (Bucket::Datasets, &young, false),
        (Bucket::Datasets, &"notes/readme.txt".to_owned(), true),
    ] {
        storage
            .put_bytes(bucket, key, b"orphaned bytes")
            .await
            .unwrap();
        if aged {
            std::fs::File::options()
                .write(true)
                .open(objects.join(bucket.name()).join(key))
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
    }
    let first = run(&app, &retention, Chore::Orphans).await;
    assert_eq!((first.reported, first.removed), (2, 0), "{first:?}");
    let recorded: Vec<String> =
        sqlx::query_scalar("SELECT key FROM orphan_objects ORDER BY bucket, key")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(recorded, [orphan_dataset.clone(), orphan_model.clone()]);
    // Reported only: nothing deleted while ORPHAN_SWEEP=report, even past the grace period.
    sqlx::query("UPDATE orphan_objects SET found_at = now() - interval '2 days'")
        .execute(&mut conn)
        .await
        .unwrap();
    let report_only = Retention {
        delete_orphans: false,
        ..retention
    };
    assert_eq!(run(&app, &report_only, Chore::Orphans).await.removed, 0);
    assert!(stored(&storage, Bucket::Models, &orphan_model).await);
    let second = run(&app, &retention, Chore::Orphans).await;
    assert_eq!((second.reported, second.removed), (0, 2), "{second:?}");
    assert_eq!(second.bytes, 2 * b"orphaned bytes".len() as u64);
    assert!(!stored(&storage, Bucket::Datasets, &orphan_dataset).await);
    assert!(!stored(&storage, Bucket::Models, &orphan_model).await);
    assert!(stored(&storage, Bucket::Datasets, &young).await);
    assert!(stored(&storage, Bucket::Datasets, "notes/readme.txt").await);
    assert!(stored(&storage, Bucket::Datasets, &live_key).await);
    assert_eq!(
        count(&mut conn, "SELECT count(*) FROM orphan_objects").await,
        0
    );
    // The trained model still downloads, every file of it.
    let models = app.get_json(&client, "/api/models").await;
    let model = models["data"]["models"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let bundle = client
        .get(app.url(&format!("/api/models/{model}/bundle")))
        .send()
        .await
        .unwrap();
    assert_eq!(bundle.status(), 200);
    assert!(bundle.bytes().await.unwrap().len() > 1000);
}

/// Whether the object exists.
async fn stored(storage: &engine::storage::Storage, bucket: Bucket, key: &str) -> bool {
    storage.info(bucket, key).await.unwrap().is_some()
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
