//! The signed-in layout: navigation to the five sections, the notifications bell, the account
//! menu, and the page outlet.

use leptos::prelude::*;
use leptos_router::components::{A, Outlet};
use leptos_router::hooks::use_location;

use crate::accounts::{LogoutButton, current_user};
use crate::notifications::unread_count;

const SECTIONS: [(&str, &str, &str); 5] = [
    ("/datasets", "Datasets", "▤"),
    ("/train", "Train", "▶"),
    ("/jobs", "Jobs", "◷"),
    ("/models", "Models", "◆"),
    ("/costs", "Costs", "$"),
];

#[component]
pub fn AppLayout() -> impl IntoView {
    let user = Resource::new(|| (), |_| current_user());
    let unread = Resource::new(|| (), |_| unread_count());
    // The page's live stream: the bell's count follows it on every page.
    let bus = crate::live::LiveBus::provide();
    let location = use_location();
    view! {
        <div class="app">
            <a class="skip-link" href="#main">"Skip to content"</a>
            <header class="topbar">
                <a class="brand" href="/datasets">
                    <span class="brand-mark" aria-hidden="true">"◆"</span>
                    " lora-pipeline"
                </a>
                <nav class="nav" aria-label="Sections">
                    {SECTIONS
                        .into_iter()
                        .map(|(href, label, icon)| {
                            let current = move || location.pathname.get().starts_with(href);
                            view! {
                                <A href=href attr:class="nav-link" attr:aria-current=move || current().then_some("page")>
                                    <span class="nav-icon" aria-hidden="true">{icon}</span>
                                    {label}
                                </A>
                            }
                        })
                        .collect_view()}
                </nav>
                <div class="topbar-end">
                    <Suspense fallback=|| view! { <span class="bell" aria-busy="true"><BellIcon/></span> }>
                        {move || {
                            let count = bus
                                .unread
                                .get()
                                .or_else(|| unread.get().and_then(Result::ok))
                                .unwrap_or(0);
                            let label = if count == 0 {
                                "Notifications, none unread".to_owned()
                            } else {
                                format!("Notifications, {count} unread")
                            };
                            view! {
                                <A href="/notifications" attr:class="bell" attr:aria-label=label>
                                    <BellIcon/>
                                    {(count > 0).then(|| view! { <span class="badge-count">{count}</span> })}
                                </A>
                            }
                        }}
                    </Suspense>
                    <Suspense fallback=|| ()>
                        {move || {
                            user.get()
                                .and_then(Result::ok)
                                .flatten()
                                .map(|u| view! { <span class="account" title=u.email.clone()>{u.email.clone()}</span> })
                        }}
                    </Suspense>
                    <A href="/settings" attr:class="btn btn-ghost btn-small">"Settings"</A>
                    <LogoutButton/>
                </div>
            </header>
            <main id="main" class="content">
                <Outlet/>
            </main>
        </div>
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
