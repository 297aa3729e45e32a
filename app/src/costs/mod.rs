//! Costs: what training has cost, by day, GPU type and job (arrives with the costs capability).

use leptos::prelude::*;

use crate::components::{EmptyState, PageHeader};

#[component]
pub fn CostsPage() -> impl IntoView {
    view! {
        <PageHeader title="Costs" description="GPU spend from real execution time, by day, GPU type and job."/>
        <EmptyState icon="$" title="No costs recorded">
            <p>"You have not run any training yet, so nothing has been billed. Each finished job records its cost exactly once, from its measured execution time."</p>
        </EmptyState>
    }
}
