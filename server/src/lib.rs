// Leptos view types nest deeply.
#![recursion_limit = "256"]
//! The HTTP shell of lora-pipeline: settings, the axum router (Leptos pages, REST API,
//! operations endpoints), auth middleware, embedded site assets, the CLI commands, and the
//! command-line client of a remote server (`remote`).

pub mod assets;
pub mod auth;
pub mod cli;
pub mod client_addr;
pub mod database;
pub mod error;
pub mod executor;
pub mod headers;
pub mod metrics;
pub mod openapi;
pub mod remote;
pub mod routes;
pub mod settings;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod verify;
pub mod wiring;
pub mod worker_env;
