//! The API reference page (`/docs/api`): the server's OpenAPI document (`/api/openapi.json`,
//! generated from the Rust types) rendered as a page — every operation by section with its
//! parameters, request body and answers. Server-rendered only: it has no island.

use leptos::prelude::*;
use serde_json::Value;

use crate::components::PageHeader;

/// The OpenAPI document, put in the request's context by the server.
#[derive(Clone)]
pub struct ApiDocument(pub std::sync::Arc<Value>);

/// One operation as the page shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    pub method: String,
    pub path: String,
    pub summary: String,
    pub details: String,
    /// `(name, where, required, description)`.
    pub parameters: Vec<(String, String, bool, String)>,
    pub request: Option<String>,
    /// `(status, description, body)`.
    pub responses: Vec<(String, String, Option<String>)>,
    pub public: bool,
}

/// A section of operations (an OpenAPI tag).
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    pub name: String,
    pub description: String,
    pub operations: Vec<Operation>,
}

/// A schema's name as the page shows it: a reference's name, an envelope's `data`, a list's
/// items.
fn schema_name(schema: &Value) -> Option<String> {
    if let Some(reference) = schema["$ref"].as_str() {
        return reference.rsplit('/').next().map(str::to_owned);
    }
    if let Some(items) = schema.get("items") {
        return schema_name(items).map(|name| format!("[{name}]"));
    }
    if let Some(data) = schema["properties"].get("data") {
        return schema_name(data).map(|name| format!("{{success, data: {name}}}"));
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(first) = schema[key].as_array().and_then(|all| {
            all.iter()
                .find(|s| s["type"] != "null")
                .and_then(schema_name)
        }) {
            return Some(first);
        }
    }
    schema["type"].as_str().map(str::to_owned)
}

/// The first schema of a content map (`{"application/json": {"schema": …}}`).
fn content_schema(content: &Value) -> Option<String> {
    content
        .as_object()?
        .iter()
        .next()
        .and_then(|(kind, media)| {
            schema_name(&media["schema"]).map(|name| {
                if kind == "application/json" {
                    name
                } else {
                    format!("{name} ({kind})")
                }
            })
        })
}

/// The document's operations by tag, in the document's order.
pub fn sections(document: &Value) -> Vec<Section> {
    let mut sections: Vec<Section> = document["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|tag| Section {
            name: tag["name"].as_str().unwrap_or_default().to_owned(),
            description: tag["description"].as_str().unwrap_or_default().to_owned(),
            operations: Vec::new(),
        })
        .collect();
    let Some(paths) = document["paths"].as_object() else {
        return sections;
    };
    for (path, item) in paths {
        let Some(item) = item.as_object() else {
            continue;
        };
        for (method, op) in item {
            let description = op["description"].as_str().unwrap_or_default();
            let (summary, details) = match op["summary"].as_str() {
                Some(summary) => (summary.to_owned(), description.to_owned()),
                None => match description.split_once("\n\n") {
                    Some((first, rest)) => (first.to_owned(), rest.to_owned()),
                    None => (description.to_owned(), String::new()),
                },
            };
            let operation = Operation {
                method: method.to_uppercase(),
                path: path.clone(),
                summary: summary.replace('\n', " "),
                details: details.replace('\n', " "),
                parameters: op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| {
                        (
                            p["name"].as_str().unwrap_or_default().to_owned(),
                            p["in"].as_str().unwrap_or_default().to_owned(),
                            p["required"].as_bool().unwrap_or(false),
                            p["description"].as_str().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect(),
                request: content_schema(&op["requestBody"]["content"]),
                responses: op["responses"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(status, r)| {
                        (
                            status.clone(),
                            r["description"].as_str().unwrap_or_default().to_owned(),
                            content_schema(&r["content"]),
                        )
                    })
                    .collect(),
                public: op["security"].as_array().is_some_and(|all| {
                    all.iter()
                        .all(|s| s.as_object().is_some_and(|o| o.is_empty()))
                }),
            };
            let tag = op["tags"][0].as_str().unwrap_or("other");
            match sections.iter_mut().find(|s| s.name == tag) {
                Some(section) => section.operations.push(operation),
                None => sections.push(Section {
                    name: tag.to_owned(),
                    description: String::new(),
                    operations: vec![operation],
                }),
            }
        }
    }
    sections.retain(|s| !s.operations.is_empty());
    sections
}

#[component]
pub fn ApiReferencePage() -> impl IntoView {
    #[cfg(feature = "ssr")]
    let document = use_context::<ApiDocument>().map(|d| d.0);
    #[cfg(not(feature = "ssr"))]
    let document: Option<std::sync::Arc<Value>> = None;
    let sections = document.as_deref().map(sections).unwrap_or_default();
    let version = document
        .as_deref()
        .and_then(|d| d["info"]["version"].as_str().map(str::to_owned))
        .unwrap_or_default();
    view! {
        <PageHeader
            title="API reference"
            description="Every route of the REST API, generated from the server's types. Scripts authenticate with an API token from Settings."
        >
            <a class="btn" href="/api/openapi.json" download="openapi.json">"OpenAPI document"</a>
        </PageHeader>
        <p class="small muted">
            "Version " {version} ". Answers are " <code>"{\"success\": true, \"data\": …}"</code> " or "
            <code>"{\"error\", \"details\"}"</code> "; another account's ids answer 404. "
            <code>"Idempotency-Key"</code> " makes creating a job or dataset safe to repeat."
        </p>
        <nav class="api-toc" aria-label="Sections">
            {sections
                .iter()
                .map(|s| view! { <a href=format!("#{}", s.name)>{s.name.clone()}</a> })
                .collect_view()}
        </nav>
        {sections
            .into_iter()
            .map(|section| {
                view! {
                    <section class="card api-section" id=section.name.clone()>
                        <h2>{section.name.clone()}</h2>
                        <p class="muted">{section.description.clone()}</p>
                        {section.operations.into_iter().map(operation_view).collect_view()}
                    </section>
                }
            })
            .collect_view()}
    }
}

fn operation_view(op: Operation) -> impl IntoView {
    let method_class = format!("api-method api-{}", op.method.to_lowercase());
    view! {
        <article class="api-operation">
            <h3>
                <span class=method_class>{op.method.clone()}</span>
                " "
                <code>{op.path.clone()}</code>
                {op.public.then(|| view! { <span class="badge">"no sign-in"</span> })}
            </h3>
            <p>{op.summary.clone()}</p>
            {(!op.details.is_empty()).then(|| view! { <p class="small muted">{op.details.clone()}</p> })}
            {(!op.parameters.is_empty())
                .then(|| {
                    view! {
                        <div class="table-wrap">
                            <table class="table api-table">
                                <thead>
                                    <tr><th>"Parameter"</th><th>"In"</th><th>"Required"</th><th>"Description"</th></tr>
                                </thead>
                                <tbody>
                                    {op.parameters
                                        .into_iter()
                                        .map(|(name, location, required, description)| {
                                            view! {
                                                <tr>
                                                    <td><code>{name}</code></td>
                                                    <td>{location}</td>
                                                    <td>{if required { "yes" } else { "no" }}</td>
                                                    <td>{description}</td>
                                                </tr>
                                            }
                                        })
                                        .collect_view()}
                                </tbody>
                            </table>
                        </div>
                    }
                })}
            {op.request.map(|r| view! { <p class="small">"Body: " <code>{r}</code></p> })}
            <ul class="api-responses small">
                {op.responses
                    .into_iter()
                    .map(|(status, description, body)| {
                        view! {
                            <li>
                                <strong>{status}</strong>
                                " " {description}
                                {body.map(|b| view! { " — " <code>{b}</code> })}
                            </li>
                        }
                    })
                    .collect_view()}
            </ul>
        </article>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_grouped_by_tag_with_their_schemas() {
        let document = serde_json::json!({
            "tags": [{"name": "jobs", "description": "Jobs."}, {"name": "unused"}],
            "paths": {"/api/jobs": {"post": {
                "tags": ["jobs"],
                "description": "Creates a job.\n\nMore words.",
                "parameters": [{"name": "Idempotency-Key", "in": "header", "required": false}],
                "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/JobRequest"}}}},
                "responses": {"201": {"description": "", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"success": {"type": "boolean"}, "data": {"$ref": "#/components/schemas/CreatedJob"}}
                }}}}},
                "security": [{}]
            }}}
        });
        let sections = sections(&document);
        assert_eq!(sections.len(), 1, "empty tags are left out");
        let op = &sections[0].operations[0];
        assert_eq!(
            (op.method.as_str(), op.path.as_str()),
            ("POST", "/api/jobs")
        );
        assert_eq!(op.summary, "Creates a job.");
        assert_eq!(op.details, "More words.");
        assert_eq!(op.request.as_deref(), Some("JobRequest"));
        assert_eq!(
            op.responses[0].2.as_deref(),
            Some("{success, data: CreatedJob}")
        );
        assert!(op.public);
        assert_eq!(op.parameters[0].0, "Idempotency-Key");
    }
}
