//! The embedded default database: a private PostgreSQL cluster inside DATA_DIR, run with the
//! system's PostgreSQL binaries.
//!
//! Layout of DATA_DIR:
//! - `lora-pipeline.lock` — held (flock) by the one process that manages the cluster;
//! - `postgres/` — the cluster (owned by the `postgres` user when we run as root, because
//!   `initdb` refuses to run as root);
//! - `run/` — the private Unix socket directory; the cluster listens on no TCP port at all;
//! - `postgres.secret` — the roles' passwords (0600): the socket takes no connection without
//!   one (scram-sha-256), so a local process that reaches it — a worker, another user — still
//!   cannot log in.
//!
//! A second `serve` on the same DATA_DIR finds the lock taken and stops with a clear message
//! instead of starting a second postmaster on the same files.

use std::fs::{self, File, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use tokio::process::Command;

/// The role the application connects as: owner of its database, not a superuser, so forced
/// row-level security applies to it.
pub const APP_ROLE: &str = "lora_app";
pub const APP_DATABASE: &str = "lora_pipeline";
const SUPERUSER: &str = "postgres";
/// Only names the socket file (`.s.PGSQL.5432`); no TCP port is opened.
const SOCKET_PORT: u16 = 5432;

#[derive(Debug, thiserror::Error)]
pub enum ManagedError {
    #[error(
        "DATA_DIR {dir} is in use by another lora-pipeline process{pid}. Stop that process first, \
         or point DATA_DIR at another directory."
    )]
    InUse { dir: String, pid: String },
    #[error(
        "PostgreSQL binaries not found: looked for initdb and pg_ctl on PATH and under \
         /usr/lib/postgresql/*/bin. Install them (apt-get install postgresql) or set DATABASE_URL \
         to use an existing server."
    )]
    BinariesNotFound,
    #[error(
        "running as root, the cluster must run as the 'postgres' system user, which does not \
         exist. Install PostgreSQL from your distribution (it creates the user) or set DATABASE_URL."
    )]
    NoPostgresUser,
    #[error(
        "the 'postgres' user cannot enter {0}: the managed cluster lives in DATA_DIR, and every \
         directory above it must be searchable by others (chmod o+x), e.g. choose \
         DATA_DIR=/var/lib/lora-pipeline"
    )]
    NotTraversable(String),
    #[error(
        "{0} exists but is not a PostgreSQL cluster. Move it away (the cluster is re-created on \
         the next start) or choose another DATA_DIR."
    )]
    NotACluster(String),
    #[error("{action} failed: {detail}")]
    Command { action: String, detail: String },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("could not prepare the application database: {0}")]
    Bootstrap(#[source] sqlx::Error),
    #[error(
        "{0} lacks a database password: it was edited or truncated. Restore it from a backup \
         (the cluster's roles use these passwords)."
    )]
    Secret(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ManagedError + '_ {
    move |source| ManagedError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The exclusive claim on a DATA_DIR; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    dir: PathBuf,
}

impl DataDirLock {
    /// Takes the lock, or says who holds it.
    pub fn acquire(dir: &Path) -> Result<Self, ManagedError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let path = dir.join("lora-pipeline.lock");
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(ManagedError::InUse {
                    dir: dir.display().to_string(),
                    pid: if holder.is_empty() {
                        String::new()
                    } else {
                        format!(" (pid {holder})")
                    },
                });
            }
            Err(TryLockError::Error(e)) => return Err(io_err(&path)(e)),
        }
        file.set_len(0).map_err(io_err(&path))?;
        file.rewind().map_err(io_err(&path))?;
        write!(file, "{}", std::process::id()).map_err(io_err(&path))?;
        Ok(Self {
            _file: file,
            dir: dir.to_owned(),
        })
    }

    /// Whether some process holds the lock right now (without taking it).
    pub fn is_held(dir: &Path) -> bool {
        match File::open(dir.join("lora-pipeline.lock")) {
            Ok(file) => matches!(file.try_lock_shared(), Err(TryLockError::WouldBlock)),
            Err(_) => false,
        }
    }
}

/// Where the managed cluster's files and socket are.
#[derive(Debug, Clone)]
pub struct ClusterPaths {
    pub data: PathBuf,
    pub socket_dir: PathBuf,
    /// The roles' passwords, one `role=password` line each.
    pub secret: PathBuf,
}

impl ClusterPaths {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            data: data_dir.join("postgres"),
            socket_dir: data_dir.join("run"),
            secret: data_dir.join("postgres.secret"),
        }
    }

    /// Options for `role` (with its password from [`ClusterPaths::secret`], when there is one).
    pub fn connect_options(&self, role: &str, database: &str) -> PgConnectOptions {
        let options = PgConnectOptions::new()
            .socket(&self.socket_dir)
            .port(SOCKET_PORT)
            .username(role)
            .database(database);
        match read_password(&self.secret, role) {
            Some(password) => options.password(&password),
            None => options,
        }
    }

    /// Options for the application role, for a cluster already running under another process.
    pub fn app_options(&self) -> PgConnectOptions {
        self.connect_options(APP_ROLE, APP_DATABASE)
    }

    pub fn socket_exists(&self) -> bool {
        self.socket_dir
            .join(format!(".s.PGSQL.{SOCKET_PORT}"))
            .exists()
    }
}

/// A running managed cluster. Call [`ManagedPostgres::stop`] on shutdown.
#[derive(Debug)]
pub struct ManagedPostgres {
    paths: ClusterPaths,
    bin_dir: PathBuf,
    run_as_postgres: bool,
    _lock: DataDirLock,
}

impl ManagedPostgres {
    /// Initialises the cluster on first use, starts it, and makes sure the application role and
    /// database exist. `lock` proves we are the only manager of this DATA_DIR.
    pub async fn start(lock: DataDirLock) -> Result<Self, ManagedError> {
        let data_dir = lock.dir.clone();
        let bin_dir = find_bin_dir().ok_or(ManagedError::BinariesNotFound)?;
        let owner = if is_root() {
            Some(postgres_user().ok_or(ManagedError::NoPostgresUser)?)
        } else {
            None
        };
        let paths = ClusterPaths::new(&data_dir);
        let this = Self {
            paths,
            bin_dir,
            run_as_postgres: owner.is_some(),
            _lock: lock,
        };

        if let Some((uid, gid)) = owner {
            check_traversable(&data_dir)?;
            // DATA_DIR itself must be enterable by the postgres user; its contents stay private.
            fs::set_permissions(&data_dir, fs::Permissions::from_mode(0o711))
                .map_err(io_err(&data_dir))?;
            let socket_dir = &this.paths.socket_dir;
            fs::create_dir_all(socket_dir).map_err(io_err(socket_dir))?;
            std::os::unix::fs::chown(socket_dir, Some(uid), Some(gid))
                .map_err(io_err(socket_dir))?;
        } else {
            fs::create_dir_all(&this.paths.socket_dir).map_err(io_err(&this.paths.socket_dir))?;
        }
        fs::set_permissions(&this.paths.socket_dir, fs::Permissions::from_mode(0o700))
            .map_err(io_err(&this.paths.socket_dir))?;

        ensure_secret(&this.paths)?;
        this.init_if_needed(owner).await?;
        this.stop_orphan().await?;
        this.start_server().await?;
        this.bootstrap().await?;
        Ok(this)
    }

    pub fn paths(&self) -> &ClusterPaths {
        &self.paths
    }

    pub fn app_options(&self) -> PgConnectOptions {
        self.paths.app_options()
    }

    async fn init_if_needed(&self, owner: Option<(u32, u32)>) -> Result<(), ManagedError> {
        let data = &self.paths.data;
        if data.join("PG_VERSION").exists() {
            return Ok(());
        }
        if data.exists() && fs::read_dir(data).map_err(io_err(data))?.next().is_some() {
            return Err(ManagedError::NotACluster(data.display().to_string()));
        }
        // initdb into a scratch directory and rename: a crash mid-initdb leaves no half cluster.
        let scratch = data.with_file_name("postgres.initdb");
        if scratch.exists() {
            fs::remove_dir_all(&scratch).map_err(io_err(&scratch))?;
        }
        fs::create_dir_all(&scratch).map_err(io_err(&scratch))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&scratch, Some(uid), Some(gid)).map_err(io_err(&scratch))?;
        }
        fs::set_permissions(&scratch, fs::Permissions::from_mode(0o700))
            .map_err(io_err(&scratch))?;
        tracing::info!(dir = %data.display(), "initialising the managed PostgreSQL cluster");
        let scratch_arg = scratch.display().to_string();
        self.run(
            "initdb",
            "initdb",
            &[
                "-D",
                &scratch_arg,
                "-U",
                SUPERUSER,
                "--auth-local=trust",
                "--auth-host=reject",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-instructions",
            ],
        )
        .await?;
        if data.exists() {
            fs::remove_dir(data).map_err(io_err(data))?;
        }
        fs::rename(&scratch, data).map_err(io_err(data))?;
        Ok(())
    }

    /// A postmaster still running on our files while we hold the lock was left by a manager that
    /// died (kill -9); stop it so we start with our own settings.
    async fn stop_orphan(&self) -> Result<(), ManagedError> {
        if !self.paths.data.join("postmaster.pid").exists() {
            return Ok(());
        }
        let data = self.paths.data.display().to_string();
        let status = self
            .command("pg_ctl")
            .args(["status", "-D", &data])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .map_err(|e| ManagedError::Command {
                action: "pg_ctl status".into(),
                detail: e.to_string(),
            })?;
        if status.success() {
            tracing::warn!("stopping a PostgreSQL left running by a previous process");
            self.run(
                "stop the orphaned PostgreSQL",
                "pg_ctl",
                &["stop", "-D", &data, "-m", "fast", "-w"],
            )
            .await?;
        }
        Ok(())
    }

    async fn start_server(&self) -> Result<(), ManagedError> {
        let data = self.paths.data.display().to_string();
        let log = self.paths.data.join("server.log").display().to_string();
        let options = format!(
            "-c listen_addresses='' -c unix_socket_directories='{}' -p {SOCKET_PORT} -c max_connections=200",
            self.paths.socket_dir.display()
        );
        self.run(
            "start PostgreSQL",
            "pg_ctl",
            &[
                "start", "-D", &data, "-l", &log, "-w", "-t", "60", "-o", &options,
            ],
        )
        .await
        .map_err(|e| match e {
            ManagedError::Command { action, detail } => ManagedError::Command {
                action,
                detail: format!("{detail} (see {log})"),
            },
            other => other,
        })?;
        tracing::info!(socket = %self.paths.socket_dir.display(), "managed PostgreSQL started");
        Ok(())
    }

    /// Creates the application role and database when they do not exist yet.
    async fn bootstrap(&self) -> Result<(), ManagedError> {
        let mut conn = self
            .paths
            .connect_options(SUPERUSER, "postgres")
            .connect()
            .await
            .map_err(ManagedError::Bootstrap)?;
        let role_exists = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1) AS "exists!""#,
            APP_ROLE
        )
        .fetch_one(&mut conn)
        .await
        .map_err(ManagedError::Bootstrap)?;
        if !role_exists {
            // Identifiers cannot be bound as parameters; these are the constants above. DDL on
            // the maintenance database: the one kind of statement left unchecked at compile time.
            sqlx::query(
                "CREATE ROLE lora_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE",
            )
            .execute(&mut conn)
            .await
            .map_err(ManagedError::Bootstrap)?;
        }
        let db_exists = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS "exists!""#,
            APP_DATABASE
        )
        .fetch_one(&mut conn)
        .await
        .map_err(ManagedError::Bootstrap)?;
        if !db_exists {
            sqlx::query("CREATE DATABASE lora_pipeline OWNER lora_app ENCODING 'UTF8'")
                .execute(&mut conn)
                .await
                .map_err(ManagedError::Bootstrap)?;
        }
        // Passwords, then a socket that asks for them. Set on every start (a cluster made by
        // an older version trusted every local user); the values are our own hex secrets.
        for role in [SUPERUSER, APP_ROLE] {
            let password = read_password(&self.paths.secret, role)
                .ok_or_else(|| ManagedError::Secret(self.paths.secret.display().to_string()))?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "ALTER ROLE {role} PASSWORD '{password}'"
            )))
            .execute(&mut conn)
            .await
            .map_err(ManagedError::Bootstrap)?;
        }
        let hba = self.paths.data.join("pg_hba.conf");
        let wanted = "# Written by lora-pipeline: local connections with a password only.\n\
                      local all all scram-sha-256\n";
        if fs::read_to_string(&hba).map_err(io_err(&hba))? != wanted {
            // Rewritten in place: the file keeps its owner (the postgres user as root).
            fs::write(&hba, wanted).map_err(io_err(&hba))?;
            sqlx::query("SELECT pg_reload_conf()")
                .execute(&mut conn)
                .await
                .map_err(ManagedError::Bootstrap)?;
            tracing::info!("the managed PostgreSQL now asks every local connection for a password");
        }
        conn.close().await.map_err(ManagedError::Bootstrap)?;
        Ok(())
    }

    /// Stops the cluster (fast shutdown: sessions are closed, data is flushed).
    pub async fn stop(self) -> Result<(), ManagedError> {
        let data = self.paths.data.display().to_string();
        self.run(
            "stop PostgreSQL",
            "pg_ctl",
            &["stop", "-D", &data, "-m", "fast", "-w", "-t", "60"],
        )
        .await?;
        tracing::info!("managed PostgreSQL stopped");
        Ok(())
    }

    fn command(&self, program: &str) -> Command {
        let program = self.bin_dir.join(program);
        let mut command = if self.run_as_postgres {
            // runuser sets the uid, gid and supplementary groups properly.
            let mut c = Command::new("runuser");
            c.args(["-u", SUPERUSER, "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        command
            .current_dir(&self.paths.socket_dir)
            .stdin(Stdio::null());
        command
    }

    async fn run(&self, action: &str, program: &str, args: &[&str]) -> Result<(), ManagedError> {
        let output = self
            .command(program)
            .args(args)
            .output()
            .await
            .map_err(|e| ManagedError::Command {
                action: action.into(),
                detail: e.to_string(),
            })?;
        if output.status.success() {
            Ok(())
        } else {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let stdout = String::from_utf8_lossy(&output.stdout);
            Err(ManagedError::Command {
                action: action.into(),
                detail: format!("{} {}", stderr.trim(), stdout.trim())
                    .trim()
                    .to_owned(),
            })
        }
    }
}

/// The password of `role` in the secret file, if any.
fn read_password(secret: &Path, role: &str) -> Option<String> {
    let text = fs::read_to_string(secret).ok()?;
    text.lines().find_map(|line| {
        let (name, password) = line.split_once('=')?;
        (name == role && !password.is_empty()).then(|| password.to_owned())
    })
}

/// Creates the secret file (0600) with a random password per role, once. A cluster that
/// already asks for passwords while the file is gone cannot be entered: that is an error.
fn ensure_secret(paths: &ClusterPaths) -> Result<(), ManagedError> {
    let secret = &paths.secret;
    if [SUPERUSER, APP_ROLE]
        .iter()
        .all(|role| read_password(secret, role).is_some())
    {
        return Ok(());
    }
    let hba = fs::read_to_string(paths.data.join("pg_hba.conf")).unwrap_or_default();
    if hba.contains("scram-sha-256") {
        return Err(ManagedError::Secret(secret.display().to_string()));
    }
    let mut text = String::new();
    for role in [SUPERUSER, APP_ROLE] {
        let mut bytes = [0u8; 24];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
        text.push_str(&format!("{role}={}\n", hex::encode(bytes)));
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(secret)
        .map_err(io_err(secret))?;
    file.write_all(text.as_bytes()).map_err(io_err(secret))?;
    fs::set_permissions(secret, fs::Permissions::from_mode(0o600)).map_err(io_err(secret))?;
    Ok(())
}

fn is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// uid and gid of the `postgres` system user, from /etc/passwd.
fn postgres_user() -> Option<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != SUPERUSER {
            return None;
        }
        let _password = fields.next()?;
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some((uid, gid))
    })
}

/// The directory holding initdb and pg_ctl: PATH first, then the newest Debian-style install.
fn find_bin_dir() -> Option<PathBuf> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if has_both(&dir) {
                // Resolve symlinks (Debian links into /usr/lib/postgresql/N/bin).
                let initdb = fs::canonicalize(dir.join("initdb")).ok()?;
                return initdb.parent().map(Path::to_path_buf);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            has_both(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// Every ancestor of `dir` must let others search it, or the postgres user cannot reach it.
fn check_traversable(dir: &Path) -> Result<(), ManagedError> {
    let absolute = std::path::absolute(dir).map_err(io_err(dir))?;
    for ancestor in absolute.ancestors().skip(1) {
        let meta = fs::metadata(ancestor).map_err(io_err(ancestor))?;
        if meta.mode() & 0o001 == 0 {
            return Err(ManagedError::NotTraversable(ancestor.display().to_string()));
        }
    }
    Ok(())
}
