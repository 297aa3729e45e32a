//! Opens the database the settings name: the operator's server, or our managed cluster.

use anyhow::Context;
use engine::db::Db;
use engine::db::managed::{ClusterPaths, DataDirLock, ManagedPostgres};

use crate::settings::{DatabaseSettings, Settings};

const POOL_SIZE: u32 = 20;

/// For `serve`: connects, and starts the managed cluster when there is no DATABASE_URL.
pub async fn open_for_serve(settings: &Settings) -> anyhow::Result<(Db, Option<ManagedPostgres>)> {
    match &settings.database {
        DatabaseSettings::External(options) => {
            let db = Db::connect((**options).clone(), POOL_SIZE)
                .await
                .context("DATABASE_URL")?;
            Ok((db, None))
        }
        DatabaseSettings::Managed => {
            let lock = DataDirLock::acquire(&settings.data_dir)?;
            let managed = ManagedPostgres::start(lock).await?;
            match Db::connect(managed.app_options(), POOL_SIZE).await {
                Ok(db) => Ok((db, Some(managed))),
                Err(e) => {
                    let _ = managed.stop().await;
                    Err(e.into())
                }
            }
        }
    }
}

/// For one-off commands (`migrate`, `user`): if a `serve` already manages the cluster, talk to
/// it through its socket; otherwise start the cluster for the duration of the command.
pub async fn open_for_command(
    settings: &Settings,
) -> anyhow::Result<(Db, Option<ManagedPostgres>)> {
    if let DatabaseSettings::Managed = settings.database {
        let paths = ClusterPaths::new(&settings.data_dir);
        if DataDirLock::is_held(&settings.data_dir) && paths.socket_exists() {
            let db = Db::connect(paths.app_options(), 2)
                .await
                .context("connecting to the running managed database")?;
            return Ok((db, None));
        }
    }
    open_for_serve(settings).await
}
