//! Settings: the account's spending (monthly budget, time zone), API tokens for scripts
//! (`Authorization: Bearer …`, created here and shown once) and the webhook.

mod spending;
mod webhooks;
pub use spending::{FollowBrowserZone, SpendingSettings, spending_summary};
pub use webhooks::{WebhookSection, WebhookState};

use engine::accounts::{ApiTokenView, CreatedApiToken, check_token_name};
use leptos::form::ActionForm;
use leptos::prelude::*;
use uuid::Uuid;

use crate::components::{EmptyState, ErrorState, FieldError, PageHeader, Skeleton};
use crate::error::AppError;

#[server(prefix = "/rpc", endpoint = "list_tokens")]
pub async fn list_tokens() -> Result<Vec<ApiTokenView>, AppError> {
    let crate::server_context::SignedIn { user, db, .. } =
        crate::server_context::signed_in().await?;
    engine::accounts::store::list_tokens(&db, user.id)
        .await
        .map_err(AppError::internal)
}

#[server(prefix = "/rpc", endpoint = "create_token")]
pub async fn create_token(
    name: String,
    // Days the token works ("" or absent: until revoked): a select's value.
    #[server(default)] expires_in_days: String,
) -> Result<CreatedApiToken, AppError> {
    use engine::accounts::store::TokenError;
    let crate::server_context::SignedIn { user, db, .. } =
        crate::server_context::signed_in().await?;
    crate::accounts::server::require_session().await?;
    let days = match expires_in_days.trim() {
        "" => None,
        days => Some(days.parse::<u32>().map_err(|_| {
            AppError::invalid(
                "Check the expiry.",
                engine::validation::FieldErrors::single(
                    "expires_in_days",
                    "Choose how long the token works.",
                ),
            )
        })?),
    };
    match engine::accounts::store::create_token(&db, user.id, &name, days).await {
        Ok(created) => Ok(created),
        Err(TokenError::Invalid(fields)) => Err(AppError::invalid("Check the token.", fields)),
        Err(e) => Err(AppError::internal(e)),
    }
}

#[server(prefix = "/rpc", endpoint = "revoke_token")]
pub async fn revoke_token(id: Uuid) -> Result<(), AppError> {
    let crate::server_context::SignedIn { user, db, .. } =
        crate::server_context::signed_in().await?;
    crate::accounts::server::require_session().await?;
    if engine::accounts::store::revoke_token(&db, user.id, id)
        .await
        .map_err(AppError::internal)?
    {
        Ok(())
    } else {
        Err(AppError::NotFound)
    }
}

#[component]
pub fn SettingsPage() -> impl IntoView {
    let tokens = Resource::new(|| (), |_| list_tokens());
    view! {
        <PageHeader title="Settings" description="Your monthly budget and time zone, API tokens that let scripts call the REST API as you, and a webhook for job and dataset events."/>
        <SpendingSettings/>
        <section class="card panel" aria-labelledby="sessions-heading">
            <h2 id="sessions-heading">"Sessions"</h2>
            <p class="muted small">"A browser session lasts 14 days from its last use, and 30 days at most."</p>
            <crate::accounts::LogoutEverywhere/>
        </section>
        <crate::accounts::InviteSection/>
        <Suspense fallback=|| view! { <Skeleton/> }>
            {move || tokens.get().map(|result| match result {
                Err(e) => view! { <ErrorState message=e.to_string()/> }.into_any(),
                Ok(list) => view! { <ApiTokens tokens=list/> }.into_any(),
            })}
        </Suspense>
        <WebhookSection/>
    }
}

/// Creating (the secret shown once) and revoking tokens, an island: the list is read again
/// after each change. Without JavaScript the forms post and the page comes back.
#[cfg_attr(any(feature = "ssr", feature = "bundle-settings"), island)]
#[cfg_attr(not(any(feature = "ssr", feature = "bundle-settings")), component)]
fn ApiTokens(tokens: Vec<ApiTokenView>) -> impl IntoView {
    let create = ServerAction::<CreateToken>::new();
    let revoke = ServerAction::<RevokeToken>::new();
    let tokens = RwSignal::new(tokens);
    Effect::new(move || {
        // Both start at 0: nothing to read again until a form was sent.
        if create.version().get() + revoke.version().get() > 0 {
            leptos::task::spawn_local(async move {
                if let Ok(fresh) = list_tokens().await {
                    tokens.set(fresh);
                }
            });
        }
    });
    let (name, set_name) = signal(String::new());
    let name_error = move || {
        let typed = name.get();
        if !typed.is_empty()
            && let Err(errors) = check_token_name(&typed)
        {
            return errors.get("name").map(str::to_owned);
        }
        match create.value().get() {
            Some(Err(e)) => e.field("name").or_else(|| Some(e.to_string())),
            _ => None,
        }
    };
    view! {
        <section class="card panel">
            <h2>"Create an API token"</h2>
            <p class="small muted">
                "Scripts send it as " <code>"Authorization: Bearer …"</code> ". Every route is in the "
                <a href="/docs/api">"API reference"</a> "."
            </p>
            <ActionForm action=create attr:class="form form-inline">
                <label for="token-name">"Name"</label>
                <input
                    id="token-name"
                    name="name"
                    placeholder="e.g. ci, laptop"
                    maxlength="100"
                    aria-describedby="token-name-error"
                    on:input=move |ev| set_name.set(event_target_value(&ev))
                />
                <button type="submit" class="btn btn-primary" disabled=move || create.pending().get()>
                    {move || if create.pending().get() { "Creating…" } else { "Create token" }}
                </button>
                <label for="token-expiry">"Expires"</label>
                <select id="token-expiry" name="expires_in_days">
                    <option value="">"Never (until revoked)"</option>
                    <option value="7">"In 7 days"</option>
                    <option value="30">"In 30 days"</option>
                    <option value="90" selected>"In 90 days"</option>
                    <option value="365">"In a year"</option>
                </select>
                <FieldError id="token-name-error" message=Signal::derive(name_error)/>
            </ActionForm>
            {move || create.value().get().and_then(Result::ok).map(|created| view! {
                <div class="token-once" role="status">
                    <p><strong>"Copy this token now: it is shown only once."</strong></p>
                    <code class="token-secret">{created.token}</code>
                    <p class="muted small">"Use it as: Authorization: Bearer <token>"</p>
                </div>
            })}
        </section>
        {move || if tokens.with(Vec::is_empty) {
            view! {
                <EmptyState icon="⚿" title="No API tokens">
                    <p>"Create one above to call the API from scripts or CI."</p>
                </EmptyState>
            }.into_any()
        } else {
            view! {
                <table class="table card">
                    <thead><tr><th>"Name"</th><th>"Token"</th><th>"Created"</th><th>"Last used"</th><th>"Expires"</th><th><span class="visually-hidden">"Actions"</span></th></tr></thead>
                    <tbody>
                        {tokens.get().into_iter().map(|t| view! {
                            <tr>
                                <td>{t.name.clone()}</td>
                                <td><code>{format!("{}…", t.token_prefix)}</code></td>
                                <td><time datetime=t.created_at.to_rfc3339()>{t.created_at.format("%Y-%m-%d %H:%M UTC").to_string()}</time></td>
                                <td>{t.last_used_at.map(|at| at.format("%Y-%m-%d %H:%M UTC").to_string()).unwrap_or_else(|| "never".into())}</td>
                                <td>{match t.expires_at {
                                    None => "never".to_owned(),
                                    Some(at) if t.expired => format!("expired {}", at.format("%Y-%m-%d")),
                                    Some(at) => at.format("%Y-%m-%d").to_string(),
                                }}</td>
                                <td class="num">
                                    // A confirmation step that works without JavaScript.
                                    <details class="confirm">
                                        <summary class="btn btn-small" aria-label=format!("Revoke token {}", t.name)>"Revoke"</summary>
                                        <div class="confirm-box">
                                            <p>"Scripts using this token stop working at once."</p>
                                            <ActionForm action=revoke>
                                                <input type="hidden" name="id" value=t.id.to_string()/>
                                                <button type="submit" class="btn btn-small btn-danger">"Yes, revoke"</button>
                                            </ActionForm>
                                        </div>
                                    </details>
                                </td>
                            </tr>
                        }).collect_view()}
                    </tbody>
                </table>
            }.into_any()
        }}
    }
}
