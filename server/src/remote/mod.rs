//! The command line for a remote server: `login`, `datasets`, `jobs`, `models`. Every command
//! is a client of the REST API (docs/API.md) with an API token, using the server's own wire
//! types; nothing here touches a database.
//!
//! Output is for people by default (tables, progress bars on standard error) and JSON with
//! `--json` (the API's `data`, one document; `jobs watch` writes one event per line). The exit
//! code says what happened ([`ExitStatus`]).

mod client;
mod config;
mod datasets;
mod jobs;
mod models;
mod output;
mod sse;

use std::path::PathBuf;

use clap::{Args, Subcommand};

pub use client::{ApiClient, ClientError};
pub use config::Remote;

/// What a command's exit code says (README "Command line").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Done; a watched job completed; an uploaded dataset is ready to train.
    Success = 0,
    /// Anything else: the server unreachable, a local file unreadable, a server error.
    Error = 1,
    /// Not signed in, or the token was refused (401, 403).
    Unauthorized = 3,
    /// No such dataset, job or model in this account (404).
    NotFound = 4,
    /// The server refused the request: invalid fields, a conflict, a limit (400, 409, 413, 422, 429).
    Refused = 5,
    /// The watched job failed, or the uploaded dataset is invalid.
    Failed = 6,
    /// The watched job was cancelled.
    Cancelled = 7,
    /// Nothing was started: the confirmation was declined or could not be asked.
    Declined = 8,
}

/// A command that ended with an outcome other than success, and why (printed on standard error).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub status: ExitStatus,
    pub message: String,
}

impl Failure {
    pub fn new(status: ExitStatus, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

/// The exit code for an error a command returned.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    let status = if let Some(failure) = error.downcast_ref::<Failure>() {
        failure.status
    } else if let Some(client) = error.downcast_ref::<ClientError>() {
        client.exit_status()
    } else {
        ExitStatus::Error
    };
    status as u8
}

/// Where the server is and how to sign in; each also from the environment or the config file
/// that `login` writes.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// The server, e.g. https://lora.example.com (else LORA_PIPELINE_URL, else the config file).
    #[arg(long, env = "LORA_PIPELINE_URL", global = true)]
    pub url: Option<String>,
    /// The config file (default: $XDG_CONFIG_HOME/lora-pipeline/config.toml).
    #[arg(long, env = "LORA_PIPELINE_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// JSON on standard output instead of tables (for scripts).
    #[arg(long, global = true)]
    pub json: bool,
}

/// The remote commands.
#[derive(Debug, Subcommand)]
pub enum RemoteCommand {
    /// Save a server URL and an API token (made on Settings → API tokens) in the config file.
    /// The token is read from standard input (or LORA_PIPELINE_TOKEN) and checked first.
    Login {
        #[command(flatten)]
        connection: Connection,
    },
    /// Upload, list, inspect and delete datasets on a server.
    Datasets {
        #[command(flatten)]
        connection: Connection,
        #[command(subcommand)]
        action: datasets::DatasetAction,
    },
    /// Create, follow, cancel and retry training jobs on a server.
    Jobs {
        #[command(flatten)]
        connection: Connection,
        #[command(subcommand)]
        action: jobs::JobAction,
    },
    /// List and download trained adapters from a server.
    Models {
        #[command(flatten)]
        connection: Connection,
        #[command(subcommand)]
        action: models::ModelAction,
    },
}

/// Runs one remote command to its end.
pub async fn run(command: RemoteCommand) -> anyhow::Result<()> {
    let connection = match &command {
        RemoteCommand::Login { connection }
        | RemoteCommand::Datasets { connection, .. }
        | RemoteCommand::Jobs { connection, .. }
        | RemoteCommand::Models { connection, .. } => connection.clone(),
    };
    let out = output::Output::new(connection.json);
    if let RemoteCommand::Login { .. } = command {
        return config::login(&connection, &out).await;
    }
    let api = ApiClient::new(&Remote::resolve(&connection)?)?;
    match command {
        RemoteCommand::Login { .. } => Ok(()),
        RemoteCommand::Datasets { action, .. } => datasets::run(&api, &out, action).await,
        RemoteCommand::Jobs { action, .. } => jobs::run(&api, &out, action).await,
        RemoteCommand::Models { action, .. } => models::run(&api, &out, action).await,
    }
}
