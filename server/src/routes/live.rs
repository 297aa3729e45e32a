//! Live progress over SSE (DESIGN §6.1). Events come from Postgres (the `job_events` table and
//! its NOTIFY channel, through the hub), so any replica serves any client. A job stream first
//! replays what the client missed (`Last-Event-ID`, or `?last_event_id=` for the first connect),
//! then follows live; a subscriber that falls behind reads the table again. Streams send
//! keep-alives and end when the server shuts down.

use std::convert::Infallible;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use engine::db::Db;
use engine::jobs::events::{self, JobEvent};
use engine::jobs::hub::HubMessage;
use futures::SinkExt;
use futures::channel::mpsc;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use crate::auth::CurrentUser;
use crate::error::ApiError;
use crate::state::AppState;

/// Events read from the table per replay query.
const REPLAY_PAGE: i64 = 500;
/// How often an idle stream checks that its client is still there.
const CLIENT_CHECK: std::time::Duration = std::time::Duration::from_secs(30);

type EventSender = mpsc::Sender<Result<Event, Infallible>>;

#[derive(Deserialize)]
pub struct Resume {
    last_event_id: Option<i64>,
}

fn sse_event(event: &JobEvent) -> Event {
    Event::default()
        .id(event.id.to_string())
        .event(event.kind.as_str())
        .data(serde_json::to_string(event).unwrap_or_default())
}

/// `GET /api/jobs/{id}/events`.
pub async fn job_events(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<String>,
    Query(resume): Query<Resume>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let job = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound)?;
    // 404 for unknown and other tenants' jobs alike.
    engine::jobs::service::get(&state.db, user.id, job).await?;
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .or(resume.last_event_id)
        .unwrap_or(0)
        .max(0);
    let (sender, receiver) = mpsc::channel(16);
    // Subscribe before replaying, so nothing falls between the two.
    let live = state.hub.subscribe_job(job);
    tokio::spawn(pump_job(
        state.db.clone(),
        user.id,
        job,
        last,
        live,
        sender,
        state.shutdown.clone(),
    ));
    Ok(Sse::new(receiver).keep_alive(KeepAlive::default()))
}

async fn pump_job(
    db: Db,
    user: Uuid,
    job: Uuid,
    mut last: i64,
    mut live: tokio::sync::broadcast::Receiver<HubMessage>,
    mut sender: EventSender,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    // Boxed: the replay's database futures are large, and a stream spends nearly all its life
    // waiting for live events; boxing keeps them out of every idle stream's task (≈ 10k streams).
    if !Box::pin(replay(&db, user, job, &mut last, &mut sender)).await {
        return;
    }
    let mut check = tokio::time::interval(CLIENT_CHECK);
    loop {
        tokio::select! {
            // A finished job sends nothing more: notice a client that left anyway.
            _ = check.tick() => if sender.is_closed() {
                return;
            },
            message = live.recv() => match message {
                Ok(HubMessage::Event(event)) => {
                    if event.user_id != user || event.id <= last {
                        continue;
                    }
                    last = event.id;
                    if sender.send(Ok(sse_event(&event))).await.is_err() {
                        return;
                    }
                }
                Ok(HubMessage::Resync) | Err(RecvError::Lagged(_)) => {
                    if !Box::pin(replay(&db, user, job, &mut last, &mut sender)).await {
                        return;
                    }
                }
                Err(RecvError::Closed) => return,
            },
            _ = shutdown.changed() => return,
        }
    }
}

/// Sends every stored event after `last`; `false` when the client has gone.
async fn replay(db: &Db, user: Uuid, job: Uuid, last: &mut i64, sender: &mut EventSender) -> bool {
    loop {
        let page = match events::since(db, user, job, *last, REPLAY_PAGE).await {
            Ok(page) => page,
            Err(e) => {
                // End the stream: the browser reconnects with Last-Event-ID and nothing is
                // skipped, where following live from here would jump over the gap.
                tracing::warn!(error = %e, %job, "cannot replay job events");
                return false;
            }
        };
        let full = page.len() as i64 == REPLAY_PAGE;
        for event in page {
            *last = event.id;
            if sender.send(Ok(sse_event(&event))).await.is_err() {
                return false;
            }
        }
        if !full {
            return true;
        }
    }
}

/// `GET /api/events`: the caller's job status changes and progress, live (the Jobs list).
pub async fn user_events(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> impl IntoResponse {
    let (mut sender, receiver): (EventSender, _) = mpsc::channel(16);
    let mut live = state.hub.subscribe_user(user.id);
    let mut shutdown = state.shutdown.clone();
    let user = user.id;
    tokio::spawn(async move {
        let mut check = tokio::time::interval(CLIENT_CHECK);
        loop {
            tokio::select! {
                _ = check.tick() => if sender.is_closed() {
                    return;
                },
                message = live.recv() => match message {
                    Ok(HubMessage::Event(event)) if event.user_id == user && matches!(event.kind.as_str(), "status" | "metrics") => {
                        if sender.send(Ok(sse_event(&event))).await.is_err() {
                            return;
                        }
                    }
                    // Missed events: tell the page to reload its list.
                    Ok(HubMessage::Resync) | Err(RecvError::Lagged(_)) => {
                        let resync = Event::default().event("resync").data(
                            serde_json::json!({
                                "id": 0, "job_id": Uuid::nil(), "user_id": user, "kind": "resync",
                                "payload": {}, "created_at": chrono::Utc::now(),
                            })
                            .to_string(),
                        );
                        if sender.send(Ok(resync)).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(RecvError::Closed) => return,
                },
                _ = shutdown.changed() => return,
            }
        }
    });
    Sse::new(receiver).keep_alive(KeepAlive::default())
}
