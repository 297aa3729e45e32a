//! `Idempotency-Key` (DESIGN §6.1): a client that times out and sends a write again must never
//! start a second billed run. The key is claimed inside the transaction of the write it guards,
//! and the write's result is stored there before commit, so the job (or dataset) exists exactly
//! when its key's response does — a crash in between leaves neither. A second request with the
//! key waits on the primary key until the first commits, then reads its response.

use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::db::Tx;

/// How long a key answers with its first response; after that it may be used afresh.
pub const KEY_LIFETIME_HOURS: i32 = 24;

/// The longest key accepted (Stripe's limit).
pub const MAX_KEY_LEN: usize = 255;

/// A client's key for one operation with one request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    key: String,
    fingerprint: [u8; 32],
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters.")]
    Malformed,
}

impl IdempotencyKey {
    /// `operation` names what the key guards (`"jobs.create"`, `"jobs.retry:<id>"`); `request` is
    /// the parsed body, serialized again so that the same request spelled differently (aliases,
    /// spacing, key order) counts as the same.
    pub fn new(key: &str, operation: &str, request: &impl Serialize) -> Result<Self, KeyError> {
        let valid = !key.is_empty()
            && key.len() <= MAX_KEY_LEN
            && key.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
        if !valid {
            return Err(KeyError::Malformed);
        }
        let mut hash = Sha256::new();
        hash.update(operation.as_bytes());
        hash.update([0]);
        // Serializing a plain struct cannot fail; an empty body hashes as the operation alone.
        hash.update(serde_json::to_vec(request).unwrap_or_default());
        Ok(Self {
            key: key.to_owned(),
            fingerprint: hash.finalize().into(),
        })
    }
}

/// What claiming a key found.
#[derive(Debug)]
pub enum Claim<T> {
    /// First use: do the work, then [`record`] its result in the same transaction.
    New,
    /// Used before with the same request: answer with this and change nothing.
    Replay(T),
}

#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error(
        "this Idempotency-Key was already used with a different request; use a new key for a new request"
    )]
    Mismatch,
    #[error("database error on idempotency keys: {0}")]
    Db(#[from] sqlx::Error),
}

/// Claims `key` for `user` as the first statement of the write's transaction. A concurrent
/// transaction holding the same key makes this wait until it commits (then: a replay) or rolls
/// back (then: ours).
pub async fn claim<T: DeserializeOwned>(
    tx: &mut Tx,
    user: Uuid,
    key: &IdempotencyKey,
) -> Result<Claim<T>, ClaimError> {
    // An expired key is free again.
    sqlx::query!(
        "DELETE FROM idempotency_keys WHERE user_id = $1 AND key = $2
           AND created_at < now() - make_interval(hours => $3)",
        user,
        key.key,
        KEY_LIFETIME_HOURS,
    )
    .execute(&mut **tx)
    .await?;
    let claimed = sqlx::query!(
        "INSERT INTO idempotency_keys (user_id, key, fingerprint) VALUES ($1, $2, $3)
         ON CONFLICT (user_id, key) DO NOTHING",
        user,
        key.key,
        &key.fingerprint[..],
    )
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1;
    if claimed {
        return Ok(Claim::New);
    }
    let first = sqlx::query!(
        "SELECT fingerprint, response FROM idempotency_keys WHERE user_id = $1 AND key = $2",
        user,
        key.key,
    )
    .fetch_one(&mut **tx)
    .await?;
    if first.fingerprint != key.fingerprint {
        return Err(ClaimError::Mismatch);
    }
    // Recorded in the claiming transaction, so a committed key always has its response.
    let response = first
        .response
        .ok_or_else(|| sqlx::Error::Protocol("idempotency key without a response".into()))?;
    serde_json::from_value(response)
        .map(Claim::Replay)
        .map_err(|e| ClaimError::Db(sqlx::Error::Decode(Box::new(e))))
}

/// Stores the result a replay answers with; call it in the claiming transaction, before commit.
pub async fn record<T: Serialize>(
    tx: &mut Tx,
    user: Uuid,
    key: &IdempotencyKey,
    result: &T,
) -> Result<(), sqlx::Error> {
    let response = serde_json::to_value(result).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query!(
        "UPDATE idempotency_keys SET response = $3 WHERE user_id = $1 AND key = $2",
        user,
        key.key,
        response,
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_and_bound_to_operation_and_body() {
        let body = serde_json::json!({"a": 1});
        assert_eq!(
            IdempotencyKey::new("", "jobs.create", &body),
            Err(KeyError::Malformed)
        );
        assert_eq!(
            IdempotencyKey::new("a\u{7}b", "jobs.create", &body),
            Err(KeyError::Malformed)
        );
        assert!(IdempotencyKey::new(&"k".repeat(MAX_KEY_LEN + 1), "jobs.create", &body).is_err());
        let a = IdempotencyKey::new("key-1", "jobs.create", &body).unwrap();
        let same = IdempotencyKey::new("key-1", "jobs.create", &serde_json::json!({"a": 1}));
        assert_eq!(Ok(a.clone()), same);
        let other_body = IdempotencyKey::new("key-1", "jobs.create", &serde_json::json!({"a": 2}));
        assert_ne!(a.fingerprint, other_body.unwrap().fingerprint);
        let other_op = IdempotencyKey::new("key-1", "datasets.create", &body).unwrap();
        assert_ne!(a.fingerprint, other_op.fingerprint);
    }
}
