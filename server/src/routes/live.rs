//! Live progress over SSE (DESIGN §6.1). Events come from Postgres (the `job_events` table and
//! its NOTIFY channel, through the hub), so any replica serves any client. Both streams — one
//! job's (`/api/jobs/{id}/events`) and all of the caller's (`/api/events`) — run the same loop:
//! replay what the client missed (`Last-Event-ID`, or `?last_event_id=` for the first connect),
//! then follow live; a subscriber that falls behind reads the table again. Streams send
//! keep-alives, notice clients that left, and end when the server shuts down.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use engine::db::Db;
use engine::jobs::JobEventRecord;
use engine::jobs::events;
use engine::live::{
    DATASET_EVENT, HubMessage, NOTIFICATION_EVENT, NotificationChange, RESYNC_EVENT, Subscription,
};
use futures::SinkExt;
use futures::channel::mpsc;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use crate::auth::CurrentUser;
use crate::error::ApiError;
use crate::state::AppState;

/// Live streams one user may hold open on one replica (a tab holds one, two on a job page).
pub const MAX_STREAMS_PER_USER: usize = 16;

/// Open streams per user: past [`MAX_STREAMS_PER_USER`] a new one is refused (429), so one
/// account cannot hold thousands of connections and their database replays.
#[derive(Clone, Default)]
pub struct StreamCounter(Arc<Mutex<HashMap<Uuid, usize>>>);

impl StreamCounter {
    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, usize>> {
        // A panic while holding it cannot leave the counts half-updated.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A slot for one more stream of `user`, held until the stream's body is dropped.
    pub fn open(&self, user: Uuid) -> Result<StreamSlot, ApiError> {
        let mut counts = self.counts();
        let open = counts.entry(user).or_default();
        if *open >= MAX_STREAMS_PER_USER {
            return Err(ApiError::RateLimited { retry_after_s: 5 });
        }
        *open += 1;
        Ok(StreamSlot {
            counter: self.clone(),
            user,
        })
    }
}

pub struct StreamSlot {
    counter: StreamCounter,
    user: Uuid,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut counts = self.counter.counts();
        if let Some(open) = counts.get_mut(&self.user) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                counts.remove(&self.user);
            }
        }
    }
}

/// A stream's body with its slot: the slot is given back when the client goes (the body is
/// dropped), not when the next event would have noticed.
struct Counted<S> {
    inner: S,
    _slot: StreamSlot,
}

impl<S: futures::Stream + Unpin> futures::Stream for Counted<S> {
    type Item = S::Item;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::pin::Pin::new(&mut self.inner).poll_next(cx)
    }
}

/// The SSE streams.
pub fn router() -> super::Api {
    use axum::routing::get;
    super::Api::new()
        .route("/api/jobs/{id}/events", get(job_events))
        .route("/api/events", get(user_events))
}

/// Events read from the table per replay query.
const REPLAY_PAGE: i64 = 500;
/// How often an idle stream checks that its client is still there.
const CLIENT_CHECK: std::time::Duration = std::time::Duration::from_secs(30);

type EventSender = mpsc::Sender<Result<Event, Infallible>>;

#[derive(Deserialize)]
pub struct Resume {
    last_event_id: Option<i64>,
}

/// What a stream follows.
#[derive(Debug, Clone, Copy)]
enum Scope {
    /// One job of the user.
    Job(Uuid),
    /// Every job of the user.
    User,
}

fn sse_event(event: &JobEventRecord) -> Event {
    Event::default()
        .id(event.id.to_string())
        .event(event.event.kind().as_str())
        .data(serde_json::to_string(event).unwrap_or_default())
}

/// Where the client says it stopped: `Last-Event-ID` (a reconnect), else `?last_event_id=`.
fn resume_point(headers: &HeaderMap, resume: &Resume) -> Option<i64> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .or(resume.last_event_id)
        .map(|id| id.max(0))
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
    let slot = state.streams.open(user.id)?;
    let last = resume_point(&headers, &resume).unwrap_or(0);
    // Subscribe before replaying, so nothing falls between the two.
    let live = state.hub.subscribe_job(job);
    Ok(stream(
        &state,
        user.id,
        Scope::Job(job),
        last,
        live,
        None,
        slot,
    ))
}

/// `GET /api/events`: everything of the caller, live — job events (the Jobs list), dataset
/// status changes (the dataset page) and the unread notification count (the bell). Job events
/// replay from `Last-Event-ID` (a first connect starts from now); dataset and notification
/// messages are state, not history: a stream starts with the unread count, and pages reload
/// what they show when their stream (re)opens.
pub async fn user_events(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Query(resume): Query<Resume>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let slot = state.streams.open(user.id)?;
    let live = state.hub.subscribe_user(user.id);
    let last = match resume_point(&headers, &resume) {
        Some(last) => last,
        None => events::latest_for_user(&state.db, user.id).await?,
    };
    let unread = {
        let mut tx = state.db.tenant(user.id).await?;
        let unread = engine::notifications::unread_count(&mut tx, user.id).await?;
        tx.commit().await?;
        unread
    };
    let first = notification_event(&NotificationChange {
        user_id: user.id,
        unread,
        notification_id: None,
        title: None,
    });
    Ok(stream(
        &state,
        user.id,
        Scope::User,
        last,
        live,
        Some(first),
        slot,
    ))
}

fn stream(
    state: &AppState,
    user: Uuid,
    scope: Scope,
    last: i64,
    live: Subscription,
    first: Option<Event>,
    slot: StreamSlot,
) -> impl IntoResponse + use<> {
    let (mut sender, receiver) = mpsc::channel(16);
    if let Some(first) = first {
        // The channel is empty: this cannot fail for want of room.
        let _ = sender.try_send(Ok(first));
    }
    tokio::spawn(pump(
        state.db.clone(),
        user,
        scope,
        last,
        live,
        sender,
        state.shutdown.clone(),
    ));
    Sse::new(Counted {
        inner: receiver,
        _slot: slot,
    })
    .keep_alive(KeepAlive::default())
}

async fn pump(
    db: Db,
    user: Uuid,
    scope: Scope,
    mut last: i64,
    mut live: Subscription,
    mut sender: EventSender,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    // Boxed: the replay's database futures are large, and a stream spends nearly all its life
    // waiting for live events; boxing keeps them out of every idle stream's task (≈ 10k streams).
    if !Box::pin(replay(&db, user, scope, &mut last, &mut sender)).await {
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
                Ok(HubMessage::Job(event)) => {
                    let ours = event.user_id == user
                        && match scope {
                            Scope::Job(job) => event.job_id == job,
                            Scope::User => true,
                        };
                    if !ours || event.id <= last {
                        continue;
                    }
                    last = event.id;
                    if sender.send(Ok(sse_event(&event))).await.is_err() {
                        return;
                    }
                }
                // Only user streams subscribe to these, and only to their own user's.
                Ok(HubMessage::Dataset(change)) => {
                    if change.user_id != user {
                        continue;
                    }
                    let event = Event::default()
                        .event(DATASET_EVENT)
                        .data(serde_json::to_string(&*change).unwrap_or_default());
                    if sender.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
                Ok(HubMessage::Notification(change)) => {
                    if change.user_id != user {
                        continue;
                    }
                    if sender.send(Ok(notification_event(&change))).await.is_err() {
                        return;
                    }
                }
                Ok(HubMessage::Resync) | Err(RecvError::Lagged(_)) => {
                    if !Box::pin(replay(&db, user, scope, &mut last, &mut sender)).await {
                        return;
                    }
                    // Dataset and notification messages are state, not history: the page
                    // reloads them.
                    if matches!(scope, Scope::User) {
                        let resync = Event::default().event(RESYNC_EVENT).data("{}");
                        if sender.send(Ok(resync)).await.is_err() {
                            return;
                        }
                    }
                }
                Err(RecvError::Closed) => return,
            },
            _ = shutdown.changed() => return,
        }
    }
}

fn notification_event(change: &NotificationChange) -> Event {
    Event::default()
        .event(NOTIFICATION_EVENT)
        .data(serde_json::to_string(change).unwrap_or_default())
}

/// Sends every stored event after `last`; `false` when the client has gone.
async fn replay(
    db: &Db,
    user: Uuid,
    scope: Scope,
    last: &mut i64,
    sender: &mut EventSender,
) -> bool {
    loop {
        let page = match scope {
            Scope::Job(job) => events::since(db, user, job, *last, REPLAY_PAGE).await,
            Scope::User => events::since_for_user(db, user, *last, REPLAY_PAGE).await,
        };
        let page = match page {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(error = %e, ?scope, "cannot replay job events");
                // A user stream tells the page to reload instead; a job stream ends, and the
                // browser reconnects with Last-Event-ID, so nothing is skipped.
                if matches!(scope, Scope::User) {
                    let resync = Event::default().event(RESYNC_EVENT).data("{}");
                    return sender.send(Ok(resync)).await.is_ok();
                }
                return false;
            }
        };
        for event in &page.events {
            if sender.send(Ok(sse_event(event))).await.is_err() {
                return false;
            }
        }
        if let Some(id) = page.last_read {
            *last = id;
        }
        if !page.full {
            return true;
        }
    }
}
