//! Models: trained LoRA adapters (arrives with the model artifacts capability).

use leptos::prelude::*;

use crate::components::{EmptyState, PageHeader};

#[component]
pub fn ModelsPage() -> impl IntoView {
    view! {
        <PageHeader title="Models" description="Trained adapters with quality ratings and downloads."/>
        <EmptyState icon="◆" title="No models yet">
            <p>"Every successful training job produces a LoRA adapter here: adapter_config.json, adapter_model.safetensors and the tokenizer, rated 1–5 from its real metrics."</p>
        </EmptyState>
    }
}
