//! [`Task::FinalizeModel`](crate::tasks::Task::FinalizeModel): turns a succeeded run into a
//! model, exactly once. Every uploaded file is read back and checked against the size and
//! sha256 the worker reported; `adapter_config.json` against the job; the safetensors header
//! against the config and the base model's dimensions. Then, in one transaction, the model row,
//! the job `completed` (linked to it through `model_artifacts.job_id`) and the owner's
//! notifications. A rerun after a crash at any point repeats the checks and changes nothing
//! twice: the model row is unique per job and the job ends only from an active status.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use uuid::Uuid;

use super::verify::{self, Expected, Rejected};
use super::{ModelFile, Quality, Sample, TrainingSummary, card, quality, store};
use crate::db::Db;
use crate::jobs::contract::{UploadedFile, WorkerResult};
use crate::jobs::finish::{self, Ending, Subject};
use crate::jobs::processor::output_key;
use crate::notifications::{self, NewNotification, NotificationKind};
use crate::storage::{Bucket, Storage};
use crate::tasks::TaskError;
use crate::training::Catalog;

/// How a finalisation ended.
#[derive(Debug)]
pub enum Outcome {
    /// The model exists and the job is completed (now, or by an earlier run).
    Ready(Uuid),
    /// The job moved on (another attempt, or it ended): nothing to do.
    Stale,
    /// The files cannot be a usable adapter: the job must fail with this.
    Rejected(Rejected),
}

/// The largest `adapter_config.json` read (PEFT writes ~1 kB).
const MAX_CONFIG: u64 = 1 << 20;

pub async fn finalize(
    db: &Db,
    storage: &Storage,
    catalog: &Catalog,
    job_id: Uuid,
    attempt: i32,
) -> Result<Outcome, TaskError> {
    let mut tx = db.system().await?;
    let job = store::finalize_input(&mut tx, job_id).await?;
    tx.commit().await?;
    let Some(job) = job else {
        return Ok(Outcome::Stale);
    };
    if job.retry_count != attempt {
        return Ok(Outcome::Stale);
    }
    if job.status.is_terminal() {
        return Ok(match existing(db, job.user_id, job_id).await? {
            Some(id) => Outcome::Ready(id),
            None => Outcome::Stale,
        });
    }
    let result = job
        .worker_result
        .clone()
        .and_then(|v| serde_json::from_value::<WorkerResult>(v).ok());
    let Some(WorkerResult::Succeeded {
        files,
        metrics,
        quantization_used,
        device,
        samples,
        ..
    }) = result
    else {
        return Ok(Outcome::Rejected(Rejected {
            code: "no_result",
            message: "The worker's final result is missing: the adapter cannot be trusted. Retry the job."
                .into(),
        }));
    };
    let model = catalog.model(&job.base_model);
    let hp: crate::training::Hyperparameters =
        serde_json::from_value(job.hyperparameters.clone()).map_err(TaskError::permanent)?;
    let expected = Expected {
        base_model: model.map_or(job.base_model.as_str(), |m| m.source.as_str()),
        rank: hp.rank,
        alpha: hp.alpha,
        shape: model.and_then(|m| m.shape),
    };
    let stored = match check_files(storage, &job, &files, &expected).await? {
        Ok(stored) => stored,
        Err(rejected) => return Ok(Outcome::Rejected(rejected)),
    };

    let mut tx = db.system().await?;
    let curve = crate::jobs::store::curve(&mut tx, job.user_id, job_id).await?;
    tx.commit().await?;
    let quality = quality::rate(&curve, metrics.final_eval_loss);
    let summary = TrainingSummary {
        total_steps: metrics.total_steps,
        train_runtime_s: metrics.train_runtime_s,
        tokens_per_sec: metrics.tokens_per_sec,
        train_tokens: metrics.train_tokens,
        device,
        quantization_used,
        gpu_type: job.gpu_type.clone(),
        gpu_count: job.gpu_count,
        duration_s: job
            .started_at
            .map(|s| (chrono::Utc::now() - s).num_milliseconds() as f64 / 1000.0),
        cost: job.current_cost,
        estimated_cost: job.estimated_total_cost,
        dataset_name: job.dataset_name.clone(),
        dataset_sha256: job.dataset_sha256.clone(),
        dataset_examples: job.dataset_examples,
        dataset_tokens: job.dataset_tokens,
    };
    let name = model_name(&job.dataset_name, model.map_or(&job.base_model, |m| &m.id));
    let adapter_bytes = stored.iter().map(|f| f.size).sum();
    let card_text = card::render(&card::CardInput {
        name: &name,
        base_model: expected.base_model,
        demo: model.is_some_and(|m| m.demo),
        summary: &summary,
        hyperparameters: &job.hyperparameters,
        quality: quality.as_ref(),
        adapter_bytes,
    });
    // The card goes with the files; written before the row, so a crash leaves at worst a card
    // that the rerun writes again.
    let card_key = output_key(job.user_id, job_id, attempt, "README.md");
    storage
        .put_bytes(Bucket::Models, &card_key, card_text.as_bytes())
        .await
        .map_err(TaskError::retryable)?;
    let mut all_files = stored;
    all_files.push(ModelFile {
        name: "README.md".into(),
        size: card_text.len() as u64,
        sha256: hex::encode(Sha256::digest(card_text.as_bytes())),
        key: card_key,
    });

    let samples: Vec<Sample> = samples.unwrap_or_default();
    let configuration = serde_json::json!({
        "preset": job.preset,
        "base_model": job.base_model,
        "hyperparameters": job.hyperparameters,
        "gpu_type": job.gpu_type,
        "gpu_count": job.gpu_count,
    });
    let mut tx = db.system().await?;
    if crate::jobs::store::lock_attempt(&mut tx, job_id).await? != Some(attempt) {
        tx.rollback().await?;
        return Ok(Outcome::Stale);
    }
    let inserted = store::insert(
        &mut tx,
        store::NewModel {
            user_id: job.user_id,
            job_id,
            dataset_id: job.dataset_id,
            attempt,
            name: &name,
            base_model: &job.base_model,
            files: files_json(&all_files),
            quality_metrics: quality.as_ref().map(to_json),
            training_summary: to_json(&summary),
            configuration,
            model_card: &card_text,
            samples: to_json(&samples),
        },
    )
    .await?;
    let subject = Subject {
        id: job_id,
        user_id: job.user_id,
        attempt,
    };
    let ended = finish::finish(
        &mut tx,
        subject,
        &Ending::Completed { cost: None },
        false,
        &catalog.limits,
    )
    .await?;
    if let Some(model_id) = inserted
        && ended
    {
        notify_ready(&mut tx, job.user_id, model_id, &name, quality.as_ref()).await?;
    }
    tx.commit().await?;
    match inserted {
        Some(id) => Ok(Outcome::Ready(id)),
        None => Ok(existing(db, job.user_id, job_id)
            .await?
            .map_or(Outcome::Stale, Outcome::Ready)),
    }
}

fn to_json(value: &impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or_default()
}

/// Files with their keys: `ModelFile` does not serialise its key to clients, so the stored
/// JSON is written field by field.
fn files_json(files: &[ModelFile]) -> serde_json::Value {
    serde_json::Value::Array(
        files
            .iter()
            .map(|f| {
                serde_json::json!({"name": f.name, "key": f.key, "size": f.size, "sha256": f.sha256})
            })
            .collect(),
    )
}

async fn existing(db: &Db, user: Uuid, job: Uuid) -> Result<Option<Uuid>, TaskError> {
    let mut tx = db.system().await?;
    let id = sqlx::query_scalar!(
        "SELECT id FROM model_artifacts WHERE job_id = $1 AND user_id = $2",
        job,
        user
    )
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// "<dataset> · <base model>", within the column's 200 characters.
fn model_name(dataset: &str, base_model: &str) -> String {
    let name = format!("{dataset} · {base_model}");
    name.chars().take(200).collect()
}

async fn notify_ready(
    tx: &mut crate::db::Tx,
    user: Uuid,
    model: Uuid,
    name: &str,
    quality: Option<&Quality>,
) -> Result<(), sqlx::Error> {
    let message = match quality {
        Some(q) => format!(
            "{}. Open it to compare answers and download the adapter.",
            q.explanation
        ),
        None => "Open it to download the adapter.".to_owned(),
    };
    let url = format!("/models/{model}");
    notifications::create(
        tx,
        user,
        NewNotification {
            kind: NotificationKind::ArtifactReady,
            title: &format!("Model ready: {name}"),
            message: &message,
            priority: crate::notifications::Priority::Medium,
            action_url: Some(&url),
            metadata: serde_json::json!({ "model_id": model }),
        },
    )
    .await?;
    Ok(())
}

/// Reads every reported file back: present, of the reported size and sha256; then the config
/// and the safetensors header. `Err` for a storage failure worth retrying; `Ok(Err)` for files
/// that are not a usable adapter.
async fn check_files(
    storage: &Storage,
    job: &store::FinalizeRow,
    files: &[UploadedFile],
    expected: &Expected<'_>,
) -> Result<Result<Vec<ModelFile>, Rejected>, TaskError> {
    let reported: BTreeMap<&str, &UploadedFile> =
        files.iter().map(|f| (f.name.as_str(), f)).collect();
    for required in &crate::jobs::contract::ADAPTER_FILES[..2] {
        if !reported.contains_key(required) {
            return Ok(Err(Rejected {
                code: "artifact_missing",
                message: format!(
                    "The worker did not report {required}: the adapter is incomplete. Retry the job."
                ),
            }));
        }
    }
    let mut stored = Vec::new();
    for file in files {
        if !crate::jobs::contract::ADAPTER_FILES.contains(&file.name.as_str()) {
            return Ok(Err(Rejected {
                code: "artifact_mismatch",
                message: format!(
                    "The worker reported a file the platform did not ask for: {}",
                    file.name
                ),
            }));
        }
        let key = output_key(job.user_id, job.id, job.retry_count, &file.name);
        let Some(info) = storage
            .info(Bucket::Models, &key)
            .await
            .map_err(TaskError::retryable)?
        else {
            return Ok(Err(Rejected {
                code: "artifact_missing",
                message: format!(
                    "{} was reported uploaded but is not in storage. Retry the job.",
                    file.name
                ),
            }));
        };
        let (size, sha256) = digest(storage, &key).await?;
        if size != file.size || info.size != file.size {
            return Ok(Err(Rejected {
                code: "artifact_corrupt",
                message: format!(
                    "{} is {size} bytes in storage; the worker reported {}. The upload was cut short: retry the job.",
                    file.name, file.size
                ),
            }));
        }
        if sha256 != file.sha256 {
            return Ok(Err(Rejected {
                code: "artifact_corrupt",
                message: format!(
                    "{} has sha256 {sha256} in storage; the worker reported {}. Retry the job.",
                    file.name, file.sha256
                ),
            }));
        }
        stored.push(ModelFile {
            name: file.name.clone(),
            size,
            sha256,
            key,
        });
    }
    let config_file = &stored[stored
        .iter()
        .position(|f| f.name == "adapter_config.json")
        .unwrap_or_default()];
    let weights_file = &stored[stored
        .iter()
        .position(|f| f.name == "adapter_model.safetensors")
        .unwrap_or_default()];
    let config_bytes = read_prefix(storage, &config_file.key, MAX_CONFIG).await?;
    let config = match verify::parse_config(&config_bytes)
        .and_then(|c| verify::check_config(&c, expected).map(|()| c))
    {
        Ok(c) => c,
        Err(e) => return Ok(Err(e)),
    };
    let first8 = read_prefix(storage, &weights_file.key, 8).await?;
    let header_len = match verify::header_len(&first8, weights_file.size) {
        Ok(n) => n,
        Err(e) => return Ok(Err(e)),
    };
    let head = read_prefix(storage, &weights_file.key, 8 + header_len).await?;
    let checked = verify::parse_header(&head[8..], header_len, weights_file.size)
        .and_then(|tensors| verify::check_tensors(&tensors, &config, expected.shape));
    Ok(checked.map(|()| stored))
}

/// Size and sha256 of an object, streamed.
async fn digest(storage: &Storage, key: &str) -> Result<(u64, String), TaskError> {
    let mut reader = storage
        .open(Bucket::Models, key)
        .await
        .map_err(TaskError::retryable)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = reader.read(&mut buf).await.map_err(TaskError::retryable)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex::encode(hasher.finalize())))
}

/// The first `len` bytes of an object (fewer when it is shorter).
async fn read_prefix(storage: &Storage, key: &str, len: u64) -> Result<Vec<u8>, TaskError> {
    let reader = storage
        .open(Bucket::Models, key)
        .await
        .map_err(TaskError::retryable)?;
    let mut out = Vec::new();
    reader
        .take(len)
        .read_to_end(&mut out)
        .await
        .map_err(TaskError::retryable)?;
    Ok(out)
}
