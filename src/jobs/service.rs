//! Creating and reading training jobs.

use uuid::Uuid;

use std::time::Duration;

use super::finish::{self, Ending, Subject};
use super::lifecycle::{JobStage, JobStatus};
use super::store::{self, NewJobRow};
use super::{JobRow, JobView, MetricPoint, NewJob, events};
use crate::db::{Db, Tx};
use crate::idempotency::{self, Claim, ClaimError, IdempotencyKey};
use crate::notifications::{self, NewNotification, NotificationKind};
use crate::tasks::{JobTask, Task};
use crate::training::estimate::{DatasetSize, EstimateError, estimate};
use crate::training::{Catalog, check_config};
use crate::validation::FieldErrors;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("invalid job: {0}")]
    Invalid(FieldErrors),
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("database error on jobs: {0}")]
    Db(#[from] sqlx::Error),
}

impl From<ClaimError> for JobError {
    fn from(e: ClaimError) -> Self {
        match e {
            ClaimError::Mismatch => Self::Conflict(e.to_string()),
            ClaimError::Db(e) => Self::Db(e),
        }
    }
}

impl crate::error::Classify for JobError {
    fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            Self::Invalid(fields) => ErrorKind::Invalid(fields.clone()),
            Self::NotFound => ErrorKind::NotFound,
            Self::Conflict(message) => ErrorKind::conflict(message.clone()),
            Self::Db(_) => ErrorKind::Internal,
        }
    }
}

/// Re-validates everything, snapshots the authoritative estimate and stores the job.
pub async fn create(
    db: &Db,
    catalog: &Catalog,
    user: Uuid,
    new: &NewJob,
    idempotency: Option<&IdempotencyKey>,
) -> Result<JobView, JobError> {
    check_config(&new.config, catalog).map_err(JobError::Invalid)?;
    if new
        .budget_cap
        .is_some_and(|cap| !(cap.is_finite() && cap > 0.0))
    {
        return Err(JobError::Invalid(FieldErrors::single(
            "budget_cap",
            "Use an amount above $0.",
        )));
    }
    let mut tx = db.tenant(user).await?;
    // First: a request sent again answers with the first one's job, whatever changed since.
    if let Some(key) = idempotency
        && let Claim::Replay(first) = idempotency::claim(&mut tx, user, key).await?
    {
        return Ok(first);
    }
    // Held until the job is committed: the dataset cannot be deleted under it.
    if !crate::datasets::hold(&mut tx, user, new.dataset_id).await? {
        return Err(JobError::NotFound);
    }
    let dataset = crate::datasets::find(&mut tx, user, new.dataset_id, false)
        .await?
        .ok_or(JobError::NotFound)?;
    if !dataset.training_ready {
        return Err(JobError::Conflict(format!(
            "the dataset is not ready to train ({})",
            dataset
                .status_message
                .as_deref()
                .unwrap_or(dataset.status.as_str())
        )));
    }
    let model = catalog
        .model(&new.config.base_model)
        .ok_or(JobError::NotFound)?;
    let gpu = catalog
        .gpu(&new.config.gpu_type)
        .ok_or(JobError::NotFound)?;
    let size = DatasetSize {
        examples: dataset.total_training_pairs.unwrap_or(0).max(0) as u64,
        total_tokens: dataset.total_tokens.unwrap_or(0).max(0) as u64,
    };
    let estimate = estimate(
        size,
        model,
        gpu,
        new.config.gpu_count,
        &new.config.hyperparameters,
    )
    .map_err(|e| match e {
        EstimateError::Unsupported => JobError::Invalid(FieldErrors::single(
            "gpu_type",
            "This GPU cannot train this model with this quantization.",
        )),
        EstimateError::NoExamples => {
            JobError::Conflict("the dataset has no usable examples".into())
        }
    })?;
    if let Some(cap) = new.budget_cap
        && cap < estimate.cost.low
        && !new.confirm_low_budget
    {
        return Err(JobError::Invalid(FieldErrors::single(
            "budget_cap",
            format!(
                "The cap is below the lowest estimate ({}): the job would likely stop early. Raise it, or confirm.",
                crate::format::money(estimate.cost.low)
            ),
        )));
    }
    let point =
        estimate.breakdown.compute + estimate.breakdown.startup + estimate.breakdown.storage;
    // Spending limits. A paid GPU always runs under a cap: the one asked for, or the high
    // estimate with a margin (a script may leave it out).
    let limits = &catalog.limits;
    let paid = gpu.price_per_second > 0.0;
    let budget_cap = match new.budget_cap {
        Some(cap) => Some(cap),
        None if paid => Some(crate::costs::default_cap(estimate.cost.high, limits)),
        None => None,
    };
    if let Some(cap) = budget_cap
        && cap > limits.max_job_budget
    {
        return Err(JobError::Invalid(FieldErrors::single(
            "budget_cap",
            format!(
                "One job may be capped at {} at most on this server.",
                crate::format::money(limits.max_job_budget)
            ),
        )));
    }
    let spending = crate::costs::limits::spending(&mut tx, user, limits).await?;
    crate::costs::limits::admit(&spending, limits, budget_cap.unwrap_or(estimate.cost.high))
        .map_err(JobError::Conflict)?;
    let id = store::insert(
        &mut tx,
        NewJobRow {
            user_id: user,
            dataset_id: new.dataset_id,
            base_model: &new.config.base_model,
            preset: serde_json::to_value(new.config.preset)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned)),
            hyperparameters: serde_json::to_value(new.config.hyperparameters).unwrap_or_default(),
            gpu_type: &new.config.gpu_type,
            gpu_count: new.config.gpu_count as i32,
            backend: match gpu.backend {
                crate::training::Backend::Runpod => "runpod",
                crate::training::Backend::Local => "local",
            },
            total_steps: i32::try_from(estimate.total_steps).unwrap_or(i32::MAX),
            estimate: serde_json::to_value(&estimate).unwrap_or_default(),
            estimated_total_cost: point,
            budget_cap,
            duration_high_s: estimate.duration_seconds.high,
        },
    )
    .await?;
    notifications::create(
        &mut tx,
        user,
        NewNotification {
            kind: NotificationKind::JobQueued,
            title: &format!("Training queued on \"{}\"", dataset.name),
            message: &format!(
                "{} on {} × {}; estimated {}–{}.",
                model.name,
                new.config.gpu_count,
                gpu.name,
                crate::format::money(estimate.cost.low),
                crate::format::money(estimate.cost.high)
            ),
            priority: crate::notifications::Priority::Medium,
            action_url: Some(&format!("/jobs/{id}")),
            metadata: serde_json::json!({ "job_id": id, "dataset_id": new.dataset_id }),
        },
    )
    .await?;
    // Queued in the same transaction: the job exists exactly when its submission does.
    Task::SubmitJob(JobTask::start(id, 0))
        .enqueue(&mut tx, Some(user), Duration::ZERO)
        .await?;
    events::record_status(
        &mut tx,
        user,
        id,
        0,
        JobStatus::Queued,
        JobStage::Queued,
        None,
    )
    .await?;
    let job = find(&mut tx, user, id).await?.ok_or(JobError::NotFound)?;
    if let Some(key) = idempotency {
        idempotency::record(&mut tx, user, key, &job).await?;
    }
    tx.commit().await?;
    Ok(job)
}

/// Asks for a job to stop. A job not yet sent ends here; one on the GPU backend is cancelled
/// there by the processor (it polls at once), which really stops the worker.
pub async fn cancel(
    db: &Db,
    limits: &crate::costs::Limits,
    user: Uuid,
    id: Uuid,
) -> Result<JobView, JobError> {
    let mut tx = db.tenant(user).await?;
    let (status, attempt) = store::lock_for_user(&mut tx, user, id)
        .await?
        .ok_or(JobError::NotFound)?;
    if !status.can_cancel() {
        return Err(JobError::Conflict(format!(
            "the job has already ended ({status}); nothing to cancel"
        )));
    }
    let ended_here = status == JobStatus::Queued
        && finish::finish(
            &mut tx,
            Subject {
                id,
                user_id: user,
                attempt,
            },
            &Ending::cancelled_by_owner("Cancelled at your request before it started."),
            true,
            limits,
        )
        .await?;
    if !ended_here {
        // On the backend, or the submission is under way: the processor cancels it there.
        if !store::request_cancel(&mut tx, user, id).await? {
            return Err(JobError::Conflict(
                "the job has just ended; nothing to cancel".into(),
            ));
        }
        // Poll now rather than at the next interval.
        Task::PollJob(JobTask {
            job_id: id,
            attempt: Some(attempt),
            polls: 0,
            errors: 0,
        })
        .enqueue(&mut tx, Some(user), Duration::ZERO)
        .await?;
    }
    let job = find(&mut tx, user, id).await?.ok_or(JobError::NotFound)?;
    tx.commit().await?;
    Ok(job)
}

/// Runs a failed or cancelled job again as a new attempt: from its latest checkpoint when it
/// has one (the same data order, so only the steps since that checkpoint are paid for again),
/// else from the start.
pub async fn retry(
    db: &Db,
    catalog: &Catalog,
    user: Uuid,
    id: Uuid,
    idempotency: Option<&IdempotencyKey>,
) -> Result<JobView, JobError> {
    let mut tx = db.tenant(user).await?;
    if let Some(key) = idempotency
        && let Claim::Replay(first) = idempotency::claim(&mut tx, user, key).await?
    {
        return Ok(first);
    }
    // The new attempt must fit the month's budget like a new job.
    if let Some(job) = find(&mut tx, user, id).await?
        && job.status.can_retry()
    {
        if !crate::datasets::hold(&mut tx, user, job.dataset_id).await? {
            return Err(JobError::Conflict(
                "its dataset was deleted; upload the data again and start a new job".into(),
            ));
        }
        let limits = &catalog.limits;
        let spending = crate::costs::limits::spending(&mut tx, user, limits).await?;
        let cap = job.budget_cap.or(job.estimated_total_cost).unwrap_or(0.0);
        crate::costs::limits::admit(&spending, limits, cap).map_err(JobError::Conflict)?;
    }
    let Some(restarted) = store::restart(&mut tx, user, id, store::Restart::ByOwner).await? else {
        return match find(&mut tx, user, id).await? {
            None => Err(JobError::NotFound),
            Some(job) => Err(JobError::Conflict(format!(
                "only failed or cancelled jobs can be retried; this one is {}",
                job.status
            ))),
        };
    };
    Task::SubmitJob(JobTask::start(id, restarted.attempt))
        .enqueue(&mut tx, Some(user), Duration::ZERO)
        .await?;
    let message = match restarted.resumed_from_step {
        Some(step) => format!("Retrying from the checkpoint at step {step}."),
        None => "Retrying from the start.".to_owned(),
    };
    events::record_status(
        &mut tx,
        user,
        id,
        restarted.attempt,
        JobStatus::Queued,
        JobStage::Queued,
        Some(&message),
    )
    .await?;
    let job = find(&mut tx, user, id).await?.ok_or(JobError::NotFound)?;
    if let Some(key) = idempotency {
        idempotency::record(&mut tx, user, key, &job).await?;
    }
    tx.commit().await?;
    Ok(job)
}

/// Every metric point of a job, in step order (the charts' history).
pub async fn metrics(db: &Db, user: Uuid, id: Uuid) -> Result<Vec<MetricPoint>, JobError> {
    let mut tx = db.tenant(user).await?;
    if find(&mut tx, user, id).await?.is_none() {
        return Err(JobError::NotFound);
    }
    let points = store::curve(&mut tx, user, id).await?;
    tx.commit().await?;
    Ok(points)
}

async fn find(tx: &mut Tx, user: Uuid, id: Uuid) -> Result<Option<JobView>, sqlx::Error> {
    store::find_view(tx, user, id).await
}

/// `GET /api/jobs/{id}`: the job with its training curve and cost records, read together.
pub async fn detail(db: &Db, user: Uuid, id: Uuid) -> Result<JobDetail, JobError> {
    let mut tx = db.tenant(user).await?;
    let job = find(&mut tx, user, id).await?.ok_or(JobError::NotFound)?;
    let metrics = store::curve(&mut tx, user, id).await?;
    let cost_records = crate::costs::store::for_job(&mut tx, id).await?;
    tx.commit().await?;
    Ok(JobDetail {
        job,
        metrics,
        cost_records,
    })
}

/// A job as `GET /api/jobs/{id}` answers (the original's job with `metrics` and `cost_records`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct JobDetail {
    pub job: JobView,
    pub metrics: Vec<MetricPoint>,
    pub cost_records: Vec<crate::costs::JobCostRecord>,
}

pub async fn get(db: &Db, user: Uuid, id: Uuid) -> Result<JobView, JobError> {
    let mut tx = db.tenant(user).await?;
    let job = find(&mut tx, user, id).await?.ok_or(JobError::NotFound)?;
    tx.commit().await?;
    Ok(job)
}

/// `LIMIT` and `OFFSET` of page `page` (from 1) of `limit` jobs (1 to 100).
fn window(page: u32, limit: u32) -> (i64, i64) {
    let limit = i64::from(limit.clamp(1, 100));
    (limit, i64::from(page.max(1) - 1) * limit)
}

/// The caller's jobs as rows of the Jobs page, newest first, and the total matching `status`.
pub async fn list_rows(
    db: &Db,
    user: Uuid,
    status: Option<JobStatus>,
    page: u32,
    limit: u32,
) -> Result<(Vec<JobRow>, i64), JobError> {
    let (limit, offset) = window(page, limit);
    let mut tx = db.tenant(user).await?;
    let page = store::list_rows(&mut tx, user, status, limit, offset).await?;
    tx.commit().await?;
    Ok(page)
}

/// The caller's jobs, newest first, and the total matching `status`.
pub async fn list(
    db: &Db,
    user: Uuid,
    status: Option<JobStatus>,
    page: u32,
    limit: u32,
) -> Result<(Vec<JobView>, i64), JobError> {
    let (limit, offset) = window(page, limit);
    let mut tx = db.tenant(user).await?;
    let page = store::list_views(&mut tx, user, status, limit, offset).await?;
    tx.commit().await?;
    Ok(page)
}
