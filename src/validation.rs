//! Field-level validation errors, shared by forms (as you type) and the server (400 responses).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Problems with individual input fields, keyed by field name. Ordered so messages are stable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldErrors(pub BTreeMap<String, String>);

impl FieldErrors {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a problem with `field`; the first message per field wins. Messages are cut to
    /// [`crate::format::MAX_MESSAGE_CHARS`] (and field names to 64), so no message carries more
    /// than that of what was sent.
    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        use crate::format::{MAX_MESSAGE_CHARS, clip};
        self.0
            .entry(clip(field, 64).into_owned())
            .or_insert_with(|| clip(&message.into(), MAX_MESSAGE_CHARS).into_owned());
    }

    pub fn single(field: &str, message: impl Into<String>) -> Self {
        let mut errors = Self::new();
        errors.add(field, message);
        errors
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds `other`'s problems (the first message per field still wins).
    pub fn merge(&mut self, other: FieldErrors) {
        for (field, message) in other.0 {
            self.0.entry(field).or_insert(message);
        }
    }

    pub fn get(&self, field: &str) -> Option<&str> {
        self.0.get(field).map(String::as_str)
    }

    /// `Ok(())` when nothing was recorded, so rule functions can end with `errors.into_result()`.
    pub fn into_result(self) -> Result<(), FieldErrors> {
        if self.is_empty() { Ok(()) } else { Err(self) }
    }
}

impl std::fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        f.write_str(&parts.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_field_names_are_bounded() {
        let mut errors = FieldErrors::new();
        let huge = "x".repeat(1 << 20);
        errors.add(&huge, format!("{huge} is not allowed"));
        let (field, message) = errors.0.iter().next().unwrap();
        assert!(field.chars().count() <= 64);
        assert!(message.chars().count() <= crate::format::MAX_MESSAGE_CHARS);
    }
}
