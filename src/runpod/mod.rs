//! The RunPod Serverless API (DESIGN §6.2): its wire types, spoken by our client and
//! implemented by our local executor, and the one typed client.

pub mod client;
pub mod types;

pub use client::{RetryPolicy, RunpodClient, RunpodError};
pub use types::*;
