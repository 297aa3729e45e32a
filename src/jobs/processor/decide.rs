//! The processor's policy, without I/O: given what a poll observed — the backend's status and
//! the worker's result, the budget, the stall clock, a cancel request — what happens to the job.
//! Unit-tested over every RunPod status; `poll` only carries the decision out.

use std::time::Duration;

use crate::jobs::contract::WorkerResult;
use crate::jobs::finish::Ending;
use crate::jobs::lifecycle::JobStatus;
use crate::runpod::{FailureDetail, RunpodError, RunpodStatus};

/// The backend's answer to `/status`, as far as the decision needs it.
#[derive(Debug, Clone, Copy)]
pub struct BackendState<'a> {
    pub status: RunpodStatus,
    /// The worker's final result, from the aggregate output.
    pub result: Option<&'a WorkerResult>,
    /// RunPod's `error` of a FAILED job.
    pub error: Option<&'a str>,
    /// The billed cost, when the backend reported the execution time.
    pub cost: Option<f64>,
}

/// Everything a poll knows about a job.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    pub status: JobStatus,
    pub cancel_requested: bool,
    /// `None` when this poll did not ask `/status`.
    pub backend: Option<BackendState<'a>>,
    pub current_cost: f64,
    pub budget_cap: Option<f64>,
    /// Time since the last progress (or the start), while running.
    pub quiet_for: Option<Duration>,
    pub stall_after: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    KeepPolling,
    /// The backend has stopped: record the ending.
    Finish(Ending),
    /// The run may still bill: stop it on the backend first, then record the ending (ended only
    /// once the backend stopped it, or the run would bill on unseen).
    StopThenFinish(Ending),
}

pub fn decide(o: &Observation<'_>) -> Decision {
    if let Some(backend) = o.backend
        && let Some(ending) = ended_on_backend(&backend)
    {
        return Decision::Finish(ending);
    }
    if o.cancel_requested {
        return Decision::StopThenFinish(Ending::cancelled_by_owner("Cancelled at your request."));
    }
    if let Some(cap) = o.budget_cap
        && o.current_cost >= cap
    {
        return Decision::StopThenFinish(Ending::cancelled(
            "budget_cap_reached",
            format!(
                "Stopped: the cost reached the budget cap of {} (spent {}). Raise the cap and retry to continue.",
                crate::format::money(cap),
                crate::format::money(o.current_cost)
            ),
        ));
    }
    if o.status == JobStatus::Running && o.quiet_for.is_some_and(|q| q > o.stall_after) {
        return Decision::StopThenFinish(Ending::failed(
            "stalled",
            format!(
                "Stalled: no progress for {}; the run was stopped. Retry it, or check the GPU backend's logs.",
                crate::format::duration(o.stall_after.as_secs())
            ),
        ));
    }
    Decision::KeepPolling
}

/// How a job ended when its backend says it has; `None` while it runs.
fn ended_on_backend(backend: &BackendState<'_>) -> Option<Ending> {
    Some(match backend.status {
        RunpodStatus::InQueue | RunpodStatus::InProgress => return None,
        RunpodStatus::Completed => match backend.result {
            Some(WorkerResult::Succeeded {
                stopped_early: Some(_),
                metrics,
                ..
            }) => Ending::failed(
                "stopped_at_deadline",
                format!(
                    "The run reached its time limit after {} steps and stopped; the adapter trained so far was saved. Retry with fewer epochs, or a faster GPU.",
                    metrics.total_steps
                ),
            ),
            Some(WorkerResult::Succeeded { .. }) => Ending::Completed { cost: backend.cost },
            Some(WorkerResult::Failed {
                error_code,
                message,
                hint,
            }) => Ending::failed(
                error_code.clone(),
                if hint.is_empty() {
                    message.clone()
                } else {
                    format!("{message} — {hint}")
                },
            ),
            None => Ending::failed(
                "no_result",
                "The worker finished without reporting a result; the adapter cannot be trusted. Retry the job.",
            ),
        },
        RunpodStatus::Failed => Ending::failed(
            "worker_failed",
            format!(
                "The worker failed: {}",
                FailureDetail::message_of(backend.error)
            ),
        ),
        RunpodStatus::Cancelled => Ending::cancelled(
            "cancelled_on_backend",
            "The job was cancelled on the GPU backend.",
        ),
        RunpodStatus::TimedOut => Ending::failed(
            "timed_out",
            "The run exceeded its execution timeout and was stopped. Retry with fewer epochs, or a faster GPU.",
        ),
    })
}

/// What becomes of a job after a failed backend call.
#[derive(Debug, Clone, PartialEq)]
pub enum AfterError {
    /// Transient: poll again later.
    TryLater,
    /// The backend lost the run (it restarted, or lost its worker): start the next attempt from
    /// the latest checkpoint.
    Resume,
    Finish(Ending),
}

/// What a failed backend call means. `resumes_left`: automatic resumes this job may still use.
pub fn on_backend_error(error: &RunpodError, resumes_left: u32) -> AfterError {
    match error {
        RunpodError::NotFound if resumes_left > 0 => AfterError::Resume,
        RunpodError::NotFound => AfterError::Finish(Ending::failed(
            "backend_lost",
            "The GPU backend lost this run again after the automatic resumes (it restarted, or its results expired). Retry the job: it continues from its latest checkpoint.",
        )),
        e if e.is_transient() => AfterError::TryLater,
        e => AfterError::Finish(Ending::failed("backend_rejected", e.to_string())),
    }
}

/// After `errors` transient failures in a row: give up, or wait this long.
pub fn after_transient_error(
    errors: u32,
    max_errors: u32,
    poll_interval: Duration,
    error: &RunpodError,
) -> Result<Duration, Ending> {
    if errors >= max_errors {
        return Err(Ending::failed(
            "backend_unreachable",
            format!(
                "Lost contact with the GPU backend after {errors} attempts: {error}. Retry the job when it is reachable."
            ),
        ));
    }
    Ok(poll_interval
        .saturating_mul(1 << errors.min(6))
        .min(Duration::from_secs(60)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::contract::FinalMetrics;

    const STALL: Duration = Duration::from_secs(900);

    fn observe(status: JobStatus, backend: Option<BackendState<'_>>) -> Observation<'_> {
        Observation {
            status,
            cancel_requested: false,
            backend,
            current_cost: 1.0,
            budget_cap: None,
            quiet_for: Some(Duration::from_secs(10)),
            stall_after: STALL,
        }
    }

    fn backend(status: RunpodStatus, result: Option<&WorkerResult>) -> BackendState<'_> {
        BackendState {
            status,
            result,
            error: None,
            cost: Some(1.5),
        }
    }

    fn code(decision: &Decision) -> Option<&str> {
        match decision {
            Decision::Finish(e) | Decision::StopThenFinish(e) => e.code(),
            Decision::KeepPolling => None,
        }
    }

    fn succeeded() -> WorkerResult {
        WorkerResult::Succeeded {
            stopped_early: None,
            files: vec![],
            metrics: FinalMetrics {
                final_train_loss: 1.0,
                final_eval_loss: None,
                total_steps: 1,
                train_runtime_s: 1.0,
                tokens_per_sec: 1.0,
                train_tokens: 1,
            },
            quantization_used: "none".into(),
            device: "cpu".into(),
            samples: None,
        }
    }

    #[test]
    fn every_runpod_status_is_mapped() {
        let ok = succeeded();
        let oom = WorkerResult::Failed {
            error_code: "out_of_memory".into(),
            message: "CUDA OOM".into(),
            hint: "reduce batch_size".into(),
        };
        let running = JobStatus::Running;
        for status in [RunpodStatus::InQueue, RunpodStatus::InProgress] {
            assert_eq!(
                decide(&observe(running, Some(backend(status, None)))),
                Decision::KeepPolling
            );
        }
        assert_eq!(
            decide(&observe(
                running,
                Some(backend(RunpodStatus::Completed, Some(&ok)))
            )),
            Decision::Finish(Ending::Completed { cost: Some(1.5) })
        );
        let failed = decide(&observe(
            running,
            Some(backend(RunpodStatus::Completed, Some(&oom))),
        ));
        assert_eq!(code(&failed), Some("out_of_memory"));
        let Decision::Finish(ending) = failed else {
            panic!("{failed:?}")
        };
        assert!(ending.message().unwrap().contains("reduce batch_size"));
        for (status, expected) in [
            (RunpodStatus::Completed, "no_result"),
            (RunpodStatus::Failed, "worker_failed"),
            (RunpodStatus::Cancelled, "cancelled_on_backend"),
            (RunpodStatus::TimedOut, "timed_out"),
        ] {
            let decision = decide(&observe(running, Some(backend(status, None))));
            assert!(matches!(decision, Decision::Finish(_)), "{status:?}");
            assert_eq!(code(&decision), Some(expected), "{status:?}");
        }
    }

    #[test]
    fn a_run_stopped_at_its_deadline_is_not_a_completed_job() {
        let mut partial = succeeded();
        if let WorkerResult::Succeeded { stopped_early, .. } = &mut partial {
            *stopped_early = Some("deadline".into());
        }
        let decision = decide(&observe(
            JobStatus::Running,
            Some(backend(RunpodStatus::Completed, Some(&partial))),
        ));
        assert_eq!(code(&decision), Some("stopped_at_deadline"));
        let Decision::Finish(ending) = decision else {
            panic!("{decision:?}")
        };
        assert!(
            ending
                .message()
                .unwrap()
                .contains("adapter trained so far was saved")
        );
    }

    #[test]
    fn a_finished_run_wins_over_a_cancel_request() {
        let ok = succeeded();
        let mut o = observe(
            JobStatus::Running,
            Some(backend(RunpodStatus::Completed, Some(&ok))),
        );
        o.cancel_requested = true;
        assert!(matches!(
            decide(&o),
            Decision::Finish(Ending::Completed { .. })
        ));
        o.backend = None;
        assert_eq!(
            decide(&o),
            Decision::StopThenFinish(Ending::cancelled_by_owner("Cancelled at your request."))
        );
    }

    #[test]
    fn budget_and_stall_stop_the_run_first() {
        let mut o = observe(JobStatus::Running, None);
        o.budget_cap = Some(1.0);
        let capped = decide(&o);
        assert!(matches!(capped, Decision::StopThenFinish(_)));
        assert_eq!(code(&capped), Some("budget_cap_reached"));
        o.budget_cap = Some(2.0);
        assert_eq!(decide(&o), Decision::KeepPolling);
        o.quiet_for = Some(STALL + Duration::from_secs(1));
        assert_eq!(code(&decide(&o)), Some("stalled"));
        // Waiting for a GPU is not a stall.
        o.status = JobStatus::Initializing;
        assert_eq!(decide(&o), Decision::KeepPolling);
    }

    #[test]
    fn backend_errors_retry_with_backoff_then_give_up() {
        assert_eq!(
            on_backend_error(&RunpodError::NotFound, 1),
            AfterError::Resume,
            "a lost run is resumed while the budget lasts"
        );
        let AfterError::Finish(lost) = on_backend_error(&RunpodError::NotFound, 0) else {
            panic!("a lost run ends once the budget is spent")
        };
        assert_eq!(lost.code(), Some("backend_lost"));
        let interval = Duration::from_secs(1);
        let e = RunpodError::NotFound;
        assert_eq!(
            after_transient_error(1, 30, interval, &e),
            Ok(Duration::from_secs(2))
        );
        assert_eq!(
            after_transient_error(20, 30, interval, &e),
            Ok(Duration::from_secs(60))
        );
        assert_eq!(
            after_transient_error(30, 30, interval, &e)
                .unwrap_err()
                .code(),
            Some("backend_unreachable")
        );
    }
}
