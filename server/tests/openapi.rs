//! The OpenAPI document (`GET /api/openapi.json`): it lists every route and method the router
//! serves (asked of the router itself: each path's `Allow` on an unknown method), every `$ref`
//! resolves, every operation answers and is tagged, and the schemas are the wire types'.

mod common;

use std::collections::BTreeSet;

use common::TestApp;
use serde_json::Value;

#[tokio::test]
async fn the_document_lists_every_route_and_method_the_router_serves() {
    let app = TestApp::spawn().await;
    let (client, _) = app.signed_in_user("reader@example.com").await;
    let response = reqwest::get(app.url("/api/openapi.json")).await.unwrap();
    assert_eq!(
        response.status(),
        200,
        "public, like the API's reference page"
    );
    let document: Value = response.json().await.unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3.1"));

    let mut documented = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    let mut served = BTreeSet::new();
    for path in server::routes::api().paths() {
        // Any value selects the route; the document spells a catch-all `{*key}` as `{key}`.
        let concrete = path
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') {
                    "x"
                } else {
                    segment
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        for method in common::served_methods(&app, &client, &concrete).await {
            served.insert((method.to_string(), path.replace("{*", "{")));
        }
    }
    let missing: Vec<_> = served.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "served but not in the OpenAPI document (add #[utoipa::path] and list it in openapi::ApiDoc): {missing:?}"
    );
    let extra: Vec<_> = documented.difference(&served).collect();
    assert!(extra.is_empty(), "documented but not served: {extra:?}");
    assert!(served.len() >= 40, "{served:?}");
}

#[tokio::test]
async fn every_reference_resolves_and_every_operation_answers_and_is_tagged() {
    let app = TestApp::spawn().await;
    let text = reqwest::get(app.url("/api/openapi.json"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let document: Value = serde_json::from_str(&text).unwrap();
    let schemas = document["components"]["schemas"].as_object().unwrap();
    let missing: BTreeSet<&str> = text
        .split("\"$ref\":\"#/components/schemas/")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap())
        .filter(|name| !schemas.contains_key(*name))
        .collect();
    assert!(missing.is_empty(), "unresolved references: {missing:?}");
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            assert!(
                operation["responses"]
                    .as_object()
                    .is_some_and(|r| !r.is_empty()),
                "{method} {path} has no responses"
            );
            assert!(operation["tags"].is_array(), "{method} {path} has no tag");
        }
    }
    // Auth: a token or the session everywhere, except where an operation says it needs none.
    let schemes = document["components"]["securitySchemes"]
        .as_object()
        .unwrap();
    assert!(schemes.contains_key("token") && schemes.contains_key("session"));
    assert_eq!(
        document["paths"]["/api/auth/login"]["post"]["security"],
        serde_json::json!([{}])
    );
    // The schemas are the wire types': the job request with the original's spelling of the GPU,
    // partial hyperparameters, and the error envelope.
    let job_request = &schemas["JobRequest"]["properties"];
    assert!(job_request["gpu_config"].is_object(), "{job_request}");
    assert!(job_request["hyperparameters"].is_object());
    let hyperparameters = &schemas["HyperparameterInput"]["properties"];
    assert!(hyperparameters["epochs"].is_object(), "{hyperparameters}");
    assert!(schemas["ErrorBody"]["properties"]["error"].is_object());
    let job = &schemas["JobView"]["properties"];
    for field in [
        "status",
        "current_stage",
        "progress",
        "current_step",
        "total_steps",
        "current_cost",
        "estimated_total_cost",
        "final_cost",
        "error_message",
        "artifact_id",
    ] {
        assert!(job[field].is_object(), "JobView lacks {field}");
    }
}
