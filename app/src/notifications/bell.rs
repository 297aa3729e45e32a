//! The bell in the top bar, an island: the unread count (rendered by the server, then kept
//! current by the live stream) and, in the browser, a panel with the latest notifications,
//! mark-read and mark-all. Without JavaScript the bell is a link to the Notifications page.

use leptos::prelude::*;

use super::{MarkAllNotificationsRead, MarkNotificationRead, NotificationView, list_notifications};
use crate::live::LiveBus;

/// How many notifications the panel lists.
const PANEL_SIZE: usize = 6;

// In every bundle but the login pages' (which have no bell).
#[cfg_attr(
    any(
        feature = "ssr",
        feature = "bundle-core",
        feature = "bundle-settings",
        feature = "bundle-charts",
        feature = "bundle-train",
        feature = "bundle-upload"
    ),
    island
)]
#[cfg_attr(
    not(any(
        feature = "ssr",
        feature = "bundle-core",
        feature = "bundle-settings",
        feature = "bundle-charts",
        feature = "bundle-train",
        feature = "bundle-upload"
    )),
    component
)]
pub fn Bell(unread: i64) -> impl IntoView {
    let bus = LiveBus::get();
    let open = RwSignal::new(false);
    let count = move || bus.unread.get().unwrap_or(unread);
    let label = move || match count() {
        0 => "Notifications, none unread".to_owned(),
        n => format!("Notifications, {n} unread"),
    };
    view! {
        <div class="bell-wrap">
                <a
                    href="/notifications"
                    class="bell"
                    aria-label=label
                    aria-haspopup="dialog"
                    aria-expanded=move || open.get().to_string()
                    on:click=move |ev| {
                        // In the browser the bell opens its panel; the link is for pages without
                        // JavaScript (and a middle click).
                        ev.prevent_default();
                        open.update(|o| *o = !*o);
                    }
                >
                    <BellIcon/>
                    {move || (count() > 0).then(|| view! { <span class="badge-count">{count()}</span> })}
                </a>
            <Show when=move || open.get()>
                <BellPanel bus open/>
            </Show>
        </div>
    }
}

/// The latest notifications, reloaded whenever the unread count changes.
#[component]
fn BellPanel(bus: LiveBus, open: RwSignal<bool>) -> impl IntoView {
    let mark = ServerAction::<MarkNotificationRead>::new();
    let mark_all = ServerAction::<MarkAllNotificationsRead>::new();
    let latest = LocalResource::new(move || {
        bus.unread.track();
        mark.version().track();
        mark_all.version().track();
        list_notifications(false, 1, None)
    });
    let close = move || open.set(false);
    // Escape closes the panel wherever the focus is.
    #[cfg(feature = "hydrate")]
    {
        let escape = window_event_listener(leptos::ev::keydown, move |ev| {
            if ev.key() == "Escape" {
                close();
            }
        });
        on_cleanup(move || escape.remove());
    }
    view! {
        <div class="bell-panel card" role="dialog" aria-label="Latest notifications">
            <div class="bell-panel-head">
                <strong>"Notifications"</strong>
                <button
                    type="button"
                    class="btn btn-small"
                    on:click=move |_| {
                        mark_all.dispatch(MarkAllNotificationsRead {});
                    }
                    disabled=move || mark_all.pending().get()
                >
                    "Mark all read"
                </button>
            </div>
            <Suspense fallback=|| view! { <p class="muted small">"Loading…"</p> }>
                {move || {
                    latest
                        .get()
                        .map(|result| match result {
                            Err(e) => {
                                view! { <p class="form-error" role="alert">{e.to_string()}</p> }
                                    .into_any()
                            }
                            Ok(items) if items.is_empty() => {
                                view! { <p class="muted small">"No notifications yet."</p> }
                                    .into_any()
                            }
                            Ok(items) => {
                                view! {
                                    <ul class="bell-list">
                                        {items
                                            .into_iter()
                                            .take(PANEL_SIZE)
                                            .map(|n| view! { <PanelItem n mark close=Callback::new(move |_| close())/> })
                                            .collect_view()}
                                    </ul>
                                }
                                    .into_any()
                            }
                        })
                }}
            </Suspense>
            <a class="small" href="/notifications" on:click=move |_| close()>
                "All notifications"
            </a>
        </div>
    }
}

#[component]
fn PanelItem(
    n: NotificationView,
    mark: ServerAction<MarkNotificationRead>,
    close: Callback<()>,
) -> impl IntoView {
    let id = n.id;
    view! {
        <li class:unread=!n.read class=format!("priority-{}", n.priority)>
            {match n.action_url.clone() {
                Some(url) => {
                    view! {
                        <a href=url on:click=move |_| close.run(())>
                            {n.title.clone()}
                        </a>
                    }
                        .into_any()
                }
                None => view! { <span>{n.title.clone()}</span> }.into_any(),
            }}
            <p class="small">{n.message.clone()}</p>
            {(!n.read)
                .then(|| {
                    view! {
                        <button
                            type="button"
                            class="btn btn-small mark-read"
                            on:click=move |_| {
                                mark.dispatch(MarkNotificationRead { id });
                            }
                        >
                            "Mark read"
                        </button>
                    }
                })}
        </li>
    }
}

/// A bell drawn inline (no emoji font needed, inherits the text colour).
#[component]
fn BellIcon() -> impl IntoView {
    view! {
        <svg class="icon" width="18" height="18" viewBox="0 0 24 24" fill="none" stroke="currentColor"
            stroke-width="2" stroke-linecap="round" stroke-linejoin="round" aria-hidden="true">
            <path d="M6 8a6 6 0 0 1 12 0c0 7 3 9 3 9H3s3-2 3-9"/>
            <path d="M10.3 21a1.94 1.94 0 0 0 3.4 0"/>
        </svg>
    }
}
