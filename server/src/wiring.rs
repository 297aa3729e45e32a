//! Builders for the parts the server is assembled from — object storage, the catalog, the GPU
//! backends — each from the typed settings, so CLI commands (verify, health) build the same
//! parts the same way as `serve`.

use std::path::Path;

use anyhow::Context;
use engine::runpod::{RetryPolicy, RunpodClient};
use engine::storage::Storage;
use engine::training::{Backend, Catalog};

use crate::settings::Settings;

/// S3 when configured, else the local file store in the data directory.
pub async fn storage(settings: &Settings) -> anyhow::Result<Storage> {
    let storage = match &settings.s3 {
        Some(s3) => Storage::s3(s3)
            .await
            .with_context(|| format!("connecting to S3 at {} (S3_ENDPOINT)", s3.endpoint))?,
        None => {
            let objects = settings.data_dir.join("objects");
            private_dir(&objects)
                .with_context(|| format!("cannot create {}", objects.display()))?;
            Storage::local(
                objects,
                crate::settings::signing_key(settings)?,
                settings.public_origin(),
            )
        }
    };
    tracing::info!(backend = storage.backend_name(), "object storage ready");
    Ok(storage)
}

/// Creates `dir` for the server's user only, and takes away others' access if it existed.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// `CATALOG_FILE` when set, else the built-in catalog.
pub fn catalog(settings: &Settings) -> anyhow::Result<Catalog> {
    match &settings.catalog_file {
        Some(path) => catalog_file(path),
        None => Ok(Catalog::builtin()),
    }
}

fn catalog_file(path: &Path) -> anyhow::Result<Catalog> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading CATALOG_FILE {}", path.display()))?;
    Catalog::from_toml(&text).map_err(|e| {
        anyhow::anyhow!(
            "CATALOG_FILE {} is not a valid catalog: {e}",
            path.display()
        )
    })
}

/// RunPod (or a standalone executor standing in for it), when configured.
pub fn runpod(settings: &Settings) -> anyhow::Result<Option<RunpodClient>> {
    let Some(runpod) = &settings.gpu.runpod else {
        return Ok(None);
    };
    tracing::info!(endpoint = %runpod.endpoint_url, "GPU backend: RunPod");
    Ok(Some(RunpodClient::new(
        &runpod.endpoint_url,
        &runpod.api_key,
        RetryPolicy::default(),
    )?))
}

/// The embedded local executor and the client that reaches it over loopback (same API),
/// unless `EXECUTOR_SLOTS` is 0.
pub struct LocalExecutor {
    pub executor: engine::executor::Executor,
    /// Why its worker cannot train here (its GPU type is then unavailable, with this reason).
    pub problem: Option<String>,
    /// The bearer key of its routes, generated at start.
    pub key: String,
    pub client: RunpodClient,
}

/// The embedded executor, served on a listener of its own on loopback (never on the public
/// one), behind a bearer key generated at start; `None` when EXECUTOR_SLOTS is 0.
pub async fn local_executor(
    settings: &Settings,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Option<LocalExecutor>> {
    if settings.gpu.executor.slots == 0 {
        return Ok(None);
    }
    let crate::executor::Started { executor, problem } =
        crate::executor::start(&settings.gpu.executor, &settings.data_dir, shutdown.clone())
            .await?;
    let key = uuid::Uuid::new_v4().simple().to_string();
    let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
        .await
        .context("cannot listen on loopback for the embedded executor")?;
    let address = listener.local_addr()?;
    let routes =
        axum::Router::new().nest("/executor", crate::executor::router(executor.clone(), &key));
    let mut stopping = shutdown;
    tokio::spawn(async move {
        let served = axum::serve(listener, routes)
            .with_graceful_shutdown(async move {
                let _ = stopping.wait_for(|stop| *stop).await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the embedded executor's listener failed");
        }
    });
    let client = RunpodClient::new(
        &format!("http://{address}/executor/v2/local"),
        &key,
        RetryPolicy::default(),
    )?
    .labelled("local");
    Ok(Some(LocalExecutor {
        executor,
        problem,
        key,
        client,
    }))
}

/// GPU types of an unconfigured backend stay in the catalog (for estimates), marked
/// unavailable. `local`: `None` without a local executor, else `Some(problem)` (`None` when
/// its worker can train).
pub fn mark_available(catalog: &mut Catalog, runpod: bool, local: Option<Option<&str>>) {
    for gpu in &mut catalog.gpus {
        (gpu.available, gpu.unavailable_reason) = match gpu.backend {
            Backend::Runpod => (runpod, None),
            Backend::Local => match local {
                None => (false, None),
                Some(None) => (true, None),
                Some(Some(problem)) => (false, Some(problem.to_owned())),
            },
        };
    }
}
