//! Live progress over SSE (DESIGN §6.1). Events come from Postgres (the `job_events` table and
//! its NOTIFY channel, through the hub), so any replica serves any client. Both streams — one
//! job's (`/api/jobs/{id}/events`) and all of the caller's (`/api/events`) — run the same loop:
//! replay what the client missed (`Last-Event-ID`, or `?last_event_id=` for the first connect),
//! then follow live; a subscriber that falls behind reads the table again. Streams send
//! keep-alives, end with their connection (no task of their own) and when the server shuts down.

use std::collections::{HashMap, VecDeque};
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
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use crate::auth::CurrentUser;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

/// Live streams one user may hold open on one replica by default (`STREAMS_PER_USER`; a tab
/// holds one, two on a job page).
pub const DEFAULT_STREAMS_PER_USER: usize = 16;

/// Open streams per user: past the limit a new one is refused (429), so one account cannot
/// hold thousands of connections and their database replays.
#[derive(Clone)]
pub struct StreamCounter {
    counts: Arc<Mutex<HashMap<Uuid, usize>>>,
    limit: usize,
}

impl StreamCounter {
    pub fn new(limit: usize) -> Self {
        Self {
            counts: Arc::default(),
            limit,
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, usize>> {
        // A panic while holding it cannot leave the counts half-updated.
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A slot for one more stream of `user`, held until the stream's body is dropped.
    pub fn open(&self, user: Uuid) -> Result<StreamSlot, ApiError> {
        let mut counts = self.counts();
        let open = counts.entry(user).or_default();
        if *open >= self.limit {
            return Err(ApiError::RateLimited { retry_after_s: 5 });
        }
        *open += 1;
        metrics::gauge!(engine::operations::metrics::SSE_STREAMS_OPEN).increment(1.0);
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
        metrics::gauge!(engine::operations::metrics::SSE_STREAMS_OPEN).decrement(1.0);
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

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Resume {
    /// Like the `Last-Event-ID` header (which wins): replay what came after this id.
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

/// `GET /api/jobs/{id}/events`: the job's events as Server-Sent Events — `status`, `stage`,
/// `metrics`, `eval`, `checkpoint`, `log`, `result` —, each `id:` a [`JobEventRecord`] id,
/// replayed from `Last-Event-ID`, then live; a keep-alive comment every 15 s.
#[utoipa::path(get, path = "/api/jobs/{id}/events", tag = "jobs",
    params(("id" = Uuid, Path), ("Last-Event-ID" = Option<i64>, Header), Resume),
    responses((status = 200, content_type = "text/event-stream", body = JobEventRecord,
            description = "A stream: `id: <n>`, `event: <kind>`, `data: <JSON of the event>`."),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "Too many open streams (STREAMS_PER_USER).")))]
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
#[utoipa::path(get, path = "/api/events", tag = "notifications",
    params(("Last-Event-ID" = Option<i64>, Header), Resume),
    responses((status = 200, content_type = "text/event-stream", body = JobEventRecord,
            description = "A stream of the caller's job events (`data`: a JobEventRecord), `event: dataset` (DatasetChange) and `event: notification` (NotificationChange, the unread count first)."),
        (status = 401, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "Too many open streams (STREAMS_PER_USER).")))]
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

/// What a stream holds between events: no task and no channel of its own — the connection
/// polls it, so an idle stream costs its subscription, a few ids and a small queue (10,000 open
/// streams is the target; docs/PERFORMANCE.md). When the client goes, hyper drops the body and
/// the subscription with it.
struct StreamState {
    db: Db,
    user: Uuid,
    scope: Scope,
    /// The newest event id sent.
    last: i64,
    live: Subscription,
    /// Events to send before reading more: the first one, a page of a replay.
    queue: VecDeque<Event>,
    /// Stored events after `last` must be read before following live (the first connect, a
    /// lagged subscriber, a hub resync).
    replay: Replay,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

#[derive(Clone, Copy, PartialEq)]
enum Replay {
    Done,
    /// Read the next page.
    Pending,
    /// Read the next page, then tell a user stream's page to reload its state.
    PendingThenResync,
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
    let state = StreamState {
        db: state.db.clone(),
        user,
        scope,
        last,
        live,
        queue: first.into_iter().collect(),
        replay: Replay::Pending,
        shutdown: state.shutdown.clone(),
    };
    let events = futures::stream::unfold(state, |mut state| async move {
        let event = next_event(&mut state).await?;
        Some((Ok::<_, Infallible>(event), state))
    });
    let sse = Sse::new(Counted {
        inner: Box::pin(events),
        _slot: slot,
    })
    .keep_alive(KeepAlive::default());
    // nginx buffers proxied responses unless told otherwise: every event must pass at once.
    (
        [(
            axum::http::HeaderName::from_static("x-accel-buffering"),
            "no",
        )],
        sse,
    )
}

/// The next event to send; `None` ends the stream (shutdown, or a job stream whose replay
/// failed: the browser reconnects with `Last-Event-ID`, so nothing is skipped).
async fn next_event(state: &mut StreamState) -> Option<Event> {
    loop {
        if let Some(event) = state.queue.pop_front() {
            return Some(event);
        }
        if state.replay != Replay::Done {
            // Boxed: the replay's database futures are large, and a stream spends nearly all
            // its life waiting for live events.
            Box::pin(replay_page(state)).await?;
            continue;
        }
        let message = tokio::select! {
            message = state.live.recv() => message,
            _ = state.shutdown.changed() => return None,
        };
        match message {
            Ok(HubMessage::Job(event)) => {
                let ours = event.user_id == state.user
                    && match state.scope {
                        Scope::Job(job) => event.job_id == job,
                        Scope::User => true,
                    };
                if ours && event.id > state.last {
                    state.last = event.id;
                    return Some(sse_event(&event));
                }
            }
            // Only user streams subscribe to these, and only to their own user's.
            Ok(HubMessage::Dataset(change)) if change.user_id == state.user => {
                return Some(
                    Event::default()
                        .event(DATASET_EVENT)
                        .data(serde_json::to_string(&*change).unwrap_or_default()),
                );
            }
            Ok(HubMessage::Notification(change)) if change.user_id == state.user => {
                return Some(notification_event(&change));
            }
            Ok(HubMessage::Dataset(_) | HubMessage::Notification(_)) => {}
            Ok(HubMessage::Resync) | Err(RecvError::Lagged(_)) => {
                // Dataset and notification messages are state, not history: after the replay
                // the page reloads them.
                state.replay = match state.scope {
                    Scope::User => Replay::PendingThenResync,
                    Scope::Job(_) => Replay::Pending,
                };
            }
            Err(RecvError::Closed) => return None,
        }
    }
}

fn notification_event(change: &NotificationChange) -> Event {
    Event::default()
        .event(NOTIFICATION_EVENT)
        .data(serde_json::to_string(change).unwrap_or_default())
}

/// Reads the next page of stored events after `last` into the queue; `None` when the stream
/// must end.
async fn replay_page(state: &mut StreamState) -> Option<()> {
    let (db, user, last) = (&state.db, state.user, state.last);
    let page = match state.scope {
        Scope::Job(job) => events::since(db, user, job, last, REPLAY_PAGE).await,
        Scope::User => events::since_for_user(db, user, last, REPLAY_PAGE).await,
    };
    let page = match page {
        Ok(page) => page,
        Err(e) => {
            tracing::warn!(error = %e, scope = ?state.scope, "cannot replay job events");
            // A user stream tells the page to reload instead; a job stream ends, and the
            // browser reconnects with Last-Event-ID, so nothing is skipped.
            if matches!(state.scope, Scope::User) {
                state.replay = Replay::Done;
                state.queue.push_back(resync_event());
                return Some(());
            }
            return None;
        }
    };
    state.queue.extend(page.events.iter().map(sse_event));
    if let Some(id) = page.last_read {
        state.last = id;
    }
    if !page.full {
        if state.replay == Replay::PendingThenResync {
            state.queue.push_back(resync_event());
        }
        state.replay = Replay::Done;
    }
    Some(())
}

fn resync_event() -> Event {
    Event::default().event(RESYNC_EVENT).data("{}")
}
