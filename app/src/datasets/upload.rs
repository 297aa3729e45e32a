//! The upload page: pick or drop a file, see a real progress bar (bytes sent of total, speed,
//! time left), cancel, and land on the dataset's page, which follows validation live.
//!
//! The file goes straight to storage through the signed URL (an XMLHttpRequest PUT, whose
//! upload progress events drive the bar); the server only sees the confirm call.

use engine::datasets::{NewDataset, NewDatasetError, check_new_dataset};
use leptos::html;
use leptos::prelude::*;
use uuid::Uuid;

use super::{UploadTicket, create_dataset};
use crate::components::{FieldError, PageHeader};
use crate::error::AppError;

/// The request in flight, so Cancel can abort it (browser only).
#[cfg(feature = "hydrate")]
type RequestSlot = StoredValue<Option<web_sys::XmlHttpRequest>, LocalStorage>;
#[cfg(not(feature = "hydrate"))]
type RequestSlot = ();

#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
enum Phase {
    Idle,
    Creating,
    Uploading,
    Confirming,
    Failed(String),
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct Progress {
    sent: f64,
    total: f64,
    /// Milliseconds since the upload started.
    elapsed_ms: f64,
}

impl Progress {
    fn percent(&self) -> f64 {
        if self.total > 0.0 {
            (self.sent / self.total * 100.0).min(100.0)
        } else {
            0.0
        }
    }

    fn speed(&self) -> f64 {
        if self.elapsed_ms > 0.0 {
            self.sent / (self.elapsed_ms / 1000.0)
        } else {
            0.0
        }
    }

    fn summary(&self) -> String {
        let speed = self.speed();
        let left = if speed > 0.0 {
            engine::format::duration(((self.total - self.sent) / speed).ceil() as u64)
        } else {
            "…".into()
        };
        format!(
            "{} of {} · {}/s · {} left",
            engine::format::bytes(self.sent as u64),
            engine::format::bytes(self.total as u64),
            engine::format::bytes(speed as u64),
            left
        )
    }
}

#[component]
pub fn UploadPage() -> impl IntoView {
    view! {
        <PageHeader title="Upload a dataset" description="JSON or JSONL, up to 500 MB: OpenAI chat, Alpaca, ShareGPT or brightrun-lora-v4. The format is detected for you."/>
        <UploadForm/>
    }
}

/// The form, an island: the file goes from the browser to storage with a progress bar.
#[cfg_attr(any(feature = "ssr", feature = "bundle-upload"), island)]
#[cfg_attr(not(any(feature = "ssr", feature = "bundle-upload")), component)]
fn UploadForm() -> impl IntoView {
    let name = RwSignal::new(String::new());
    let description = RwSignal::new(String::new());
    let chosen = RwSignal::new(None::<(String, u64)>);
    let errors = RwSignal::new(engine::validation::FieldErrors::new());
    let phase = RwSignal::new(Phase::Idle);
    let progress = RwSignal::new(Progress::default());
    let dragging = RwSignal::new(false);
    let file_input = NodeRef::<html::Input>::new();
    let uploading_id = RwSignal::new(None::<Uuid>);
    #[cfg(feature = "hydrate")]
    let request: RequestSlot = StoredValue::new_local(None::<web_sys::XmlHttpRequest>);
    #[cfg(not(feature = "hydrate"))]
    let request: RequestSlot = ();
    // Effects run only in the browser: this turns true once the page is hydrated.
    let interactive = RwSignal::new(false);
    Effect::new(move || interactive.set(true));

    let busy = move || {
        matches!(
            phase.get(),
            Phase::Creating | Phase::Uploading | Phase::Confirming
        )
    };

    // Reads the chosen file's name and size from the input (after picking or dropping).
    let read_choice = move || {
        #[cfg(feature = "hydrate")]
        if let Some(input) = file_input.get_untracked() {
            let file = input.files().and_then(|files| files.get(0));
            chosen.set(file.map(|f| (f.name(), f.size() as u64)));
            if name.get_untracked().trim().is_empty()
                && let Some((file_name, _)) = chosen.get_untracked()
            {
                let stem = file_name
                    .rsplit_once('.')
                    .map(|(s, _)| s.to_owned())
                    .unwrap_or(file_name);
                name.set(stem);
            }
        }
    };

    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        if busy() {
            return;
        }
        let Some((file_name, file_size)) = chosen.get_untracked() else {
            errors.set(engine::validation::FieldErrors::single(
                "file",
                "Choose a .json or .jsonl file.",
            ));
            return;
        };
        let new = NewDataset {
            name: name.get_untracked(),
            description: Some(description.get_untracked()).filter(|d| !d.trim().is_empty()),
            file_name,
            file_size,
        };
        // The same rules as the server, before anything is sent.
        match check_new_dataset(&new) {
            Ok(()) => errors.set(Default::default()),
            Err(NewDatasetError::Invalid(fields)) => {
                errors.set(fields);
                return;
            }
            Err(NewDatasetError::TooLarge { size }) => {
                errors.set(engine::validation::FieldErrors::single(
                    "file",
                    format!(
                        "This file is {}; the limit is 500 MB.",
                        engine::format::bytes(size)
                    ),
                ));
                return;
            }
        }
        phase.set(Phase::Creating);
        progress.set(Progress {
            total: new.file_size as f64,
            ..Default::default()
        });
        leptos::task::spawn_local(async move {
            match create_dataset(new.name, new.description, new.file_name, new.file_size).await {
                Ok(ticket) => {
                    uploading_id.set(Some(ticket.id));
                    start_upload(ticket, phase, progress, file_input, request);
                }
                Err(AppError::Invalid { message, fields }) => {
                    errors.set(engine::validation::FieldErrors(fields));
                    phase.set(Phase::Failed(message));
                }
                Err(e) => phase.set(Phase::Failed(e.to_string())),
            }
        });
    };

    let cancel = move |_| {
        #[cfg(feature = "hydrate")]
        request.with_value(|r| {
            if let Some(xhr) = r {
                let _ = xhr.abort();
            }
        });
        #[cfg(not(feature = "hydrate"))]
        let () = request;
        phase.set(Phase::Cancelled);
        // The half-uploaded dataset is removed, not left behind.
        if let Some(id) = uploading_id.get_untracked() {
            leptos::task::spawn_local(async move {
                let _ = super::delete_dataset(id, None).await;
            });
        }
    };

    let field = move |name: &'static str| {
        Signal::derive(move || errors.with(|e| e.get(name).map(str::to_owned)))
    };

    view! {
        // Shown until the page is interactive (a <noscript> would break hydration).
        <p class="form-error" hidden=move || interactive.get()>
            "Uploading from this page needs JavaScript (for the progress bar). Without it, use the API: POST /api/datasets, PUT the file to the returned uploadUrl, then POST /api/datasets/{id}/confirm."
        </p>
        <form class="card panel form upload-form" on:submit=submit novalidate>
            <label
                class="dropzone"
                class:dragging=move || dragging.get()
                for="file"
                on:dragover=move |ev: leptos::ev::DragEvent| {
                    ev.prevent_default();
                    dragging.set(true);
                }
                on:dragleave=move |_| dragging.set(false)
                on:drop=move |ev: leptos::ev::DragEvent| {
                    ev.prevent_default();
                    dragging.set(false);
                    #[cfg(feature = "hydrate")]
                    if let (Some(transfer), Some(input)) = (ev.data_transfer(), file_input.get_untracked())
                        && let Some(files) = transfer.files()
                    {
                        input.set_files(Some(&files));
                        read_choice();
                    }
                }
            >
                <span class="dropzone-icon" aria-hidden="true">"⇪"</span>
                <strong>
                    {move || match chosen.get() {
                        Some((file, size)) => format!("{file} · {}", engine::format::bytes(size)),
                        None => "Drop a file here, or choose one".to_owned(),
                    }}
                </strong>
                <span class="muted small">".json or .jsonl, up to 500 MB"</span>
                <input
                    id="file"
                    node_ref=file_input
                    type="file"
                    name="file"
                    accept=".json,.jsonl,application/json"
                    aria-describedby="file-error"
                    disabled=busy
                    on:change=move |_| read_choice()
                />
            </label>
            <FieldError id="file-error" message=field("file")/>
            <FieldError id="file-name-error" message=field("file_name")/>
            <label for="name">"Name"</label>
            <input
                id="name"
                name="name"
                maxlength="200"
                aria-describedby="name-error"
                prop:value=move || name.get()
                on:input=move |ev| name.set(event_target_value(&ev))
                disabled=busy
            />
            <FieldError id="name-error" message=field("name")/>
            <label for="description">"Description " <span class="muted">"(optional)"</span></label>
            <textarea
                id="description"
                name="description"
                rows="2"
                maxlength="5000"
                prop:value=move || description.get()
                on:input=move |ev| description.set(event_target_value(&ev))
                disabled=busy
            ></textarea>
            {move || match phase.get() {
                Phase::Uploading | Phase::Creating | Phase::Confirming => {
                    let p = progress.get();
                    view! {
                        <div class="upload-progress" role="status" aria-live="polite">
                            <progress max="100" value=p.percent() aria-label="Upload progress"></progress>
                            <p class="small">
                                {match phase.get() {
                                    Phase::Creating => "Preparing the upload…".to_owned(),
                                    Phase::Confirming => "Upload complete. Starting validation…".to_owned(),
                                    _ => format!("{:.0}% · {}", p.percent(), p.summary()),
                                }}
                            </p>
                            <button type="button" class="btn btn-small" on:click=cancel>"Cancel upload"</button>
                        </div>
                    }.into_any()
                }
                Phase::Failed(message) => view! { <p class="form-error" role="alert">{message}</p> }.into_any(),
                Phase::Cancelled => view! { <p class="muted" role="status">"Upload cancelled. Nothing was kept."</p> }.into_any(),
                Phase::Idle => ().into_any(),
            }}
            <button type="submit" class="btn btn-primary" disabled=busy>
                {move || if busy() { "Uploading…" } else { "Upload and validate" }}
            </button>
        </form>
    }
}

/// Sends the file to the signed URL, reporting progress; confirms when it has all arrived.
fn start_upload(
    ticket: UploadTicket,
    phase: RwSignal<Phase>,
    progress: RwSignal<Progress>,
    file_input: NodeRef<html::Input>,
    request: RequestSlot,
) {
    #[cfg(feature = "hydrate")]
    {
        use wasm_bindgen::JsCast;
        use wasm_bindgen::closure::Closure;

        let Some(file) = file_input
            .get_untracked()
            .and_then(|i| i.files())
            .and_then(|f| f.get(0))
        else {
            phase.set(Phase::Failed(
                "The file is no longer selected; choose it again.".into(),
            ));
            return;
        };
        let xhr = match web_sys::XmlHttpRequest::new() {
            Ok(xhr) => xhr,
            Err(_) => {
                phase.set(Phase::Failed("This browser cannot upload files.".into()));
                return;
            }
        };
        let started = js_sys::Date::now();
        let on_progress =
            Closure::<dyn FnMut(web_sys::ProgressEvent)>::new(move |e: web_sys::ProgressEvent| {
                progress.set(Progress {
                    sent: e.loaded(),
                    total: if e.length_computable() {
                        e.total()
                    } else {
                        progress.get_untracked().total
                    },
                    elapsed_ms: js_sys::Date::now() - started,
                });
            });
        let done_xhr = xhr.clone();
        let id = ticket.id;
        let on_done = Closure::<dyn FnMut()>::new(move || {
            if phase.get_untracked() == Phase::Cancelled {
                return;
            }
            let status = done_xhr.status().unwrap_or(0);
            if status == 200 {
                phase.set(Phase::Confirming);
                leptos::task::spawn_local(async move {
                    match super::confirm_dataset(id).await {
                        Ok(()) => crate::components::go_to(&format!("/datasets/{id}")),
                        Err(e) => phase.set(Phase::Failed(e.to_string())),
                    }
                });
            } else if status == 0 {
                phase.set(Phase::Failed(
                    "The connection was lost during the upload. Check your connection and try again.".into(),
                ));
            } else {
                let detail = done_xhr.response_text().ok().flatten().unwrap_or_default();
                phase.set(Phase::Failed(format!(
                    "The upload was refused ({status}): {detail}"
                )));
            }
        });
        let sent = (|| -> Result<(), wasm_bindgen::JsValue> {
            xhr.open("PUT", &ticket.upload_url)?;
            xhr.upload()?
                .set_onprogress(Some(on_progress.as_ref().unchecked_ref()));
            xhr.set_onloadend(Some(on_done.as_ref().unchecked_ref()));
            xhr.send_with_opt_blob(Some(&file))
        })();
        // The callbacks live as long as the page (one upload at a time).
        on_progress.forget();
        on_done.forget();
        match sent {
            Ok(()) => {
                request.set_value(Some(xhr));
                phase.set(Phase::Uploading);
            }
            Err(_) => phase.set(Phase::Failed(
                "The upload could not start; try again.".into(),
            )),
        }
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let _ = (ticket, progress, file_input, request);
        phase.set(Phase::Failed("Uploading needs JavaScript.".into()));
    }
}
