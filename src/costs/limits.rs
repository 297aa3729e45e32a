//! Spending limits, checked in the transaction that inserts (or restarts) a job, after taking
//! the account's advisory lock: parallel requests are decided one after another, so they
//! cannot pass a limit together.

use uuid::Uuid;

use super::Limits;
use crate::db::Tx;
use crate::format::money;
use crate::jobs::JobStatus;

/// What the account has committed this month.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spending {
    pub budget: f64,
    /// Recorded this calendar month (UTC).
    pub spent: f64,
    /// Held by active jobs: their caps (or estimates).
    pub reserved: f64,
    pub active_jobs: i64,
}

/// Locks the account's limits for this transaction and reads where it stands.
pub async fn spending(tx: &mut Tx, user: Uuid, limits: &Limits) -> Result<Spending, sqlx::Error> {
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended('limits:' || $1, 0))",
        user.to_string()
    )
    .fetch_one(&mut **tx)
    .await?;
    let row = sqlx::query!(
        r#"SELECT (SELECT monthly_budget::float8 FROM users WHERE id = $1) AS budget,
                  (SELECT COALESCE(sum(amount), 0)::float8 FROM cost_records
                    WHERE user_id = $1 AND created_at >= date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC') AS "spent!",
                  (SELECT COALESCE(sum(COALESCE(budget_cap, estimated_total_cost, 0)), 0)::float8 FROM training_jobs
                    WHERE user_id = $1 AND status = ANY($2)) AS "reserved!",
                  (SELECT count(*) FROM training_jobs WHERE user_id = $1 AND status = ANY($2)) AS "active!""#,
        user,
        &JobStatus::names(JobStatus::ACTIVE)
    )
    .fetch_one(&mut **tx)
    .await?;
    Ok(Spending {
        budget: row.budget.unwrap_or(limits.monthly_budget),
        spent: row.spent,
        reserved: row.reserved,
        active_jobs: row.active,
    })
}

/// Whether one more job that may cost up to `cap` fits; the refusal says why, with numbers.
pub fn admit(s: &Spending, limits: &Limits, cap: f64) -> Result<(), String> {
    if s.active_jobs >= i64::from(limits.max_active_jobs) {
        return Err(format!(
            "You have {} jobs queued or running; the limit is {}. Wait for one to finish, or cancel one.",
            s.active_jobs, limits.max_active_jobs
        ));
    }
    if s.spent + s.reserved + cap > s.budget + 1e-9 {
        return Err(format!(
            "This job may cost up to {}; with {} spent this month and {} held by your running jobs, that passes your monthly budget of {}. Raise your budget, or lower the job's budget cap.",
            money(cap),
            money(s.spent),
            money(s.reserved),
            money(s.budget)
        ));
    }
    Ok(())
}

/// Sets the account's own monthly budget (`None`: the operator's default).
pub async fn set_budget(tx: &mut Tx, user: Uuid, budget: Option<f64>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE users SET monthly_budget = $2::float8::numeric WHERE id = $1",
        user,
        budget
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_fits_the_budget_or_is_refused_with_the_numbers() {
        let limits = Limits::default();
        let s = Spending {
            budget: 10.0,
            spent: 6.0,
            reserved: 2.0,
            active_jobs: 1,
        };
        assert_eq!(admit(&s, &limits, 2.0), Ok(()));
        let refused = admit(&s, &limits, 2.5).unwrap_err();
        assert!(
            refused.contains("up to $2.50")
                && refused.contains("$6.00 spent")
                && refused.contains("budget of $10.00"),
            "{refused}"
        );
        let busy = Spending {
            active_jobs: 3,
            ..s
        };
        assert!(
            admit(&busy, &limits, 0.0)
                .unwrap_err()
                .contains("the limit is 3")
        );
    }
}
