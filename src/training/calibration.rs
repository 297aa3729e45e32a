//! Calibrating the catalog's throughput from finished jobs: the worker reports the tokens/s it
//! measured, the processor stores it on the job, and every few minutes each replica recomputes
//! the medians and swaps in a calibrated catalog (see [`Catalog::calibrated`]).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;

use super::{Catalog, Measurement, Quantization};
use crate::db::Db;

/// The catalog in use now; cheap to clone, shared by every request.
#[derive(Clone)]
pub struct CatalogHandle {
    base: Arc<Catalog>,
    current: Arc<RwLock<Arc<Catalog>>>,
}

impl CatalogHandle {
    pub fn new(base: Catalog) -> Self {
        let base = Arc::new(base);
        Self {
            current: Arc::new(RwLock::new(base.clone())),
            base,
        }
    }

    /// The calibrated catalog (the operator's figures where nothing was measured yet).
    pub fn current(&self) -> Arc<Catalog> {
        self.current
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    /// The operator's catalog as configured (prices and models never change by calibration).
    pub fn base(&self) -> Arc<Catalog> {
        self.base.clone()
    }

    /// Recomputes from the database and swaps the result in.
    pub async fn refresh(&self, db: &Db) -> Result<(), sqlx::Error> {
        let measurements = measurements(db).await?;
        let calibrated = Arc::new(self.base.calibrated(&measurements));
        match self.current.write() {
            Ok(mut current) => *current = calibrated,
            Err(poisoned) => *poisoned.into_inner() = calibrated,
        }
        Ok(())
    }

    /// Refreshes now and every `every` until `shutdown`.
    pub async fn keep_fresh(self, db: Db, every: Duration, mut shutdown: watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.refresh(&db).await {
                tracing::warn!(error = %e, "cannot calibrate the catalog; keeping the current figures");
            }
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Median tokens/s per GPU of the last 1,000 completed jobs, by GPU type, base model and
/// quantization. Only throughput figures cross tenants here, never a tenant's data.
pub async fn measurements(db: &Db) -> Result<Vec<Measurement>, sqlx::Error> {
    let mut tx = db.system().await?;
    let rows = crate::jobs::store::throughput_medians(&mut tx, 1000).await?;
    tx.commit().await?;
    Ok(rows
        .into_iter()
        .filter_map(
            |(gpu_type, base_model, quantization, tokens_per_sec, jobs)| {
                let quantization = match quantization.as_str() {
                    "nf4" => Quantization::Nf4,
                    "none" => Quantization::None,
                    _ => return None,
                };
                Some(Measurement {
                    gpu_type,
                    base_model,
                    quantization,
                    tokens_per_sec,
                    jobs: u32::try_from(jobs).unwrap_or(u32::MAX),
                })
            },
        )
        .collect())
}
