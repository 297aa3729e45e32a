//! What `lora-pipeline verify` reads from the database: the role the platform connects as, the
//! migrations, and row-level security on every tenant table. Works on a bare pool, so a
//! superuser connection can be inspected (and reported) rather than refused.

use sqlx::PgPool;

/// The connecting role's privileges.
#[derive(Debug, Clone)]
pub struct Role {
    pub name: String,
    pub superuser: bool,
    pub bypass_rls: bool,
}

/// Row-level security of one tenant table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSecurity {
    pub table: String,
    /// `ALTER TABLE … ENABLE ROW LEVEL SECURITY`.
    pub enabled: bool,
    /// `ALTER TABLE … FORCE ROW LEVEL SECURITY`: the owner (our role) is bound too.
    pub forced: bool,
}

pub async fn role(pool: &PgPool) -> Result<Role, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT rolname::text AS "name!", rolsuper AS "superuser!", rolbypassrls AS "bypass!"
             FROM pg_roles WHERE rolname = current_user"#
    )
    .fetch_one(pool)
    .await?;
    Ok(Role {
        name: row.name,
        superuser: row.superuser,
        bypass_rls: row.bypass,
    })
}

/// The tables that hold tenant rows, from the catalog: every table in `public` with a live
/// `user_id` column, plus `users` itself (its rows are keyed by `id`). A table a later migration
/// adds with a `user_id` is covered without anyone remembering to list it.
pub async fn tenant_tables(pool: &PgPool) -> Result<Vec<TableSecurity>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT c.relname::text AS "table!", c.relrowsecurity AS "enabled!",
                  c.relforcerowsecurity AS "forced!"
             FROM pg_class c
            WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
              AND (c.relname = 'users' OR EXISTS (
                    SELECT 1 FROM pg_attribute a
                     WHERE a.attrelid = c.oid AND a.attname = 'user_id'
                       AND a.attnum > 0 AND NOT a.attisdropped))
            ORDER BY 1"#
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| TableSecurity {
            table: r.table,
            enabled: r.enabled,
            forced: r.forced,
        })
        .collect())
}

/// Versions of the embedded migrations not yet applied (all of them on an empty database).
pub async fn pending_migrations(pool: &PgPool) -> Result<Vec<i64>, sqlx::Error> {
    let table: Option<String> = sqlx::query_scalar!("SELECT to_regclass('_sqlx_migrations')::text")
        .fetch_one(pool)
        .await?;
    let applied: Vec<i64> = if table.is_some() {
        sqlx::query_scalar!("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(pool)
            .await?
    } else {
        Vec::new()
    };
    Ok(crate::db::MIGRATOR
        .iter()
        .map(|m| m.version)
        .filter(|v| !applied.contains(v))
        .collect())
}
