//! The lora-pipeline engine.
//!
//! Everything here without a feature gate is pure domain code shared by the server and the
//! browser (it compiles for `wasm32-unknown-unknown`): wire types, validation rules, formatting.
//! Behind the `ssr` feature lives the backend: Postgres access with tenant scoping, the managed
//! local PostgreSQL cluster, and account storage.

pub mod accounts;
pub mod costs;
pub mod datasets;
pub mod error;
pub mod format;
pub mod jobs;
pub mod live;
pub mod models;
pub mod notifications;
pub mod operations;
pub mod raw_json;
pub mod training;
pub mod validation;
pub mod webhooks;

#[cfg(feature = "ssr")]
pub mod db;
#[cfg(feature = "ssr")]
pub mod executor;
#[cfg(feature = "ssr")]
pub mod idempotency;
#[cfg(feature = "ssr")]
pub mod maintenance;
#[cfg(feature = "ssr")]
pub mod queue;
#[cfg(feature = "ssr")]
pub mod runpod;
#[cfg(feature = "ssr")]
pub mod storage;
#[cfg(feature = "ssr")]
pub mod tasks;
