//! Following one job in the browser: an `EventSource` on its SSE route, each event typed as the
//! engine's [`JobEventRecord`] and applied by the engine's pure reducers ([`JobView::follow`],
//! [`apply_to_curve`]). The browser reconnects by itself with `Last-Event-ID`.

use engine::jobs::event::apply_to_curve;
use engine::jobs::{JobEvent, JobEventKind, JobEventRecord, JobView, LogLine, MetricPoint};
use leptos::prelude::*;

/// Follows the job's stream from `after`, applying each event to the page's state, until the
/// job ends.
pub fn follow(
    job_id: uuid::Uuid,
    after: i64,
    connected: RwSignal<bool>,
    job: RwSignal<JobView>,
    metrics: RwSignal<Vec<MetricPoint>>,
    log: RwSignal<Vec<LogLine>>,
) {
    let names: Vec<&str> = JobEventKind::ALL.iter().map(|k| k.as_str()).collect();
    crate::live::open(
        &format!("/api/jobs/{job_id}/events?last_event_id={after}"),
        &names,
        connected,
        move |_, data| match serde_json::from_str::<JobEventRecord>(data) {
            Ok(record) => apply(&record, job, metrics, log),
            Err(_) => true,
        },
        || {},
    );
}

/// Applies one event to a job page's state; `false` once the job has ended.
fn apply(
    record: &JobEventRecord,
    job: RwSignal<JobView>,
    metrics: RwSignal<Vec<MetricPoint>>,
    log: RwSignal<Vec<LogLine>>,
) -> bool {
    metrics.update(|points| apply_to_curve(points, &record.event));
    job.update(|j| j.follow(record));
    if let Some(line) = record.log_line() {
        log.update(|lines| {
            if !lines.iter().any(|l| l.id == line.id) {
                lines.push(line);
            }
        });
    }
    !matches!(&record.event, JobEvent::Status(s) if s.status.is_terminal())
}
