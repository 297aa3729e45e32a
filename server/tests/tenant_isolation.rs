//! Row-level security at the SQL level: even a query without its `user_id` filter sees only the
//! caller's rows, and with no caller set it sees nothing.

mod common;

use common::TestApp;
use uuid::Uuid;

/// Tables that must count as tenant tables; [`tenant_tables`] reads the full list from the
/// catalog and checks it holds at least these, so a broken catalog query cannot pass vacuously.
const KNOWN_TENANT_TABLES: [&str; 14] = [
    "users",
    "sessions",
    "api_tokens",
    "datasets",
    "training_jobs",
    "metrics_points",
    "job_events",
    "model_artifacts",
    "cost_records",
    "notifications",
    "work_queue",
    "idempotency_keys",
    "webhooks",
    "webhook_deliveries",
];

/// The tables that hold tenant rows, read from the catalog as `lora-pipeline verify` reads them
/// (every table with a `user_id` column, and `users`), checked to hold at least the known ones.
async fn tenant_tables(pool: &sqlx::PgPool) -> Vec<String> {
    let tables: Vec<String> = engine::operations::verify::tenant_tables(pool)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.table)
        .collect();
    for known in KNOWN_TENANT_TABLES {
        assert!(
            tables.iter().any(|t| t == known),
            "{known} is missing from the tenant tables read from the catalog: {tables:?}"
        );
    }
    tables
}

async fn insert_dataset(app: &TestApp, user: Uuid, name: &str) -> Uuid {
    let mut tx = app.db.tenant(user).await.unwrap();
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO datasets (user_id, name, file_name, file_size, storage_key)
         VALUES ($1, $2, 'x.jsonl', 10, 'k') RETURNING id",
    )
    .bind(user)
    .bind(name)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO notifications (user_id, type, title, message) VALUES ($1, 'dataset_ready', $2, 'm')",
    )
    .bind(user)
    .bind(name)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    id
}

#[tokio::test]
async fn migrations_enable_and_force_rls_on_every_tenant_table() {
    let app = TestApp::spawn().await;
    let tables = tenant_tables(app.db.pool()).await;
    let rows: Vec<(String, bool, bool)> = sqlx::query_as(
        "SELECT relname::text, relrowsecurity, relforcerowsecurity FROM pg_class
          WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p')",
    )
    .fetch_all(app.db.pool())
    .await
    .unwrap();
    for table in &tables {
        let row = rows
            .iter()
            .find(|r| r.0 == *table)
            .unwrap_or_else(|| panic!("{table} exists"));
        assert!(row.1 && row.2, "{table}: RLS enabled and forced");
    }
    // The app's role is not privileged, so the policies bind it.
    let (superuser, bypass): (bool, bool) =
        sqlx::query_as("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
            .fetch_one(app.db.pool())
            .await
            .unwrap();
    assert!(!superuser && !bypass);
}

#[tokio::test]
async fn a_query_without_its_filter_still_sees_only_the_callers_rows() {
    let app = TestApp::spawn().await;
    let (_, alice) = app.signed_in_user("alice@example.com").await;
    let (_, bob) = app.signed_in_user("bob@example.com").await;
    let alice_set = insert_dataset(&app, alice, "alice data").await;
    let bob_set = insert_dataset(&app, bob, "bob data").await;

    let mut tx = app.db.tenant(alice).await.unwrap();
    // Deliberately no WHERE user_id = … in any of these.
    let names: Vec<String> = sqlx::query_scalar("SELECT name FROM datasets")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(names, vec!["alice data"]);
    let by_id: Option<String> = sqlx::query_scalar("SELECT name FROM datasets WHERE id = $1")
        .bind(bob_set)
        .fetch_optional(&mut *tx)
        .await
        .unwrap();
    assert_eq!(by_id, None, "bob's dataset by id is invisible to alice");
    let users: Vec<String> = sqlx::query_scalar("SELECT email FROM users")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(users, vec!["alice@example.com"]);
    let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(sessions, 1);
    let notes: Vec<String> = sqlx::query_scalar("SELECT title FROM notifications")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(notes, vec!["alice data"]);

    // Writes are fenced too: alice cannot change or delete bob's rows, nor insert rows as bob.
    let changed = sqlx::query("UPDATE datasets SET name = 'pwned'")
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(changed.rows_affected(), 1, "only alice's own row");
    let deleted = sqlx::query("DELETE FROM datasets WHERE id = $1")
        .bind(bob_set)
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(deleted.rows_affected(), 0);
    let forged = sqlx::query(
        "INSERT INTO datasets (user_id, name, file_name, file_size, storage_key) VALUES ($1, 'x', 'x', 1, 'k')",
    )
    .bind(bob)
    .execute(&mut *tx)
    .await;
    assert!(
        forged.is_err(),
        "inserting a row for another tenant violates the policy"
    );
    tx.rollback().await.unwrap();

    let mut tx = app.db.tenant(bob).await.unwrap();
    let names: Vec<String> = sqlx::query_scalar("SELECT name FROM datasets")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(names, vec!["bob data"]);
    let _ = alice_set;
}

#[tokio::test]
async fn with_no_caller_every_tenant_table_reads_empty() {
    let app = TestApp::spawn().await;
    let (_, alice) = app.signed_in_user("carol@example.com").await;
    insert_dataset(&app, alice, "carol data").await;
    for table in tenant_tables(app.db.pool()).await {
        let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM \"{table}\""
        )))
        .fetch_one(app.db.pool())
        .await
        .unwrap();
        assert_eq!(count, 0, "{table} without app.user_id");
    }
    // The system scope (auth lookups, workers) sees everything, by explicit choice.
    let mut tx = app.db.system().await.unwrap();
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM datasets")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(count, 1);
}

#[tokio::test]
async fn migrations_apply_to_an_empty_database_and_are_idempotent() {
    let options = common::empty_database().await;
    let db = engine::db::Db::connect(options, 2).await.unwrap();
    assert!(!db.migrations_current().await.unwrap_or(false));
    db.migrate().await.unwrap();
    assert!(db.migrations_current().await.unwrap());
    db.migrate().await.unwrap();
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename <> '_sqlx_migrations'",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(
        tables, 18,
        "14 tenant tables (webhooks and webhook_deliveries the latest) + login_attempts + invites + registration_attempts + orphan_objects"
    );
}

#[tokio::test]
async fn a_superuser_connection_is_refused() {
    let error = engine::db::Db::connect(common::admin_options(), 1)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("superuser"), "{error}");
}

/// The tenant is set per transaction (`set_config(…, true)`), never per connection: on a pool of
/// one connection, a plain query right after a tenant's transaction — committed, rolled back,
/// or dropped mid-way — and after a system-scope one sees no tenant rows at all.
#[tokio::test]
async fn a_pooled_connection_keeps_no_tenant_between_transactions() {
    let app = TestApp::spawn().await;
    let (_, alice) = app.signed_in_user("pooled@example.com").await;
    insert_dataset(&app, alice, "alice's").await;
    let db = engine::db::Db::connect(app.options.clone(), 1)
        .await
        .unwrap();
    let plain = |db: engine::db::Db| async move {
        let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM datasets")
            .fetch_one(db.pool())
            .await
            .unwrap();
        let scope: Option<String> =
            sqlx::query_scalar("SELECT nullif(current_setting('app.user_id', true), '')")
                .fetch_one(db.pool())
                .await
                .unwrap();
        (seen, scope)
    };
    assert_eq!(plain(db.clone()).await, (0, None), "before any tenant");

    let mut tx = db.tenant(alice).await.unwrap();
    let own: i64 = sqlx::query_scalar("SELECT count(*) FROM datasets")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(own, 1, "the tenant sees its row");
    tx.commit().await.unwrap();
    assert_eq!(plain(db.clone()).await, (0, None), "after a commit");

    let mut tx = db.tenant(alice).await.unwrap();
    sqlx::query("SELECT count(*) FROM datasets")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(plain(db.clone()).await, (0, None), "after a rollback");

    let mut tx = db.tenant(alice).await.unwrap();
    sqlx::query("SELECT count(*) FROM datasets")
        .execute(&mut *tx)
        .await
        .unwrap();
    drop(tx);
    assert_eq!(
        plain(db.clone()).await,
        (0, None),
        "after a dropped transaction"
    );

    let mut tx = db.system().await.unwrap();
    let all: i64 = sqlx::query_scalar("SELECT count(*) FROM datasets")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert!(all >= 1, "the system scope sees every row");
    tx.commit().await.unwrap();
    assert_eq!(plain(db).await, (0, None), "after the system scope");
}
