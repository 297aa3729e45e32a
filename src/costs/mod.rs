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
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            monthly_budget: 100.0,
            max_active_jobs: 3,
            max_job_budget: 50.0,
            cap_margin: 1.5,
        }
    }
}

/// What a cost record is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
        assert_eq!(CostType::parse("storage"), Some(CostType::Storage));
    }
}
