//! The `lora-pipeline` command line: `serve`, `executor`, `migrate`, `worker install`,
//! `user create|invite|list|disable` on this machine, and (in `remote`) `login`, `datasets`,
//! `jobs` and `models` against a server.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use engine::accounts::{Credentials, store};

use crate::settings::{self, LogFormat, Settings};
use crate::startup::{Application, shutdown_signal};
use crate::{database, telemetry};

#[derive(Debug, Parser)]
#[command(
    name = "lora-pipeline",
    version,
    about = "Self-hosted LoRA fine-tuning platform"
)]
pub struct Cli {
    /// PostgreSQL URL. Unset: a private cluster managed inside DATA_DIR.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    database_url: Option<String>,
    /// Where the managed database and local files live.
    #[arg(long, env = "DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// Log lines as text or JSON.
    #[arg(
        long,
        env = "LOG_FORMAT",
        global = true,
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start; the size of the `serve` variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Local(LocalCommand),
    #[command(flatten)]
    Remote(crate::remote::RemoteCommand),
}

/// What `serve` and `verify` read: where the platform listens and is reached, its storage, its
/// catalog and its GPU backends.
#[derive(Debug, clap::Args)]
struct PlatformOptions {
    /// Address to listen on.
    #[arg(long, env = "BIND_ADDR", default_value = "127.0.0.1:3000")]
    bind: String,
    /// How browsers and GPU workers reach this server, e.g. https://lora.example.com.
    /// Defaults to http://<bind address>.
    #[arg(long, env = "PUBLIC_URL")]
    public_url: Option<String>,
    /// Key for signed storage URLs (shared by all replicas); default: generated in DATA_DIR.
    #[arg(long, env = "STORAGE_SIGNING_KEY", hide_env_values = true)]
    storage_signing_key: Option<String>,
    #[command(flatten)]
    s3: settings::S3Options,
    /// GPU types, prices and base models (TOML, same shape as the built-in catalog).
    #[arg(long, env = "CATALOG_FILE")]
    catalog_file: Option<PathBuf>,
    #[command(flatten)]
    gpu: settings::GpuOptions,
}

/// Commands that run this machine's server, executor, database or worker environment.
// Parsed once at start; the size of the `serve` variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum LocalCommand {
    /// Run the web application (and, without DATABASE_URL, its database).
    Serve {
        #[command(flatten)]
        platform: PlatformOptions,
        /// Reverse proxies in front of this server (comma-separated CIDRs): only from them is
        /// `X-Forwarded-For` read, for the caller's address in login limits.
        #[arg(long, env = "TRUSTED_PROXIES")]
        trusted_proxies: Option<String>,
        /// Who may create an account: open, invite (links from an administrator or
        /// `lora-pipeline user invite`) or closed. The first account always may, and is the
        /// administrator.
        #[arg(long, env = "REGISTRATION", default_value = "invite")]
        registration: String,
        /// Registrations one client address may attempt per hour.
        #[arg(long, env = "REGISTRATIONS_PER_HOUR", default_value_t = 10)]
        registrations_per_hour: u32,
        /// How hard pages and JSON are compressed, 1 (fastest) to 9 (smallest), for brotli and
        /// gzip alike; scripts/bench/ssr.sh measures the trade-off (docs/PERFORMANCE.md).
        #[arg(long, env = "COMPRESSION_LEVEL", default_value_t = settings::DEFAULT_COMPRESSION_LEVEL,
              value_parser = clap::value_parser!(u32).range(1..=9))]
        compression_level: u32,
        /// Live streams (SSE) one user may hold open on this replica; past it a new one is
        /// refused with 429 (a browser tab holds one, two on a job page).
        #[arg(long, env = "STREAMS_PER_USER", default_value_t = crate::routes::live::DEFAULT_STREAMS_PER_USER,
              value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=100_000))]
        streams_per_user: usize,
        /// Bearer token a Prometheus scraper sends to read /metrics (and /readyz?health=1).
        /// Unset: only loopback clients may read them.
        #[arg(long, env = "METRICS_TOKEN", hide_env_values = true)]
        metrics_token: Option<String>,
    },
    /// Check a deployment before it takes traffic: configuration, database and migrations,
    /// row-level security and the database role, both buckets, each GPU backend's /health and
    /// the local worker's Python environment. Exits 1 when any check fails.
    Verify {
        #[command(flatten)]
        platform: PlatformOptions,
        /// The checks as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run only the local executor: the RunPod Serverless API over this machine's GPUs, for a
    /// platform elsewhere to use (set its RUNPOD_API_URL to http://<this host>:<port>/v2).
    Executor {
        /// Address to listen on.
        #[arg(long, env = "EXECUTOR_BIND", default_value = "0.0.0.0:8090")]
        bind: String,
        /// The key clients must send as `Authorization: Bearer <key>` (at least 16 characters).
        #[arg(long, env = "EXECUTOR_API_KEY", hide_env_values = true)]
        api_key: String,
        /// Python of the worker's environment; unset: the one `worker install` built in
        /// DATA_DIR, else python3.
        #[arg(long = "worker-python", env = "WORKER_PYTHON")]
        worker_python: Option<PathBuf>,
        /// The worker's source directory; unset: the copy embedded in this binary.
        #[arg(long = "worker-dir", env = "WORKER_DIR")]
        worker_dir: Option<PathBuf>,
        /// Jobs run at once (one per GPU).
        #[arg(long = "slots", env = "EXECUTOR_SLOTS", default_value_t = 1)]
        slots: usize,
        /// Who the worker runs as: auto (as root, the system user lora-worker), none, or a name.
        #[arg(long = "worker-user", env = "WORKER_USER", default_value = "auto")]
        worker_user: String,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// The platform's health for a person on call: work queue, jobs by stage, failures in
    /// 24 h, slow validations, storage, each green/yellow/red against its threshold
    /// (docs/OPERATIONS.md). Exits 1 when any figure is red.
    Health {
        /// The report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The local executor's worker environment.
    Worker {
        #[command(subcommand)]
        action: WorkerAction,
    },
    /// Manage accounts from the shell.
    User {
        #[command(subcommand)]
        action: UserAction,
    },
}

#[derive(Debug, Subcommand)]
enum WorkerAction {
    /// Build the worker's Python environment (torch, transformers, peft: a few GB) in
    /// DATA_DIR/worker-env from the requirements pinned in this binary; `serve` uses it when
    /// WORKER_PYTHON is unset. Run again after an upgrade: it installs only what changed.
    Install {
        /// The Python to build it from (3.10 or newer); default: /usr/bin/python3 as root
        /// (reachable by the worker's own user), else python3 on PATH.
        #[arg(long)]
        python: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum UserAction {
    /// Create an account. The password is read from the first line of standard input.
    Create {
        #[arg(long)]
        email: String,
    },
    /// Make a single-use invite link (valid 7 days) for someone to register.
    Invite {
        /// The server's public URL, to print a whole link.
        #[arg(long, env = "PUBLIC_URL")]
        public_url: Option<String>,
    },
    /// List accounts.
    List,
    /// Disable an account and end its sessions.
    Disable {
        #[arg(long)]
        email: String,
    },
}

pub async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let global = Global {
        database_url: cli.database_url,
        data_dir: cli.data_dir,
        log_format: cli.log_format,
    };
    let command = match cli.command {
        // A client of a remote server: no settings, no database, no log lines on its output.
        Command::Remote(command) => return crate::remote::run(command).await,
        Command::Local(command) => command,
    };
    // Verify reports bad configuration as its first failed check rather than as a start error,
    // and prints nothing but its report.
    let settings = match (settings_for(&global, &command), &command) {
        (Ok(settings), _) => settings,
        (Err(e), LocalCommand::Verify { json, .. }) => {
            return crate::verify::run(Err(e), *json).await;
        }
        (Err(e), _) => return Err(e),
    };
    if !matches!(command, LocalCommand::Verify { .. }) {
        telemetry::init(global.log_format);
    }

    match command {
        LocalCommand::Verify { json, .. } => crate::verify::run(Ok(settings), json).await,
        LocalCommand::Serve { .. } => {
            let app = Application::build(settings).await?;
            app.run_until_stopped(shutdown_signal()).await
        }
        LocalCommand::Executor {
            bind,
            api_key,
            worker_python,
            worker_dir,
            slots,
            worker_user,
        } => {
            let bind = settings::parse_bind(&bind)?;
            if !bind.ip().is_loopback() {
                // The API key and the jobs' signed URLs travel in clear over plain HTTP.
                tracing::warn!(
                    %bind,
                    "the executor listens beyond loopback over plain HTTP: put it behind TLS (a reverse proxy or a tunnel) or bind it to 127.0.0.1"
                );
            }
            if api_key.trim().len() < 16 {
                bail!(
                    "EXECUTOR_API_KEY must be at least 16 characters (e.g. `openssl rand -hex 16`)"
                );
            }
            if slots == 0 || slots > 64 {
                bail!("EXECUTOR_SLOTS must be from 1 to 64");
            }
            crate::executor::serve_standalone(crate::executor::Standalone {
                bind,
                api_key: api_key.trim().to_owned(),
                worker: settings::WorkerSettings {
                    python: worker_python,
                    worker_dir,
                    slots,
                    user: settings::WorkerUser::parse(&worker_user)?,
                },
                data_dir: settings.data_dir.clone(),
            })
            .await
        }
        LocalCommand::Worker {
            action: WorkerAction::Install { python },
        } => {
            let python = crate::worker_env::install(&settings.data_dir, python).await?;
            println!(
                "the worker's environment is ready: {} (serve uses it when WORKER_PYTHON is unset)",
                python.display()
            );
            Ok(())
        }
        LocalCommand::Health { json } => {
            let (db, managed) = database::open_for_command(&settings).await?;
            let result = engine::operations::report(&db)
                .await
                .context("reading the health figures");
            db.close().await;
            if let Some(managed) = managed {
                managed.stop().await?;
            }
            let report = result?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", health_text(&report));
            }
            if report.level == engine::operations::Level::Red {
                bail!("the platform's health is red: see the figures above");
            }
            Ok(())
        }
        LocalCommand::Migrate => {
            let (db, managed) = database::open_for_command(&settings).await?;
            let result = db.migrate().await.context("applying migrations");
            db.close().await;
            if let Some(managed) = managed {
                managed.stop().await?;
            }
            result?;
            println!("migrations are up to date");
            Ok(())
        }
        LocalCommand::User { action } => {
            let (db, managed) = database::open_for_command(&settings).await?;
            let result = async {
                db.migrate().await.context("applying migrations")?;
                user_command(&db, action).await
            }
            .await;
            db.close().await;
            if let Some(managed) = managed {
                managed.stop().await?;
            }
            result
        }
    }
}

/// The options every local command reads.
struct Global {
    database_url: Option<String>,
    data_dir: Option<PathBuf>,
    log_format: LogFormat,
}

/// The typed settings of a local command, validated: `serve` and `verify` read all of them,
/// the others only the database and the data directory.
fn settings_for(global: &Global, command: &LocalCommand) -> anyhow::Result<Settings> {
    let platform = match command {
        LocalCommand::Serve { platform, .. } | LocalCommand::Verify { platform, .. } => {
            Some(platform)
        }
        _ => None,
    };
    let mut settings = Settings {
        database: settings::parse_database_url(global.database_url.as_deref())?,
        data_dir: global
            .data_dir
            .clone()
            .unwrap_or_else(settings::default_data_dir),
        bind: settings::parse_bind("127.0.0.1:0")?,
        public_url: settings::parse_public_url(None, settings::parse_bind("127.0.0.1:0")?)?,
        log_format: global.log_format,
        storage_signing_key: None,
        s3: None,
        catalog_file: None,
        gpu: settings::GpuSettings::default(),
        trusted_proxies: Vec::new(),
        registration: store::RegistrationPolicy::default(),
        compression_level: settings::DEFAULT_COMPRESSION_LEVEL,
        streams_per_user: crate::routes::live::DEFAULT_STREAMS_PER_USER,
        metrics_token: None,
    };
    if let Some(platform) = platform {
        settings.bind = settings::parse_bind(&platform.bind)?;
        settings.public_url =
            settings::parse_public_url(platform.public_url.as_deref(), settings.bind)?;
        settings.storage_signing_key = platform.storage_signing_key.clone();
        settings.s3 = settings::parse_s3(&platform.s3)?;
        settings.catalog_file = platform.catalog_file.clone();
        settings.gpu = settings::parse_gpu(&platform.gpu)?;
    }
    if let LocalCommand::Serve {
        trusted_proxies,
        registration,
        registrations_per_hour,
        compression_level,
        streams_per_user,
        metrics_token,
        ..
    } = command
    {
        settings.trusted_proxies =
            crate::client_addr::parse_trusted(trusted_proxies.as_deref().unwrap_or_default())
                .map_err(|e| anyhow::anyhow!("TRUSTED_PROXIES: {e}"))?;
        settings.registration = store::RegistrationPolicy {
            mode: store::RegistrationMode::parse(registration).with_context(|| {
                format!("REGISTRATION is {registration:?}: use open, invite or closed")
            })?,
            per_address: *registrations_per_hour,
        };
        settings.compression_level = *compression_level;
        settings.streams_per_user = *streams_per_user;
        settings.metrics_token = metrics_token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        if settings
            .metrics_token
            .as_ref()
            .is_some_and(|t| t.len() < 16)
        {
            bail!("METRICS_TOKEN must be at least 16 characters (e.g. `openssl rand -hex 16`)");
        }
    }
    Ok(settings)
}

/// The report as a person reads it: one line per figure, its level first.
fn health_text(report: &engine::operations::HealthReport) -> String {
    let mut text = format!(
        "health {} at {}\n",
        report.level.as_str().to_uppercase(),
        report.checked_at.format("%Y-%m-%d %H:%M:%S UTC")
    );
    for figure in &report.figures {
        let value = match figure.unit.as_str() {
            "bytes" => format!("{:.1} MB", figure.value / 1e6),
            "percent" => format!("{:.0}%", figure.value),
            "seconds" => format!("{:.0} s", figure.value),
            _ => format!("{:.0}", figure.value),
        };
        let limits = figure.thresholds.map_or_else(String::new, |t| {
            format!("  (yellow from {}, red above {})", t.yellow, t.red)
        });
        text.push_str(&format!(
            "  {:<6}  {:<40}  {value:>10}{limits}\n",
            figure.level.as_str(),
            figure.label
        ));
        if let Some(hint) = &figure.hint {
            text.push_str(&format!("          → {hint}\n"));
        }
    }
    if !report.active_jobs_by_stage.is_empty() {
        let stages: Vec<String> = report
            .active_jobs_by_stage
            .iter()
            .map(|(stage, n)| format!("{stage} {n}"))
            .collect();
        text.push_str(&format!("  active jobs by stage: {}\n", stages.join(", ")));
    }
    text
}

async fn user_command(db: &engine::db::Db, action: UserAction) -> anyhow::Result<()> {
    match action {
        UserAction::Create { email } => {
            let mut password = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut password)
                .context("reading the password from standard input")?;
            let password = password.trim_end_matches(['\r', '\n']).to_owned();
            // The operator creates accounts whatever REGISTRATION says.
            match store::register(
                db,
                &Credentials { email, password },
                store::RegistrationPolicy {
                    mode: store::RegistrationMode::Open,
                    ..Default::default()
                },
                None,
                None,
            )
            .await
            {
                Ok(user) => {
                    println!("created {} ({})", user.email, user.id);
                    Ok(())
                }
                Err(store::RegisterError::Invalid(fields)) => bail!("{fields}"),
                Err(store::RegisterError::EmailTaken) => {
                    bail!("an account with this email already exists")
                }
                Err(e) => Err(e.into()),
            }
        }
        UserAction::Invite { public_url } => {
            let token = store::create_invite(db, None).await?;
            let base = public_url.unwrap_or_default();
            println!(
                "{}/register?invite={token}",
                base.trim().trim_end_matches('/')
            );
            eprintln!("valid for 7 days, once");
            Ok(())
        }
        UserAction::List => {
            let accounts = store::list_accounts(db).await?;
            if accounts.is_empty() {
                println!(
                    "no accounts yet: create one with `lora-pipeline user create --email you@example.com`"
                );
            }
            for a in accounts {
                let state = match a.disabled_at {
                    Some(at) => format!("disabled {}", at.format("%Y-%m-%d %H:%M")),
                    None => "active".into(),
                };
                println!(
                    "{}\t{}\t{}\tcreated {}",
                    a.id,
                    a.email,
                    state,
                    a.created_at.format("%Y-%m-%d %H:%M")
                );
            }
            Ok(())
        }
        UserAction::Disable { email } => {
            if store::disable_account(db, &email).await? {
                println!("disabled {email}; its sessions have ended");
                Ok(())
            } else {
                bail!("no active account with email {email}")
            }
        }
    }
}
