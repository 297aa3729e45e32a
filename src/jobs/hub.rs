//! The in-process fan-out of job events. One `LISTEN` connection per replica receives every
//! event from Postgres and hands it to the subscribers of its job and of its owner, through
//! broadcast channels (one per job and per user with subscribers). A subscriber that falls
//! behind, or a lost LISTEN connection, is told to resynchronise from the table.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

use super::event::JobEventRecord as JobEvent;
use super::events::{self, CHANNEL};
use crate::db::Db;

/// Events buffered per channel before a slow subscriber is told to resynchronise.
const CAPACITY: usize = 256;

#[derive(Debug, Clone)]
pub enum HubMessage {
    Event(Arc<JobEvent>),
    /// Events may have been missed: read the table from your last id.
    Resync,
}

#[derive(Default)]
struct Channels {
    jobs: HashMap<Uuid, broadcast::Sender<HubMessage>>,
    users: HashMap<Uuid, broadcast::Sender<HubMessage>>,
}

#[derive(Clone, Default)]
pub struct Hub {
    channels: Arc<Mutex<Channels>>,
}

impl Hub {
    /// Starts listening; the task ends with `shutdown`.
    pub fn start(db: Db, shutdown: watch::Receiver<bool>) -> Self {
        let hub = Self::default();
        tokio::spawn(hub.clone().listen(db, shutdown));
        hub
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Channels> {
        self.channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn subscribe_job(&self, job: Uuid) -> broadcast::Receiver<HubMessage> {
        let mut channels = self.lock();
        channels
            .jobs
            .entry(job)
            .or_insert_with(|| broadcast::channel(CAPACITY).0)
            .subscribe()
    }

    pub fn subscribe_user(&self, user: Uuid) -> broadcast::Receiver<HubMessage> {
        let mut channels = self.lock();
        channels
            .users
            .entry(user)
            .or_insert_with(|| broadcast::channel(CAPACITY).0)
            .subscribe()
    }

    /// Hands an event to its subscribers, dropping channels nobody listens to any more.
    pub fn publish(&self, event: JobEvent) {
        let event = Arc::new(event);
        let mut guard = self.lock();
        let channels = &mut *guard;
        for (map, key) in [
            (&mut channels.jobs, event.job_id),
            (&mut channels.users, event.user_id),
        ] {
            if let Some(sender) = map.get(&key)
                && sender.send(HubMessage::Event(event.clone())).is_err()
            {
                map.remove(&key);
            }
        }
    }

    fn resync_all(&self) {
        let mut channels = self.lock();
        channels
            .jobs
            .retain(|_, s| s.send(HubMessage::Resync).is_ok());
        channels
            .users
            .retain(|_, s| s.send(HubMessage::Resync).is_ok());
    }

    async fn listen(self, db: Db, mut shutdown: watch::Receiver<bool>) {
        loop {
            let mut listener = match PgListener::connect_with(db.pool()).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "event hub cannot connect; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = shutdown.changed() => return,
                    }
                }
            };
            if let Err(e) = listener.listen(CHANNEL).await {
                tracing::warn!(error = %e, "event hub cannot LISTEN; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            // Whatever happened while we were not listening is in the table.
            self.resync_all();
            loop {
                tokio::select! {
                    message = listener.try_recv() => match message {
                        Ok(Some(n)) => self.dispatch(&db, n.payload()).await,
                        // The connection dropped; reconnect and resynchronise everyone.
                        Ok(None) | Err(_) => break,
                    },
                    _ = shutdown.changed() => return,
                }
            }
        }
    }

    async fn dispatch(&self, db: &Db, payload: &str) {
        #[derive(serde::Deserialize)]
        struct Oversized {
            id: i64,
            #[serde(default)]
            oversized: bool,
        }
        match serde_json::from_str::<JobEvent>(payload) {
            Ok(event) => self.publish(event),
            Err(_) => match serde_json::from_str::<Oversized>(payload) {
                Ok(o) if o.oversized => match events::by_id(db, o.id).await {
                    Ok(Some(event)) => self.publish(event),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot fetch an oversized event"),
                },
                _ => tracing::warn!("ignoring a malformed event notification"),
            },
        }
    }
}
