//! Postgres access: one pool, and transactions that carry the caller for row-level security.
//!
//! Every tenant query runs inside [`Db::tenant`]; Postgres then hides other tenants' rows even
//! if a query forgot its `user_id` filter. Work that is not done for one tenant (looking up a
//! session, leasing queue rows) runs inside [`Db::system`], which is greppable and rare.

pub mod managed;

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

/// The migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub type Tx = Transaction<'static, Postgres>;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("could not connect to PostgreSQL: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("could not inspect the database role: {0}")]
    Inspect(#[source] sqlx::Error),
    #[error(
        "the database role '{0}' is a superuser or has BYPASSRLS, which would switch off tenant \
         isolation. Connect as an ordinary role that owns the database, e.g.: CREATE ROLE lora_app \
         LOGIN PASSWORD '…'; CREATE DATABASE lora_pipeline OWNER lora_app;"
    )]
    PrivilegedRole(String),
}

#[derive(Clone, Debug)]
pub struct Db {
    pool: PgPool,
}

impl Db {
    /// Opens the pool and refuses a role that row-level security would not bind.
    pub async fn connect(
        options: PgConnectOptions,
        max_connections: u32,
    ) -> Result<Self, ConnectError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(ConnectError::Connect)?;
        let inspected = sqlx::query!(
            r#"SELECT rolname::text AS "role!", (rolsuper OR rolbypassrls) AS "privileged!"
                 FROM pg_roles WHERE rolname = current_user"#
        )
        .fetch_one(&pool)
        .await
        .map_err(ConnectError::Inspect)?;
        let (role, privileged) = (inspected.role, inspected.privileged);
        if privileged {
            return Err(ConnectError::PrivilegedRole(role));
        }
        Ok(Self { pool })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        MIGRATOR.run(&self.pool).await
    }

    /// True when every embedded migration has been applied successfully (for `/readyz`).
    pub async fn migrations_current(&self) -> Result<bool, sqlx::Error> {
        Ok(crate::operations::verify::pending_migrations(&self.pool)
            .await?
            .is_empty())
    }

    /// A transaction acting for one tenant: row-level security shows only their rows.
    pub async fn tenant(&self, user_id: Uuid) -> Result<Tx, sqlx::Error> {
        // One round trip: the statement that opens the transaction also names the tenant (a
        // UUID's text is hex digits and dashes, nothing to escape).
        self.pool
            .begin_with(sqlx::AssertSqlSafe(format!(
                "BEGIN; SELECT set_config('app.user_id', '{user_id}', true)"
            )))
            .await
    }

    /// A transaction acting for the platform itself (auth lookups, background workers).
    pub async fn system(&self) -> Result<Tx, sqlx::Error> {
        self.pool
            .begin_with("BEGIN; SELECT set_config('app.scope', 'system', true)")
            .await
    }

    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query_scalar!(r#"SELECT 1 AS "one!""#)
            .fetch_one(&self.pool)
            .await
            .map(|_| ())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}
