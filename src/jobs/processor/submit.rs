//! [`Task::SubmitJob`](crate::tasks::Task::SubmitJob): sign the URLs, call `/run`, remember the
//! backend's id, start polling. `/run` is never sent twice when it may have arrived.

use std::time::Duration;

use super::{
    CHECKPOINT_FILE, MAX_ADAPTER_FILE, MAX_CHECKPOINT_FILE, Processor, execution_timeout,
    output_key,
};
use crate::jobs::contract::{
    ADAPTER_FILES, CONTRACT_VERSION, CheckpointPlan, ResumeFrom, WorkerInput,
};
use crate::jobs::event::{JobEvent, StageChange};
use crate::jobs::events;
use crate::jobs::finish::Ending;
use crate::jobs::lifecycle::{JobStage, JobStatus};
use crate::jobs::store::{self, ProcessingRow};
use crate::runpod::{Policy, RunRequest, RunpodError};
use crate::storage::Bucket;
use crate::tasks::JobTask;
use crate::tasks::TaskError;
use crate::training::Hyperparameters;

impl Processor {
    pub async fn submit(&self, task: &JobTask) -> Result<(), TaskError> {
        let Some(job) = self.load(task.job_id).await? else {
            return Ok(());
        };
        if super::is_stale(task, &job) {
            return Ok(()); // a task of an attempt that was retried since
        }
        if job.status != JobStatus::Queued || job.external_job_id.is_some() {
            // Cancelled before it was sent, or already sent by an earlier attempt.
            return Ok(());
        }
        let client = match self.client_for(&job) {
            Ok(client) => client,
            Err(ending) => return self.finish(&job, ending).await,
        };
        let input = match self.worker_input(&job).await {
            Ok(input) => input,
            Err(message) => {
                return self
                    .finish(&job, Ending::failed("submit_failed", message))
                    .await;
            }
        };
        let timeout = execution_timeout(job.estimate.as_ref());
        {
            let Some(mut tx) = self.attempt_tx(&job).await? else {
                return Ok(());
            };
            self.enter_stage(
                &mut tx,
                &job,
                JobStage::Submitting,
                "Sending the job to the GPU backend.",
            )
            .await?;
            store::set_execution_timeout(&mut tx, job.id, timeout.as_millis() as i64).await?;
            tx.commit().await?;
        }
        let request = RunRequest {
            input: serde_json::to_value(&input).map_err(TaskError::permanent)?,
            policy: Some(Policy {
                execution_timeout: Some(timeout.as_millis() as u64),
                ttl: Some((timeout + Duration::from_secs(6 * 3600)).as_millis() as u64),
            }),
            webhook: None,
        };
        let accepted = match client.run(&request).await {
            Ok(r) => r,
            // The backend may have started the run: submitting again could pay for two.
            Err(e @ RunpodError::Uncertain(_)) => {
                return self
                    .finish(
                        &job,
                        Ending::failed("submit_uncertain", format!(
                                "{e}. It may have started the run: check the GPU backend's console, then retry the job."
                            )),
                    )
                    .await;
            }
            Err(e) if e.is_transient() => return Err(TaskError::retryable(e)),
            Err(e) => {
                return self
                    .finish(&job, Ending::failed("submit_rejected", e.to_string()))
                    .await;
            }
        };
        match self.record_submission(&job, &accepted.id).await {
            Ok(true) => {
                tracing::info!(job = %job.id, external = %accepted.id, "job submitted");
                Ok(())
            }
            Ok(false) => {
                // Cancelled or retried while we were submitting: stop what we just started.
                let _ = client.cancel(&accepted.id).await;
                Ok(())
            }
            Err(e) => {
                // Nothing remembers this run: stop it rather than pay for it untracked.
                let _ = client.cancel(&accepted.id).await;
                Err(e)
            }
        }
    }

    /// Stores the backend's id and starts polling; `false` when the job moved on meanwhile.
    async fn record_submission(
        &self,
        job: &ProcessingRow,
        external: &str,
    ) -> Result<bool, TaskError> {
        let Some(mut tx) = self.attempt_tx(job).await? else {
            return Ok(false);
        };
        if !store::mark_submitted(&mut tx, job.id, external).await? {
            tx.rollback().await?;
            return Ok(false);
        }
        events::record_status(
            &mut tx,
            job.user_id,
            job.id,
            job.retry_count,
            JobStatus::Initializing,
            JobStage::QueuedOnGpu,
            None,
        )
        .await?;
        self.schedule_poll(&mut tx, job, 0, 0, self.config.poll_interval)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Records a platform stage (once per attempt) and moves the job to it.
    pub(super) async fn enter_stage(
        &self,
        tx: &mut crate::db::Tx,
        job: &ProcessingRow,
        stage: JobStage,
        message: &str,
    ) -> Result<(), TaskError> {
        let event = JobEvent::Stage(StageChange {
            stage,
            message: message.to_owned(),
            elapsed_s: None,
            total_steps: None,
            train_examples: None,
            eval_examples: None,
            resumed_from_step: None,
        });
        let key = format!("{}:stage:{stage}", job.attempt());
        if events::record(tx, job.user_id, job.id, &key, &event)
            .await?
            .is_some()
        {
            store::set_stage(tx, job.id, stage).await?;
        }
        Ok(())
    }

    async fn worker_input(&self, job: &ProcessingRow) -> Result<WorkerInput, String> {
        let hyperparameters: Hyperparameters = serde_json::from_value(job.hyperparameters.clone())
            .map_err(|e| format!("the stored configuration is unreadable: {e}"))?;
        let dataset_key = job
            .normalized_key
            .as_deref()
            .ok_or("the dataset has no normalised training file")?;
        let model = self.catalog.model(&job.base_model).ok_or_else(|| {
            format!(
                "the base model {} is no longer in the catalog",
                job.base_model
            )
        })?;
        // Links live as long as the job may: its timeout plus time in the GPU queue.
        let lifetime = chrono::Duration::from_std(execution_timeout(job.estimate.as_ref()))
            .unwrap_or_default()
            + chrono::Duration::hours(6);
        let dataset = self
            .storage
            .presign_get(Bucket::Datasets, dataset_key, lifetime)
            .await
            .map_err(|e| format!("cannot sign the dataset link: {e}"))?;
        let mut upload_urls = std::collections::BTreeMap::new();
        for name in ADAPTER_FILES {
            let key = output_key(job.user_id, job.id, job.retry_count, name);
            let signed = self
                .storage
                .presign_put_upto(Bucket::Models, &key, MAX_ADAPTER_FILE, lifetime)
                .await
                .map_err(|e| format!("cannot sign an upload link: {e}"))?;
            upload_urls.insert(name.to_owned(), signed.url);
        }
        let checkpoint_key = output_key(job.user_id, job.id, job.retry_count, CHECKPOINT_FILE);
        let checkpoint_url = self
            .storage
            .presign_put_upto(
                Bucket::Models,
                &checkpoint_key,
                MAX_CHECKPOINT_FILE,
                lifetime,
            )
            .await
            .map_err(|e| format!("cannot sign the checkpoint link: {e}"))?;
        // The latest checkpoint of an earlier attempt: this one continues from it.
        let resume = match (
            job.checkpoint_attempt,
            job.checkpoint_step,
            job.checkpoint_sha256.as_ref(),
        ) {
            (Some(attempt), Some(step), Some(sha256)) if attempt < job.retry_count => {
                let key = output_key(job.user_id, job.id, attempt, CHECKPOINT_FILE);
                let signed = self
                    .storage
                    .presign_get(Bucket::Models, &key, lifetime)
                    .await
                    .map_err(|e| format!("cannot sign the checkpoint link: {e}"))?;
                Some(ResumeFrom {
                    url: signed.url,
                    step: step as u32,
                    sha256: sha256.clone(),
                })
            }
            _ => None,
        };
        Ok(WorkerInput {
            contract_version: CONTRACT_VERSION,
            job_id: job.id,
            base_model: model.source.clone(),
            dataset_url: dataset.url,
            hyperparameters,
            upload_urls,
            report_every_steps: self.config.report_every_steps,
            max_steps: None,
            execution_timeout_s: Some(execution_timeout(job.estimate.as_ref()).as_secs()),
            report_interval_s: Some(self.config.report_interval.as_secs_f64()),
            checkpoint: Some(CheckpointPlan {
                every_s: self.config.checkpoint_every.as_secs_f64(),
                upload_url: checkpoint_url.url,
                resume,
            }),
        })
    }
}
