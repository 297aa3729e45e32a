//! `lora-pipeline worker install`: the local executor's Python environment, built into
//! DATA_DIR from the requirements pinned inside this binary, so the binary alone gets a
//! self-hoster to a first trained demo.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

use crate::executor::WorkerSource;

/// Where the environment lives.
pub fn env_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("worker-env")
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// Builds (or brings up to date) the environment; returns its Python. Idempotent: a marker
/// records the requirements and base interpreter it was built from.
pub async fn install(data_dir: &Path, base: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let requirements = WorkerSource::get("requirements.txt")
        .context("this binary carries no worker requirements")?
        .data;
    // As root the worker runs as its own user, who must reach the interpreter: the system's,
    // not one under /root (pyenv, conda).
    let base = base.unwrap_or_else(|| {
        if is_root() && Path::new("/usr/bin/python3").exists() {
            "/usr/bin/python3".into()
        } else {
            "python3".into()
        }
    });
    let dir = env_dir(data_dir);
    let python = dir.join("bin/python");
    let marker = dir.join(".installed");
    let mut hasher = Sha256::new();
    hasher.update(&requirements);
    hasher.update(base.as_os_str().as_encoded_bytes());
    let want = hex::encode(hasher.finalize());
    if tokio::fs::read_to_string(&marker).await.ok().as_deref() == Some(want.as_str()) {
        println!("already up to date: {}", dir.display());
        return Ok(python);
    }
    tokio::fs::create_dir_all(data_dir)
        .await
        .with_context(|| format!("creating DATA_DIR {}", data_dir.display()))?;
    if !python.exists() {
        println!(
            "creating a virtual environment in {} from {}",
            dir.display(),
            base.display()
        );
        run(
            tokio::process::Command::new(&base)
                .args(["-m", "venv"])
                .arg(&dir),
            &format!(
                "creating the environment with {} (it needs Python 3.10+ and its venv module: \
                 apt-get install python3-venv)",
                base.display()
            ),
        )
        .await?;
    }
    let file = dir.join("requirements.txt");
    tokio::fs::write(&file, &requirements)
        .await
        .with_context(|| format!("writing {}", file.display()))?;
    println!(
        "installing torch, transformers, peft … (a few GB the first time; pip shows its progress)"
    );
    run(
        tokio::process::Command::new(dir.join("bin/pip"))
            .args([
                "install",
                "--disable-pip-version-check",
                "--progress-bar",
                "on",
                "-r",
            ])
            .arg(&file),
        "installing the worker's requirements",
    )
    .await?;
    // Readable by the worker's own user whatever the umask.
    tokio::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
        .await
        .with_context(|| format!("opening {} to the worker's user", dir.display()))?;
    tokio::fs::write(&marker, want)
        .await
        .with_context(|| format!("writing {}", marker.display()))?;
    Ok(python)
}

/// Runs a step with its output on the terminal (pip's progress bars).
async fn run(command: &mut tokio::process::Command, what: &str) -> anyhow::Result<()> {
    let status = command
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .await
        .with_context(|| what.to_owned())?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}
