//! Costs: what a job cost, recorded once per job and type when it ends — compute (the billed
//! execution time at the GPU's rate) and storage (its dataset and adapter files for a month).
//! The live cost on the monitor page and the recorded one come from [`compute_cost`].

use serde::{Deserialize, Serialize};

use crate::training::GpuType;

#[cfg(feature = "ssr")]
pub mod limits;
pub mod report;
#[cfg(feature = "ssr")]
pub mod store;

/// S3 standard storage, dollars per GB-month (the estimate's storage line uses it too).
pub const STORAGE_PER_GB_MONTH: f64 = 0.023;

/// The operator's spending limits per account (`[limits]` in the catalog file).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Dollars an account may spend in a calendar month (UTC) unless it sets its own budget.
    pub monthly_budget: f64,
    /// Jobs queued or running at once per account.
    pub max_active_jobs: u32,
    /// The largest budget cap one job may have.
    pub max_job_budget: f64,
    /// A job on a paid GPU without a cap gets the high estimate × this as its cap.
    pub cap_margin: f64,
    /// Gigabytes of dataset and model files an account may keep (uploads count from the
    /// moment their dataset is created).
    pub max_storage_gb: f64,
    /// Datasets an account may keep.
    pub max_datasets: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            monthly_budget: 100.0,
            max_active_jobs: 3,
            max_job_budget: 50.0,
            cap_margin: 1.5,
            max_storage_gb: 50.0,
            max_datasets: 200,
        }
    }
}

/// The share of the monthly budget at which the owner is warned (and the overview turns amber).
pub const WARN_SHARE: f64 = 0.8;

/// An account's month against its budget (`GET /api/account/budget`, Settings, the overview).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct BudgetView {
    /// Dollars this month may cost: the account's own budget or the operator's default.
    pub monthly_budget: f64,
    /// Whether the account set `monthly_budget` itself.
    pub own_budget: bool,
    /// The operator's default monthly budget.
    pub default_budget: f64,
    /// Recorded since the first of the month in the account's time zone.
    pub spent_this_month: f64,
    /// What queued and running jobs may still cost (their caps, or estimates).
    pub reserved_by_active_jobs: f64,
    pub active_jobs: i64,
    pub max_active_jobs: u32,
    pub max_job_budget: f64,
    /// The account's IANA time zone: its days and its month.
    pub time_zone: String,
    pub month_start: chrono::NaiveDate,
}

impl BudgetView {
    /// The share of the budget spent (0 when the budget is 0 and nothing was spent).
    pub fn spent_share(&self) -> f64 {
        if self.monthly_budget > 0.0 {
            self.spent_this_month / self.monthly_budget
        } else if self.spent_this_month > 0.0 {
            1.0
        } else {
            0.0
        }
    }
}

/// The cap a job on a paid GPU gets when none is asked for (the Train page prefills it): the
/// high estimate × the operator's margin, in whole cents rounded up, at most the largest cap.
pub fn default_cap(high_estimate: f64, limits: &Limits) -> f64 {
    let cents = (high_estimate * limits.cap_margin * 100.0).ceil() / 100.0;
    cents.clamp(0.01, limits.max_job_budget.max(0.01))
}

/// What a cost record is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CostType {
    Compute,
    Storage,
    Transfer,
}

crate::jobs::lifecycle::text_enum!(CostType {
    Compute => "compute",
    Storage => "storage",
    Transfer => "transfer",
});

/// One cost record of a job, as `GET /api/jobs/{id}` lists them (the original's `cost_records`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct JobCostRecord {
    pub id: uuid::Uuid,
    pub cost_type: CostType,
    pub amount: f64,
    pub gpu_type: Option<String>,
    pub gpu_count: Option<i32>,
    pub seconds: Option<f64>,
    pub rate_per_s: Option<f64>,
    pub billing_date: chrono::NaiveDate,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Dollars for `execution_ms` of billed execution on `gpu_count` GPUs of `gpu` (RunPod bills
/// per second of execution; the local executor's rate is the operator's, 0 by default).
pub fn compute_cost(execution_ms: u64, gpu: Option<&GpuType>, gpu_count: i32) -> f64 {
    let rate = gpu.map_or(0.0, |g| g.price_per_second) * f64::from(gpu_count.max(1));
    execution_ms as f64 / 1000.0 * rate
}

/// Dollars for keeping `bytes` in object storage for a month.
pub fn storage_cost(bytes: f64) -> f64 {
    bytes / 1e9 * STORAGE_PER_GB_MONTH
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compute_is_billed_seconds_times_rate_times_gpus() {
        let catalog = crate::training::Catalog::builtin();
        let l4 = catalog.gpu("L4");
        let rate = l4.unwrap().price_per_second;
        assert!((compute_cost(90_500, l4, 1) - 90.5 * rate).abs() < 1e-12);
        assert!((compute_cost(90_500, l4, 2) - 181.0 * rate).abs() < 1e-12);
        assert_eq!(compute_cost(90_500, catalog.gpu("local"), 1), 0.0);
        assert_eq!(compute_cost(1000, None, 1), 0.0);
        assert!((storage_cost(2e9) - 0.046).abs() < 1e-12);
        let limits = Limits::default();
        assert_eq!(
            default_cap(2.001, &limits),
            3.01,
            "1.5 × the high estimate, cents up"
        );
        assert_eq!(default_cap(40.0, &limits), 50.0, "at most the largest cap");
        assert_eq!(default_cap(0.0, &limits), 0.01);
        assert_eq!(CostType::parse("storage"), Some(CostType::Storage));
    }
}
