//! The in-process end of the bus. One `LISTEN` connection per replica receives every
//! announcement from Postgres and hands it to the subscribers of its job (job events only) and
//! of its owner (everything), through broadcast channels — one per job and per user with
//! subscribers, dropped when the last subscriber leaves. A subscriber that falls behind, or a
//! lost LISTEN connection, is told to resynchronise from the table.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

use super::{Announcement, CHANNEL, DatasetChange, NotificationChange};
use crate::db::Db;
use crate::jobs::{JobEventRecord, events};

/// Messages buffered per channel before a slow subscriber is told to resynchronise.
const CAPACITY: usize = 256;

#[derive(Debug, Clone)]
pub enum HubMessage {
    Job(Arc<JobEventRecord>),
    Dataset(Arc<DatasetChange>),
    Notification(Arc<NotificationChange>),
    /// Messages may have been missed: read the table from your last id.
    Resync,
}

impl HubMessage {
    fn user(&self) -> Option<Uuid> {
        match self {
            Self::Job(e) => Some(e.user_id),
            Self::Dataset(d) => Some(d.user_id),
            Self::Notification(n) => Some(n.user_id),
            Self::Resync => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Topic {
    Job(Uuid),
    User(Uuid),
}

#[derive(Clone, Default)]
pub struct Hub {
    channels: Arc<Mutex<HashMap<Topic, broadcast::Sender<HubMessage>>>>,
}

/// A subscription to one topic; its channel goes away with its last subscription.
pub struct Subscription {
    receiver: Option<broadcast::Receiver<HubMessage>>,
    hub: Hub,
    topic: Topic,
}

impl Subscription {
    pub async fn recv(&mut self) -> Result<HubMessage, RecvError> {
        match self.receiver.as_mut() {
            Some(receiver) => receiver.recv().await,
            None => Err(RecvError::Closed),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        drop(self.receiver.take());
        let mut channels = self.hub.lock();
        if channels
            .get(&self.topic)
            .is_some_and(|sender| sender.receiver_count() == 0)
        {
            channels.remove(&self.topic);
        }
    }
}

impl Hub {
    /// Starts listening; the task ends with `shutdown`.
    pub fn start(db: Db, shutdown: watch::Receiver<bool>) -> Self {
        let hub = Self::default();
        tokio::spawn(hub.clone().listen(db, shutdown));
        hub
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Topic, broadcast::Sender<HubMessage>>> {
        self.channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn subscribe(&self, topic: Topic) -> Subscription {
        let receiver = self
            .lock()
            .entry(topic)
            .or_insert_with(|| broadcast::channel(CAPACITY).0)
            .subscribe();
        Subscription {
            receiver: Some(receiver),
            hub: self.clone(),
            topic,
        }
    }

    /// One job's events.
    pub fn subscribe_job(&self, job: Uuid) -> Subscription {
        self.subscribe(Topic::Job(job))
    }

    /// Everything of one user: job events, dataset changes, notification counts.
    pub fn subscribe_user(&self, user: Uuid) -> Subscription {
        self.subscribe(Topic::User(user))
    }

    /// Channels open now (one per job or user with subscribers).
    pub fn channel_count(&self) -> usize {
        self.lock().len()
    }

    /// Hands a message to its subscribers.
    pub fn publish(&self, message: HubMessage) {
        let channels = self.lock();
        if let HubMessage::Job(event) = &message
            && let Some(sender) = channels.get(&Topic::Job(event.job_id))
        {
            let _ = sender.send(message.clone());
        }
        if let Some(user) = message.user()
            && let Some(sender) = channels.get(&Topic::User(user))
        {
            let _ = sender.send(message);
        }
    }

    fn resync_all(&self) {
        for sender in self.lock().values() {
            let _ = sender.send(HubMessage::Resync);
        }
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
            // Whatever happened while we were not listening is in the tables.
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
        let message = match serde_json::from_str::<Announcement>(payload) {
            Ok(Announcement::Job(event)) => HubMessage::Job(Arc::new(event)),
            Ok(Announcement::JobOversized { id }) => match events::by_id(db, id).await {
                Ok(Some(event)) => HubMessage::Job(Arc::new(event)),
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot fetch an oversized event");
                    return;
                }
            },
            Ok(Announcement::Dataset(change)) => HubMessage::Dataset(Arc::new(change)),
            Ok(Announcement::Notification(change)) => HubMessage::Notification(Arc::new(change)),
            Err(e) => {
                tracing::warn!(error = %e, "ignoring a malformed bus message");
                return;
            }
        };
        self.publish(message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_channel_goes_with_its_last_subscriber() {
        let hub = Hub::default();
        let job = Uuid::new_v4();
        let first = hub.subscribe_job(job);
        let second = hub.subscribe_job(job);
        let user = hub.subscribe_user(Uuid::nil());
        assert_eq!(hub.channel_count(), 2);
        drop(first);
        assert_eq!(hub.channel_count(), 2, "one subscriber left");
        drop(second);
        assert_eq!(hub.channel_count(), 1, "the job's channel is gone");
        drop(user);
        assert_eq!(hub.channel_count(), 0);
    }

    #[tokio::test]
    async fn users_get_only_their_own_messages() {
        let hub = Hub::default();
        let (me, other) = (Uuid::new_v4(), Uuid::new_v4());
        let mut mine = hub.subscribe_user(me);
        hub.publish(HubMessage::Notification(Arc::new(NotificationChange {
            user_id: other,
            unread: 1,
            notification_id: None,
            title: None,
        })));
        hub.publish(HubMessage::Notification(Arc::new(NotificationChange {
            user_id: me,
            unread: 3,
            notification_id: None,
            title: None,
        })));
        match mine.recv().await {
            Ok(HubMessage::Notification(n)) => assert_eq!((n.user_id, n.unread), (me, 3)),
            other => panic!("{other:?}"),
        }
    }
}
