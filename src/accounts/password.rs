//! Password hashing with argon2id (OWASP parameters: 19 MiB, 2 iterations, 1 lane).
//! Hashing is CPU-bound for tens of milliseconds, so it runs on the blocking pool.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::rngs::OsRng;

fn hasher() -> Argon2<'static> {
    // Constants that argon2 accepts; a failure here would be a programming error caught by tests.
    let params = Params::new(19 * 1024, 2, 1, None).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("the hashing task stopped: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// At most one argon2 computation per core at once: a burst of logins or registrations waits
/// here (cheaply) instead of filling the blocking pool and memory (19 MiB each).
fn permits() -> &'static tokio::sync::Semaphore {
    static PERMITS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    PERMITS.get_or_init(|| {
        tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get()))
    })
}

/// Runs `work` on the blocking pool once a permit is free.
async fn limited<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, PasswordError> + Send + 'static,
) -> Result<T, PasswordError> {
    let _permit = permits()
        .acquire()
        .await
        .map_err(|e| PasswordError::Hash(e.to_string()))?;
    tokio::task::spawn_blocking(work).await?
}

pub async fn hash(password: String) -> Result<String, PasswordError> {
    limited(move || {
        let salt = SaltString::generate(&mut OsRng);
        hasher()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| PasswordError::Hash(e.to_string()))
    })
    .await
}

/// Verifies `password` against a stored PHC string. With no stored hash (unknown email) it
/// still does the work of one verification, so response times do not reveal which emails exist.
pub async fn verify(password: String, stored: Option<String>) -> Result<bool, PasswordError> {
    limited(move || {
        let known = stored.is_some();
        let stored = match stored {
            Some(stored) => stored,
            None => dummy_hash()?.to_owned(),
        };
        let parsed = PasswordHash::new(&stored).map_err(|e| PasswordError::Hash(e.to_string()))?;
        let matches = hasher()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        Ok(matches && known)
    })
    .await
}

/// The argon2id hash of a random secret nobody knows, with the same parameters as real hashes.
fn dummy_hash() -> Result<&'static str, PasswordError> {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if let Some(hash) = DUMMY.get() {
        return Ok(hash);
    }
    let salt = SaltString::generate(&mut OsRng);
    let hash = hasher()
        .hash_password(super::tokens::new_secret().as_bytes(), &salt)
        .map_err(|e| PasswordError::Hash(e.to_string()))?
        .to_string();
    Ok(DUMMY.get_or_init(|| hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip() {
        let stored = hash("correct horse battery".into()).await.unwrap();
        assert!(stored.starts_with("$argon2id$"));
        assert!(
            verify("correct horse battery".into(), Some(stored.clone()))
                .await
                .unwrap()
        );
        assert!(
            !verify("wrong horse battery".into(), Some(stored))
                .await
                .unwrap()
        );
        assert!(!verify("anything".into(), None).await.unwrap());
    }
}
