//! Datasets: uploaded training files, what validation found in them, and the rules for creating
//! one. The types here are shared with the browser; validation and storage are server-only.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::validation::FieldErrors;

#[cfg(feature = "ssr")]
mod store;
#[cfg(feature = "ssr")]
pub use store::*;
#[cfg(feature = "ssr")]
pub mod service;
#[cfg(feature = "ssr")]
pub mod validate;

/// The largest file we accept (500 MB, decimal, as users read sizes).
pub const MAX_UPLOAD_BYTES: u64 = 500 * 1000 * 1000;
/// A dataset needs at least this many usable examples to be `training_ready`: fewer cannot
/// fill one batch plus an eval split, and a LoRA trained on them learns nothing useful.
pub const MIN_TRAINING_EXAMPLES: u64 = 10;
/// The sequence length statistics are measured against (the default `max_seq_len`).
pub const DEFAULT_MAX_SEQ_LEN: u32 = 2048;
/// How many problems are kept with their line numbers; counts by code cover the whole file.
pub const MAX_REPORTED_ISSUES: usize = 100;

/// The formats the validator recognises (auto-detected).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DatasetFormat {
    /// brightrun-lora-v4 full JSON: `{training_file_metadata, consultant_profile, conversations[].training_pairs[]}`.
    BrightrunV4Json,
    /// brightrun-lora-v4 JSONL: a `{"_meta": …}` line, then one training pair per line.
    BrightrunV4Jsonl,
    /// OpenAI chat fine-tuning JSONL (or a JSON array of the same objects).
    OpenaiChat,
    /// Alpaca `{instruction, input, output}`, as a JSON array or JSONL.
    Alpaca,
    /// ShareGPT `{"conversations": [{"from", "value"}]}`.
    Sharegpt,
}

impl DatasetFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BrightrunV4Json => "brightrun_v4_json",
            Self::BrightrunV4Jsonl => "brightrun_v4_jsonl",
            Self::OpenaiChat => "openai_chat",
            Self::Alpaca => "alpaca",
            Self::Sharegpt => "sharegpt",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [
            Self::BrightrunV4Json,
            Self::BrightrunV4Jsonl,
            Self::OpenaiChat,
            Self::Alpaca,
            Self::Sharegpt,
        ]
        .into_iter()
        .find(|f| f.as_str() == value)
    }

    /// How people call it.
    pub fn label(self) -> &'static str {
        match self {
            Self::BrightrunV4Json => "brightrun-lora-v4 (JSON)",
            Self::BrightrunV4Jsonl => "brightrun-lora-v4 (JSONL)",
            Self::OpenaiChat => "OpenAI chat",
            Self::Alpaca => "Alpaca",
            Self::Sharegpt => "ShareGPT",
        }
    }
}

/// One problem found in a file. `line` is 1-based; `index` is the 0-based example index inside
/// a JSON array (or a brightrun conversation's pair list), when the file is one JSON document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct ValidationIssue {
    pub line: Option<u64>,
    pub index: Option<u64>,
    pub code: String,
    pub message: String,
    pub suggestion: String,
}

/// Per-example token counts: exact percentiles from a fixed-size histogram (constant memory).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct TokenDistribution {
    pub min: u64,
    pub p50: u64,
    pub p95: u64,
    pub max: u64,
    pub mean: f64,
    /// Equal-width buckets between min and max, for the length chart.
    pub histogram: Vec<HistogramBucket>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct HistogramBucket {
    pub from: u64,
    pub to: u64,
    pub count: u64,
}

/// What the validator measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct DatasetStatistics {
    /// Usable training examples (`total_training_pairs`).
    pub examples: u64,
    /// brightrun pairs whose `target_response` is null: present, but not training examples.
    pub skipped_examples: u64,
    pub conversations: u64,
    pub messages: u64,
    /// User turns per example, on average.
    pub avg_turns: f64,
    pub total_tokens: u64,
    pub assistant_tokens: u64,
    pub tokens: TokenDistribution,
    pub max_seq_len: u32,
    pub over_max_seq_len: u64,
    /// Which tokenizer produced the counts.
    pub tokenizer: String,
    pub bytes: u64,
    pub lines: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct SampleMessage {
    pub role: String,
    pub content: String,
}

/// The validator's verdict on a whole file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct ValidationReport {
    pub format: Option<DatasetFormat>,
    pub statistics: DatasetStatistics,
    /// The first [`MAX_REPORTED_ISSUES`] problems, in file order.
    pub issues: Vec<ValidationIssue>,
    /// Problems by code, over the whole file.
    pub error_counts: BTreeMap<String, u64>,
    /// Up to three examples, as chat messages.
    pub sample: Vec<Vec<SampleMessage>>,
    /// SHA-256 of the file's bytes.
    pub sha256: String,
}

impl ValidationReport {
    pub fn error_total(&self) -> u64 {
        self.error_counts.values().sum()
    }

    pub fn is_valid(&self) -> bool {
        self.error_total() == 0 && self.statistics.examples > 0
    }

    /// The rule for `training_ready`: a valid file with at least [`MIN_TRAINING_EXAMPLES`]
    /// usable examples. `Err` says why not.
    pub fn training_ready(&self) -> Result<(), String> {
        if self.error_total() > 0 {
            return Err(format!(
                "{} problems must be fixed first",
                self.error_total()
            ));
        }
        if self.statistics.examples < MIN_TRAINING_EXAMPLES {
            return Err(format!(
                "{} usable examples; at least {MIN_TRAINING_EXAMPLES} are needed to train",
                self.statistics.examples
            ));
        }
        Ok(())
    }
}

/// Lifecycle of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DatasetStatus {
    Uploading,
    Validating,
    Ready,
    Invalid,
}

impl DatasetStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Uploading => "uploading",
            Self::Validating => "validating",
            Self::Ready => "ready",
            Self::Invalid => "invalid",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "uploading" => Some(Self::Uploading),
            "validating" => Some(Self::Validating),
            "ready" => Some(Self::Ready),
            "invalid" => Some(Self::Invalid),
            _ => None,
        }
    }
}

/// A dataset as the API and the UI show it. Field names follow the original's columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct DatasetView {
    pub id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub file_name: String,
    pub file_size: i64,
    pub status: DatasetStatus,
    pub format: Option<DatasetFormat>,
    pub training_ready: bool,
    pub total_training_pairs: Option<i64>,
    pub total_tokens: Option<i64>,
    pub statistics: Option<DatasetStatistics>,
    pub validation_errors: Vec<ValidationIssue>,
    pub error_counts: BTreeMap<String, u64>,
    pub sample: Vec<Vec<SampleMessage>>,
    /// Why the dataset is not ready to train, when it is not.
    pub status_message: Option<String>,
    pub sha256: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub validated_at: Option<DateTime<Utc>>,
}

/// `POST /api/datasets`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct NewDataset {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub file_name: String,
    pub file_size: u64,
}

/// Why a new dataset was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum NewDatasetError {
    Invalid(FieldErrors),
    /// Larger than [`MAX_UPLOAD_BYTES`].
    TooLarge {
        size: u64,
    },
}

/// The rules for creating a dataset (shared by the upload form and the server).
pub fn check_new_dataset(new: &NewDataset) -> Result<(), NewDatasetError> {
    if new.file_size > MAX_UPLOAD_BYTES {
        return Err(NewDatasetError::TooLarge {
            size: new.file_size,
        });
    }
    let mut errors = FieldErrors::new();
    let name = new.name.trim();
    if name.is_empty() {
        errors.add("name", "Give the dataset a name.");
    } else if name.chars().count() > 200 {
        errors.add("name", "Names are at most 200 characters.");
    }
    if new
        .description
        .as_deref()
        .is_some_and(|d| d.chars().count() > 5000)
    {
        errors.add("description", "Descriptions are at most 5,000 characters.");
    }
    let file = new.file_name.trim();
    let lower = file.to_lowercase();
    if file.is_empty() {
        errors.add("file_name", "Choose a file.");
    } else if file.chars().count() > 255 || file.contains(['/', '\\', '\0']) {
        errors.add(
            "file_name",
            "Use a plain file name of at most 255 characters.",
        );
    } else if !(lower.ends_with(".json") || lower.ends_with(".jsonl")) {
        errors.add("file_name", "Upload a .json or .jsonl file.");
    }
    if new.file_size == 0 {
        errors.add("file_size", "The file is empty.");
    }
    errors.into_result().map_err(NewDatasetError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(name: &str, file: &str, size: u64) -> NewDataset {
        NewDataset {
            name: name.into(),
            description: None,
            file_name: file.into(),
            file_size: size,
        }
    }

    #[test]
    fn creation_rules() {
        assert!(check_new_dataset(&new("coach", "a.jsonl", 10)).is_ok());
        assert!(check_new_dataset(&new("coach", "A.JSON", MAX_UPLOAD_BYTES)).is_ok());
        assert_eq!(
            check_new_dataset(&new("coach", "a.jsonl", MAX_UPLOAD_BYTES + 1)),
            Err(NewDatasetError::TooLarge {
                size: MAX_UPLOAD_BYTES + 1
            })
        );
        let Err(NewDatasetError::Invalid(errors)) = check_new_dataset(&new(" ", "a.csv", 0)) else {
            panic!("invalid");
        };
        assert!(errors.get("name").is_some());
        assert!(errors.get("file_name").unwrap().contains(".jsonl"));
        assert!(errors.get("file_size").is_some());
        assert!(check_new_dataset(&new("x", "../etc/passwd.json", 5)).is_err());
    }

    #[test]
    fn formats_round_trip() {
        for f in [
            DatasetFormat::BrightrunV4Json,
            DatasetFormat::BrightrunV4Jsonl,
            DatasetFormat::OpenaiChat,
            DatasetFormat::Alpaca,
            DatasetFormat::Sharegpt,
        ] {
            assert_eq!(DatasetFormat::parse(f.as_str()), Some(f));
            assert_eq!(
                serde_json::to_value(f).unwrap(),
                serde_json::json!(f.as_str())
            );
        }
    }
}
