//! Following job events in the browser: an `EventSource` on our SSE routes, each event typed as
//! the engine's [`JobEventRecord`] and applied by the engine's pure reducers
//! ([`JobView::follow`], [`apply_to_curve`]). The browser reconnects by itself with
//! `Last-Event-ID`.

use engine::jobs::event::apply_to_curve;
use engine::jobs::{JobEvent, JobEventKind, JobEventRecord, JobView, LogLine, MetricPoint};
use leptos::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen::closure::Closure;

/// What a stream delivers.
pub enum Live {
    Event(Box<JobEventRecord>),
    /// Events may have been missed: reload.
    Resync,
}

/// The SSE event name of a resynchronisation.
pub const RESYNC: &str = "resync";

/// Opens `url` and calls `on_message` for each message; the source closes when the owner is
/// cleaned up, or when `on_message` returns `false`. `connected` follows the connection.
pub fn follow(
    url: &str,
    connected: RwSignal<bool>,
    mut on_message: impl FnMut(Live) -> bool + 'static,
) {
    let Ok(source) = web_sys::EventSource::new(url) else {
        return;
    };
    let closer = source.clone();
    let handler =
        Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |message: web_sys::MessageEvent| {
            let live = if message.type_() == RESYNC {
                Live::Resync
            } else {
                let Some(text) = message.data().as_string() else {
                    return;
                };
                match serde_json::from_str::<JobEventRecord>(&text) {
                    Ok(record) => Live::Event(Box::new(record)),
                    Err(_) => return,
                }
            };
            if !on_message(live) {
                closer.close();
                connected.set(false);
            }
        });
    for kind in JobEventKind::ALL {
        let _ = source
            .add_event_listener_with_callback(kind.as_str(), handler.as_ref().unchecked_ref());
    }
    let _ = source.add_event_listener_with_callback(RESYNC, handler.as_ref().unchecked_ref());
    handler.forget();
    let opened = Closure::<dyn FnMut()>::new(move || connected.set(true));
    source.set_onopen(Some(opened.as_ref().unchecked_ref()));
    opened.forget();
    let failed = Closure::<dyn FnMut()>::new(move || connected.set(false));
    source.set_onerror(Some(failed.as_ref().unchecked_ref()));
    failed.forget();
    let stored = StoredValue::new_local(source);
    on_cleanup(move || stored.with_value(|s| s.close()));
}

/// Applies one event to a job page's state; `false` once the job has ended.
pub fn apply(
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
