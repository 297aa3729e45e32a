//! The background worker: leases tasks from the durable queue and runs them, several at once
//! (job polls spend their time waiting on the GPU backend). Every server replica runs one;
//! SKIP LOCKED keeps them from taking the same task.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::datasets::service as datasets;
use crate::db::Db;
use crate::jobs::processor::{self, Processor};
use crate::queue::{self, Task};
use crate::storage::Storage;

#[derive(Clone)]
pub struct Context {
    pub db: Db,
    pub storage: Storage,
    /// Where tasks write temporary files.
    pub scratch: PathBuf,
    /// Submits and follows training jobs.
    pub processor: Arc<Processor>,
    /// Tasks run at once by this replica.
    pub concurrency: usize,
}

/// How often an idle worker looks for new tasks.
const IDLE_POLL: Duration = Duration::from_millis(200);

/// Runs tasks until `shutdown` turns true; tasks in progress are finished first.
pub async fn run_worker(context: Context, mut shutdown: watch::Receiver<bool>) {
    let worker = format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple());
    tracing::info!(%worker, concurrency = context.concurrency, "background worker started");
    let mut running = JoinSet::new();
    while !*shutdown.borrow() {
        while running.try_join_next().is_some() {}
        let free = context.concurrency.max(1).saturating_sub(running.len());
        let leased = if free == 0 {
            Ok(Vec::new())
        } else {
            queue::lease(&context.db, &worker, free).await
        };
        match leased {
            Ok(tasks) if !tasks.is_empty() => {
                for task in tasks {
                    let context = context.clone();
                    running.spawn(async move { run_one(&context, task).await });
                }
            }
            Ok(_) => {
                tokio::select! {
                    () = tokio::time::sleep(IDLE_POLL) => {}
                    Some(_) = running.join_next(), if !running.is_empty() => {}
                    _ = shutdown.changed() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not lease tasks; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
    while running.join_next().await.is_some() {}
    tracing::info!("background worker stopped");
}

async fn run_one(context: &Context, task: Task) {
    let span =
        tracing::info_span!("task", id = task.id, kind = %task.kind, attempt = task.attempts);
    run_traced(context, task).instrument(span).await;
}

async fn run_traced(context: &Context, task: Task) {
    let result =
        queue::with_heartbeat(&context.db, task.id, &task.lease, dispatch(context, &task)).await;
    match result {
        Ok(()) => {
            if let Err(e) = queue::complete(&context.db, task.id, &task.lease).await {
                tracing::warn!(error = %e, "could not mark the task done; it may run again");
            }
        }
        Err(error) => {
            tracing::warn!(%error, "task failed");
            match queue::fail(&context.db, &task, &error).await {
                Ok(true) => {}
                Ok(false) => give_up(context, &task, &error).await,
                Err(e) => tracing::warn!(error = %e, "could not record the failure"),
            }
        }
    }
}

async fn dispatch(context: &Context, task: &Task) -> Result<(), String> {
    match task.kind.as_str() {
        datasets::VALIDATE_TASK => datasets::run_validation(
            &context.db,
            &context.storage,
            &context.scratch,
            &task.payload,
        )
        .await
        .map_err(|e| e.to_string()),
        processor::SUBMIT_TASK => context.processor.submit(&task.payload).await,
        processor::POLL_TASK => context.processor.poll(&task.payload).await,
        other => Err(format!("unknown task kind {other:?}")),
    }
}

/// The last attempt failed: leave the subject in a clear terminal state.
async fn give_up(context: &Context, task: &Task, error: &str) {
    let outcome = match task.kind.as_str() {
        datasets::VALIDATE_TASK => datasets::give_up_validation(&context.db, &task.payload, error)
            .await
            .map_err(|e| e.to_string()),
        processor::SUBMIT_TASK | processor::POLL_TASK => {
            context.processor.give_up(&task.payload, error).await
        }
        _ => Ok(()),
    };
    if let Err(e) = outcome {
        tracing::warn!(error = %e, "could not leave the subject in a terminal state");
    }
}
