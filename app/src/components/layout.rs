//! The signed-in layout: navigation to the overview and the five sections, the notifications
//! bell, the account menu, and the page outlet.

use leptos::prelude::*;
use leptos_router::components::{A, Outlet};
use leptos_router::hooks::use_location;

use crate::accounts::{LogoutButton, current_user};
use crate::notifications::Bell;

const SECTIONS: [(&str, &str, &str); 6] = [
    ("/", "Overview", "⌂"),
    ("/datasets", "Datasets", "▤"),
    ("/train", "Train", "▶"),
    ("/jobs", "Jobs", "◷"),
    ("/models", "Models", "◆"),
    ("/costs", "Costs", "$"),
];

#[component]
pub fn AppLayout() -> impl IntoView {
    let user = Resource::new(|| (), |_| current_user());
    // The page's live stream: the bell's count follows it on every page.
    let bus = crate::live::LiveBus::provide();
    let location = use_location();
    view! {
        <div class="app">
            <a class="skip-link" href="#main">"Skip to content"</a>
            <header class="topbar">
                <a class="brand" href="/">
                    <span class="brand-mark" aria-hidden="true">"◆"</span>
                    " lora-pipeline"
                </a>
                <nav class="nav" aria-label="Sections">
                    {SECTIONS
                        .into_iter()
                        .map(|(href, label, icon)| {
                            let current = move || {
                                let path = location.pathname.get();
                                if href == "/" { path == "/" } else { path.starts_with(href) }
                            };
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
                    <Bell bus/>
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
