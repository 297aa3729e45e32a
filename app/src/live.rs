//! The browser's end of the live bus. Every signed-in page opens one `EventSource` on
//! `GET /api/events` (when its first island asks for the bus) and shares it through
//! [`LiveBus::get`]: the bell sets its unread count from it, the Jobs list applies job events,
//! the dataset page follows validation. On the server the bus is inert: pages render from the
//! database.

#[cfg(feature = "hydrate")]
use std::rc::Rc;

use engine::datasets::DatasetStatus;
use engine::jobs::JobEventRecord;
use engine::live::{DatasetChange, NotificationChange};
use leptos::prelude::*;

/// One message of the user's stream.
#[derive(Debug, Clone)]
pub enum UserMessage {
    Job(Box<JobEventRecord>),
    Dataset(DatasetChange),
    Notification(NotificationChange),
    /// The stream opened; on a `reconnect`, messages may have been missed while it was closed.
    Connected {
        reconnect: bool,
    },
    /// The server may have dropped messages: reload what you show.
    Resync,
}

impl UserMessage {
    /// Whether a page should reload what it shows from the server.
    pub fn asks_reload(&self) -> bool {
        matches!(self, Self::Resync | Self::Connected { reconnect: true })
    }
}

#[cfg(feature = "hydrate")]
type Listener = Rc<dyn Fn(&UserMessage)>;

/// The browser side's state (thread-local: never created on the server, where values are
/// dropped on other threads).
#[cfg(feature = "hydrate")]
#[derive(Default)]
struct Listeners {
    listeners: Vec<(u64, Listener)>,
    next_id: u64,
    /// Whether the stream has opened before (a later open is a reconnect).
    opened: bool,
}

/// The page's shared stream: one per page in the browser, shared by all its islands.
#[derive(Clone, Copy)]
pub struct LiveBus {
    /// Whether the stream is open.
    pub connected: RwSignal<bool>,
    /// The unread notification count, once the stream has said it.
    pub unread: RwSignal<Option<i64>>,
    #[cfg(feature = "hydrate")]
    listeners: StoredValue<Listeners, LocalStorage>,
}

impl LiveBus {
    /// The page's bus. In the browser the first call opens the stream and later calls (from
    /// any island) share it; on the server each call gets an inert one.
    pub fn get() -> Self {
        #[cfg(feature = "hydrate")]
        {
            thread_local! {
                static BUS: std::cell::OnceCell<LiveBus> = const { std::cell::OnceCell::new() };
            }
            BUS.with(|cell| {
                *cell.get_or_init(|| {
                    // Owned by a root of its own that lives as long as the page, not by the
                    // island that happened to ask first.
                    let owner = Owner::new_root(None);
                    let bus = owner.with(|| {
                        let bus = Self::new();
                        bus.connect();
                        bus
                    });
                    std::mem::forget(owner);
                    bus
                })
            })
        }
        #[cfg(not(feature = "hydrate"))]
        Self::new()
    }

    fn new() -> Self {
        Self {
            connected: RwSignal::new(false),
            unread: RwSignal::new(None),
            #[cfg(feature = "hydrate")]
            listeners: StoredValue::new_local(Listeners::default()),
        }
    }

    /// Calls `listener` with every message until the calling component is cleaned up (in the
    /// browser; the server renders without a stream).
    pub fn on(self, listener: impl Fn(&UserMessage) + 'static) {
        #[cfg(feature = "hydrate")]
        {
            let mut id = 0;
            self.listeners.update_value(|l| {
                id = l.next_id;
                l.next_id += 1;
                l.listeners.push((id, Rc::new(listener) as Listener));
            });
            on_cleanup(move || {
                self.listeners
                    .try_update_value(|l| l.listeners.retain(|(i, _)| *i != id));
            });
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = listener;
    }

    #[cfg(feature = "hydrate")]
    fn deliver(self, message: &UserMessage) {
        if let UserMessage::Notification(change) = message {
            self.unread.set(Some(change.unread));
        }
        // Copied out first: a listener may register or leave while being called.
        let listeners: Vec<Listener> = self
            .listeners
            .with_value(|l| l.listeners.iter().map(|(_, f)| f.clone()).collect());
        for listener in listeners {
            listener(message);
        }
    }

    #[cfg(feature = "hydrate")]
    fn connect(self) {
        use engine::jobs::JobEventKind;
        use engine::live::{DATASET_EVENT, NOTIFICATION_EVENT, RESYNC_EVENT};

        let mut names: Vec<&'static str> = JobEventKind::ALL.iter().map(|k| k.as_str()).collect();
        names.extend([DATASET_EVENT, NOTIFICATION_EVENT, RESYNC_EVENT]);
        open(
            "/api/events",
            &names,
            self.connected,
            move |name, data| {
                let message = match name {
                    RESYNC_EVENT => Some(UserMessage::Resync),
                    DATASET_EVENT => serde_json::from_str(data).ok().map(UserMessage::Dataset),
                    NOTIFICATION_EVENT => serde_json::from_str(data)
                        .ok()
                        .map(UserMessage::Notification),
                    _ => serde_json::from_str(data)
                        .ok()
                        .map(|r| UserMessage::Job(Box::new(r))),
                };
                if let Some(message) = message {
                    self.deliver(&message);
                }
                true
            },
            move || {
                let mut reconnect = false;
                self.listeners.update_value(|l| {
                    reconnect = l.opened;
                    l.opened = true;
                });
                self.deliver(&UserMessage::Connected { reconnect });
            },
        );
    }
}

/// Whether a dataset in `status` may still change by itself (validation is pending).
pub fn dataset_pending(status: DatasetStatus) -> bool {
    matches!(status, DatasetStatus::Uploading | DatasetStatus::Validating)
}

/// Opens an `EventSource` on `url` for the SSE event `names`; `on_message(name, data)` is
/// called for each, and the source closes when it returns `false` or when the calling
/// component is cleaned up. `connected` follows the connection; `on_open` runs on every
/// (re)connect. The browser reconnects by itself, with `Last-Event-ID`.
#[cfg(feature = "hydrate")]
pub fn open(
    url: &str,
    names: &[&str],
    connected: RwSignal<bool>,
    mut on_message: impl FnMut(&str, &str) -> bool + 'static,
    on_open: impl Fn() + 'static,
) {
    use wasm_bindgen::JsCast;
    use wasm_bindgen::closure::Closure;

    let Ok(source) = web_sys::EventSource::new(url) else {
        return;
    };
    let closer = source.clone();
    let handler =
        Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |message: web_sys::MessageEvent| {
            let data = message.data().as_string().unwrap_or_default();
            if !on_message(&message.type_(), &data) {
                closer.close();
                connected.set(false);
            }
        });
    for name in names {
        let _ = source.add_event_listener_with_callback(name, handler.as_ref().unchecked_ref());
    }
    handler.forget();
    let opened = Closure::<dyn FnMut()>::new(move || {
        connected.set(true);
        on_open();
    });
    source.set_onopen(Some(opened.as_ref().unchecked_ref()));
    opened.forget();
    let failed = Closure::<dyn FnMut()>::new(move || connected.set(false));
    source.set_onerror(Some(failed.as_ref().unchecked_ref()));
    failed.forget();
    let stored = StoredValue::new_local(source);
    on_cleanup(move || stored.with_value(|s| s.close()));
}
