//! RunPod Serverless wire types, exactly as RunPod documents them (camelCase timings,
//! SCREAMING_SNAKE statuses). Shared by the client and the local executor so the two cannot
//! drift.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// RunPod's job statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunpodStatus {
    InQueue,
    InProgress,
    Completed,
    Failed,
    Cancelled,
    TimedOut,
}

impl RunpodStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Failed | Self::Cancelled | Self::TimedOut
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InQueue => "IN_QUEUE",
            Self::InProgress => "IN_PROGRESS",
            Self::Completed => "COMPLETED",
            Self::Failed => "FAILED",
            Self::Cancelled => "CANCELLED",
            Self::TimedOut => "TIMED_OUT",
        }
    }
}

/// `policy` of `POST /run`: milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_timeout: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
}

/// `POST /run`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRequest {
    pub input: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Policy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
}

/// `POST /run`, `POST /cancel/{id}`, `POST /retry/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRef {
    pub id: String,
    pub status: RunpodStatus,
}

/// `GET /status/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusResponse {
    pub id: String,
    pub status: RunpodStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_time: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_time: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// A FAILED job's error; often a JSON string `{error_type, error_message, ...}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One chunk of `GET /stream/{id}`: a value the generator handler yielded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamChunk {
    pub output: Value,
}

/// `GET /stream/{id}`: chunks not delivered before (each is delivered once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamResponse {
    pub status: RunpodStatus,
    #[serde(default)]
    pub stream: Vec<StreamChunk>,
}

/// `GET /health`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HealthResponse {
    pub jobs: HealthJobs,
    pub workers: HealthWorkers,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthJobs {
    pub completed: u64,
    pub failed: u64,
    pub in_progress: u64,
    pub in_queue: u64,
    pub retried: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HealthWorkers {
    pub idle: u64,
    pub running: u64,
}

/// `POST /purge-queue`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PurgeResponse {
    pub removed: u64,
    pub status: String,
}

/// The parsed form of a FAILED job's `error` string.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct FailureDetail {
    #[serde(default)]
    pub error_type: Option<String>,
    #[serde(default)]
    pub error_message: Option<String>,
    #[serde(default)]
    pub error_traceback: Option<String>,
}

impl FailureDetail {
    /// RunPod's `error` is sometimes JSON, sometimes plain text; a message either way.
    pub fn message_of(error: Option<&str>) -> String {
        let Some(error) = error.map(str::trim).filter(|e| !e.is_empty()) else {
            return "the GPU backend reported a failure without details".into();
        };
        match serde_json::from_str::<FailureDetail>(error) {
            Ok(detail) => match (detail.error_type, detail.error_message) {
                (Some(t), Some(m)) => format!("{t}: {m}"),
                (None, Some(m)) => m,
                (Some(t), None) => t,
                (None, None) => error.chars().take(500).collect(),
            },
            Err(_) => error.chars().take(500).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_match_runpod_documentation() {
        let status: StatusResponse = serde_json::from_str(
            r#"{"delayTime":2300,"executionTime":1500,"id":"abc-1","output":[{"a":1}],"status":"COMPLETED","workerId":"w1"}"#,
        )
        .unwrap();
        assert_eq!(status.status, RunpodStatus::Completed);
        assert_eq!(status.delay_time, Some(2300));
        let back = serde_json::to_value(&status).unwrap();
        assert_eq!(back["executionTime"], 1500);
        let run = RunRequest {
            input: serde_json::json!({}),
            policy: Some(Policy {
                execution_timeout: Some(900_000),
                ttl: None,
            }),
            webhook: None,
        };
        assert_eq!(
            serde_json::to_value(&run).unwrap(),
            serde_json::json!({"input": {}, "policy": {"executionTimeout": 900000}})
        );
        let health = serde_json::to_value(HealthResponse::default()).unwrap();
        assert!(health["jobs"]["inProgress"].is_number());
        assert!(health["workers"]["idle"].is_number());
    }

    #[test]
    fn failure_messages_parse_json_or_text() {
        assert_eq!(
            FailureDetail::message_of(Some(
                r#"{"error_type":"ValueError","error_message":"bad","error_traceback":"..."}"#
            )),
            "ValueError: bad"
        );
        assert_eq!(FailureDetail::message_of(Some("boom")), "boom");
        assert!(FailureDetail::message_of(None).contains("without details"));
    }
}
