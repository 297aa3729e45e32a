//! The background worker: leases tasks from the durable queue and runs them. Every server
//! replica runs one; SKIP LOCKED keeps them from taking the same task.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;
use tracing::Instrument;

use crate::datasets::service as datasets;
use crate::db::Db;
use crate::queue::{self, Task};
use crate::storage::Storage;

#[derive(Clone)]
pub struct Context {
    pub db: Db,
    pub storage: Storage,
    /// Where tasks write temporary files.
    pub scratch: PathBuf,
}

/// How often an idle worker looks for new tasks.
const IDLE_POLL: Duration = Duration::from_millis(250);

/// Runs tasks until `shutdown` turns true; a task in progress is finished first.
pub async fn run_worker(context: Context, mut shutdown: watch::Receiver<bool>) {
    let worker = format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple());
    tracing::info!(%worker, "background worker started");
    while !*shutdown.borrow() {
        match queue::lease(&context.db, &worker).await {
            Ok(Some(task)) => run_one(&context, &worker, task).await,
            Ok(None) => {
                tokio::select! {
                    () = tokio::time::sleep(IDLE_POLL) => {}
                    _ = shutdown.changed() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not lease a task; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
    tracing::info!("background worker stopped");
}

async fn run_one(context: &Context, worker: &str, task: Task) {
    let span =
        tracing::info_span!("task", id = task.id, kind = %task.kind, attempt = task.attempts);
    run_traced(context, worker, task).instrument(span).await;
}

async fn run_traced(context: &Context, worker: &str, task: Task) {
    let result =
        queue::with_heartbeat(&context.db, task.id, worker, dispatch(context, &task)).await;
    match result {
        Ok(()) => {
            if let Err(e) = queue::complete(&context.db, task.id, worker).await {
                tracing::warn!(error = %e, "could not mark the task done; it may run again");
            }
        }
        Err(error) => {
            tracing::warn!(%error, "task failed");
            match queue::fail(&context.db, &task, worker, &error).await {
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
        other => Err(format!("unknown task kind {other:?}")),
    }
}

/// The last attempt failed: leave the subject in a clear terminal state.
async fn give_up(context: &Context, task: &Task, error: &str) {
    if task.kind == datasets::VALIDATE_TASK
        && let Err(e) = datasets::give_up_validation(&context.db, &task.payload, error).await
    {
        tracing::warn!(error = %e, "could not mark the dataset invalid");
    }
}
