//! `lora-pipeline datasets upload|list|show|rm`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use engine::datasets::{DatasetStatus, DatasetView, NewDataset};
use futures::StreamExt;
use reqwest::Method;
use reqwest::header::{CONTENT_LENGTH, HeaderName, HeaderValue};

use super::client::parse_id;
use super::output::{Output, bytes, print_page};
use super::{ApiClient, ClientError, ExitStatus, Failure};

#[derive(Debug, Subcommand)]
pub enum DatasetAction {
    /// Upload a .json or .jsonl file (≤ 500 MB), then wait for its validation and print the
    /// verdict: statistics when it is ready, each problem with its line number when not.
    Upload {
        file: PathBuf,
        /// Default: the file's name.
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// Return once the upload is confirmed, without waiting for the verdict.
        #[arg(long)]
        no_wait: bool,
    },
    /// The account's datasets, newest first.
    List {
        #[arg(long, default_value_t = 1)]
        page: u32,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// One dataset: status, statistics and validation problems.
    Show { id: String },
    /// Delete a dataset and its files (refused while a job uses it).
    Rm { id: String },
}

pub async fn run(api: &ApiClient, out: &Output, action: DatasetAction) -> anyhow::Result<()> {
    match action {
        DatasetAction::Upload {
            file,
            name,
            description,
            no_wait,
        } => upload(api, out, file, name, description, no_wait).await,
        DatasetAction::List { page, limit } => {
            let list = api.datasets(page, limit).await?;
            if out.json() {
                return out.json_value(&list);
            }
            if list.datasets.is_empty() {
                println!("no datasets yet: upload one with `lora-pipeline datasets upload FILE`");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = list
                .datasets
                .iter()
                .map(|d| {
                    vec![
                        d.id.to_string(),
                        d.status.clone(),
                        d.format.clone().unwrap_or_else(|| "-".into()),
                        d.total_training_pairs
                            .map_or_else(|| "-".into(), |n| n.to_string()),
                        bytes(d.file_size.max(0) as u64),
                        d.created_at.format("%Y-%m-%d %H:%M").to_string(),
                        d.name.clone(),
                    ]
                })
                .collect();
            print_page(
                &[
                    "ID", "STATUS", "FORMAT", "EXAMPLES", "SIZE", "CREATED", "NAME",
                ],
                &rows,
                "datasets",
                list.pagination.page,
                list.pagination.total,
            );
            Ok(())
        }
        DatasetAction::Show { id } => {
            let dataset = api.dataset(parse_id("dataset", &id)?).await?;
            if out.json() {
                out.json_value(&dataset)
            } else {
                print_dataset(&dataset);
                Ok(())
            }
        }
        DatasetAction::Rm { id } => {
            let deleted = api.delete_dataset(parse_id("dataset", &id)?).await?;
            if out.json() {
                out.json_value(&deleted)
            } else {
                println!("deleted dataset {}", deleted.deleted);
                Ok(())
            }
        }
    }
}

async fn upload(
    api: &ApiClient,
    out: &Output,
    file: PathBuf,
    name: Option<String>,
    description: Option<String>,
    no_wait: bool,
) -> anyhow::Result<()> {
    let opened = tokio::fs::File::open(&file)
        .await
        .with_context(|| format!("opening {}", file.display()))?;
    let size = opened
        .metadata()
        .await
        .with_context(|| format!("reading {}", file.display()))?
        .len();
    let file_name = file
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} has no usable file name", file.display()))?
        .to_owned();
    let new = NewDataset {
        name: name.unwrap_or_else(|| file_name.clone()),
        description,
        file_name: file_name.clone(),
        file_size: size,
    };
    // Checked here first: the same rules as the server, without a round trip.
    if let Err(e) = engine::datasets::check_new_dataset(&new) {
        let message = match e {
            engine::datasets::NewDatasetError::TooLarge { size } => format!(
                "{} is {size} bytes, over the limit of {} bytes ({}): split it, or drop examples",
                file.display(),
                engine::datasets::MAX_UPLOAD_BYTES,
                bytes(engine::datasets::MAX_UPLOAD_BYTES)
            ),
            engine::datasets::NewDatasetError::Invalid(fields) => fields.to_string(),
        };
        return Err(Failure::new(ExitStatus::Refused, message).into());
    }
    let created = api.create_dataset(&new).await?;
    let id = created.dataset.id;

    // The file streams from disk in constant memory, counted as it goes.
    let bar = out.bytes_bar(size, &format!("uploading {file_name}"));
    let counted = bar.clone();
    let body =
        tokio_util::io::ReaderStream::with_capacity(opened, 256 * 1024).inspect(move |chunk| {
            if let Ok(chunk) = chunk {
                counted.inc(chunk.len() as u64);
            }
        });
    let method = Method::from_bytes(created.upload_method.as_bytes()).unwrap_or(Method::PUT);
    let mut request = api
        .signed(method, &created.upload_url)
        .header(CONTENT_LENGTH, size)
        .body(reqwest::Body::wrap_stream(body));
    for (name, value) in &created.upload_headers {
        // The length is set above from the file itself; the host comes from the URL.
        if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("host") {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            request = request.header(name, value);
        }
    }
    let sent = api.send(request).await;
    bar.finish_and_clear();
    sent.map_err(|e| match e {
        ClientError::Api { status, message } => ClientError::Api {
            status,
            message: format!("the upload was refused: {message}"),
        },
        e => e,
    })?;
    let mut dataset = api.confirm_dataset(id).await?;
    if !out.json() {
        eprintln!("uploaded {} ({}) as dataset {id}", file_name, bytes(size));
    }
    if !no_wait {
        let spinner = out.spinner("validating");
        // The verdict is a status change; a poll a second costs the server one indexed read.
        while matches!(
            dataset.status,
            DatasetStatus::Uploading | DatasetStatus::Validating
        ) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            dataset = api.dataset(id).await?;
        }
        spinner.finish_and_clear();
    }
    if out.json() {
        out.json_value(&dataset)?;
    } else {
        print_dataset(&dataset);
    }
    match dataset.status {
        DatasetStatus::Invalid => Err(Failure::new(
            ExitStatus::Failed,
            format!(
                "dataset {id} is invalid: {}",
                dataset
                    .status_message
                    .as_deref()
                    .unwrap_or("see the problems above")
            ),
        )
        .into()),
        DatasetStatus::Ready if !dataset.training_ready => Err(Failure::new(
            ExitStatus::Failed,
            format!(
                "dataset {id} cannot be trained on: {}",
                dataset
                    .status_message
                    .as_deref()
                    .unwrap_or("no usable examples")
            ),
        )
        .into()),
        _ => Ok(()),
    }
}

/// Problems printed in full; the rest are counted (the dataset page lists them all).
const PROBLEMS_SHOWN: usize = 50;

fn print_dataset(dataset: &DatasetView) {
    println!("{}  {}", dataset.id, dataset.name);
    println!(
        "  status     {}{}",
        dataset.status.as_str(),
        if dataset.training_ready {
            " (ready to train)"
        } else {
            ""
        }
    );
    if let Some(reason) = &dataset.status_message {
        println!("  why        {reason}");
    }
    println!(
        "  file       {} ({})",
        dataset.file_name,
        bytes(dataset.file_size.max(0) as u64)
    );
    if let Some(format) = dataset.format {
        println!("  format     {}", format.as_str());
    }
    if let Some(pairs) = dataset.total_training_pairs {
        println!("  examples   {pairs}");
    }
    if let Some(tokens) = dataset.total_tokens {
        println!("  tokens     {tokens}");
    }
    if !dataset.validation_errors.is_empty() {
        let counts: Vec<String> = dataset
            .error_counts
            .iter()
            .map(|(code, n)| format!("{code} × {n}"))
            .collect();
        println!("  problems   {}", counts.join(", "));
        for issue in dataset.validation_errors.iter().take(PROBLEMS_SHOWN) {
            let place = match (issue.line, issue.index) {
                (Some(line), _) => format!("line {line}"),
                (None, Some(index)) => format!("example {index}"),
                (None, None) => "file".into(),
            };
            println!("    {place}: {} [{}]", issue.message, issue.code);
            if !issue.suggestion.is_empty() {
                println!("      fix: {}", issue.suggestion);
            }
        }
        let total: u64 = dataset.error_counts.values().sum();
        let shown = dataset.validation_errors.len().min(PROBLEMS_SHOWN) as u64;
        if total > shown {
            println!(
                "    … and {} more (`lora-pipeline datasets show {} --json` lists what was kept)",
                total - shown,
                dataset.id
            );
        }
    }
}
