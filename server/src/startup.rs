//! Builds the application (router, state, database) and runs it until a shutdown signal.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use app::{App, shell};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderName, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use engine::accounts::web::SessionCookie;
use engine::db::Db;
use engine::db::managed::ManagedPostgres;
use leptos::config::LeptosOptions;
use leptos_axum::{LeptosRoutes, generate_route_list};
use tokio::net::TcpListener;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::settings::Settings;
use crate::state::AppState;
use crate::{assets, auth, database};
use crate::{routes, wiring};

/// Runtime Leptos options (Leptos.toml), compiled in so the binary needs no source tree.
const LEPTOS_TOML: &str = include_str!("../../Leptos.toml");

pub fn leptos_options(settings: &Settings) -> anyhow::Result<LeptosOptions> {
    let mut options =
        leptos::config::get_config_from_str(LEPTOS_TOML).context("Leptos.toml is invalid")?;
    options.site_addr = settings.bind;
    // The hydration scripts and the stylesheet are linked under their content hash.
    options.site_pkg_dir = format!("pkg/{}", crate::assets::version()).into();
    Ok(options)
}

pub struct Application {
    listener: TcpListener,
    router: Router,
    db: Db,
    managed: Option<ManagedPostgres>,
    tasks: engine::tasks::Context,
    /// Tells SSE streams, the event hub and the embedded executor to stop.
    stop: tokio::sync::watch::Sender<bool>,
}

struct Assembled {
    listener: TcpListener,
    router: Router,
    tasks: engine::tasks::Context,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Application {
    /// Opens the database, applies migrations and binds the listener (port 0 picks a free port).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let (db, managed) = database::open_for_serve(&settings).await?;
        match Self::assemble(settings, db.clone()).await {
            Ok(a) => Ok(Self {
                listener: a.listener,
                router: a.router,
                db,
                managed,
                tasks: a.tasks,
                stop: a.stop,
            }),
            Err(e) => {
                db.close().await;
                if let Some(managed) = managed {
                    let _ = managed.stop().await;
                }
                Err(e)
            }
        }
    }

    async fn assemble(settings: Settings, db: Db) -> anyhow::Result<Assembled> {
        db.migrate().await.context("applying database migrations")?;
        let listener = TcpListener::bind(settings.bind)
            .await
            .with_context(|| format!("cannot listen on {} (BIND_ADDR)", settings.bind))?;
        let mut settings = settings;
        let local = listener.local_addr()?;
        if settings.bind.port() == 0 {
            // Tests bind port 0: the public URL follows the port we actually got.
            settings.bind = local;
            settings.public_url = crate::settings::parse_public_url(None, local)?;
        }
        let leptos_options = leptos_options(&settings)?;
        let origin = settings.public_origin();
        let mut allowed = vec![origin.clone()];
        // Loopback aliases of the same port are the same site for a locally run instance.
        if let Some(port) = settings.public_url.port_or_known_default() {
            for host in ["127.0.0.1", "localhost"] {
                let alias = format!("{}://{host}:{port}", settings.public_url.scheme());
                if settings
                    .public_url
                    .host_str()
                    .is_some_and(|h| h == "127.0.0.1" || h == "localhost")
                    && !allowed.contains(&alias)
                {
                    allowed.push(alias);
                }
            }
        }
        let storage = wiring::storage(&settings).await?;
        match engine::accounts::store::purge_expired_sessions(&db).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(sessions = n, "removed ended sessions"),
            Err(e) => tracing::warn!(error = %e, "could not remove ended sessions"),
        }
        let mut catalog = wiring::catalog(&settings)?;
        let (stop, stopping) = tokio::sync::watch::channel(false);
        // The GPU backends: RunPod (or a standalone executor standing in for it) when
        // configured, and our own executor, embedded and reached over loopback through the same
        // API and client, unless EXECUTOR_SLOTS is 0. A job goes to its GPU type's backend.
        let runpod = wiring::runpod(&settings)?;
        let executor = wiring::local_executor(&settings, stopping.clone()).await?;
        wiring::mark_available(
            &mut catalog,
            runpod.is_some(),
            executor.as_ref().map(|e| e.problem.as_deref()),
        );
        let catalog = engine::training::calibration::CatalogHandle::new(catalog);
        tokio::spawn(catalog.clone().keep_fresh(
            db.clone(),
            std::time::Duration::from_secs(600),
            stopping.clone(),
        ));
        let processor = engine::jobs::processor::Processor::new(
            db.clone(),
            storage.clone(),
            catalog.base(),
            engine::jobs::processor::Backends {
                runpod,
                local: executor.as_ref().map(|e| e.client.clone()),
            },
            settings.gpu.processor.clone(),
        );
        let processor = Arc::new(processor);
        tokio::spawn(
            processor
                .clone()
                .keep_reconciling(std::time::Duration::from_secs(60), stopping.clone()),
        );
        let tasks = engine::tasks::Context {
            db: db.clone(),
            storage: storage.clone(),
            scratch: engine::datasets::service::scratch_dir(&settings.data_dir),
            processor,
            concurrency: settings.gpu.task_concurrency,
            webhooks: settings.gpu.webhooks,
            retention: settings.gpu.retention,
        };
        // Every chore has its next run queued (a no-op once it has: replicas share them).
        match engine::maintenance::schedule(&db).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(chores = n, "scheduled maintenance chores"),
            Err(e) => {
                tracing::warn!(error = %e, "could not schedule the maintenance chores; the next start tries again")
            }
        }
        let hub = engine::live::Hub::start(db.clone(), stopping.clone());
        let state = AppState {
            hub,
            shutdown: stopping,
            db,
            storage,
            catalog,
            cookie: SessionCookie {
                secure: settings.public_url.scheme() == "https",
            },
            streams: crate::routes::live::StreamCounter::new(settings.streams_per_user),
            metrics: crate::metrics::Metrics::install(),
            settings: Arc::new(settings),
            leptos_options,
            allowed_origins: Arc::new(allowed),
        };
        let router = router(state);
        Ok(Assembled {
            listener,
            router,
            tasks,
            stop,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Serves until `shutdown` resolves, lets in-flight requests finish, then closes the pool
    /// and stops the managed database.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let addr = self.listener.local_addr()?;
        let (stop_tasks, tasks_stopped) = tokio::sync::watch::channel(false);
        let worker = tokio::spawn(engine::tasks::run_worker(self.tasks.clone(), tasks_stopped));
        tracing::info!(%addr, "listening");
        let stop = self.stop.clone();
        let served = axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            shutdown.await;
            // Open SSE streams end now, so graceful shutdown does not wait on them forever.
            let _ = stop.send(true);
        })
        .await;
        let _ = self.stop.send(true);
        // Let a running task finish (it is durable either way: an unfinished one runs again).
        let _ = stop_tasks.send(true);
        if tokio::time::timeout(std::time::Duration::from_secs(30), worker)
            .await
            .is_err()
        {
            tracing::warn!("the background worker did not stop in 30 s; its task will run again");
        }
        self.db.close().await;
        if let Some(managed) = self.managed {
            managed.stop().await?;
        }
        served.context("HTTP server failed")
    }
}

/// The largest body a page or server-function request may carry (their arguments are small;
/// files go to signed URLs).
pub const RPC_BODY_LIMIT: usize = 1 << 20;

fn router(state: AppState) -> Router {
    let api = routes::compressible()
        .into_router()
        .route("/api/{*rest}", any(routes::api_not_found));

    let context = services(&state);
    let pages = Router::new()
        .leptos_routes_with_context(&state, generate_route_list(App), context.clone(), {
            let options = state.leptos_options.clone();
            move || shell(options.clone())
        })
        .fallback(assets_or_not_found)
        .layer(middleware::from_fn(auth::guard_pages))
        // Server functions read their whole body: a 10 MB post is refused (413) before it is.
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            RPC_BODY_LIMIT,
        ));

    let request_id = HeaderName::from_static("x-request-id");
    let hsts = crate::headers::Hsts(state.settings.public_url.scheme() == "https");
    api.merge(pages)
        // Pages and JSON; assets come precompressed.
        .layer(
            tower_http::compression::CompressionLayer::new().quality(
                tower_http::CompressionLevel::Precise(state.settings.compression_level as i32),
            ),
        )
        // The live streams: never compressed (routes::compressible says why).
        .merge(routes::live::router().into_router())
        .layer(middleware::from_fn_with_state(state.clone(), auth::resolve_caller))
        // After routing (Router::layer wraps each route), so the route template is known.
        .layer(middleware::from_fn(crate::metrics::track_http))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request| {
                let id = request
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = %id)
            }),
        )
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .layer(middleware::from_fn_with_state(
            hsts,
            crate::headers::security_headers,
        ))
        .with_state(state)
}

/// Provides the server functions' and pages' services to each request's context.
fn services(state: &AppState) -> impl Fn() + Clone + Send + Sync + 'static {
    let db = state.db.clone();
    let storage = state.storage.clone();
    let catalog = state.catalog.clone();
    let cookie = state.cookie;
    let registration = state.settings.registration;
    let webhooks = state.settings.gpu.webhooks;
    // The API reference page renders the OpenAPI document; built once.
    let api_document =
        std::sync::Arc::new(serde_json::to_value(&*crate::openapi::document()).unwrap_or_default());
    move || {
        leptos::prelude::provide_context(app::api_reference::ApiDocument(api_document.clone()));
        app::server_context::Services {
            db: db.clone(),
            storage: storage.clone(),
            catalog: catalog.current(),
            cookie,
            registration,
            webhooks,
        }
        .provide();
    }
}

/// Embedded site files, else the app's own 404 page (with status 404).
async fn assets_or_not_found(State(state): State<AppState>, request: Request) -> Response {
    if let Some(file) = assets::file(request.uri(), request.headers()) {
        return file;
    }
    let options = state.leptos_options.clone();
    let handler = leptos_axum::render_app_to_stream_with_context(services(&state), move || {
        shell(options.clone())
    });
    let mut response = handler(request).await.into_response();
    if response.status() == StatusCode::OK {
        *response.status_mut() = StatusCode::NOT_FOUND;
    }
    response
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}
