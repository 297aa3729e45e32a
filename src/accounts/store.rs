//! Accounts in Postgres: users, browser sessions, API tokens and the login rate limit.

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use super::password::{self, PasswordError};
use super::tokens;
use super::{
    ApiTokenView, CreatedApiToken, Credentials, UserView, check_registration, check_token_days,
    check_token_name, normalize_email,
};
use crate::db::Db;
use crate::validation::FieldErrors;

/// How long a browser session lives without use.
pub const SESSION_TTL: Duration = Duration::days(14);
/// The absolute lifetime of a session, however active: then the user logs in again.
pub const SESSION_MAX_AGE: Duration = Duration::days(30);
/// Failed logins an address may make in [`LOGIN_WINDOW`] before it is slowed down: each further
/// guess waits twice as long as the one before (1 s, 2 s, 4 s … up to [`LOGIN_MAX_DELAY_S`]).
/// The limit is per address, never per account: a stranger's guesses cannot lock the owner out.
pub const LOGIN_MAX_FAILURES: i64 = 5;
/// The longest wait between two guesses from a failing address.
pub const LOGIN_MAX_DELAY_S: i64 = 60;
/// Failed logins an address may make in [`LOGIN_WINDOW`] at all.
pub const LOGIN_MAX_PER_WINDOW: i64 = 100;
pub const LOGIN_WINDOW: Duration = Duration::minutes(15);

/// How long an address that failed `failures` times must wait after its last failure.
pub fn login_delay_s(failures: i64) -> i64 {
    if failures < LOGIN_MAX_FAILURES {
        0
    } else {
        1i64.checked_shl((failures - LOGIN_MAX_FAILURES).min(16) as u32)
            .unwrap_or(LOGIN_MAX_DELAY_S)
            .min(LOGIN_MAX_DELAY_S)
    }
}

#[derive(sqlx::FromRow)]
struct UserRow {
    id: Uuid,
    email: String,
    display_name: Option<String>,
    created_at: DateTime<Utc>,
}

impl From<UserRow> for UserView {
    fn from(row: UserRow) -> Self {
        Self {
            id: row.id,
            email: row.email,
            display_name: row.display_name,
            created_at: row.created_at,
        }
    }
}

#[derive(sqlx::FromRow)]
struct TokenRow {
    id: Uuid,
    name: String,
    token_prefix: String,
    created_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
    expired: bool,
}

impl From<TokenRow> for ApiTokenView {
    fn from(row: TokenRow) -> Self {
        Self {
            id: row.id,
            name: row.name,
            token_prefix: row.token_prefix,
            created_at: row.created_at,
            last_used_at: row.last_used_at,
            expires_at: row.expires_at,
            expired: row.expired,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("invalid registration: {0}")]
    Invalid(FieldErrors),
    #[error("an account with this email already exists")]
    EmailTaken,
    #[error("registration needs an invite")]
    InviteRequired,
    #[error("registration is closed")]
    Closed,
    #[error("too many registrations from this address; try again in {retry_after_s} s")]
    RateLimited { retry_after_s: u64 },
    #[error(transparent)]
    Password(#[from] PasswordError),
    #[error("database error while registering: {0}")]
    Db(#[from] sqlx::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("invalid email or password")]
    InvalidCredentials,
    #[error("too many failed logins; try again in {retry_after_s} s")]
    RateLimited { retry_after_s: u64 },
    #[error(transparent)]
    Password(#[from] PasswordError),
    #[error("database error while logging in: {0}")]
    Db(#[from] sqlx::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("invalid token: {0}")]
    Invalid(FieldErrors),
    #[error("database error on API tokens: {0}")]
    Db(#[from] sqlx::Error),
}

impl crate::error::Classify for RegisterError {
    fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            Self::Invalid(fields) => ErrorKind::Invalid(fields.clone()),
            Self::EmailTaken => ErrorKind::Conflict {
                message: "an account with this email already exists".into(),
                fields: FieldErrors::single(
                    "email",
                    "This email is already registered. Log in instead.",
                ),
            },
            Self::InviteRequired => ErrorKind::Forbidden(
                "This server registers new accounts by invitation: ask its administrator for an invite link (an expired or used link no longer works).".into(),
            ),
            Self::Closed => ErrorKind::Forbidden(
                "This server does not register new accounts; ask its administrator.".into(),
            ),
            Self::RateLimited { retry_after_s } => ErrorKind::RateLimited {
                retry_after_s: *retry_after_s,
            },
            Self::Password(_) | Self::Db(_) => ErrorKind::Internal,
        }
    }
}

impl crate::error::Classify for LoginError {
    fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            Self::InvalidCredentials => ErrorKind::InvalidCredentials,
            Self::RateLimited { retry_after_s } => ErrorKind::RateLimited {
                retry_after_s: *retry_after_s,
            },
            Self::Password(_) | Self::Db(_) => ErrorKind::Internal,
        }
    }
}

impl crate::error::Classify for TokenError {
    fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            Self::Invalid(fields) => ErrorKind::Invalid(fields.clone()),
            Self::Db(_) => ErrorKind::Internal,
        }
    }
}

/// Who may create an account (`REGISTRATION`). Whatever the mode, the first account may
/// always register, and becomes the administrator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RegistrationMode {
    Open,
    /// With an invite link from an administrator (or `lora-pipeline user invite`).
    #[default]
    Invite,
    Closed,
}

impl RegistrationMode {
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "open" => Some(Self::Open),
            "invite" => Some(Self::Invite),
            "closed" => Some(Self::Closed),
            _ => None,
        }
    }
}

/// Who may register, and how often one client address may try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistrationPolicy {
    pub mode: RegistrationMode,
    /// Registrations (successful or not) one client address may attempt per
    /// [`REGISTRATION_WINDOW`] (`REGISTRATIONS_PER_HOUR`).
    pub per_address: u32,
}

impl Default for RegistrationPolicy {
    fn default() -> Self {
        Self {
            mode: RegistrationMode::default(),
            per_address: 10,
        }
    }
}

pub const REGISTRATION_WINDOW: Duration = Duration::hours(1);

/// How long an invite link works.
pub const INVITE_TTL: Duration = Duration::days(7);

/// Creates an account if the policy lets it (`invite`: a valid, unused invite, used up here).
/// `client`: the caller's address, limited to [`RegistrationPolicy::per_address`] attempts per
/// hour; `None` for the operator's shell, which is not limited. The check and the insert run
/// under one advisory lock, so two first accounts cannot both become the administrator and an
/// invite cannot be used twice.
pub async fn register(
    db: &Db,
    credentials: &Credentials,
    policy: RegistrationPolicy,
    invite: Option<&str>,
    client: Option<&str>,
) -> Result<UserView, RegisterError> {
    check_registration(credentials).map_err(RegisterError::Invalid)?;
    if let Some(client) = client {
        reserve_registration(db, client, policy.per_address).await?;
    }
    let mode = policy.mode;
    let email = normalize_email(&credentials.email);
    let hash = password::hash(credentials.password.clone()).await?;
    let mut tx = db.system().await?;
    sqlx::query!("SELECT pg_advisory_xact_lock(hashtextextended('registration', 0))")
        .fetch_one(&mut *tx)
        .await?;
    let first = sqlx::query_scalar!(r#"SELECT NOT EXISTS (SELECT 1 FROM users) AS "first!""#)
        .fetch_one(&mut *tx)
        .await?;
    let invite_id = match (first, mode) {
        (true, _) | (false, RegistrationMode::Open) => None,
        (false, RegistrationMode::Closed) => return Err(RegisterError::Closed),
        (false, RegistrationMode::Invite) => {
            let token = invite
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .ok_or(RegisterError::InviteRequired)?;
            let used = sqlx::query_scalar!(
                "UPDATE invites SET used_at = now()
                  WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now() RETURNING id",
                tokens::digest(token)
            )
            .fetch_optional(&mut *tx)
            .await?;
            Some(used.ok_or(RegisterError::InviteRequired)?)
        }
    };
    let inserted = sqlx::query_as!(
        UserRow,
        "INSERT INTO users (email, password_hash, is_admin) VALUES ($1, $2, $3)
         RETURNING id, email, display_name, created_at",
        &email,
        &hash,
        first
    )
    .fetch_one(&mut *tx)
    .await;
    let user = match inserted {
        Ok(row) => row,
        Err(sqlx::Error::Database(e)) if e.constraint() == Some("users_email_key") => {
            return Err(RegisterError::EmailTaken);
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(invite_id) = invite_id {
        sqlx::query!(
            "UPDATE invites SET used_by = $2 WHERE id = $1",
            invite_id,
            user.id
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(user.into())
}

/// Counts a registration attempt from `client`, or refuses it when the address used up its
/// window. Under the address's advisory lock and committed before argon2 runs, like a login
/// guess: parallel attempts cannot pass the limit together, and no connection waits on argon2.
async fn reserve_registration(db: &Db, client: &str, limit: u32) -> Result<(), RegisterError> {
    let mut tx = db.system().await?;
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended('register:' || $1, 0))",
        client
    )
    .fetch_one(&mut *tx)
    .await?;
    let now = Utc::now();
    let seen = sqlx::query!(
        r#"SELECT count(*) AS "attempts!", min(attempted_at) AS oldest
             FROM registration_attempts WHERE ip = $1 AND attempted_at > $2"#,
        client,
        now - REGISTRATION_WINDOW
    )
    .fetch_one(&mut *tx)
    .await?;
    if seen.attempts >= i64::from(limit) {
        let retry_at = seen.oldest.unwrap_or(now) + REGISTRATION_WINDOW;
        return Err(RegisterError::RateLimited {
            retry_after_s: (retry_at - now).num_seconds().max(1) as u64,
        });
    }
    sqlx::query!("INSERT INTO registration_attempts (ip) VALUES ($1)", client)
        .execute(&mut *tx)
        .await?;
    // Housekeeping: attempts outside every window count for nothing.
    sqlx::query!(
        "DELETE FROM registration_attempts WHERE attempted_at < $1",
        now - REGISTRATION_WINDOW * 2
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Whether the account is an administrator (may invite).
pub async fn is_admin(db: &Db, user: Uuid) -> Result<bool, sqlx::Error> {
    let mut tx = db.system().await?;
    let admin = sqlx::query_scalar!("SELECT is_admin FROM users WHERE id = $1", user)
        .fetch_optional(&mut *tx)
        .await?
        .unwrap_or(false);
    tx.commit().await?;
    Ok(admin)
}

/// A single-use invite, valid for [`INVITE_TTL`]; returns its token (only its digest is
/// stored). `by`: the administrator, or `None` from the command line.
pub async fn create_invite(db: &Db, by: Option<Uuid>) -> Result<String, sqlx::Error> {
    let token = tokens::new_secret();
    let mut tx = db.system().await?;
    sqlx::query!(
        "INSERT INTO invites (token_hash, created_by, expires_at) VALUES ($1, $2, $3)",
        tokens::digest(&token),
        by,
        Utc::now() + INVITE_TTL
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(token)
}

/// Checks credentials under the per-address limit. Race-free without holding a connection
/// while argon2 runs: under the address's advisory lock, a guess is first *reserved* (recorded
/// as a failure) and committed; the password is then verified (at most one argon2 per core at
/// once, see [`password`]); a success takes its reservation back.
pub async fn authenticate(
    db: &Db,
    email: &str,
    password: &str,
    client: &str,
) -> Result<UserView, LoginError> {
    let outcome = check_credentials(db, email, password, client).await;
    let reason = match &outcome {
        Err(LoginError::InvalidCredentials) => Some("invalid_credentials"),
        Err(LoginError::RateLimited { .. }) => Some("rate_limited"),
        _ => None,
    };
    if let Some(reason) = reason {
        metrics::counter!(crate::operations::metrics::LOGIN_FAILURES, "reason" => reason)
            .increment(1);
    }
    outcome
}

async fn check_credentials(
    db: &Db,
    email: &str,
    password: &str,
    client: &str,
) -> Result<UserView, LoginError> {
    let email = normalize_email(email);
    let mut tx = db.system().await?;
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended('login:' || $1, 0))",
        client
    )
    .fetch_one(&mut *tx)
    .await?;
    let since = Utc::now() - LOGIN_WINDOW;
    let seen = sqlx::query!(
        r#"SELECT count(*) AS "failures!", min(attempted_at) AS oldest, max(attempted_at) AS latest
             FROM login_attempts WHERE ip = $1 AND attempted_at > $2"#,
        client,
        since
    )
    .fetch_one(&mut *tx)
    .await?;
    let now = Utc::now();
    if seen.failures >= LOGIN_MAX_PER_WINDOW {
        let retry_at = seen.oldest.unwrap_or(now) + LOGIN_WINDOW;
        return Err(LoginError::RateLimited {
            retry_after_s: (retry_at - now).num_seconds().max(1) as u64,
        });
    }
    let delay = login_delay_s(seen.failures);
    if delay > 0 {
        let allowed_at = seen.latest.unwrap_or(now) + Duration::seconds(delay);
        if allowed_at > now {
            // Rounded up: a client that waits this long is let through.
            let wait_ms = (allowed_at - now).num_milliseconds();
            return Err(LoginError::RateLimited {
                retry_after_s: ((wait_ms + 999) / 1000).max(1) as u64,
            });
        }
    }
    let reservation = sqlx::query_scalar!(
        "INSERT INTO login_attempts (email, ip) VALUES ($1, $2) RETURNING id",
        &email,
        client
    )
    .fetch_one(&mut *tx)
    .await?;
    let found = sqlx::query!(
        r#"SELECT id, email, password_hash, display_name, created_at,
                  disabled_at IS NOT NULL AS "disabled!"
             FROM users WHERE email = $1"#,
        &email
    )
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;

    // No connection is held while argon2 runs.
    let stored = found.as_ref().map(|f| f.password_hash.clone());
    let password_ok = password::verify(password.to_owned(), stored).await?;

    let mut tx = db.system().await?;
    let outcome = match found {
        Some(user) if password_ok && !user.disabled => {
            sqlx::query!("DELETE FROM login_attempts WHERE id = $1", reservation)
                .execute(&mut *tx)
                .await?;
            Ok(UserView {
                id: user.id,
                email: user.email,
                display_name: user.display_name,
                created_at: user.created_at,
            })
        }
        // The reservation stays: it is this failure.
        _ => Err(LoginError::InvalidCredentials),
    };
    if outcome.is_err() {
        // Housekeeping, on failures only (a successful login stays cheap): attempts outside
        // every window are useless.
        sqlx::query!(
            "DELETE FROM login_attempts WHERE attempted_at < $1",
            Utc::now() - LOGIN_WINDOW * 4
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    outcome
}

/// Starts a browser session; returns the cookie value (only its digest is stored).
pub async fn create_session(
    db: &Db,
    user_id: Uuid,
    user_agent: Option<&str>,
    client: &str,
) -> Result<String, sqlx::Error> {
    let secret = tokens::new_secret();
    let mut tx = db.tenant(user_id).await?;
    // The user's ended sessions go when a new one starts.
    sqlx::query!(
        "DELETE FROM sessions WHERE user_id = $1 AND expires_at <= now()",
        user_id
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!("INSERT INTO sessions (user_id, token_hash, user_agent, ip, expires_at) VALUES ($1, $2, $3, $4, $5)", user_id, tokens::digest(&secret), user_agent.map(|ua| ua.chars().take(300).collect::<String>()), client, Utc::now() + SESSION_TTL)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(secret)
}

/// The user behind a session cookie, if the session is live and the account enabled. Extends
/// the session (sliding expiry) at most once a minute to keep writes rare.
pub async fn session_user(db: &Db, secret: &str) -> Result<Option<UserView>, sqlx::Error> {
    let mut tx = db.system().await?;
    // One statement: the session is touched (at most once a minute, sliding its expiry within
    // its absolute lifetime) and its user read; the SELECT sees the row as it was.
    let user = sqlx::query_as!(
        UserRow,
        "WITH touched AS (
             UPDATE sessions s
                SET last_seen_at = now(),
                    expires_at = LEAST(now() + make_interval(secs => $2), s.created_at + make_interval(secs => $3))
               FROM users u
              WHERE s.token_hash = $1 AND u.id = s.user_id AND s.expires_at > now()
                AND s.created_at > now() - make_interval(secs => $3)
                AND u.disabled_at IS NULL AND s.last_seen_at < now() - interval '1 minute'
         )
         SELECT u.id, u.email, u.display_name, u.created_at
           FROM sessions s JOIN users u ON u.id = s.user_id
          WHERE s.token_hash = $1 AND s.expires_at > now() AND u.disabled_at IS NULL
            AND s.created_at > now() - make_interval(secs => $3)",
        tokens::digest(secret),
        SESSION_TTL.num_seconds() as f64,
        SESSION_MAX_AGE.num_seconds() as f64
    )
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(user.map(Into::into))
}

/// Ends every session of the user ("sign out everywhere"); how many there were.
pub async fn delete_user_sessions(db: &Db, user_id: Uuid) -> Result<u64, sqlx::Error> {
    let mut tx = db.tenant(user_id).await?;
    let deleted = sqlx::query!("DELETE FROM sessions WHERE user_id = $1", user_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(deleted)
}

/// Removes every ended session (at startup; each login also removes its user's).
pub async fn purge_expired_sessions(db: &Db) -> Result<u64, sqlx::Error> {
    let mut tx = db.system().await?;
    let deleted = sqlx::query!("DELETE FROM sessions WHERE expires_at <= now()")
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(deleted)
}

/// Ends a session. Returns whether one was found.
pub async fn delete_session(db: &Db, secret: &str) -> Result<bool, sqlx::Error> {
    let mut tx = db.system().await?;
    let deleted = sqlx::query!(
        "DELETE FROM sessions WHERE token_hash = $1",
        tokens::digest(secret)
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(deleted == 1)
}

/// Creates an API token, valid for `expires_in_days` (`None`: until revoked); the secret is in
/// the result and nowhere else.
pub async fn create_token(
    db: &Db,
    user_id: Uuid,
    name: &str,
    expires_in_days: Option<u32>,
) -> Result<CreatedApiToken, TokenError> {
    let mut errors = check_token_name(name).err().unwrap_or_default();
    if let Err(days) = check_token_days(expires_in_days) {
        errors.merge(days);
    }
    if !errors.is_empty() {
        return Err(TokenError::Invalid(errors));
    }
    let secret = tokens::new_api_token();
    let expires_at = expires_in_days.map(|days| Utc::now() + Duration::days(i64::from(days)));
    let mut tx = db.tenant(user_id).await?;
    let row = sqlx::query_as!(
        TokenRow,
        r#"INSERT INTO api_tokens (user_id, name, token_prefix, token_hash, expires_at)
         VALUES ($1, $2, $3, $4, $5)
         RETURNING id, name, token_prefix, created_at, last_used_at, expires_at,
                   false AS "expired!""#,
        user_id,
        name.trim(),
        secret.chars().take(12).collect::<String>(),
        tokens::digest(&secret),
        expires_at
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(CreatedApiToken {
        info: row.into(),
        token: secret,
    })
}

pub async fn list_tokens(db: &Db, user_id: Uuid) -> Result<Vec<ApiTokenView>, sqlx::Error> {
    let mut tx = db.tenant(user_id).await?;
    let rows = sqlx::query_as!(
        TokenRow,
        r#"SELECT id, name, token_prefix, created_at, last_used_at, expires_at,
                  coalesce(expires_at <= now(), false) AS "expired!" FROM api_tokens
          WHERE user_id = $1 AND revoked_at IS NULL ORDER BY created_at DESC"#,
        user_id
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// Revokes one of the caller's tokens. `false` when there is no such live token of theirs.
pub async fn revoke_token(db: &Db, user_id: Uuid, token_id: Uuid) -> Result<bool, sqlx::Error> {
    let mut tx = db.tenant(user_id).await?;
    let changed = sqlx::query!("UPDATE api_tokens SET revoked_at = now() WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL", token_id, user_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(changed == 1)
}

/// The user behind a Bearer token, if it is live and the account enabled.
pub async fn token_user(db: &Db, secret: &str) -> Result<Option<UserView>, sqlx::Error> {
    let mut tx = db.system().await?;
    let user = sqlx::query_as!(UserRow, "UPDATE api_tokens t SET last_used_at = now()
           FROM users u
          WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now())
            AND u.id = t.user_id AND u.disabled_at IS NULL
      RETURNING u.id, u.email, u.display_name, u.created_at", tokens::digest(secret))
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(user.map(Into::into))
}

/// An account as the operator's `user list` shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AccountSummary {
    pub id: Uuid,
    pub email: String,
    pub created_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
}

pub async fn list_accounts(db: &Db) -> Result<Vec<AccountSummary>, sqlx::Error> {
    let mut tx = db.system().await?;
    let rows = sqlx::query_as!(
        AccountSummary,
        "SELECT id, email, created_at, disabled_at FROM users ORDER BY created_at"
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows)
}

/// Disables an account and ends its sessions. `false` when no enabled account has that email.
pub async fn disable_account(db: &Db, email: &str) -> Result<bool, sqlx::Error> {
    let mut tx = db.system().await?;
    let id: Option<Uuid> = sqlx::query_scalar!("UPDATE users SET disabled_at = now() WHERE email = $1 AND disabled_at IS NULL RETURNING id", normalize_email(email))
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(id) = id {
        sqlx::query!("DELETE FROM sessions WHERE user_id = $1", id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(id.is_some())
}
