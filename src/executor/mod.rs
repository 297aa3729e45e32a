//! The local executor: the platform's own implementation of the RunPod Serverless API
//! (DESIGN §6.2, §7). It queues jobs, runs the worker's handler as a subprocess (one job per
//! GPU slot), delivers each yielded chunk once through `/stream`, keeps results for the
//! retention window, and really kills a cancelled or timed-out job's process group.
//!
//! Its state lives in memory, like RunPod's own: when the process that hosts it stops, its jobs
//! are gone and `/status` answers 404 — which the job processor maps to a clear failure.

mod process;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{Notify, oneshot, watch};

use crate::runpod::types::*;

/// RunPod's default executionTimeout (10 min) and ttl (24 h).
pub const DEFAULT_EXECUTION_TIMEOUT: Duration = Duration::from_secs(600);
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// Results are kept this long after a job ends.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 60);

#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// The Python interpreter of the worker's environment.
    pub python: PathBuf,
    /// The directory holding `harness.py` and `handler.py`.
    pub worker_dir: PathBuf,
    /// Jobs that run at once (one per GPU).
    pub slots: usize,
    pub retention: Duration,
    /// Extra environment for the worker (e.g. its model cache).
    pub env: Vec<(String, String)>,
    /// The unprivileged user the worker runs as (when the executor runs as root); `None`: the
    /// executor's own user.
    pub run_as: Option<RunAs>,
}

/// A system user the worker is started as, with a home of its own (its caches and temporary
/// files): it cannot read the server's files, its database socket or its secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: std::path::PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    #[error("job not found")]
    NotFound,
    #[error("{0}")]
    BadRequest(String),
}

/// Why a running job is being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Cancel,
    /// The execution timeout, or the ttl when that comes first.
    Timeout,
    /// The executor is shutting down.
    Shutdown,
}

#[derive(Debug)]
struct Job {
    input: Value,
    execution_timeout: Duration,
    ttl: Duration,
    status: RunpodStatus,
    submitted: Instant,
    started: Option<Instant>,
    finished: Option<Instant>,
    /// Every yielded value, in order (the aggregate output).
    output: Vec<Value>,
    /// Yielded values not yet delivered through `/stream`.
    undelivered: Vec<Value>,
    error: Option<String>,
    stop: Option<oneshot::Sender<Stop>>,
    /// The worker's process id while it runs (tests assert it is gone after a cancel).
    pid: Option<u32>,
}

#[derive(Debug, Default)]
struct State {
    jobs: HashMap<String, Job>,
    queue: VecDeque<String>,
    running: usize,
    completed: u64,
    failed: u64,
    retried: u64,
}

struct Inner {
    config: ExecutorConfig,
    state: Mutex<State>,
    wake: Notify,
}

/// A handle on the executor; cheap to clone.
#[derive(Clone)]
pub struct Executor {
    inner: Arc<Inner>,
}

impl Executor {
    /// Starts the scheduler and the retention janitor; both stop with `shutdown`, killing
    /// whatever still runs.
    pub fn start(config: ExecutorConfig, shutdown: watch::Receiver<bool>) -> Self {
        let executor = Self {
            inner: Arc::new(Inner {
                config,
                state: Mutex::new(State::default()),
                wake: Notify::new(),
            }),
        };
        tokio::spawn(executor.clone().schedule(shutdown.clone()));
        tokio::spawn(executor.clone().janitor(shutdown));
        executor
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `POST /run`.
    pub fn run(&self, request: RunRequest) -> Result<JobRef, ExecutorError> {
        if !request.input.is_object() {
            return Err(ExecutorError::BadRequest(
                "`input` must be a JSON object".into(),
            ));
        }
        let policy = request.policy.unwrap_or_default();
        let execution_timeout = policy
            .execution_timeout
            .map_or(DEFAULT_EXECUTION_TIMEOUT, Duration::from_millis);
        let ttl = policy.ttl.map_or(DEFAULT_TTL, Duration::from_millis);
        if execution_timeout < Duration::from_secs(5) || ttl < Duration::from_secs(10) {
            return Err(ExecutorError::BadRequest(
                "policy.executionTimeout must be at least 5000 ms and ttl at least 10000 ms".into(),
            ));
        }
        let id = format!("local-{}", uuid::Uuid::new_v4());
        let mut state = self.lock();
        state.jobs.insert(
            id.clone(),
            Job {
                input: request.input,
                execution_timeout,
                ttl,
                status: RunpodStatus::InQueue,
                submitted: Instant::now(),
                started: None,
                finished: None,
                output: Vec::new(),
                undelivered: Vec::new(),
                error: None,
                stop: None,
                pid: None,
            },
        );
        state.queue.push_back(id.clone());
        drop(state);
        self.inner.wake.notify_one();
        Ok(JobRef {
            id,
            status: RunpodStatus::InQueue,
        })
    }

    /// `GET /status/{id}`.
    pub fn status(&self, id: &str) -> Result<StatusResponse, ExecutorError> {
        let state = self.lock();
        let job = state.jobs.get(id).ok_or(ExecutorError::NotFound)?;
        let now = Instant::now();
        let delay = job.started.unwrap_or(now).duration_since(job.submitted);
        let execution = job
            .started
            .map(|s| job.finished.unwrap_or(now).duration_since(s));
        Ok(StatusResponse {
            id: id.to_owned(),
            status: job.status,
            delay_time: Some(delay.as_millis() as u64),
            execution_time: execution.map(|e| e.as_millis() as u64),
            output: (job.status == RunpodStatus::Completed)
                .then(|| Value::Array(job.output.clone())),
            error: job.error.clone(),
        })
    }

    /// `GET /stream/{id}`: what was yielded since the last call, delivered once.
    pub fn stream(&self, id: &str) -> Result<StreamResponse, ExecutorError> {
        let mut state = self.lock();
        let job = state.jobs.get_mut(id).ok_or(ExecutorError::NotFound)?;
        let chunks = std::mem::take(&mut job.undelivered);
        Ok(StreamResponse {
            status: job.status,
            stream: chunks
                .into_iter()
                .map(|output| StreamChunk { output })
                .collect(),
        })
    }

    /// `POST /cancel/{id}`: a queued job never starts; a running one is killed.
    pub fn cancel(&self, id: &str) -> Result<JobRef, ExecutorError> {
        let mut state = self.lock();
        let job = state.jobs.get_mut(id).ok_or(ExecutorError::NotFound)?;
        match job.status {
            RunpodStatus::InQueue => {
                job.status = RunpodStatus::Cancelled;
                job.finished = Some(Instant::now());
                state.queue.retain(|q| q != id);
            }
            RunpodStatus::InProgress => {
                if let Some(stop) = job.stop.take() {
                    let _ = stop.send(Stop::Cancel);
                }
                // The supervisor records the end once the process is gone; report it now.
                job.status = RunpodStatus::Cancelled;
            }
            _ => {}
        }
        let status = state
            .jobs
            .get(id)
            .map_or(RunpodStatus::Cancelled, |j| j.status);
        Ok(JobRef {
            id: id.to_owned(),
            status,
        })
    }

    /// `POST /retry/{id}`: only a FAILED or TIMED_OUT job runs again, under the same id.
    pub fn retry(&self, id: &str) -> Result<JobRef, ExecutorError> {
        let mut state = self.lock();
        let job = state.jobs.get_mut(id).ok_or(ExecutorError::NotFound)?;
        if !matches!(job.status, RunpodStatus::Failed | RunpodStatus::TimedOut) {
            return Err(ExecutorError::BadRequest(format!(
                "only FAILED or TIMED_OUT jobs can be retried; this one is {}",
                job.status.as_str()
            )));
        }
        job.status = RunpodStatus::InQueue;
        job.submitted = Instant::now();
        job.started = None;
        job.finished = None;
        job.output.clear();
        job.undelivered.clear();
        job.error = None;
        state.queue.push_back(id.to_owned());
        state.retried += 1;
        drop(state);
        self.inner.wake.notify_one();
        Ok(JobRef {
            id: id.to_owned(),
            status: RunpodStatus::InQueue,
        })
    }

    /// `POST /purge-queue`: cancels every job still waiting.
    pub fn purge_queue(&self) -> PurgeResponse {
        let mut state = self.lock();
        let queued: Vec<String> = state.queue.drain(..).collect();
        let now = Instant::now();
        for id in &queued {
            if let Some(job) = state.jobs.get_mut(id) {
                job.status = RunpodStatus::Cancelled;
                job.finished = Some(now);
            }
        }
        PurgeResponse {
            removed: queued.len() as u64,
            status: "completed".into(),
        }
    }

    /// `GET /health`.
    pub fn health(&self) -> HealthResponse {
        let state = self.lock();
        let in_progress = state.running as u64;
        HealthResponse {
            jobs: HealthJobs {
                completed: state.completed,
                failed: state.failed,
                in_progress,
                in_queue: state.queue.len() as u64,
                retried: state.retried,
            },
            workers: HealthWorkers {
                idle: (self.inner.config.slots as u64).saturating_sub(in_progress),
                running: in_progress,
            },
        }
    }

    /// The worker process of a running job (for tests and diagnostics).
    pub fn pid(&self, id: &str) -> Option<u32> {
        self.lock().jobs.get(id).and_then(|j| j.pid)
    }

    /// Starts queued jobs while slots are free.
    async fn schedule(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            loop {
                let next = {
                    let mut state = self.lock();
                    if state.running >= self.inner.config.slots.max(1) {
                        None
                    } else {
                        let next = state.queue.pop_front();
                        if next.is_some() {
                            state.running += 1;
                        }
                        next
                    }
                };
                let Some(id) = next else { break };
                tokio::spawn(self.clone().supervise(id, shutdown.clone()));
            }
            tokio::select! {
                () = self.inner.wake.notified() => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Runs one job's process to its end and records how it ended.
    async fn supervise(self, id: String, shutdown: watch::Receiver<bool>) {
        let (stop_tx, stop_rx) = oneshot::channel();
        let prepared = {
            let mut state = self.lock();
            match state.jobs.get_mut(&id) {
                Some(job) if job.status == RunpodStatus::InQueue => {
                    let now = Instant::now();
                    job.status = RunpodStatus::InProgress;
                    job.started = Some(now);
                    job.stop = Some(stop_tx);
                    // The hard lifetime counts from submission.
                    let ttl_left = (job.submitted + job.ttl).saturating_duration_since(now);
                    Some((
                        job.input.clone(),
                        job.execution_timeout.min(ttl_left),
                        job.execution_timeout <= ttl_left,
                    ))
                }
                _ => None,
            }
        };
        let Some((input, limit, limit_is_timeout)) = prepared else {
            self.finish_slot();
            return;
        };
        let sink = {
            let executor = self.clone();
            let id = id.clone();
            move |event: process::ProcessEvent| executor.on_process_event(&id, event)
        };
        let outcome = process::run_job(
            &self.inner.config,
            &id,
            input,
            limit,
            stop_rx,
            shutdown,
            sink,
        )
        .await;
        let mut state = self.lock();
        if let Some(job) = state.jobs.get_mut(&id) {
            job.finished = Some(Instant::now());
            job.stop = None;
            job.pid = None;
            let (status, error) = match outcome {
                process::Outcome::Exited { success: true, .. } => (RunpodStatus::Completed, None),
                process::Outcome::Exited { error, .. } => (RunpodStatus::Failed, Some(error)),
                process::Outcome::Stopped(Stop::Cancel) => (RunpodStatus::Cancelled, None),
                process::Outcome::Stopped(Stop::Shutdown) => (
                    RunpodStatus::Failed,
                    Some(
                        r#"{"error_type":"ExecutorShutdown","error_message":"the executor shut down while the job ran; retry it"}"#
                            .to_owned(),
                    ),
                ),
                process::Outcome::Stopped(Stop::Timeout) if limit_is_timeout => {
                    (RunpodStatus::TimedOut, None)
                }
                process::Outcome::Stopped(_) => (RunpodStatus::Failed, Some(
                    r#"{"error_type":"TtlExpired","error_message":"the job outlived its ttl"}"#.to_owned(),
                )),
                process::Outcome::SpawnFailed(message) => (
                    RunpodStatus::Failed,
                    Some(
                        serde_json::json!({"error_type": "WorkerSpawnFailed", "error_message": message})
                            .to_string(),
                    ),
                ),
            };
            // A cancel reported to the client stays the answer, however the process ended.
            let (status, error) = if job.status == RunpodStatus::Cancelled {
                (RunpodStatus::Cancelled, None)
            } else {
                (status, error)
            };
            job.status = status;
            job.error = error;
            match status {
                RunpodStatus::Completed => state.completed += 1,
                RunpodStatus::Failed | RunpodStatus::TimedOut => state.failed += 1,
                _ => {}
            }
        }
        drop(state);
        self.finish_slot();
    }

    fn on_process_event(&self, id: &str, event: process::ProcessEvent) {
        let mut state = self.lock();
        let Some(job) = state.jobs.get_mut(id) else {
            return;
        };
        match event {
            process::ProcessEvent::Started(pid) => job.pid = Some(pid),
            process::ProcessEvent::Yielded(value) => {
                job.output.push(value.clone());
                job.undelivered.push(value);
            }
        }
    }

    fn finish_slot(&self) {
        let mut state = self.lock();
        state.running = state.running.saturating_sub(1);
        drop(state);
        self.inner.wake.notify_one();
    }

    /// Forgets finished jobs after the retention window and any job past its ttl.
    async fn janitor(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(5)) => {}
                _ = shutdown.changed() => return,
            }
            let retention = self.inner.config.retention;
            let now = Instant::now();
            let mut state = self.lock();
            let mut expired_queued = Vec::new();
            state.jobs.retain(|id, job| {
                let past_ttl = now.duration_since(job.submitted) >= job.ttl;
                let past_retention = job
                    .finished
                    .is_some_and(|f| now.duration_since(f) >= retention)
                    && job.status.is_terminal();
                if past_ttl && job.status == RunpodStatus::InProgress {
                    // The supervisor kills it (its limit includes the ttl); keep until then.
                    return true;
                }
                if past_ttl && job.status == RunpodStatus::InQueue {
                    expired_queued.push(id.clone());
                }
                !(past_ttl || past_retention)
            });
            state.queue.retain(|id| !expired_queued.contains(id));
        }
    }
}

#[cfg(test)]
mod tests;
