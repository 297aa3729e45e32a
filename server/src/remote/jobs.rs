//! `lora-pipeline jobs create|list|show|cancel|retry|watch`.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use clap::{Args, Subcommand};
use engine::jobs::{HyperparameterInput, JobEvent, JobEventRecord, JobRequest, JobStatus, JobView};
use engine::training::{PresetName, Quantization};
use futures::StreamExt;
use reqwest::Method;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::client::parse_id;
use super::output::{Output, dollars, duration, print_page};
use super::sse::SseParser;
use super::{ApiClient, ExitStatus, Failure};
use crate::routes::training::EstimateAnswer;

#[derive(Debug, Subcommand)]
pub enum JobAction {
    /// Estimate a job, ask, then start it. Only --dataset and --model are needed: the preset
    /// (default balanced) fills every hyperparameter not given, and the cheapest GPU that fits
    /// is chosen unless --gpu says otherwise.
    Create(Box<CreateArgs>),
    /// The account's jobs, newest first.
    List {
        #[arg(long, default_value_t = 1)]
        page: u32,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// One job: status, progress, cost, latest metrics, cost records.
    Show { id: String },
    /// Stop a job (a queued one at once; a running one on its GPU).
    Cancel { id: String },
    /// Run a failed or cancelled job again, from its latest checkpoint when it has one.
    Retry { id: String },
    /// Follow a job live until it ends: progress, loss, time left, cost. The exit code is the
    /// job's outcome (0 completed, 6 failed, 7 cancelled).
    Watch { id: String },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The dataset's id (`lora-pipeline datasets list`).
    #[arg(long)]
    dataset: String,
    /// The base model (the catalog's name, e.g. tiny-random-llama).
    #[arg(long)]
    model: String,
    /// fast, balanced, quality or custom.
    #[arg(long, value_parser = by_name::<PresetName>)]
    preset: Option<PresetName>,
    /// A GPU type from the catalog (e.g. local, NVIDIA RTX A4000); default: the cheapest that fits.
    #[arg(long)]
    gpu: Option<String>,
    #[arg(long)]
    gpus: Option<u32>,
    /// Stop the job when its cost reaches this many dollars.
    #[arg(long)]
    budget: Option<f64>,
    /// Start even when the budget is below the estimate.
    #[arg(long)]
    confirm_low_budget: bool,
    #[arg(long)]
    epochs: Option<u32>,
    #[arg(long)]
    learning_rate: Option<f64>,
    #[arg(long)]
    batch_size: Option<u32>,
    #[arg(long)]
    gradient_accumulation_steps: Option<u32>,
    /// LoRA rank.
    #[arg(long)]
    rank: Option<u32>,
    /// LoRA alpha.
    #[arg(long)]
    alpha: Option<u32>,
    /// LoRA dropout.
    #[arg(long)]
    dropout: Option<f64>,
    #[arg(long)]
    max_seq_len: Option<u32>,
    #[arg(long)]
    warmup_ratio: Option<f64>,
    /// nf4 (QLoRA, CUDA GPUs) or none.
    #[arg(long, value_parser = by_name::<Quantization>)]
    quantization: Option<Quantization>,
    /// Share of examples held out for evaluation.
    #[arg(long)]
    eval_fraction: Option<f64>,
    #[arg(long)]
    seed: Option<u64>,
    /// Start without asking (scripts; the estimate is still printed).
    #[arg(long, short = 'y')]
    yes: bool,
    /// Follow the job after starting it, as `jobs watch` does.
    #[arg(long)]
    watch: bool,
}

/// A name as the API spells it (`fast`, `nf4` …).
fn by_name<T: DeserializeOwned>(raw: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(raw.trim().to_lowercase()))
        .map_err(|e| e.to_string())
}

impl CreateArgs {
    fn request(&self) -> Result<JobRequest, Failure> {
        Ok(JobRequest {
            dataset_id: parse_id("dataset", &self.dataset)?,
            base_model: self.model.clone(),
            preset: self.preset,
            hyperparameters: HyperparameterInput {
                learning_rate: self.learning_rate,
                batch_size: self.batch_size,
                gradient_accumulation_steps: self.gradient_accumulation_steps,
                epochs: self.epochs,
                rank: self.rank,
                alpha: self.alpha,
                dropout: self.dropout,
                max_seq_len: self.max_seq_len,
                warmup_ratio: self.warmup_ratio,
                quantization: self.quantization,
                eval_fraction: self.eval_fraction,
                seed: self.seed,
            },
            gpu_type: self.gpu.clone(),
            gpu_count: self.gpus,
            gpu_config: None,
            budget_cap: self.budget,
            confirm_low_budget: self.confirm_low_budget,
        })
    }
}

pub async fn run(api: &ApiClient, out: &Output, action: JobAction) -> anyhow::Result<()> {
    match action {
        JobAction::Create(args) => create(api, out, &args).await,
        JobAction::List { page, limit } => {
            let list = api.jobs(page, limit).await?;
            if out.json() {
                return out.json_value(&list);
            }
            if list.jobs.is_empty() {
                println!(
                    "no jobs yet: start one with `lora-pipeline jobs create --dataset ID --model NAME`"
                );
                return Ok(());
            }
            let rows: Vec<Vec<String>> = list
                .jobs
                .iter()
                .map(|j| {
                    vec![
                        j.id.to_string(),
                        j.status.as_str().to_owned(),
                        j.current_stage.as_str().to_owned(),
                        format!("{:.0}%", j.progress),
                        dollars(j.final_cost.unwrap_or(j.current_cost)),
                        format!("{} × {}", j.gpu_type, j.gpu_count),
                        j.created_at.format("%Y-%m-%d %H:%M").to_string(),
                        j.base_model.clone(),
                    ]
                })
                .collect();
            print_page(
                &[
                    "ID", "STATUS", "STAGE", "PROGRESS", "COST", "GPU", "CREATED", "MODEL",
                ],
                &rows,
                "jobs",
                list.pagination.page,
                list.pagination.total,
            );
            Ok(())
        }
        JobAction::Show { id } => {
            let detail = api.job(parse_id("job", &id)?).await?;
            if out.json() {
                return out.json_value(&detail);
            }
            print_job(&detail.job);
            if let Some(last) = detail.metrics.last() {
                println!(
                    "  last step  {} (train loss {}, eval loss {})",
                    last.step,
                    last.train_loss
                        .map_or_else(|| "-".into(), |l| format!("{l:.4}")),
                    detail
                        .metrics
                        .iter()
                        .rev()
                        .find_map(|m| m.eval_loss)
                        .map_or_else(|| "-".into(), |l| format!("{l:.4}"))
                );
            }
            if !detail.cost_records.is_empty() {
                let total: f64 = detail.cost_records.iter().map(|c| c.amount).sum();
                println!(
                    "  billed     {} in {} cost records",
                    dollars(total),
                    detail.cost_records.len()
                );
            }
            Ok(())
        }
        JobAction::Cancel { id } => {
            let job = api.cancel_job(parse_id("job", &id)?).await?.job;
            if out.json() {
                return out.json_value(&job);
            }
            if job.status.is_terminal() {
                println!("job {} is {}", job.id, job.status.as_str());
            } else {
                println!(
                    "job {} is stopping on its GPU (`lora-pipeline jobs watch {}` shows when)",
                    job.id, job.id
                );
            }
            Ok(())
        }
        JobAction::Retry { id } => {
            let job = api.retry_job(parse_id("job", &id)?).await?.job;
            if out.json() {
                return out.json_value(&job);
            }
            let from = job
                .resumed_from_step
                .map_or_else(|| "from the start".into(), |s| format!("from step {s}"));
            println!(
                "job {} runs again (attempt {}, {from}); follow it with `lora-pipeline jobs watch {}`",
                job.id,
                job.retry_count + 1,
                job.id
            );
            Ok(())
        }
        JobAction::Watch { id } => watch(api, out, parse_id("job", &id)?).await,
    }
}

async fn create(api: &ApiClient, out: &Output, args: &CreateArgs) -> anyhow::Result<()> {
    let request = args.request()?;
    let estimate = api.estimate(&request).await?;
    // The estimate goes to standard error with --json, so standard output stays one document.
    let summary = estimate_summary(&estimate);
    if out.json() {
        eprint!("{summary}");
    } else {
        print!("{summary}");
    }
    if !args.yes {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return Err(Failure::new(
                ExitStatus::Declined,
                "nothing started: pass --yes to start a paid job without being asked",
            )
            .into());
        }
        eprint!("Start this job? [y/N] ");
        std::io::stderr().flush()?;
        let mut answer = String::new();
        stdin.lock().read_line(&mut answer)?;
        if !matches!(answer.trim().to_lowercase().as_str(), "y" | "yes") {
            return Err(Failure::new(ExitStatus::Declined, "nothing started").into());
        }
    }
    let created = api.create_job(&request).await?;
    let id = created.job.id;
    if out.json() && !args.watch {
        return out.json_value(&created);
    }
    if !out.json() {
        println!("started job {id}");
    }
    if args.watch {
        watch(api, out, id).await
    } else {
        println!("follow it with `lora-pipeline jobs watch {id}`");
        Ok(())
    }
}

fn estimate_summary(answer: &EstimateAnswer) -> String {
    let config = &answer.config;
    let estimate = &answer.estimate;
    let hp = &config.hyperparameters;
    let mut text = format!(
        "{} on {} × {} (preset {}):\n",
        config.base_model,
        config.gpu_type,
        config.gpu_count,
        serde_json::to_value(config.preset)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    );
    text.push_str(&format!(
        "  cost       {} (likely {} to {})\n",
        dollars(answer.estimated_cost),
        dollars(estimate.cost.low),
        dollars(estimate.cost.high)
    ));
    text.push_str(&format!(
        "  duration   {} (likely {} to {}), at {}/h\n",
        duration(estimate.billed_seconds as f64),
        duration(estimate.duration_seconds.low),
        duration(estimate.duration_seconds.high),
        dollars(estimate.price_per_hour)
    ));
    text.push_str(&format!(
        "  training   {} steps, {} epochs, rank {}, lr {}, batch {} × {}, {} quantization\n",
        estimate.total_steps,
        hp.epochs,
        hp.rank,
        hp.learning_rate,
        hp.batch_size,
        hp.gradient_accumulation_steps,
        serde_json::to_value(hp.quantization)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    ));
    for adjustment in &answer.adjustments {
        text.push_str(&format!(
            "  note       {}: {}\n",
            adjustment.field, adjustment.message
        ));
    }
    text
}

fn print_job(job: &JobView) {
    println!(
        "{}  {} on {} × {}",
        job.id, job.base_model, job.gpu_type, job.gpu_count
    );
    println!(
        "  status     {} ({}), {:.0}%{}",
        job.status.as_str(),
        job.current_stage.as_str(),
        job.progress,
        job.total_steps.map_or_else(String::new, |t| format!(
            ", step {} of {t}",
            job.current_step
        ))
    );
    if let Some(name) = &job.dataset_name {
        println!("  dataset    {name} ({})", job.dataset_id);
    }
    let cost = match (job.final_cost, job.estimated_total_cost) {
        (Some(cost), _) => format!("{} (final)", dollars(cost)),
        (None, Some(estimate)) => format!(
            "{} so far of about {}",
            dollars(job.current_cost),
            dollars(estimate)
        ),
        (None, None) => format!("{} so far", dollars(job.current_cost)),
    };
    println!("  cost       {cost}");
    if let Some(metrics) = &job.current_metrics {
        println!(
            "  loss       {:.4} at step {}, {} left",
            metrics.metrics.train_loss,
            metrics.metrics.step,
            duration(metrics.eta_s)
        );
    }
    if let Some(error) = &job.error_message {
        println!("  error      {error}");
    }
    if let Some(model) = job.artifact_id {
        println!("  model      {model} (`lora-pipeline models download {model}`)");
    }
}

/// Whether the job's end is a success, as an exit code.
fn outcome(job: &JobView) -> anyhow::Result<()> {
    match job.status {
        JobStatus::Completed => Ok(()),
        JobStatus::Cancelled => Err(Failure::new(
            ExitStatus::Cancelled,
            format!("job {} was cancelled", job.id),
        )
        .into()),
        _ => Err(Failure::new(
            ExitStatus::Failed,
            format!(
                "job {} failed: {}",
                job.id,
                job.error_message.as_deref().unwrap_or("no reason given")
            ),
        )
        .into()),
    }
}

fn print_end(out: &Output, job: &JobView) {
    if out.json() {
        return;
    }
    let took = match (job.started_at, job.completed_at) {
        (Some(start), Some(end)) => format!(" in {}", duration((end - start).num_seconds() as f64)),
        _ => String::new(),
    };
    println!(
        "job {} {}{took}; cost {}",
        job.id,
        job.status.as_str(),
        dollars(job.final_cost.unwrap_or(job.current_cost))
    );
    if let Some(model) = job.artifact_id {
        println!("download the adapter with `lora-pipeline models download {model}`");
    }
}

/// How often a progress line is printed when no bar is drawn.
const PROGRESS_LINE_EVERY: Duration = Duration::from_secs(5);

/// The longest wait between reconnects.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(30);

/// Follows the job's event stream until it ends, reconnecting with `Last-Event-ID` so nothing
/// is missed or shown twice.
async fn watch(api: &ApiClient, out: &Output, id: Uuid) -> anyhow::Result<()> {
    let job = api.job(id).await?.job;
    if job.status.is_terminal() {
        print_end(out, &job);
        return outcome(&job);
    }
    let bar = out.steps_bar(job.total_steps.unwrap_or(0).max(0) as u64);
    bar.set_position(job.current_step.max(0) as u64);
    out.note(
        &bar,
        format!(
            "job {id}: {} ({}); Ctrl-C stops watching, not the job",
            job.status.as_str(),
            job.current_stage.as_str()
        ),
    );
    // Without a drawn bar, progress is a line every few seconds.
    let mut last_progress_line = std::time::Instant::now()
        .checked_sub(PROGRESS_LINE_EVERY)
        .unwrap_or_else(std::time::Instant::now);
    let mut last = job.last_event_id;
    let mut delay = Duration::from_secs(1);
    loop {
        let request = api
            .request(Method::GET, &format!("/api/jobs/{id}/events"), true)
            .header("Last-Event-ID", last.to_string());
        let response = match api.send(request).await {
            Ok(response) => response,
            Err(e) if e.is_transient() => {
                out.note(
                    &bar,
                    format!("{e}; reconnecting in {}", duration(delay.as_secs_f64())),
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RECONNECT_DELAY);
                continue;
            }
            Err(e) => {
                bar.finish_and_clear();
                return Err(e.into());
            }
        };
        delay = Duration::from_secs(1);
        let mut parser = SseParser::default();
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => {
                    out.note(&bar, format!("the stream broke ({e}); reconnecting"));
                    break;
                }
            };
            for event in parser.feed(&chunk) {
                let Ok(record) = serde_json::from_str::<JobEventRecord>(&event.data) else {
                    // A kind this version does not know: skipped, the stream goes on.
                    continue;
                };
                last = last.max(record.id);
                if out.json() {
                    out.json_line(&record)?;
                }
                match &record.event {
                    JobEvent::Status(change) => {
                        if change.status.is_terminal() {
                            bar.finish_and_clear();
                            let job = api.job(id).await?.job;
                            print_end(out, &job);
                            return outcome(&job);
                        }
                        out.note(
                            &bar,
                            format!(
                                "{} ({})",
                                change.status.as_str(),
                                change.current_stage.as_str()
                            ),
                        );
                    }
                    JobEvent::Stage(stage) => {
                        if let Some(total) = stage.total_steps {
                            bar.set_length(u64::from(total));
                        }
                        let message = if stage.message.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", stage.message)
                        };
                        out.note(&bar, format!("stage {}{message}", stage.stage.as_str()));
                    }
                    JobEvent::Metrics(update) => {
                        let message = format!(
                            "loss {:.4} · {} left · {}",
                            update.metrics.train_loss,
                            duration(update.eta_s),
                            dollars(update.current_cost)
                        );
                        bar.set_length(u64::from(update.metrics.total_steps));
                        bar.set_position(u64::from(update.metrics.step));
                        if !out.interactive() && last_progress_line.elapsed() >= PROGRESS_LINE_EVERY
                        {
                            last_progress_line = std::time::Instant::now();
                            out.note(
                                &bar,
                                format!(
                                    "step {}/{} · {message}",
                                    update.metrics.step, update.metrics.total_steps
                                ),
                            );
                        }
                        bar.set_message(message);
                    }
                    JobEvent::Eval(eval) => out.note(
                        &bar,
                        format!("eval loss {:.4} at step {}", eval.eval_loss, eval.step),
                    ),
                    JobEvent::Checkpoint(checkpoint) => out.note(
                        &bar,
                        format!(
                            "checkpoint saved at step {} (a retry continues from here)",
                            checkpoint.step
                        ),
                    ),
                    JobEvent::Result(_) => {}
                }
            }
        }
        // The server closed the stream (a restart, a deploy): continue where it stopped.
        tokio::time::sleep(delay).await;
    }
}
