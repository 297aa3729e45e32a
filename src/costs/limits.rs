//! Spending limits, checked in the transaction that inserts (or restarts) a job, after taking
//! the account's advisory lock: parallel requests are decided one after another, so they
//! cannot pass a limit together.

use chrono::NaiveDate;
use uuid::Uuid;

use super::{BudgetView, Limits};
use crate::db::Tx;
use crate::format::money;
use crate::jobs::JobStatus;
use crate::notifications::{self, NewNotification, NotificationKind, Priority};
use crate::validation::FieldErrors;

/// What the account has committed this month.
#[derive(Debug, Clone, PartialEq)]
pub struct Spending {
    pub budget: f64,
    /// Whether `budget` is the account's own (otherwise the operator's default).
    pub own_budget: bool,
    /// Recorded this calendar month (in the account's time zone).
    pub spent: f64,
    /// Held by active jobs: their caps (or estimates).
    pub reserved: f64,
    pub active_jobs: i64,
    pub time_zone: String,
    /// The first day of the account's current month.
    pub month_start: NaiveDate,
}

impl Spending {
    /// What the Settings page, the overview and `GET /api/account/budget` show.
    pub fn view(&self, limits: &Limits) -> BudgetView {
        BudgetView {
            monthly_budget: self.budget,
            own_budget: self.own_budget,
            default_budget: limits.monthly_budget,
            spent_this_month: self.spent,
            reserved_by_active_jobs: self.reserved,
            active_jobs: self.active_jobs,
            max_active_jobs: limits.max_active_jobs,
            max_job_budget: limits.max_job_budget,
            time_zone: self.time_zone.clone(),
            month_start: self.month_start,
        }
    }
}

/// Locks the account's limits for this transaction and reads where it stands.
pub async fn spending(tx: &mut Tx, user: Uuid, limits: &Limits) -> Result<Spending, sqlx::Error> {
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended('limits:' || $1, 0))",
        user.to_string()
    )
    .fetch_one(&mut **tx)
    .await?;
    read_spending(tx, user, limits).await
}

/// Where the account stands this month, without locking (for showing it).
pub async fn read_spending(
    tx: &mut Tx,
    user: Uuid,
    limits: &Limits,
) -> Result<Spending, sqlx::Error> {
    // The month is the account's calendar month, in its own time zone.
    let row = sqlx::query!(
        r#"SELECT u.monthly_budget::float8 AS budget, u.time_zone,
                  date_trunc('month', now() AT TIME ZONE u.time_zone)::date AS "month_start!",
                  (SELECT COALESCE(sum(c.amount), 0)::float8 FROM cost_records c
                    WHERE c.user_id = u.id
                      AND c.created_at >= date_trunc('month', now() AT TIME ZONE u.time_zone) AT TIME ZONE u.time_zone) AS "spent!",
                  (SELECT COALESCE(sum(COALESCE(budget_cap, estimated_total_cost, 0)), 0)::float8 FROM training_jobs
                    WHERE user_id = u.id AND status = ANY($2)) AS "reserved!",
                  (SELECT count(*) FROM training_jobs WHERE user_id = u.id AND status = ANY($2)) AS "active!"
             FROM users u WHERE u.id = $1"#,
        user,
        &JobStatus::names(JobStatus::ACTIVE)
    )
    .fetch_one(&mut **tx)
    .await?;
    Ok(Spending {
        budget: row.budget.unwrap_or(limits.monthly_budget),
        own_budget: row.budget.is_some(),
        spent: row.spent,
        reserved: row.reserved,
        active_jobs: row.active,
        time_zone: row.time_zone,
        month_start: row.month_start,
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

/// A share of the month's budget the owner is told about, once per month each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetLevel {
    /// 80% spent.
    Warning,
    /// All of it spent.
    Exceeded,
}

impl BudgetLevel {
    /// The highest level `spent` has reached (nothing spent, nothing to say — a zero budget
    /// included).
    pub fn reached(spent: f64, budget: f64) -> Option<Self> {
        if spent <= 0.0 {
            None
        } else if spent >= budget - 1e-9 {
            Some(Self::Exceeded)
        } else if spent >= budget * super::WARN_SHARE - 1e-9 {
            Some(Self::Warning)
        } else {
            None
        }
    }
}

/// After a cost was recorded (in the same transaction): tells the owner when the month's
/// recorded spend reaches 80% and then 100% of the budget — once each per month of the
/// account's time zone. The month is claimed on the account's row, so a second ending (on
/// another replica) waits for this one and then finds it claimed. Reaching 100% at once also
/// claims the 80% alert: one notification, not two.
pub async fn alert_thresholds(tx: &mut Tx, user: Uuid, limits: &Limits) -> Result<(), sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT COALESCE(u.monthly_budget::float8, $2) AS "budget!",
                  (date_trunc('month', now() AT TIME ZONE u.time_zone))::date AS "month!",
                  (SELECT COALESCE(sum(c.amount), 0)::float8 FROM cost_records c
                    WHERE c.user_id = u.id
                      AND c.created_at >= date_trunc('month', now() AT TIME ZONE u.time_zone) AT TIME ZONE u.time_zone) AS "spent!"
             FROM users u WHERE u.id = $1"#,
        user,
        limits.monthly_budget
    )
    .fetch_one(&mut **tx)
    .await?;
    let Some(level) = BudgetLevel::reached(row.spent, row.budget) else {
        return Ok(());
    };
    let claimed = match level {
        BudgetLevel::Exceeded => {
            sqlx::query_scalar!(
                "UPDATE users SET budget_exceeded_month = $2, budget_warned_month = $2
              WHERE id = $1 AND budget_exceeded_month IS DISTINCT FROM $2 RETURNING id",
                user,
                row.month
            )
            .fetch_optional(&mut **tx)
            .await?
        }
        BudgetLevel::Warning => {
            sqlx::query_scalar!(
                "UPDATE users SET budget_warned_month = $2
              WHERE id = $1 AND budget_warned_month IS DISTINCT FROM $2
                AND budget_exceeded_month IS DISTINCT FROM $2 RETURNING id",
                user,
                row.month
            )
            .fetch_optional(&mut **tx)
            .await?
        }
    };
    if claimed.is_none() {
        return Ok(());
    }
    let percent = (row.spent / row.budget.max(1e-9) * 100.0).min(999.0);
    let (kind, title, message, priority) = match level {
        BudgetLevel::Warning => (
            NotificationKind::BudgetWarning,
            "80% of this month's budget spent".to_owned(),
            format!(
                "{} of your {} monthly budget is spent ({percent:.0}%). New jobs that would pass it are refused; raise the budget on Settings if you need more.",
                money(row.spent),
                money(row.budget)
            ),
            Priority::Medium,
        ),
        BudgetLevel::Exceeded => (
            NotificationKind::BudgetExceeded,
            "This month's budget is spent".to_owned(),
            format!(
                "{} spent of your {} monthly budget. No new job can start this month until you raise the budget on Settings.",
                money(row.spent),
                money(row.budget)
            ),
            Priority::High,
        ),
    };
    notifications::create(
        tx,
        user,
        NewNotification {
            kind,
            title: &title,
            message: &message,
            priority,
            action_url: Some("/costs"),
            metadata: serde_json::json!({
                "month": row.month,
                "spent": row.spent,
                "budget": row.budget,
            }),
        },
    )
    .await?;
    Ok(())
}

/// The largest monthly budget an account may set.
pub const MAX_MONTHLY_BUDGET: f64 = 1_000_000.0;

/// Checks a monthly budget an account asks for (`None`: the operator's default).
pub fn check_budget(budget: Option<f64>) -> Result<(), FieldErrors> {
    match budget {
        Some(b) if !(b.is_finite() && (0.0..=MAX_MONTHLY_BUDGET).contains(&b)) => {
            Err(FieldErrors::single(
                "monthly_budget",
                "Use an amount from $0 to $1,000,000, or leave it empty for the server's default.",
            ))
        }
        _ => Ok(()),
    }
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

/// The account's time zone and today's date there.
pub async fn time_zone(tx: &mut Tx, user: Uuid) -> Result<(String, NaiveDate), sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT time_zone, (now() AT TIME ZONE time_zone)::date AS "today!" FROM users WHERE id = $1"#,
        user
    )
    .fetch_one(&mut **tx)
    .await?;
    Ok((row.time_zone, row.today))
}

/// Keeps `tz` as the account's time zone if PostgreSQL knows it; today's date there, or
/// `None` for a name that is not a zone.
pub async fn set_time_zone(
    tx: &mut Tx,
    user: Uuid,
    tz: &str,
) -> Result<Option<NaiveDate>, sqlx::Error> {
    if tz.len() > 64 {
        return Ok(None);
    }
    sqlx::query_scalar!(
        r#"WITH zone AS (SELECT name, (now() AT TIME ZONE name)::date AS today
                           FROM pg_timezone_names WHERE name = $2),
                kept AS (UPDATE users SET time_zone = zone.name FROM zone
                          WHERE users.id = $1 AND users.time_zone <> zone.name)
           SELECT today AS "today!" FROM zone"#,
        user,
        tz
    )
    .fetch_optional(&mut **tx)
    .await
}

/// What to say about a time zone PostgreSQL does not know (at most 64 characters of it).
pub fn zone_error(tz: &str) -> String {
    let shown: String = tz.chars().take(64).collect();
    format!("{shown} is not a time zone; use a name such as Europe/Paris or UTC.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_fits_the_budget_or_is_refused_with_the_numbers() {
        let limits = Limits::default();
        let s = Spending {
            budget: 10.0,
            own_budget: true,
            spent: 6.0,
            reserved: 2.0,
            active_jobs: 1,
            time_zone: "UTC".into(),
            month_start: "2026-12-01".parse().unwrap(),
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
            ..s.clone()
        };
        assert!(
            admit(&busy, &limits, 0.0)
                .unwrap_err()
                .contains("the limit is 3")
        );
    }

    #[test]
    fn budget_levels_start_at_80_and_100_percent() {
        assert_eq!(BudgetLevel::reached(0.0, 10.0), None);
        assert_eq!(BudgetLevel::reached(7.99, 10.0), None);
        assert_eq!(BudgetLevel::reached(8.0, 10.0), Some(BudgetLevel::Warning));
        assert_eq!(BudgetLevel::reached(9.99, 10.0), Some(BudgetLevel::Warning));
        assert_eq!(
            BudgetLevel::reached(10.0, 10.0),
            Some(BudgetLevel::Exceeded)
        );
        assert_eq!(BudgetLevel::reached(0.0, 0.0), None, "nothing spent");
        assert_eq!(BudgetLevel::reached(0.01, 0.0), Some(BudgetLevel::Exceeded));
    }
}
