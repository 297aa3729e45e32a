//! Cost records (`cost_records`, unique per job and type).

use uuid::Uuid;

use super::{CostType, JobCostRecord, storage_cost};
use crate::db::Tx;

/// Records what an attempt of a job cost, in the transaction that ends it: the compute record
/// grows by this attempt's billed cost (a retry's attempts add up), and the storage record is
/// set to the job's dataset and adapter files for a month. Written at any amount, zero
/// included, so every ended job has its records. Exactly once per ending, because the caller's
/// ending happens once (`store::end` changes only an active job).
pub async fn record_ending(tx: &mut Tx, job: Uuid) -> Result<(), sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT j.user_id, j.gpu_type, j.gpu_count, j.execution_ms,
                  COALESCE(j.final_cost, j.current_cost)::float8 AS "cost!",
                  d.file_size AS dataset_bytes,
                  (SELECT COALESCE(sum((f->>'size')::bigint), 0)
                     FROM model_artifacts a, jsonb_array_elements(a.files) f
                    WHERE a.job_id = j.id)::bigint AS "model_bytes!"
             FROM training_jobs j JOIN datasets d ON d.id = j.dataset_id
            WHERE j.id = $1"#,
        job
    )
    .fetch_one(&mut **tx)
    .await?;
    let seconds = row.execution_ms.unwrap_or(0).max(0) as f64 / 1000.0;
    let rate = if seconds > 0.0 {
        row.cost / seconds
    } else {
        0.0
    };
    sqlx::query!(
        "INSERT INTO cost_records (user_id, job_id, cost_type, amount, gpu_type, gpu_count, seconds, rate_per_s, billing_date)
         VALUES ($1, $2, $3, $4::float8::numeric, $5, $6, $7, $8::float8::numeric, current_date)
         ON CONFLICT (job_id, cost_type) DO UPDATE
            SET amount = cost_records.amount + EXCLUDED.amount,
                seconds = COALESCE(cost_records.seconds, 0) + EXCLUDED.seconds,
                rate_per_s = EXCLUDED.rate_per_s, billing_date = EXCLUDED.billing_date",
        row.user_id,
        job,
        CostType::Compute.as_str(),
        row.cost.max(0.0),
        row.gpu_type,
        row.gpu_count,
        seconds,
        rate
    )
    .execute(&mut **tx)
    .await?;
    let bytes = row.dataset_bytes.max(0) as u64 + row.model_bytes.max(0) as u64;
    sqlx::query!(
        "INSERT INTO cost_records (user_id, job_id, cost_type, amount, billing_date)
         VALUES ($1, $2, $3, $4::float8::numeric, current_date)
         ON CONFLICT (job_id, cost_type) DO UPDATE
            SET amount = EXCLUDED.amount, billing_date = EXCLUDED.billing_date",
        row.user_id,
        job,
        CostType::Storage.as_str(),
        storage_cost(bytes as f64)
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A job's cost records, by type.
pub async fn for_job(tx: &mut Tx, job: Uuid) -> Result<Vec<JobCostRecord>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT id, cost_type, amount::float8 AS "amount!", gpu_type, gpu_count, seconds,
                  rate_per_s::float8 AS rate_per_s, billing_date, created_at
             FROM cost_records WHERE job_id = $1 ORDER BY cost_type"#,
        job
    )
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        // The column's CHECK allows only the known types.
        .filter_map(|r| {
            Some(JobCostRecord {
                id: r.id,
                cost_type: CostType::parse(&r.cost_type)?,
                amount: r.amount,
                gpu_type: r.gpu_type,
                gpu_count: r.gpu_count,
                seconds: r.seconds,
                rate_per_s: r.rate_per_s,
                billing_date: r.billing_date,
                created_at: r.created_at,
            })
        })
        .collect())
}
