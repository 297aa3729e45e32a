//! `lora-pipeline models list|show|download`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Subcommand;
use engine::models::ModelView;
use futures::StreamExt;
use reqwest::Method;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::client::parse_id;
use super::output::{Output, bytes, print_page};
use super::{ApiClient, ExitStatus, Failure};

#[derive(Debug, Subcommand)]
pub enum ModelAction {
    /// The account's models (adapters of completed jobs), newest first.
    List {
        #[arg(long, default_value_t = 1)]
        page: u32,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Best rated first.
        #[arg(long)]
        by_quality: bool,
    },
    /// One model: its rating, training summary and files.
    Show { id: String },
    /// Download every file of a model into DIR (default: ./<model name>), each checked
    /// against the sha256 the server recorded.
    Download { id: String, dir: Option<PathBuf> },
}

pub async fn run(api: &ApiClient, out: &Output, action: ModelAction) -> anyhow::Result<()> {
    match action {
        ModelAction::List {
            page,
            limit,
            by_quality,
        } => {
            let list = api.models(page, limit, by_quality).await?;
            if out.json() {
                return out.json_value(&list);
            }
            if list.models.is_empty() {
                println!("no models yet: a job that completes makes one");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = list
                .models
                .iter()
                .map(|m| {
                    vec![
                        m.id.to_string(),
                        rating(m),
                        bytes(m.size()),
                        m.base_model.clone(),
                        m.created_at.format("%Y-%m-%d %H:%M").to_string(),
                        m.name.clone(),
                    ]
                })
                .collect();
            print_page(
                &["ID", "RATING", "SIZE", "BASE", "CREATED", "NAME"],
                &rows,
                "models",
                list.pagination.page,
                list.pagination.total,
            );
            Ok(())
        }
        ModelAction::Show { id } => {
            let model = api.model(parse_id("model", &id)?).await?.model;
            if out.json() {
                return out.json_value(&model);
            }
            println!("{}  {}", model.id, model.name);
            println!("  rating     {}", rating(&model));
            if let Some(quality) = &model.quality_metrics {
                println!("             {}", quality.explanation);
            }
            println!("  base       {}", model.base_model);
            println!("  job        {}", model.job_id);
            for file in &model.files {
                println!(
                    "  file       {} ({}, sha256 {})",
                    file.name,
                    bytes(file.size),
                    file.sha256
                );
            }
            Ok(())
        }
        ModelAction::Download { id, dir } => download(api, out, &id, dir).await,
    }
}

fn rating(model: &ModelView) -> String {
    model
        .quality_metrics
        .as_ref()
        .map_or_else(|| "-".into(), |q| format!("{}/5", q.overall_score))
}

/// A file name the server gave, safe to join to a directory.
fn plain_name(name: &str) -> anyhow::Result<&str> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\', '\0']) {
        bail!("the server named a file {name:?}: refusing to write it");
    }
    Ok(name)
}

async fn download(
    api: &ApiClient,
    out: &Output,
    id: &str,
    dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    let id = parse_id("model", id)?;
    let model = api.model(id).await?.model;
    let links = api.download_links(id).await?;
    let dir = dir.unwrap_or_else(|| PathBuf::from(sanitize(&model.name)));
    tokio::fs::create_dir_all(&dir)
        .await
        .with_context(|| format!("creating {}", dir.display()))?;
    let total: u64 = model.files.iter().map(|f| f.size).sum();
    let bar = out.bytes_bar(total, &format!("downloading {}", model.name));
    let mut written = Vec::new();
    for file in &model.files {
        let name = plain_name(&file.name)?;
        let url = links
            .download_urls
            .get(&file.name)
            .with_context(|| format!("the server gave no link for {name}: try again"))?;
        let path = dir.join(name);
        let digest = fetch(api, url, &path, &bar).await;
        let digest = match digest {
            Ok(digest) => digest,
            Err(e) => {
                bar.finish_and_clear();
                return Err(e);
            }
        };
        if digest != file.sha256 {
            bar.finish_and_clear();
            let _ = tokio::fs::remove_file(&path).await;
            return Err(Failure::new(
                ExitStatus::Error,
                format!(
                    "{name} arrived damaged (sha256 {digest}, expected {}): run the download again",
                    file.sha256
                ),
            )
            .into());
        }
        written.push(serde_json::json!({
            "name": file.name, "path": path, "size": file.size, "sha256": digest,
        }));
    }
    bar.finish_and_clear();
    if out.json() {
        out.json_value(&serde_json::json!({
            "model_id": model.id, "dir": dir, "files": written,
        }))
    } else {
        println!(
            "downloaded {} files ({}) of {} into {}, each sha256-checked",
            model.files.len(),
            bytes(total),
            model.name,
            dir.display()
        );
        Ok(())
    }
}

/// Streams one signed link into `path` (through a `.part` file, renamed when whole); its sha256.
async fn fetch(
    api: &ApiClient,
    url: &str,
    path: &Path,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<String> {
    let response = api.send(api.signed(Method::GET, url)).await?;
    let partial = path.with_extension("part");
    let mut file = tokio::fs::File::create(&partial)
        .await
        .with_context(|| format!("creating {}", partial.display()))?;
    let mut hash = Sha256::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.context("the download broke off: run it again")?;
        hash.update(&chunk);
        file.write_all(&chunk)
            .await
            .with_context(|| format!("writing {}", partial.display()))?;
        bar.inc(chunk.len() as u64);
    }
    file.flush().await?;
    file.sync_all().await?;
    drop(file);
    tokio::fs::rename(&partial, path)
        .await
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(hex::encode(hash.finalize()))
}

/// A model name as a directory name.
fn sanitize(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let cleaned = cleaned.trim_matches(['-', '.']).to_owned();
    if cleaned.is_empty() {
        "model".into()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_cannot_escape_the_directory() {
        assert!(plain_name("adapter_model.safetensors").is_ok());
        for bad in ["", "..", "../x", "a/b", "a\\b"] {
            assert!(plain_name(bad).is_err(), "{bad}");
        }
        assert_eq!(sanitize("my model: v2"), "my-model--v2");
        assert_eq!(sanitize("../.."), "model");
    }
}
