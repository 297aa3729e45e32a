//! The account's spending settings: its monthly budget (or the operator's default) and its time
//! zone, which decides the days of the cost reports and the month of the budget. The form works
//! without JavaScript; in the browser, the zone can be taken from the browser itself.

use engine::costs::BudgetView;
use engine::format::money;
use leptos::form::ActionForm;
use leptos::prelude::*;

use crate::components::{ErrorState, FieldError, Skeleton};
use crate::error::AppError;

#[server(prefix = "/rpc", endpoint = "spending_summary")]
pub async fn spending_summary() -> Result<BudgetView, AppError> {
    let crate::server_context::SignedIn {
        user, db, catalog, ..
    } = crate::server_context::signed_in().await?;
    let mut tx = db.tenant(user.id).await.map_err(AppError::internal)?;
    let spending = engine::costs::limits::read_spending(&mut tx, user.id, &catalog.limits)
        .await
        .map_err(AppError::internal)?;
    tx.commit().await.map_err(AppError::internal)?;
    Ok(spending.view(&catalog.limits))
}

/// Saves the budget (empty: the server's default) and the time zone, both or neither.
#[server(prefix = "/rpc", endpoint = "save_spending")]
pub async fn save_spending(monthly_budget: String, time_zone: String) -> Result<(), AppError> {
    let crate::server_context::SignedIn { user, db, .. } =
        crate::server_context::signed_in().await?;
    let mut fields = engine::validation::FieldErrors::new();
    let typed = monthly_budget
        .trim()
        .trim_start_matches('$')
        .replace(',', "");
    let budget = if typed.is_empty() {
        None
    } else {
        match typed.parse::<f64>() {
            Ok(b) => Some(b),
            Err(_) => {
                fields.add("monthly_budget", "Type an amount in dollars, e.g. 250.");
                None
            }
        }
    };
    if let Err(e) = engine::costs::limits::check_budget(budget) {
        for (field, message) in e.0 {
            fields.add(&field, message);
        }
    }
    let zone = time_zone.trim();
    if zone.is_empty() {
        fields.add("time_zone", "Type a time zone, e.g. Europe/Paris or UTC.");
    }
    if !fields.is_empty() {
        return Err(AppError::invalid("Check the highlighted fields.", fields));
    }
    let mut tx = db.tenant(user.id).await.map_err(AppError::internal)?;
    if engine::costs::limits::set_time_zone(&mut tx, user.id, zone)
        .await
        .map_err(AppError::internal)?
        .is_none()
    {
        return Err(AppError::invalid(
            "Check the highlighted fields.",
            engine::validation::FieldErrors::single(
                "time_zone",
                engine::costs::limits::zone_error(zone),
            ),
        ));
    }
    engine::costs::limits::set_budget(&mut tx, user.id, budget)
        .await
        .map_err(AppError::internal)?;
    tx.commit().await.map_err(AppError::internal)?;
    Ok(())
}

/// Keeps the browser's time zone as the account's (the Costs page and the overview send it);
/// whether it changed.
#[server(prefix = "/rpc", endpoint = "keep_time_zone")]
pub async fn keep_time_zone(time_zone: String) -> Result<bool, AppError> {
    let crate::server_context::SignedIn { user, db, .. } =
        crate::server_context::signed_in().await?;
    let mut tx = db.tenant(user.id).await.map_err(AppError::internal)?;
    let (before, _) = engine::costs::limits::time_zone(&mut tx, user.id)
        .await
        .map_err(AppError::internal)?;
    let known = engine::costs::limits::set_time_zone(&mut tx, user.id, &time_zone)
        .await
        .map_err(AppError::internal)?;
    tx.commit().await.map_err(AppError::internal)?;
    Ok(known.is_some() && before != time_zone)
}

/// The browser's IANA time zone (`Intl.DateTimeFormat().resolvedOptions().timeZone`).
#[cfg(feature = "hydrate")]
pub fn browser_time_zone() -> Option<String> {
    let format = js_sys::Intl::DateTimeFormat::new(&js_sys::Array::new(), &js_sys::Object::new());
    js_sys::Reflect::get(&format.resolved_options(), &"timeZone".into())
        .ok()?
        .as_string()
}

/// In the browser: when the account's zone (`shown`) is not the browser's, keeps the browser's
/// and loads the page again (what it shows was computed in the old zone). An island with
/// nothing to show, on the pages that count days (the overview and Costs).
#[cfg_attr(
    any(feature = "ssr", feature = "bundle-core", feature = "bundle-charts"),
    island
)]
#[cfg_attr(
    not(any(feature = "ssr", feature = "bundle-core", feature = "bundle-charts")),
    component
)]
pub fn FollowBrowserZone(shown: String) -> impl IntoView {
    #[cfg(feature = "hydrate")]
    {
        let Some(zone) = browser_time_zone() else {
            return;
        };
        if zone == shown {
            return;
        }
        leptos::task::spawn_local(async move {
            if let Ok(true) = keep_time_zone(zone).await {
                crate::components::reload();
            }
        });
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = shown;
}

#[component]
pub fn SpendingSettings() -> impl IntoView {
    let settings = Resource::new(|| (), |_| spending_summary());
    view! {
        <section class="card panel" aria-labelledby="spending-heading">
            <h2 id="spending-heading">"Spending"</h2>
            <Suspense fallback=|| view! { <Skeleton rows=2/> }>
                {move || settings.get().map(|result| match result {
                    Err(e) => view! { <ErrorState message=e.to_string()/> }.into_any(),
                    Ok(s) => view! { <SpendingForm summary=s/> }.into_any(),
                })}
            </Suspense>
        </section>
    }
}

/// The summary and the form, an island: a save shows its field errors in place and refreshes
/// the summary (without JavaScript the form posts and the page comes back).
#[cfg_attr(any(feature = "ssr", feature = "bundle-settings"), island)]
#[cfg_attr(not(any(feature = "ssr", feature = "bundle-settings")), component)]
fn SpendingForm(summary: BudgetView) -> impl IntoView {
    let save = ServerAction::<SaveSpending>::new();
    let error = move |name: &'static str| {
        Signal::derive(move || match save.value().get() {
            Some(Err(e)) => e.field(name),
            _ => None,
        })
    };
    let own = if summary.own_budget {
        format!("{:.2}", summary.monthly_budget)
    } else {
        String::new()
    };
    let zone = RwSignal::new(summary.time_zone.clone());
    let (default_budget, max_job_budget) = (summary.default_budget, summary.max_job_budget);
    let current = RwSignal::new(summary);
    Effect::new(move || {
        if let Some(Ok(())) = save.value().get() {
            leptos::task::spawn_local(async move {
                if let Ok(fresh) = spending_summary().await {
                    current.set(fresh);
                }
            });
        }
    });
    view! {
        <p class="small spend-summary">
            {move || current.with(|s| format!(
                "{} spent of {} since {} ({}); {} held by {} active job(s) of {} allowed.",
                money(s.spent_this_month),
                money(s.monthly_budget),
                s.month_start.format("%B %-d"),
                s.time_zone,
                money(s.reserved_by_active_jobs),
                s.active_jobs,
                s.max_active_jobs,
            ))}
        </p>
        <ActionForm action=save attr:class="form">
            <label for="monthly-budget">"Monthly budget " <span class="muted">"(dollars)"</span></label>
            <input id="monthly-budget" name="monthly_budget" inputmode="decimal" value=own
                placeholder=format!("{default_budget:.2} (the server's default)")
                aria-describedby="monthly-budget-hint monthly-budget-error"/>
            <p id="monthly-budget-hint" class="muted small">
                {format!(
                    "A job that could take the month past it is refused. You are told at 80% and at 100%. Leave empty for the server's default of {}; one job may be capped at {} at most.",
                    money(default_budget),
                    money(max_job_budget),
                )}
            </p>
            <FieldError id="monthly-budget-error" message=error("monthly_budget")/>
            <label for="time-zone">"Time zone"</label>
            <div class="row">
                <input id="time-zone" name="time_zone" required maxlength="64"
                    prop:value=move || zone.get()
                    on:input=move |ev| zone.set(event_target_value(&ev))
                    aria-describedby="time-zone-hint time-zone-error"/>
                <BrowserZoneButton zone/>
            </div>
            <p id="time-zone-hint" class="muted small">"Cost reports count days, and the budget counts the month, in this zone (an IANA name such as Europe/Paris)."</p>
            <FieldError id="time-zone-error" message=error("time_zone")/>
            <button type="submit" class="btn btn-primary" disabled=move || save.pending().get()>
                {move || if save.pending().get() { "Saving…" } else { "Save" }}
            </button>
            {move || match save.value().get() {
                Some(Ok(())) => Some(view! { <p class="small" role="status">"Saved."</p> }.into_any()),
                Some(Err(AppError::Invalid { .. })) => None,
                Some(Err(e)) => Some(view! { <p class="form-error" role="alert">{e.to_string()}</p> }.into_any()),
                None => None,
            }}
        </ActionForm>
    }
}

/// "Use this browser's zone" — only once the page runs in the browser (the server cannot know).
#[component]
fn BrowserZoneButton(zone: RwSignal<String>) -> impl IntoView {
    let browser = RwSignal::new(None::<String>);
    #[cfg(feature = "hydrate")]
    Effect::new(move || browser.set(browser_time_zone()));
    move || {
        browser.get().map(|tz| {
            let label = format!("Use this browser's ({tz})");
            view! {
                <button type="button" class="btn btn-small" on:click=move |_| zone.set(tz.clone())>{label}</button>
            }
        })
    }
}
