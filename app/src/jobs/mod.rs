//! Jobs: training runs and their live progress (arrives with the training execution capability).

use leptos::prelude::*;

use crate::components::{EmptyState, PageHeader};

#[component]
pub fn JobsPage() -> impl IntoView {
    view! {
        <PageHeader title="Jobs" description="Your training runs: status, progress and cost so far."/>
        <EmptyState icon="◷" title="No training jobs yet">
            <p>"Jobs you start from the Train page appear here, with live progress, loss charts and the cost so far against the estimate."</p>
            <p><a href="/train">"Configure a training job"</a></p>
        </EmptyState>
    }
}
