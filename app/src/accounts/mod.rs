//! Sign-in, registration and sign-out: server functions and the two public pages.

use engine::accounts::{UserView, check_email, check_new_password};
use leptos::form::ActionForm;
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

use crate::components::FieldError;
use crate::error::AppError;

#[cfg(feature = "ssr")]
pub mod server;

/// The signed-in user, or `None`.
#[server(prefix = "/rpc", endpoint = "current_user")]
pub async fn current_user() -> Result<Option<UserView>, AppError> {
    Ok(server::caller().await)
}

#[server(prefix = "/rpc", endpoint = "login")]
pub async fn login(email: String, password: String, next: Option<String>) -> Result<(), AppError> {
    server::login(email, password, next).await
}

#[server(prefix = "/rpc", endpoint = "register")]
pub async fn register(
    email: String,
    password: String,
    invite: Option<String>,
) -> Result<(), AppError> {
    server::register(email, password, invite).await
}

/// An administrator's invite link (a path: `/register?invite=…`), valid 7 days, once.
#[server(prefix = "/rpc", endpoint = "create_invite")]
pub async fn create_invite() -> Result<String, AppError> {
    let user = server::require_session().await?;
    let db = crate::server_context::Services::current()?.db;
    if !engine::accounts::store::is_admin(&db, user.id)
        .await
        .map_err(AppError::internal)?
    {
        return Err(AppError::Forbidden(
            "Only an administrator invites; the first account of the server is one.".into(),
        ));
    }
    let token = engine::accounts::store::create_invite(&db, Some(user.id))
        .await
        .map_err(AppError::internal)?;
    Ok(format!("/register?invite={token}"))
}

/// Whether the caller may invite (the Settings page shows the section).
#[server(prefix = "/rpc", endpoint = "can_invite")]
pub async fn can_invite() -> Result<bool, AppError> {
    let user = server::require_user().await?;
    let db = crate::server_context::Services::current()?.db;
    engine::accounts::store::is_admin(&db, user.id)
        .await
        .map_err(AppError::internal)
}

/// The administrator's invite links, on Settings.
#[component]
pub fn InviteSection() -> impl IntoView {
    let allowed = Resource::new(|| (), |_| can_invite());
    view! {
        <Suspense fallback=|| ()>
            {move || allowed.get().and_then(Result::ok).filter(|a| *a).map(|_| view! { <InviteLinks/> })}
        </Suspense>
    }
}

/// Making an invite link and showing it, an island.
#[cfg_attr(any(feature = "ssr", feature = "bundle-settings"), island)]
#[cfg_attr(not(any(feature = "ssr", feature = "bundle-settings")), component)]
fn InviteLinks() -> impl IntoView {
    let action = ServerAction::<CreateInvite>::new();
    view! {
                <section class="card panel" aria-labelledby="invite-heading">
                    <h2 id="invite-heading">"Invite someone"</h2>
                    <p class="muted small">"New accounts need an invite on this server. A link works once, for 7 days."</p>
                    <ActionForm action=action>
                        <button type="submit" class="btn" disabled=move || action.pending().get()>"Make an invite link"</button>
                    </ActionForm>
                    {move || action.value().get().map(|result| match result {
                        Ok(path) => view! {
                            <p class="token-once" role="status">"Send this link: " <a class="invite-link" href=path.clone()>{path.clone()}</a></p>
                        }.into_any(),
                        Err(e) => view! { <p class="form-error" role="alert">{e.to_string()}</p> }.into_any(),
                    })}
                </section>
    }
}

#[server(prefix = "/rpc", endpoint = "logout")]
pub async fn logout() -> Result<(), AppError> {
    server::logout().await
}

#[server(prefix = "/rpc", endpoint = "logout_everywhere")]
pub async fn logout_everywhere() -> Result<(), AppError> {
    server::logout_everywhere().await
}

/// Only same-origin paths are followed after login (no open redirect): a path that starts
/// with one `/`, of at most 2,000 characters, with no backslash, whitespace or control
/// character, and none of those (nor a slash) percent-encoded — browsers and proxies disagree
/// on how they resolve, so they are refused rather than interpreted. Anything else: the overview.
pub fn safe_next(next: Option<&str>) -> String {
    const HOME: &str = "/";
    let Some(path) = next else {
        return HOME.to_owned();
    };
    let plain = path.len() <= 2000
        && path.starts_with('/')
        && !path.starts_with("//")
        && !path
            .chars()
            .any(|c| c == '\\' || c.is_whitespace() || c.is_control());
    let lower = path.to_ascii_lowercase();
    // %2f "/", %5c "\\", %00–%1f and %7f controls, %20 and %09 blanks.
    let encoded = lower.contains("%2f")
        || lower.contains("%5c")
        || lower.contains("%7f")
        || lower.contains("%20")
        || lower.contains("%0")
        || lower.contains("%1");
    if plain && !encoded {
        path.to_owned()
    } else {
        HOME.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_accepts_only_same_origin_paths() {
        for ok in ["/datasets", "/jobs/1?x=1#y", "/costs?period=week", "/"] {
            assert_eq!(safe_next(Some(ok)), ok);
        }
        for bad in [
            "https://evil.example",
            "//evil.example",
            "/\\evil.example",
            "/\tevil",
            "/\t/evil.example",
            "/%2F/evil.example",
            "/%2f%2fevil.example",
            "/%5cevil.example",
            "/%09/evil",
            "/%0d%0aSet-Cookie:x",
            "/a b",
            "/a\u{7f}",
            "javascript:alert(1)",
            "",
            "%2F%2Fevil",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(safe_next(None), "/");
        assert_eq!(safe_next(Some(&format!("/{}", "a".repeat(3000)))), "/");
        // No panic on any input, multi-byte included.
        assert_eq!(safe_next(Some("/é%")), "/é%");
    }
}

/// An error passed back in the query string when the form was posted without JavaScript
/// (read on the server, for the form island).
fn query_error() -> Option<String> {
    let query = use_query_map();
    {
        query.with_untracked(|q| {
            q.get("error").map(|code| match code.as_str() {
                "credentials" => "Invalid email or password.".to_owned(),
                "rate" => "Too many attempts from your address. Wait a few minutes and try again.".to_owned(),
                "taken" => "This email is already registered. Log in instead.".to_owned(),
                "invite" => "This server registers new accounts by invitation: ask its administrator for an invite link (an expired or used link no longer works).".to_owned(),
                "closed" => "This server does not register new accounts; ask its administrator.".to_owned(),
                "invalid" => {
                    "Check the highlighted fields: use a valid email and at least 10 characters."
                        .to_owned()
                }
                _ => "Something went wrong. Try again.".to_owned(),
            })
        })
    }
}

#[component]
pub fn LoginPage() -> impl IntoView {
    let next = use_query_map().with_untracked(|q| q.get("next"));
    view! {
        <Title text="Log in"/>
        <AuthCard title="Log in" tagline="Fine-tune open models on your own data.">
            <LoginForm next from_query=query_error()/>
            <p class="muted small">"No account? " <a href="/register">"Create one"</a></p>
        </AuthCard>
    }
}

/// The login form, an island: a wrong password is reported in place, without a page load.
#[cfg_attr(any(feature = "ssr", feature = "bundle-auth"), island)]
#[cfg_attr(not(any(feature = "ssr", feature = "bundle-auth")), component)]
fn LoginForm(next: Option<String>, from_query: Option<String>) -> impl IntoView {
    let action = ServerAction::<Login>::new();
    let error = move || match action.value().get() {
        Some(Err(e)) => Some(e.to_string()),
        _ => from_query.clone(),
    };
    view! {
                <ActionForm action=action attr:class="form" attr:novalidate=true>
                    <input type="hidden" name="next" value=next/>
                    <label for="email">"Email"</label>
                    <input id="email" name="email" type="email" autocomplete="email" required autofocus/>
                    <label for="password">"Password"</label>
                    <input id="password" name="password" type="password" autocomplete="current-password" required/>
                    {move || error().map(|e| view! { <p class="form-error" role="alert">{e}</p> })}
                    <button type="submit" class="btn btn-primary" disabled=move || action.pending().get()>
                        {move || if action.pending().get() { "Logging in…" } else { "Log in" }}
                    </button>
                </ActionForm>
    }
}

#[component]
pub fn RegisterPage() -> impl IntoView {
    let invite = use_query_map()
        .with_untracked(|q| q.get("invite"))
        .unwrap_or_default();
    view! {
        <Title text="Create account"/>
        <AuthCard title="Create your account" tagline="Upload a dataset, see the cost up front, train a LoRA adapter.">
            <RegisterForm invite from_query=query_error()/>
            <p class="muted small">"Already registered? " <a href="/login">"Log in"</a></p>
        </AuthCard>
    }
}

/// The register form, an island: the same rules as the server, checked as you type.
#[cfg_attr(any(feature = "ssr", feature = "bundle-auth"), island)]
#[cfg_attr(not(any(feature = "ssr", feature = "bundle-auth")), component)]
fn RegisterForm(invite: String, from_query: Option<String>) -> impl IntoView {
    let action = ServerAction::<Register>::new();
    let (email, set_email) = signal(String::new());
    let (password, set_password) = signal(String::new());
    let server_error = move || match action.value().get() {
        Some(Err(e)) => Some(e),
        _ => None,
    };
    // The same rules as the server, checked as you type (after the first keystroke).
    let email_error = move || {
        let typed = email.get();
        if typed.is_empty() {
            return server_error().and_then(|e| e.field("email"));
        }
        check_email(&typed)
            .err()
            .or_else(|| server_error().and_then(|e| e.field("email")))
    };
    let password_error = move || {
        let typed = password.get();
        if typed.is_empty() {
            return server_error().and_then(|e| e.field("password"));
        }
        check_new_password(&typed).err()
    };
    let form_error = move || match server_error() {
        Some(AppError::Invalid { .. }) => None,
        Some(e) => Some(e.to_string()),
        None => from_query.clone(),
    };
    view! {
                <ActionForm action=action attr:class="form" attr:novalidate=true>
                    <input type="hidden" name="invite" value=invite/>
                    <label for="email">"Email"</label>
                    <input
                        id="email"
                        name="email"
                        type="email"
                        autocomplete="email"
                        required
                        autofocus
                        aria-describedby="email-error"
                        on:input=move |ev| set_email.set(event_target_value(&ev))
                    />
                    <FieldError id="email-error" message=Signal::derive(email_error)/>
                    <label for="password">"Password"</label>
                    <input
                        id="password"
                        name="password"
                        type="password"
                        autocomplete="new-password"
                        required
                        minlength="10"
                        aria-describedby="password-error password-hint"
                        on:input=move |ev| set_password.set(event_target_value(&ev))
                    />
                    <p id="password-hint" class="hint">"At least 10 characters."</p>
                    <FieldError id="password-error" message=Signal::derive(password_error)/>
                    {move || form_error().map(|e| view! { <p class="form-error" role="alert">{e}</p> })}
                    <button type="submit" class="btn btn-primary" disabled=move || action.pending().get()>
                        {move || if action.pending().get() { "Creating account…" } else { "Create account" }}
                    </button>
                </ActionForm>
    }
}

/// The centred card of the public pages: brand, title, one line, then the form.
#[component]
pub fn AuthCard(
    #[prop(into)] title: String,
    #[prop(into)] tagline: String,
    children: Children,
) -> impl IntoView {
    view! {
        <main class="auth">
            <div class="auth-card card">
                <a class="brand" href="/login">
                    <span class="brand-mark" aria-hidden="true">"◆"</span>
                    " lora-pipeline"
                </a>
                <h1>{title}</h1>
                <p class="muted">{tagline}</p>
                {children()}
            </div>
        </main>
    }
}

/// Ends every session of the account (other browsers and devices too), with a confirmation
/// step that works without JavaScript.
#[component]
pub fn LogoutEverywhere() -> impl IntoView {
    let action = ServerAction::<LogoutEverywhere>::new();
    view! {
        <details class="confirm">
            <summary class="btn btn-small">"Sign out everywhere"</summary>
            <div class="confirm-box">
                <p>"Every browser signed in to this account is signed out, this one included. API tokens keep working."</p>
                <ActionForm action=action>
                    <button type="submit" class="btn btn-small btn-danger">"Yes, sign out everywhere"</button>
                </ActionForm>
            </div>
        </details>
    }
}

/// The sign-out button in the navigation (a form, so it works without JavaScript).
#[component]
pub fn LogoutButton() -> impl IntoView {
    let action = ServerAction::<Logout>::new();
    view! {
        <ActionForm action=action attr:class="logout-form">
            <button type="submit" class="btn btn-ghost btn-small">"Log out"</button>
        </ActionForm>
    }
}
