//! Train: configure a job from presets with a live cost estimate (arrives with the training
//! configuration capability).

use leptos::prelude::*;

use crate::components::{EmptyState, PageHeader};

#[component]
pub fn TrainPage() -> impl IntoView {
    view! {
        <PageHeader title="Train" description="Pick a dataset, a base model and a preset; see the cost before you start."/>
        <EmptyState icon="▶" title="Nothing to train on yet">
            <p>"Training needs a validated dataset. Once you have one, this page lets you choose the base model, a Fast, Balanced or Quality preset and a GPU, with a live cost estimate."</p>
            <p><a href="/datasets">"Go to your datasets"</a></p>
        </EmptyState>
    }
}
