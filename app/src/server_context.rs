//! What every server function works with, provided once per request by the server: one typed
//! context instead of a lookup per dependency in every function.

use std::sync::Arc;

use engine::accounts::UserView;
use engine::accounts::web::SessionCookie;
use engine::db::Db;
use engine::storage::Storage;
use engine::training::Catalog;
use leptos::prelude::*;

use crate::error::AppError;

/// The server's shared services.
#[derive(Clone)]
pub struct Services {
    pub db: Db,
    pub storage: Storage,
    /// The GPU and model catalog as calibrated now.
    pub catalog: Arc<Catalog>,
    pub cookie: SessionCookie,
    /// Who may create an account (`REGISTRATION`).
    pub registration: engine::accounts::store::RegistrationPolicy,
    /// Where webhooks may point (`WEBHOOK_ALLOW_PRIVATE`).
    pub webhooks: engine::webhooks::WebhookSettings,
}

impl Services {
    /// Puts the services into the request's context (the server calls this for every page
    /// and server-function request).
    pub fn provide(self) {
        provide_context(self);
    }

    pub fn current() -> Result<Self, AppError> {
        use_context::<Self>()
            .ok_or_else(|| AppError::internal("the server did not provide its services"))
    }
}

/// A signed-in caller and what a server function needs to serve them.
pub struct SignedIn {
    pub user: UserView,
    pub db: Db,
    pub storage: Storage,
    pub catalog: Arc<Catalog>,
}

/// The caller (or `Unauthorized`) and the services.
pub async fn signed_in() -> Result<SignedIn, AppError> {
    let user = crate::accounts::server::require_user().await?;
    let Services {
        db,
        storage,
        catalog,
        ..
    } = Services::current()?;
    Ok(SignedIn {
        user,
        db,
        storage,
        catalog,
    })
}
