//! Notifications: rows in `notifications`, read per tenant.

#[cfg(feature = "ssr")]
mod store;
#[cfg(feature = "ssr")]
pub use store::*;
