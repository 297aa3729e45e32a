//! What an HTTP request carries about its caller, shared by the REST routes (server crate) and
//! the server functions (app crate): the resolved user, the client address, the cookie policy.

use super::UserView;

/// Name of the browser session cookie.
pub const SESSION_COOKIE: &str = "lp_session";

/// The authenticated caller, put in the request's extensions by the auth middleware.
#[derive(Debug, Clone)]
pub struct SessionUser(pub UserView);

/// How the caller authenticated; Bearer requests are exempt from the browser origin check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    Cookie,
    Bearer,
}

/// The caller's network address (used for the login rate limit).
#[derive(Debug, Clone)]
pub struct ClientAddr(pub String);

/// Attributes of the session cookie: HttpOnly and SameSite=Lax always; Secure when the public
/// URL is https.
#[derive(Debug, Clone, Copy)]
pub struct SessionCookie {
    pub secure: bool,
}

impl SessionCookie {
    pub fn set(&self, secret: &str) -> String {
        let max_age = super::store::SESSION_TTL.num_seconds();
        format!(
            "{SESSION_COOKIE}={secret}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{}",
            if self.secure { "; Secure" } else { "" }
        )
    }

    pub fn clear(&self) -> String {
        format!(
            "{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{}",
            if self.secure { "; Secure" } else { "" }
        )
    }
}

/// The session secret from a `Cookie` header value, if present.
pub fn session_secret(cookie_header: &str) -> Option<&str> {
    cookie_header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value)
        .filter(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_session_cookie() {
        assert_eq!(session_secret("a=1; lp_session=abc; b=2"), Some("abc"));
        assert_eq!(session_secret("lp_session="), None);
        assert_eq!(session_secret("other=1"), None);
        let cookie = SessionCookie { secure: true }.set("s");
        assert!(
            cookie.contains("HttpOnly")
                && cookie.contains("SameSite=Lax")
                && cookie.contains("Secure")
        );
    }
}
