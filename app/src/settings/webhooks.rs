//! The account's webhook on Settings: its URL, the signing secret, a test event, and the
//! latest deliveries with what the receiver answered.

use engine::webhooks::{DeliveryStatus, DeliveryView, WebhookView, check_url};
use leptos::form::ActionForm;
use leptos::prelude::*;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::components::{EmptyState, ErrorState, FieldError, Skeleton};
use crate::error::AppError;

/// The webhook (none until one is saved) and its latest deliveries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookState {
    pub webhook: Option<WebhookView>,
    pub deliveries: Vec<DeliveryView>,
}

#[server(prefix = "/rpc", endpoint = "read_webhook")]
pub async fn read_webhook() -> Result<WebhookState, AppError> {
    let crate::server_context::SignedIn { user, db, .. } =
        crate::server_context::signed_in().await?;
    Ok(WebhookState {
        webhook: engine::webhooks::get(&db, user.id).await?,
        deliveries: engine::webhooks::deliveries(&db, user.id).await?,
    })
}

#[server(prefix = "/rpc", endpoint = "save_webhook")]
pub async fn save_webhook(url: String) -> Result<WebhookView, AppError> {
    let crate::server_context::SignedIn { user, db, .. } =
        crate::server_context::signed_in().await?;
    crate::accounts::server::require_session().await?;
    let settings = crate::server_context::Services::current()?.webhooks;
    match engine::webhooks::set(
        &db,
        user.id,
        &engine::webhooks::WebhookChange { url },
        settings,
    )
    .await
    {
        Err(engine::webhooks::WebhookError::Invalid(fields)) => {
            Err(AppError::invalid("Check the URL.", fields))
        }
        other => Ok(other?),
    }
}

#[server(prefix = "/rpc", endpoint = "remove_webhook")]
pub async fn remove_webhook() -> Result<(), AppError> {
    let crate::server_context::SignedIn { user, db, .. } =
        crate::server_context::signed_in().await?;
    crate::accounts::server::require_session().await?;
    Ok(engine::webhooks::remove(&db, user.id).await?)
}

#[server(prefix = "/rpc", endpoint = "test_webhook")]
pub async fn test_webhook() -> Result<Uuid, AppError> {
    let crate::server_context::SignedIn { user, db, .. } =
        crate::server_context::signed_in().await?;
    crate::accounts::server::require_session().await?;
    Ok(engine::webhooks::ping(&db, user.id).await?)
}

/// The section: read on the server, then an island for the forms.
#[component]
pub fn WebhookSection() -> impl IntoView {
    let state = Resource::new(|| (), |_| read_webhook());
    view! {
        <Suspense fallback=|| view! { <Skeleton/> }>
            {move || state.get().map(|result| match result {
                Err(e) => view! { <ErrorState message=e.to_string()/> }.into_any(),
                Ok(state) => view! { <WebhookPanel state/> }.into_any(),
            })}
        </Suspense>
    }
}

fn when(at: &chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// Saving, testing and removing the webhook, an island: the state is read again after each
/// change. Without JavaScript the forms post and the page comes back.
#[cfg_attr(any(feature = "ssr", feature = "bundle-settings"), island)]
#[cfg_attr(not(any(feature = "ssr", feature = "bundle-settings")), component)]
fn WebhookPanel(state: WebhookState) -> impl IntoView {
    let save = ServerAction::<SaveWebhook>::new();
    let remove = ServerAction::<RemoveWebhook>::new();
    let test = ServerAction::<TestWebhook>::new();
    let state = RwSignal::new(state);
    let refresh = move || {
        leptos::task::spawn_local(async move {
            if let Ok(fresh) = read_webhook().await {
                state.set(fresh);
            }
        });
    };
    Effect::new(move || {
        // All start at 0: nothing to read again until a form was sent.
        if save.version().get() + remove.version().get() + test.version().get() > 0 {
            refresh();
        }
    });
    let (typed, set_typed) = signal(String::new());
    let url_error = move || {
        let url = typed.get();
        if !url.is_empty()
            && let Err(errors) = check_url(&url)
        {
            return errors.get("url").map(str::to_owned);
        }
        match save.value().get() {
            Some(Err(e)) => e.field("url").or_else(|| Some(e.to_string())),
            _ => None,
        }
    };
    let current_url = move || {
        state
            .with(|s| s.webhook.as_ref().map(|w| w.url.clone()))
            .unwrap_or_default()
    };
    view! {
        <section class="card panel" aria-labelledby="webhook-heading">
            <h2 id="webhook-heading">"Webhook"</h2>
            <p class="small muted">
                "One URL that receives a signed POST when a job completes, fails or is cancelled, and when a dataset's validation is done. "
                "Check " <code>"Lora-Pipeline-Signature"</code> " with the secret below (docs/API.md, \"Webhooks\"); failed deliveries are retried for about a day."
            </p>
            <ActionForm action=save attr:class="form form-inline">
                <label for="webhook-url">"URL"</label>
                <input
                    id="webhook-url"
                    name="url"
                    type="url"
                    inputmode="url"
                    placeholder="https://hooks.example.com/lora"
                    maxlength="2048"
                    value=current_url
                    aria-describedby="webhook-url-error"
                    on:input=move |ev| set_typed.set(event_target_value(&ev))
                />
                <button type="submit" class="btn btn-primary" disabled=move || save.pending().get()>
                    {move || if save.pending().get() { "Setting…" } else { "Set webhook" }}
                </button>
                <FieldError id="webhook-url-error" message=Signal::derive(url_error)/>
            </ActionForm>
            {move || state.get().webhook.map(|webhook| view! {
                <p class="small">"Signing secret: " <code class="token-secret webhook-secret">{webhook.secret}</code></p>
                <div class="form-inline">
                    <ActionForm action=test>
                        <button type="submit" class="btn" disabled=move || test.pending().get()>"Send a test event"</button>
                    </ActionForm>
                    <button type="button" class="btn" on:click=move |_| refresh()>"Refresh deliveries"</button>
                    <details class="confirm">
                        <summary class="btn btn-small">"Remove webhook"</summary>
                        <div class="confirm-box">
                            <p>"Events stop being sent; deliveries not yet sent are dropped."</p>
                            <ActionForm action=remove>
                                <button type="submit" class="btn btn-small btn-danger">"Yes, remove"</button>
                            </ActionForm>
                        </div>
                    </details>
                </div>
            })}
            {move || test.value().get().map(|result| match result {
                Ok(_) => view! { <p class="small" role="status">"A ping event is queued: it shows below once sent."</p> }.into_any(),
                Err(e) => view! { <p class="form-error" role="alert">{e.to_string()}</p> }.into_any(),
            })}
            {move || {
                let deliveries = state.get().deliveries;
                if deliveries.is_empty() {
                    view! {
                        <EmptyState icon="↗" title="No deliveries yet">
                            <p>"Events appear here as they are sent, with the receiver's answer."</p>
                        </EmptyState>
                    }.into_any()
                } else {
                    view! {
                        <table class="table webhook-deliveries">
                            <thead><tr><th>"Event"</th><th>"Status"</th><th>"Attempts"</th><th>"Last answer"</th><th>"Created"</th></tr></thead>
                            <tbody>
                                {deliveries.into_iter().map(|d| {
                                    let status = match d.status {
                                        DeliveryStatus::Delivered => format!("delivered {}", d.delivered_at.as_ref().map(when).unwrap_or_default()),
                                        DeliveryStatus::Pending => match &d.next_attempt_at {
                                            Some(at) => format!("pending, next try {}", when(at)),
                                            None => "pending".to_owned(),
                                        },
                                        DeliveryStatus::Failed => "failed: gave up".to_owned(),
                                    };
                                    let answer = match (d.last_status_code, d.last_error.clone()) {
                                        (Some(code), None) => format!("HTTP {code}"),
                                        (_, Some(error)) => error,
                                        (None, None) => "—".to_owned(),
                                    };
                                    view! {
                                        <tr class=format!("delivery-{}", d.status.as_str())>
                                            <td><code>{d.event.as_str()}</code></td>
                                            <td>{status}</td>
                                            <td class="num">{d.attempts}</td>
                                            <td class="webhook-answer">{answer}</td>
                                            <td><time datetime=d.created_at.to_rfc3339()>{when(&d.created_at)}</time></td>
                                        </tr>
                                    }
                                }).collect_view()}
                            </tbody>
                        </table>
                    }.into_any()
                }
            }}
        </section>
    }
}
