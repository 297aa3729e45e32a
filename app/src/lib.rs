//! The lora-pipeline UI: the HTML shell, the routes, and one module per capability (pages plus
//! the server functions they call). Server-function bodies run on the server (`ssr`) and call
//! into the engine; in the browser (`hydrate`) they are HTTP calls.
//!
//! Islands: every page renders on the server, routing included, and reads without JavaScript.
//! Only the parts that must react in the browser are `#[island]`s — the bell, the live Jobs list
//! and overview, the upload form, the Train form with its estimator, the job monitor, the
//! charts, and the forms that show what the server answered — and only they are compiled into
//! the WASM. An island takes its data as serializable props (never a context or a resource
//! from the page around it) and moves to another page with a plain page load.

pub mod accounts;
pub mod api_reference;
pub mod charts;
pub mod components;
pub mod costs;
pub mod datasets;
pub mod error;
pub mod jobs;
pub mod live;
pub mod models;
pub mod notifications;
pub mod overview;
#[cfg(feature = "ssr")]
pub mod server_context;
pub mod settings;
pub mod training;

use leptos::prelude::*;
use leptos_meta::{MetaTags, Title, provide_meta_context};
use leptos_router::components::{ParentRoute, Route, Router, Routes};
use leptos_router::{SsrMode, path};

use crate::accounts::{LoginPage, RegisterPage};
use crate::components::NotFound;
use crate::components::layout::AppLayout;

/// Hydrates the page's islands, then marks the page hydrated (`<html data-hydrated>`): the
/// end-to-end tests and the page benchmark wait for it, and the SSR-only tests check it never
/// appears. Leptos' island script calls the WASM's `hydrate` and then walks the page's islands
/// in microtasks; a zero-delay timeout runs after them.
#[cfg(feature = "hydrate")]
pub fn hydrate_islands() {
    use wasm_bindgen::JsCast;
    // With no client-side router, a server function's redirect is a page load.
    let _ = leptos::server_fn::redirect::set_redirect_hook(components::go_to);
    leptos::mount::hydrate_islands();
    let mark = wasm_bindgen::closure::Closure::once_into_js(|| {
        if let Some(root) = web_sys::window()
            .and_then(|w| w.document())
            .and_then(|d| d.document_element())
        {
            let _ = root.set_attribute("data-hydrated", "");
        }
    });
    if let Some(window) = web_sys::window() {
        let _ = window.set_timeout_with_callback(mark.unchecked_ref());
    }
}

/// The page's Content-Security-Policy: scripts only from this origin or inline with this
/// response's nonce (Leptos puts it on its hydration and data scripts), WASM compilation, styles
/// from this origin (inline style attributes allowed: the charts set them), nothing framing it.
#[cfg(feature = "ssr")]
fn content_security_policy() {
    use axum::http::{HeaderValue, header};
    let (Some(nonce), Some(response)) = (
        leptos::nonce::use_nonce(),
        use_context::<leptos_axum::ResponseOptions>(),
    ) else {
        return;
    };
    let policy = format!(
        "default-src 'self'; script-src 'self' 'nonce-{nonce}' 'wasm-unsafe-eval'; \
         style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self'; \
         font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
         frame-ancestors 'none'"
    );
    if let Ok(value) = HeaderValue::from_str(&policy) {
        response.insert_header(header::CONTENT_SECURITY_POLICY, value);
    }
}

/// The WASM bundle a page loads: each holds only the islands of its group of pages (the
/// `bundle-*` features; `scripts/lib.sh` builds one per group), so no page downloads the Train
/// form's estimator or the charts it does not draw. Every bundle but `auth` (the signed-out
/// pages) has the bell.
pub fn bundle_for(path: &str) -> &'static str {
    let path = path.trim_end_matches('/');
    let detail = |section: &str| {
        path.strip_prefix(section)
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'))
    };
    match path {
        "/login" | "/register" => "auth",
        "/settings" => "settings",
        "/train" => "train",
        "/datasets/new" => "upload",
        "/costs" => "charts",
        _ if detail("/jobs") || detail("/datasets") || detail("/models") => "charts",
        _ => "core",
    }
}

/// The page's path, on the server.
#[cfg(feature = "ssr")]
fn request_path() -> String {
    use_context::<axum::http::request::Parts>()
        .map(|parts| parts.uri.path().to_owned())
        .unwrap_or_default()
}

/// The HTML document around the app (server side only).
pub fn shell(options: LeptosOptions) -> impl IntoView {
    #[cfg(feature = "ssr")]
    let options = {
        content_security_policy();
        let mut options = options;
        options.output_name = format!("lora-pipeline-{}", bundle_for(&request_path())).into();
        options
    };
    // `site_pkg_dir` carries the assets' content hash (`pkg/<hash>`): their URLs change when
    // they do, so browsers may keep them for good.
    let stylesheet = format!("/{}/lora-pipeline.css", options.site_pkg_dir);
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <meta name="color-scheme" content="light dark"/>
                <link rel="icon" href="/favicon.svg" type="image/svg+xml"/>
                <link rel="stylesheet" href=stylesheet/>
                <HydrationScripts options islands=true/>
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

#[cfg(test)]
mod tests {
    use super::bundle_for;

    #[test]
    fn each_page_gets_the_bundle_with_its_islands() {
        for (path, bundle) in [
            ("/", "core"),
            ("/login", "auth"),
            ("/register", "auth"),
            ("/datasets", "core"),
            ("/datasets/", "core"),
            ("/datasets/new", "upload"),
            ("/datasets/0f8fad5b-d9cb-469f-a165-70867728950e", "charts"),
            ("/train", "train"),
            ("/jobs", "core"),
            ("/jobs/0f8fad5b-d9cb-469f-a165-70867728950e", "charts"),
            ("/jobs/x/y", "core"),
            ("/models", "core"),
            ("/models/0f8fad5b-d9cb-469f-a165-70867728950e", "charts"),
            ("/costs", "charts"),
            ("/notifications", "core"),
            ("/settings", "settings"),
            ("/nowhere", "core"),
        ] {
            assert_eq!(bundle_for(path), bundle, "{path}");
        }
    }
}

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    // Pages render completely on the server (SsrMode::Async) so they read without JavaScript.
    view! {
        <Title formatter=|page: String| format!("{page} · lora-pipeline")/>
        <Router>
            <Routes fallback=NotFound>
                <Route path=path!("/login") view=LoginPage ssr=SsrMode::Async/>
                <Route path=path!("/register") view=RegisterPage ssr=SsrMode::Async/>
                <ParentRoute path=path!("") view=AppLayout ssr=SsrMode::Async>
                    <Route path=path!("/") view=overview::OverviewPage ssr=SsrMode::Async/>
                    <Route path=path!("/datasets") view=datasets::DatasetsPage ssr=SsrMode::Async/>
                    <Route path=path!("/datasets/new") view=datasets::UploadPage ssr=SsrMode::Async/>
                    <Route path=path!("/datasets/:id") view=datasets::DatasetDetailPage ssr=SsrMode::Async/>
                    <Route path=path!("/train") view=training::TrainPage ssr=SsrMode::Async/>
                    <Route path=path!("/jobs") view=jobs::JobsPage ssr=SsrMode::Async/>
                    <Route path=path!("/jobs/:id") view=jobs::JobPage ssr=SsrMode::Async/>
                    <Route path=path!("/models") view=models::ModelsPage ssr=SsrMode::Async/>
                    <Route path=path!("/models/:id") view=models::ModelPage ssr=SsrMode::Async/>
                    <Route path=path!("/costs") view=costs::CostsPage ssr=SsrMode::Async/>
                    <Route path=path!("/settings") view=settings::SettingsPage ssr=SsrMode::Async/>
                    <Route path=path!("/docs/api") view=api_reference::ApiReferencePage ssr=SsrMode::Async/>
                    <Route
                        path=path!("/notifications")
                        view=notifications::NotificationsPage
                        ssr=SsrMode::Async
                    />
                </ParentRoute>
            </Routes>
        </Router>
    }
}
