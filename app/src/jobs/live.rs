//! Following job events in the browser: an `EventSource` on our SSE routes, applying each event
//! to the page's signals. The browser reconnects by itself with `Last-Event-ID`.

use engine::jobs::{JobView, LogLine, MetricPoint, describe_event, is_terminal};
use leptos::prelude::*;
use serde::Deserialize;
use wasm_bindgen::JsCast;
use wasm_bindgen::closure::Closure;

/// A job event as the SSE routes send it.
#[derive(Debug, Clone, Deserialize)]
pub struct WireEvent {
    pub id: i64,
    pub job_id: uuid::Uuid,
    pub kind: String,
    pub payload: serde_json::Value,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

const KINDS: [&str; 6] = ["status", "stage", "metrics", "eval", "result", "resync"];

/// Opens `url` and calls `on_event` for each event; the source closes when the owner is
/// cleaned up, or when `on_event` returns `false`. `connected` follows the connection.
pub fn follow(
    url: &str,
    connected: RwSignal<bool>,
    mut on_event: impl FnMut(WireEvent) -> bool + 'static,
) {
    let Ok(source) = web_sys::EventSource::new(url) else {
        return;
    };
    let closer = source.clone();
    let handler =
        Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |message: web_sys::MessageEvent| {
            let Some(text) = message.data().as_string() else {
                return;
            };
            if let Ok(event) = serde_json::from_str::<WireEvent>(&text)
                && !on_event(event)
            {
                closer.close();
                connected.set(false);
            }
        });
    for kind in KINDS {
        let _ = source.add_event_listener_with_callback(kind, handler.as_ref().unchecked_ref());
    }
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

fn number(payload: &serde_json::Value, key: &str) -> Option<f64> {
    payload.get(key).and_then(serde_json::Value::as_f64)
}

/// Applies one event to a job page's state; `false` once the job has ended.
pub fn apply(
    event: &WireEvent,
    job: RwSignal<JobView>,
    metrics: RwSignal<Vec<MetricPoint>>,
    log: RwSignal<Vec<LogLine>>,
    eta: RwSignal<Option<f64>>,
) -> bool {
    let p = &event.payload;
    match event.kind.as_str() {
        "metrics" => {
            let step = number(p, "step").unwrap_or(0.0) as i32;
            metrics.update(|points| {
                if !points.iter().any(|x| x.step == step) {
                    points.push(MetricPoint {
                        step,
                        epoch: number(p, "epoch"),
                        training_loss: number(p, "train_loss"),
                        validation_loss: None,
                        learning_rate: number(p, "learning_rate"),
                        grad_norm: number(p, "grad_norm"),
                        tokens_per_sec: number(p, "tokens_per_sec"),
                        elapsed_s: number(p, "elapsed_s"),
                    });
                    points.sort_by_key(|x| x.step);
                }
            });
            eta.set(number(p, "eta_s"));
            job.update(|j| {
                j.current_step = j.current_step.max(step);
                j.total_steps = number(p, "total_steps").map(|t| t as i32).or(j.total_steps);
                j.current_epoch = number(p, "epoch");
                j.progress = number(p, "progress").unwrap_or(j.progress).max(j.progress);
                j.current_cost = number(p, "current_cost").unwrap_or(j.current_cost);
                j.current_metrics = Some(p.clone());
                j.status = if j.status == "initializing" {
                    "running".into()
                } else {
                    j.status.clone()
                };
            });
        }
        "eval" => {
            let step = number(p, "step").unwrap_or(0.0) as i32;
            let loss = number(p, "eval_loss");
            metrics.update(|points| match points.iter_mut().find(|x| x.step == step) {
                Some(point) => point.validation_loss = loss,
                None => {
                    points.push(MetricPoint {
                        step,
                        epoch: number(p, "epoch"),
                        training_loss: None,
                        validation_loss: loss,
                        learning_rate: None,
                        grad_norm: None,
                        tokens_per_sec: None,
                        elapsed_s: number(p, "elapsed_s"),
                    });
                    points.sort_by_key(|x| x.step);
                }
            });
        }
        "stage" => job.update(|j| {
            if let Some(stage) = p.get("stage").and_then(|s| s.as_str()) {
                j.current_stage = stage.to_owned();
            }
            if let Some(total) = number(p, "total_steps") {
                j.total_steps = Some(total as i32);
            }
        }),
        "status" => job.update(|j| {
            let text = |k: &str| p.get(k).and_then(|v| v.as_str()).map(str::to_owned);
            if let Some(status) = text("status") {
                j.status = status;
            }
            if let Some(stage) = text("current_stage") {
                j.current_stage = stage;
            }
            j.progress = number(p, "progress").unwrap_or(j.progress);
            j.current_cost = number(p, "current_cost").unwrap_or(j.current_cost);
            j.final_cost = number(p, "final_cost").or(j.final_cost);
            if matches!(j.status.as_str(), "failed" | "cancelled") {
                j.error_message = text("message").or(j.error_message.clone());
            }
        }),
        _ => {}
    }
    if let Some(line) = describe_event(event.id, event.created_at, &event.kind, p) {
        log.update(|lines| {
            if !lines.iter().any(|l| l.id == line.id) {
                lines.push(line);
            }
        });
    }
    job.update(|j| j.last_event_id = j.last_event_id.max(event.id));
    !(event.kind == "status" && is_terminal(&job.with_untracked(|j| j.status.clone())))
}
