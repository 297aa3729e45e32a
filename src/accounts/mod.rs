//! Accounts: the rules for credentials and the user as the client sees it.
//!
//! The rules are pure so the register form checks them as you type and the server applies the
//! very same ones.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::validation::FieldErrors;

#[cfg(feature = "ssr")]
pub mod password;
#[cfg(feature = "ssr")]
pub mod store;
#[cfg(feature = "ssr")]
pub mod tokens;

pub const PASSWORD_MIN_CHARS: usize = 10;
pub const PASSWORD_MAX_CHARS: usize = 256;
pub const EMAIL_MAX_CHARS: usize = 254;
pub const TOKEN_NAME_MAX_CHARS: usize = 100;

/// The signed-in user, as the API and the UI show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct UserView {
    pub id: Uuid,
    pub email: String,
    pub display_name: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// An API token as listed (the secret itself is only ever returned once, at creation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct ApiTokenView {
    pub id: Uuid,
    pub name: String,
    pub token_prefix: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    /// When the token stops working; `None`: until revoked.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Past `expires_at` when it was read (decided by the server, so pages agree everywhere).
    #[serde(default)]
    pub expired: bool,
}

/// The answer to `POST /api/tokens`: the token, shown this once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct CreatedApiToken {
    #[serde(flatten)]
    pub info: ApiTokenView,
    pub token: String,
}

/// Credentials as typed by a person: the email is trimmed and lower-cased before any rule.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct Credentials {
    pub email: String,
    pub password: String,
}

/// Canonical form of an email address: trimmed, lower-case.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// The email rule: one `@` with something on both sides, a dot in the domain, no spaces.
pub fn check_email(email: &str) -> Result<(), String> {
    let email = normalize_email(email);
    if email.is_empty() {
        return Err("Enter your email address.".into());
    }
    if email.chars().count() > EMAIL_MAX_CHARS {
        return Err(format!(
            "Email addresses are at most {EMAIL_MAX_CHARS} characters."
        ));
    }
    let Some((local, domain)) = email.split_once('@') else {
        return Err("Enter an email address like name@example.com.".into());
    };
    let well_formed = !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email.chars().any(char::is_whitespace);
    if well_formed {
        Ok(())
    } else {
        Err("Enter an email address like name@example.com.".into())
    }
}

/// The password rule for new passwords: length only (NIST SP 800-63B), no composition rules.
pub fn check_new_password(password: &str) -> Result<(), String> {
    let chars = password.chars().count();
    if chars < PASSWORD_MIN_CHARS {
        return Err(format!(
            "Use at least {PASSWORD_MIN_CHARS} characters ({chars} so far)."
        ));
    }
    if chars > PASSWORD_MAX_CHARS {
        return Err(format!("Use at most {PASSWORD_MAX_CHARS} characters."));
    }
    Ok(())
}

/// All rules for a registration, as field errors.
pub fn check_registration(credentials: &Credentials) -> Result<(), FieldErrors> {
    let mut errors = FieldErrors::new();
    if let Err(message) = check_email(&credentials.email) {
        errors.add("email", message);
    }
    if let Err(message) = check_new_password(&credentials.password) {
        errors.add("password", message);
    }
    errors.into_result()
}

/// The rule for API token names.
/// The longest lifetime a token may be given, in days.
pub const TOKEN_MAX_DAYS: u32 = 366;

/// A token's lifetime as asked for: `None` until revoked, else 1 to [`TOKEN_MAX_DAYS`] days.
pub fn check_token_days(days: Option<u32>) -> Result<(), FieldErrors> {
    match days {
        Some(d) if d == 0 || d > TOKEN_MAX_DAYS => Err(FieldErrors::single(
            "expires_in_days",
            format!("A token lasts from 1 to {TOKEN_MAX_DAYS} days; leave it out for no expiry."),
        )),
        _ => Ok(()),
    }
}

pub fn check_token_name(name: &str) -> Result<(), FieldErrors> {
    let name = name.trim();
    if name.is_empty() {
        return Err(FieldErrors::single(
            "name",
            "Give the token a name, e.g. \"ci\".",
        ));
    }
    if name.chars().count() > TOKEN_NAME_MAX_CHARS {
        return Err(FieldErrors::single(
            "name",
            format!("Token names are at most {TOKEN_NAME_MAX_CHARS} characters."),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert!(check_email("a@b.co").is_ok());
        assert!(check_email("  Ada@Example.COM ").is_ok());
        for bad in [
            "", "ada", "ada@", "@b.co", "a@b", "a b@c.de", "a@@b.co", "a@.b", "a@b.",
        ] {
            assert!(check_email(bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(normalize_email("  Ada@Example.COM "), "ada@example.com");
    }

    #[test]
    fn passwords_count_characters_not_bytes() {
        assert!(check_new_password("short").is_err());
        assert!(check_new_password("0123456789").is_ok());
        // 10 multi-byte characters are 10 characters.
        assert!(check_new_password("éééééééééé").is_ok());
        assert!(check_new_password(&"x".repeat(PASSWORD_MAX_CHARS + 1)).is_err());
    }

    #[test]
    fn registration_reports_every_field() {
        let errors = check_registration(&Credentials {
            email: "nope".into(),
            password: "x".into(),
        })
        .unwrap_err();
        assert!(errors.get("email").is_some());
        assert!(errors.get("password").unwrap().contains("at least 10"));
    }
}

#[cfg(feature = "ssr")]
pub mod web;
