//! The executor's semantics, with a small stand-in harness (a Python script written here) so
//! each case runs in well under a second; the real worker runs in the server's flow tests.

use super::*;

const HARNESS: &str = r#"
import json, subprocess, sys, time
job = json.loads(sys.stdin.read())
mode = job["input"].get("mode", "ok")
for i in range(job["input"].get("chunks", 3)):
    print(json.dumps({"type": "tick", "i": i}), flush=True)
if mode == "sleep":
    time.sleep(60)
if mode == "raise":
    print(json.dumps({"__error__": {"error_type": "ValueError", "error_message": "bad input", "error_traceback": "tb"}}), flush=True)
    sys.exit(1)
if mode == "orphan":
    # A process the worker started inherits its stdout and outlives it.
    subprocess.Popen(["sleep", "60"])
if mode == "env":
    import os, resource
    print(json.dumps({"type": "env", "env": dict(os.environ),
                      "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0]}), flush=True)
if mode == "crash":
    print("segfault-ish", file=sys.stderr, flush=True)
    sys.exit(3)
"#;

fn executor(slots: usize) -> (Executor, watch::Sender<bool>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("harness.py"), HARNESS).unwrap();
    let (tx, rx) = watch::channel(false);
    let config = ExecutorConfig {
        python: "python3".into(),
        worker_dir: dir.path().to_owned(),
        slots,
        retention: DEFAULT_RETENTION,
        env: Vec::new(),
        run_as: None,
    };
    (Executor::start(config, rx), tx, dir)
}

fn submit(executor: &Executor, input: Value, timeout_ms: Option<u64>) -> String {
    executor
        .run(RunRequest {
            input,
            policy: Some(Policy {
                execution_timeout: timeout_ms,
                ttl: None,
            }),
            webhook: None,
        })
        .unwrap()
        .id
}

async fn wait_for(executor: &Executor, id: &str, wanted: RunpodStatus) -> StatusResponse {
    for _ in 0..200 {
        let status = executor.status(id).unwrap();
        if status.status == wanted {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{id} never reached {wanted:?}: {:?}", executor.status(id));
}

fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
}

#[tokio::test]
async fn completed_job_has_aggregate_output_and_stream_delivers_once() {
    let (executor, _stop, _dir) = executor(1);
    let id = submit(&executor, serde_json::json!({"chunks": 3}), None);
    let status = wait_for(&executor, &id, RunpodStatus::Completed).await;
    let output = status.output.unwrap();
    assert_eq!(output.as_array().unwrap().len(), 3);
    assert!(status.execution_time.is_some() && status.delay_time.is_some());
    let first = executor.stream(&id).unwrap();
    assert_eq!(first.stream.len(), 3);
    assert_eq!(first.stream[2].output["i"], 2);
    assert!(
        executor.stream(&id).unwrap().stream.is_empty(),
        "delivered once"
    );
    assert_eq!(executor.health().jobs.completed, 1);
}

#[tokio::test]
async fn raised_error_is_failed_with_json_error_and_retry_reruns() {
    let (executor, _stop, _dir) = executor(1);
    let id = submit(&executor, serde_json::json!({"mode": "raise"}), None);
    let status = wait_for(&executor, &id, RunpodStatus::Failed).await;
    let error: Value = serde_json::from_str(&status.error.unwrap()).unwrap();
    assert_eq!(error["error_type"], "ValueError");
    assert_eq!(executor.retry(&id).unwrap().status, RunpodStatus::InQueue);
    wait_for(&executor, &id, RunpodStatus::Failed).await;
    assert_eq!(executor.health().jobs.retried, 1);

    let crashed = submit(&executor, serde_json::json!({"mode": "crash"}), None);
    let status = wait_for(&executor, &crashed, RunpodStatus::Failed).await;
    assert!(
        status.error.unwrap().contains("segfault-ish"),
        "stderr tail explains a crash"
    );
}

#[tokio::test]
async fn cancel_kills_the_process_and_queued_jobs_never_start() {
    let (executor, _stop, _dir) = executor(1);
    let running = submit(&executor, serde_json::json!({"mode": "sleep"}), None);
    let queued = submit(&executor, serde_json::json!({"mode": "sleep"}), None);
    wait_for(&executor, &running, RunpodStatus::InProgress).await;
    let pid = loop {
        if let Some(pid) = executor.pid(&running) {
            break pid;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(process_alive(pid));
    assert_eq!(
        executor.status(&queued).unwrap().status,
        RunpodStatus::InQueue
    );
    assert_eq!(executor.health().jobs.in_queue, 1);
    assert_eq!(
        executor.cancel(&queued).unwrap().status,
        RunpodStatus::Cancelled
    );
    assert_eq!(
        executor.cancel(&running).unwrap().status,
        RunpodStatus::Cancelled
    );
    for _ in 0..100 {
        if !process_alive(pid) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !process_alive(pid),
        "the worker process is gone after cancel"
    );
    assert!(
        executor.retry(&running).is_err(),
        "a cancelled job cannot be retried"
    );
    assert!(matches!(
        executor.status("nope"),
        Err(ExecutorError::NotFound)
    ));
}

#[tokio::test]
async fn execution_timeout_kills_and_reports_timed_out() {
    let (executor, _stop, _dir) = executor(1);
    let id = submit(&executor, serde_json::json!({"mode": "sleep"}), Some(5_000));
    let status = wait_for(&executor, &id, RunpodStatus::TimedOut).await;
    assert!(status.execution_time.unwrap() >= 5_000);
}

#[tokio::test]
async fn purge_queue_cancels_waiting_jobs() {
    let (executor, _stop, _dir) = executor(1);
    let first = submit(&executor, serde_json::json!({"mode": "sleep"}), None);
    wait_for(&executor, &first, RunpodStatus::InProgress).await;
    let waiting = submit(&executor, serde_json::json!({}), None);
    assert_eq!(executor.purge_queue().removed, 1);
    assert_eq!(
        executor.status(&waiting).unwrap().status,
        RunpodStatus::Cancelled
    );
    executor.cancel(&first).unwrap();
}

#[tokio::test]
async fn a_worker_that_exits_while_a_child_holds_its_output_still_completes() {
    let (executor, _stop, _dir) = executor(1);
    let id = submit(&executor, serde_json::json!({"mode": "orphan"}), None);
    let status = wait_for(&executor, &id, RunpodStatus::Completed).await;
    assert_eq!(
        status.output.unwrap().as_array().unwrap().len(),
        3,
        "its output was read"
    );
    // Two drains of 2 s each (stdout, stderr) after the exit, plus Python's start on a loaded
    // machine: well under the 60 s the orphan holds the pipes, which a hang would wait for.
    assert!(
        status.execution_time.unwrap() < 30_000,
        "not held until the orphan exits"
    );
}

#[tokio::test]
async fn the_worker_gets_an_allowlisted_environment_without_the_servers_secrets() {
    // SAFETY: nextest runs each test in its own process; nothing else reads the environment.
    unsafe {
        std::env::set_var("DATABASE_URL", "postgres://app:secret@db/lora");
        std::env::set_var("STORAGE_SIGNING_KEY", "0123456789abcdef0123456789abcdef");
        std::env::set_var("RUNPOD_API_KEY", "rp_secret");
        std::env::set_var("HF_HOME", "/models/hf");
    }
    let (executor, _stop, _dir) = executor(1);
    let id = submit(
        &executor,
        serde_json::json!({"mode": "env", "chunks": 0}),
        None,
    );
    let status = wait_for(&executor, &id, RunpodStatus::Completed).await;
    let output = status.output.unwrap();
    let seen = &output.as_array().unwrap()[0];
    let env = seen["env"].as_object().unwrap();
    for secret in ["DATABASE_URL", "STORAGE_SIGNING_KEY", "RUNPOD_API_KEY"] {
        assert!(!env.contains_key(secret), "{secret} leaked: {env:?}");
    }
    assert_eq!(env["HF_HOME"], "/models/hf", "the model cache is passed on");
    assert!(env.contains_key("PATH"));
    assert_eq!(env["PYTHONUNBUFFERED"], "1");
    assert_eq!(seen["nofile"], 4096);
    assert!(process::inherited("CUDA_VISIBLE_DEVICES"));
    assert!(!process::inherited("PGPASSWORD"));
    assert!(!process::inherited("AWS_SECRET_ACCESS_KEY"));
}
