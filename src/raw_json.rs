//! JSON that the platform stores and sends on without reading it.
//!
//! A job's hyperparameters and estimate are JSONB columns that `GET /api/jobs` and the job page
//! only pass through. Decoding them into `serde_json::Value` trees and writing them out again
//! was the largest share of the job list's CPU (BTreeMap inserts, string escaping, allocation);
//! a [`RawJson`] keeps the text as PostgreSQL sent it and writes it out verbatim.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A JSON value kept as its text.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RawJson(Box<RawValue>);

impl RawJson {
    /// The value's JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// The value read into `T`.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_str(self.0.get())
    }

    /// `value` written once as JSON text.
    pub fn of<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<Self> {
        serde_json::value::to_raw_value(value).map(Self)
    }
}

/// Equal when the texts are: both sides of a comparison come from the same writer (PostgreSQL's
/// JSONB output or serde_json), so equal values have equal texts.
impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl From<Box<RawValue>> for RawJson {
    fn from(raw: Box<RawValue>) -> Self {
        Self(raw)
    }
}

#[cfg(feature = "ssr")]
impl utoipa::PartialSchema for RawJson {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::Object::new().into()
    }
}

#[cfg(feature = "ssr")]
impl utoipa::ToSchema for RawJson {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_its_text_through_unchanged_and_reads_it_on_demand() {
        let text = r#"{"rank": 16, "learning_rate": 0.0002, "note": "a \"quoted\" word"}"#;
        let raw: RawJson = serde_json::from_str(text).unwrap();
        assert_eq!(raw.get(), text);
        let wrapped = serde_json::to_string(&vec![raw.clone()]).unwrap();
        assert_eq!(wrapped, format!("[{text}]"));
        let value: serde_json::Value = raw.parse().unwrap();
        assert_eq!(value["rank"], 16);
        assert_eq!(
            RawJson::of(&value)
                .unwrap()
                .parse::<serde_json::Value>()
                .unwrap(),
            value
        );
        assert_ne!(raw, RawJson::of(&serde_json::json!({})).unwrap());
        assert!(serde_json::from_str::<RawJson>("{nope").is_err());
    }
}
