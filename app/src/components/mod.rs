//! Building blocks shared by the pages.

pub mod layout;

use leptos::prelude::*;
use leptos_meta::Title;

use crate::accounts::AuthCard;

/// The route's `:id` as a UUID (`None` when it is not one: the page answers "not found").
pub fn use_id_param() -> Memo<Option<uuid::Uuid>> {
    let params = leptos_router::hooks::use_params_map();
    Memo::new(move |_| params.with(|p| p.get("id").and_then(|id| uuid::Uuid::parse_str(&id).ok())))
}

/// A field's error message (or nothing), linked to its input by `id` for screen readers.
#[component]
pub fn FieldError(#[prop(into)] id: String, message: Signal<Option<String>>) -> impl IntoView {
    view! {
        <p id=id class="field-error" role="status" aria-live="polite">
            {move || message.get().unwrap_or_default()}
        </p>
    }
}

/// Title, one-line description and an optional primary action, at the top of every page.
#[component]
pub fn PageHeader(
    #[prop(into)] title: String,
    #[prop(into)] description: String,
    #[prop(optional)] children: Option<Children>,
) -> impl IntoView {
    view! {
        <Title text=title.clone()/>
        {PageHeading(PageHeadingProps { title, description, children })}
    }
}

/// What an empty list looks like: what is missing and what to do next.
#[component]
pub fn EmptyState(
    #[prop(into)] icon: String,
    #[prop(into)] title: String,
    #[prop(optional)] children: Option<Children>,
) -> impl IntoView {
    view! {
        <section class="empty card">
            <div class="empty-icon" aria-hidden="true">{icon}</div>
            <h2>{title}</h2>
            <div class="muted">{children.map(|c| c())}</div>
        </section>
    }
}

/// An error box with a retry link (the same page again: it works without JavaScript).
#[component]
pub fn ErrorState(#[prop(into)] message: String) -> impl IntoView {
    view! {
        <section class="error-state card" role="alert">
            <p>{message}</p>
            <a class="btn" href="">"Try again"</a>
        </section>
    }
}

/// A page's title and description without the document `<title>`: for islands, which run
/// without the page's metadata context (the page around them sets the title).
#[component]
pub fn PageHeading(
    #[prop(into)] title: String,
    #[prop(into)] description: String,
    #[prop(optional)] children: Option<Children>,
) -> impl IntoView {
    view! {
        <header class="page-header">
            <div>
                <h1>{title}</h1>
                <p class="muted">{description}</p>
            </div>
            <div class="page-actions">{children.map(|c| c())}</div>
        </header>
    }
}

/// Loads `path` as a new page (islands have no client-side router); nothing on the server.
pub fn go_to(path: &str) {
    #[cfg(feature = "hydrate")]
    if let Some(window) = web_sys::window() {
        let _ = window.location().set_href(path);
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = path;
}

/// Asks the browser's confirmation dialog; `false` on the server or when dismissed.
pub fn confirm(message: &str) -> bool {
    #[cfg(feature = "hydrate")]
    return web_sys::window()
        .and_then(|w| w.confirm_with_message(message).ok())
        .unwrap_or(false);
    #[cfg(not(feature = "hydrate"))]
    {
        let _ = message;
        false
    }
}

/// Loads the current page again, for what the server renders from fresh data.
pub fn reload() {
    #[cfg(feature = "hydrate")]
    if let Some(window) = web_sys::window() {
        let _ = window.location().reload();
    }
}

/// A placeholder while data loads (shape only, no fake numbers).
#[component]
pub fn Skeleton(#[prop(default = 3)] rows: usize) -> impl IntoView {
    view! {
        <div class="skeleton" aria-busy="true" aria-label="Loading">
            {(0..rows).map(|_| view! { <div class="skeleton-row"></div> }).collect_view()}
        </div>
    }
}

#[component]
pub fn NotFound() -> impl IntoView {
    #[cfg(feature = "ssr")]
    {
        if let Some(response) = use_context::<leptos_axum::ResponseOptions>() {
            response.set_status(axum::http::StatusCode::NOT_FOUND);
        }
    }
    view! {
        <Title text="Not found"/>
        <AuthCard title="Page not found" tagline="There is nothing at this address.">
            <a class="btn btn-primary" href="/datasets">"Go to your datasets"</a>
        </AuthCard>
    }
}
