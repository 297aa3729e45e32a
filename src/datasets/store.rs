use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::db::Tx;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DatasetSummaryRow {
    pub id: Uuid,
    pub name: String,
    pub status: String,
    pub file_size: i64,
    pub created_at: DateTime<Utc>,
}

/// The caller's datasets, newest first (soft-deleted ones excluded).
pub async fn list(tx: &mut Tx, user_id: Uuid) -> Result<Vec<DatasetSummaryRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, name, status, file_size, created_at FROM datasets
          WHERE user_id = $1 AND deleted_at IS NULL ORDER BY created_at DESC LIMIT 200",
    )
    .bind(user_id)
    .fetch_all(&mut **tx)
    .await
}
