//! One worker process: `python harness.py --job-id <id>` with the job on stdin, one JSON line
//! per yielded value on stdout, logs on stderr. Stopping it kills its whole process group.

use std::collections::VecDeque;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::{oneshot, watch};

use super::{ExecutorConfig, Stop};

pub(super) enum ProcessEvent {
    Started(u32),
    Yielded(Value),
}

pub(super) enum Outcome {
    /// The process ended on its own; `error` is RunPod's FAILED `error` string.
    Exited {
        success: bool,
        error: String,
    },
    Stopped(Stop),
    SpawnFailed(String),
}

/// Lines of stderr kept to explain a crash.
const STDERR_TAIL: usize = 40;
/// How long output is still read after the worker exited.
const DRAIN: Duration = Duration::from_secs(2);
/// Time a worker gets to exit after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(3);

/// Variables of the server's environment the worker inherits: the basics of a process, the
/// model caches, the CUDA and PyTorch settings and the TLS trust store. Nothing else — the
/// server's secrets (DATABASE_URL, STORAGE_SIGNING_KEY, RUNPOD_API_KEY, S3 keys …) never
/// reach code that trains on users' data.
pub(super) fn inherited(name: &str) -> bool {
    const EXACT: &[&str] = &[
        "PATH",
        "HOME",
        "USER",
        "LANG",
        "TZ",
        "TMPDIR",
        "LD_LIBRARY_PATH",
        "OMP_NUM_THREADS",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "XDG_CACHE_HOME",
    ];
    const PREFIXES: &[&str] = &[
        "LC_",
        "HF_",
        "HUGGINGFACE_",
        "TRANSFORMERS_",
        "LORA_WORKER_",
        "CUDA_",
        "NVIDIA_",
        "PYTORCH_",
        "TORCH_",
        "MKL_",
    ];
    EXACT.contains(&name) || PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Open files one worker may hold (tokenizer shards, checkpoints, sockets).
const MAX_OPEN_FILES: libc::rlim_t = 4096;

pub(super) async fn run_job(
    config: &ExecutorConfig,
    id: &str,
    input: Value,
    limit: Duration,
    stop: oneshot::Receiver<Stop>,
    mut shutdown: watch::Receiver<bool>,
    mut sink: impl FnMut(ProcessEvent),
) -> Outcome {
    let mut command = Command::new(&config.python);
    command
        .arg("-u")
        .arg(config.worker_dir.join("harness.py"))
        .arg("--job-id")
        .arg(id)
        .current_dir(&config.worker_dir)
        // A cleared environment: only what the worker needs, never the server's secrets.
        .env_clear()
        .envs(std::env::vars_os().filter(|(k, _)| k.to_str().is_some_and(inherited)))
        .envs(config.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // Its own process group, so a stop reaches anything it started.
        .process_group(0);
    if let Some(user) = &config.run_as {
        // Set before exec, after which the worker cannot regain root; supplementary groups
        // are dropped with it (std calls setgroups(0) when root sets a uid).
        command
            .uid(user.uid)
            .gid(user.gid)
            .env("HOME", &user.home)
            .env("USER", &user.name)
            .env("TMPDIR", user.home.join("tmp"));
    }
    // SAFETY: prctl and setrlimit are async-signal-safe. The first asks the kernel to kill the
    // worker if we die, so a crashed server leaves no orphan training behind; the limits bound
    // its open files and forbid core dumps (which would hold users' data). No address-space
    // limit: CUDA reserves terabytes of virtual memory for its unified addressing.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            let files = libc::rlimit {
                rlim_cur: MAX_OPEN_FILES,
                rlim_max: MAX_OPEN_FILES,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &files);
            let no_core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &no_core);
            Ok(())
        });
    }
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Outcome::SpawnFailed(format!(
                "cannot start the worker ({} {}): {e}",
                config.python.display(),
                config.worker_dir.join("harness.py").display()
            ));
        }
    };
    let pid = child.id().unwrap_or(0);
    sink(ProcessEvent::Started(pid));
    tracing::info!(job = id, pid, "worker started");

    if let Some(mut stdin) = child.stdin.take() {
        let job = serde_json::json!({ "id": id, "input": input }).to_string();
        // A worker that dies before reading its input is reported by its exit status.
        let _ = stdin.write_all(job.as_bytes()).await;
        let _ = stdin.shutdown().await;
    }
    let mut stdout = match child.stdout.take() {
        Some(s) => BufReader::new(s).lines(),
        None => return Outcome::SpawnFailed("the worker has no stdout".into()),
    };
    let stderr = child.stderr.take();
    let job_id = id.to_owned();
    let stderr_task = tokio::spawn(async move {
        let mut tail = VecDeque::with_capacity(STDERR_TAIL);
        if let Some(stderr) = stderr {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(job = %job_id, "worker: {line}");
                if tail.len() == STDERR_TAIL {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        }
        tail.into_iter().collect::<Vec<_>>().join("\n")
    });

    let deadline = tokio::time::sleep(limit);
    tokio::pin!(deadline);
    tokio::pin!(stop);
    let mut harness_error: Option<Value> = None;
    let mut stdout_open = true;
    let stopped = loop {
        tokio::select! {
            line = stdout.next_line(), if stdout_open => match line {
                Ok(Some(line)) => on_line(id, &line, &mut harness_error, &mut sink),
                _ => stdout_open = false,
            },
            status = child.wait() => {
                // Read what the worker printed before it exited, within bounds: a process it
                // started may still hold the pipes open.
                let drain_until = tokio::time::Instant::now() + DRAIN;
                while stdout_open {
                    match tokio::time::timeout_at(drain_until, stdout.next_line()).await {
                        Ok(Ok(Some(line))) => on_line(id, &line, &mut harness_error, &mut sink),
                        _ => stdout_open = false,
                    }
                }
                let tail = tokio::time::timeout(DRAIN, stderr_task)
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or_default();
                // Anything the worker left behind goes with it.
                if let Ok(group) = i32::try_from(pid)
                    && group > 0
                {
                    // SAFETY: a plain syscall on the process group we created.
                    unsafe {
                        libc::killpg(group, libc::SIGKILL);
                    }
                }
                return match status {
                    Ok(s) if s.success() => Outcome::Exited { success: true, error: String::new() },
                    Ok(s) => Outcome::Exited {
                        success: false,
                        error: match harness_error {
                            Some(e) => e.to_string(),
                            None => serde_json::json!({
                                "error_type": "WorkerExited",
                                "error_message": format!("the worker exited with {s}"),
                                "error_traceback": tail,
                            })
                            .to_string(),
                        },
                    },
                    Err(e) => Outcome::Exited {
                        success: false,
                        error: serde_json::json!({"error_type": "WorkerLost", "error_message": e.to_string()}).to_string(),
                    },
                };
            }
            () = &mut deadline => break Stop::Timeout,
            reason = &mut stop => break reason.unwrap_or(Stop::Cancel),
            _ = shutdown.changed() => break Stop::Shutdown,
        }
    };
    kill_group(pid, &mut child).await;
    stderr_task.abort();
    tracing::info!(job = id, pid, reason = ?stopped, "worker stopped");
    Outcome::Stopped(stopped)
}

/// SIGTERM to the process group, SIGKILL after a grace period, then reap.
async fn kill_group(pid: u32, child: &mut tokio::process::Child) {
    let Ok(group) = i32::try_from(pid) else {
        return;
    };
    if group <= 0 {
        return;
    }
    // SAFETY: plain syscalls on a process group we created.
    unsafe {
        libc::killpg(group, libc::SIGTERM);
    }
    if tokio::time::timeout(TERM_GRACE, child.wait())
        .await
        .is_err()
    {
        unsafe {
            libc::killpg(group, libc::SIGKILL);
        }
        let _ = child.wait().await;
    } else {
        // The leader is gone; make sure nothing it started lives on.
        unsafe {
            libc::killpg(group, libc::SIGKILL);
        }
    }
}

/// One line of the worker's stdout: a yielded value, or the harness's error report.
fn on_line(
    id: &str,
    line: &str,
    harness_error: &mut Option<Value>,
    sink: &mut impl FnMut(ProcessEvent),
) {
    match serde_json::from_str::<Value>(line) {
        Ok(value) => match value.get("__error__") {
            Some(error) => *harness_error = Some(error.clone()),
            None => sink(ProcessEvent::Yielded(value)),
        },
        Err(_) => tracing::warn!(job = id, "worker printed a non-JSON line; ignored"),
    }
}
