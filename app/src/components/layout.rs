//! The signed-in layout: navigation to the overview and the five sections, the notifications
//! bell, the account menu, and the page outlet.

use leptos::prelude::*;
use leptos_router::components::Outlet;
use leptos_router::hooks::use_location;

use crate::accounts::{LogoutButton, current_user};
use crate::notifications::{Bell, unread_count};

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
    let unread = Resource::new(|| (), |_| unread_count());
    // Rendered on the server for each page load: the current section is known here.
    let path = use_location().pathname.get_untracked();
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
                            let current = if href == "/" { path == "/" } else { path.starts_with(href) };
                            view! {
                                <a href=href class="nav-link" aria-current=current.then_some("page")>
                                    <span class="nav-icon" aria-hidden="true">{icon}</span>
                                    {label}
                                </a>
                            }
                        })
                        .collect_view()}
                </nav>
                <div class="topbar-end">
                    // The bell is an island: it starts from the count rendered here.
                    <Suspense fallback=|| ()>
                        {move || unread.get().map(|n| view! { <Bell unread=n.unwrap_or(0)/> })}
                    </Suspense>
                    <Suspense fallback=|| ()>
                        {move || {
                            user.get()
                                .and_then(Result::ok)
                                .flatten()
                                .map(|u| view! { <span class="account" title=u.email.clone()>{u.email.clone()}</span> })
                        }}
                    </Suspense>
                    <a href="/settings" class="btn btn-ghost btn-small">"Settings"</a>
                    <LogoutButton/>
                </div>
            </header>
            <main id="main" class="content">
                <Outlet/>
            </main>
        </div>
    }
}
