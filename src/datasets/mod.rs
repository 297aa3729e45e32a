//! Datasets: uploaded training files and what validation found in them.

#[cfg(feature = "ssr")]
mod store;
#[cfg(feature = "ssr")]
pub use store::*;
