//! Accounts over the REST API: register / login / logout / me, tokens, and the bad inputs.

mod common;

use common::{PASSWORD, TestApp};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, ORIGIN, SET_COOKIE};
use serde_json::{Value, json};

#[tokio::test]
async fn register_login_logout_me() {
    let app = TestApp::spawn().await;
    let client = TestApp::browser();

    let response = app
        .post(
            &client,
            "/api/auth/register",
            json!({ "email": "  Ada@Example.com ", "password": PASSWORD }),
        )
        .await;
    assert_eq!(response.status(), 201);
    let cookie = response
        .headers()
        .get(SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["success"], true);
    assert_eq!(body["data"]["user"]["email"], "ada@example.com");

    let me: Value = client
        .get(app.url("/api/auth/me"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["data"]["user"]["email"], "ada@example.com");

    let response = app.post(&client, "/api/auth/logout", json!({})).await;
    assert_eq!(response.status(), 200);
    let response = client.get(app.url("/api/auth/me")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "authentication required");

    // A fresh login works and is a new session.
    let response = app
        .post(
            &client,
            "/api/auth/login",
            json!({ "email": "ADA@example.com", "password": PASSWORD }),
        )
        .await;
    assert_eq!(response.status(), 200);
    let response = client.get(app.url("/api/auth/me")).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn logout_really_ends_the_session_server_side() {
    let app = TestApp::spawn().await;
    let client = TestApp::browser();
    let response = app
        .post(
            &client,
            "/api/auth/register",
            json!({ "email": "eve@example.com", "password": PASSWORD }),
        )
        .await;
    let cookie = response
        .headers()
        .get(SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap();
    let pair = cookie.split(';').next().unwrap().to_owned();
    app.post(&client, "/api/auth/logout", json!({})).await;
    // Replaying the old cookie value after logout gets nothing.
    let replay = reqwest::Client::new()
        .get(app.url("/api/auth/me"))
        .header("cookie", pair)
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 401);
}

#[tokio::test]
async fn duplicate_email_is_409_with_a_field_error() {
    let app = TestApp::spawn().await;
    app.register(&TestApp::browser(), "dup@example.com").await;
    let response = app
        .post(
            &TestApp::browser(),
            "/api/auth/register",
            json!({ "email": "DUP@example.com", "password": PASSWORD }),
        )
        .await;
    assert_eq!(response.status(), 409);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["details"]["fields"]["email"]
            .as_str()
            .unwrap()
            .contains("already registered")
    );
}

#[tokio::test]
async fn invalid_registrations_are_400_with_field_errors() {
    let app = TestApp::spawn().await;
    let client = TestApp::browser();
    let response = app
        .post(
            &client,
            "/api/auth/register",
            json!({ "email": "ok@example.com", "password": "short" }),
        )
        .await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "validation failed");
    assert!(
        body["details"]["fields"]["password"]
            .as_str()
            .unwrap()
            .contains("at least 10")
    );

    let response = app
        .post(
            &client,
            "/api/auth/register",
            json!({ "email": "not-an-email", "password": PASSWORD }),
        )
        .await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(body["details"]["fields"]["email"].is_string());

    // Malformed JSON and missing fields are 400 in the same envelope, never a 500.
    for raw in ["{not json", r#"{"email": "a@b.co"}"#, "[]"] {
        let response = client
            .post(app.url("/api/auth/register"))
            .header(ORIGIN, &app.address)
            .header(CONTENT_TYPE, "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{raw}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "malformed request");
    }
}

#[tokio::test]
async fn wrong_password_is_401_and_unknown_email_looks_the_same() {
    let app = TestApp::spawn().await;
    app.register(&TestApp::browser(), "bob@example.com").await;
    let client = TestApp::browser();
    let wrong = app
        .post(
            &client,
            "/api/auth/login",
            json!({ "email": "bob@example.com", "password": "not the password" }),
        )
        .await;
    assert_eq!(wrong.status(), 401);
    let wrong: Value = wrong.json().await.unwrap();
    let unknown = app
        .post(
            &client,
            "/api/auth/login",
            json!({ "email": "nobody@example.com", "password": "not the password" }),
        )
        .await;
    assert_eq!(unknown.status(), 401);
    let unknown: Value = unknown.json().await.unwrap();
    assert_eq!(wrong, unknown);
    assert_eq!(wrong["error"], "invalid email or password");
}

#[tokio::test]
async fn missing_or_forged_origin_is_403() {
    let app = TestApp::spawn().await;
    let client = TestApp::browser();
    let body = json!({ "email": "csrf@example.com", "password": PASSWORD }).to_string();

    let no_origin = client
        .post(app.url("/api/auth/register"))
        .header(CONTENT_TYPE, "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(no_origin.status(), 403);
    let forged = client
        .post(app.url("/api/auth/register"))
        .header(ORIGIN, "https://evil.example")
        .header(CONTENT_TYPE, "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let error: Value = forged.json().await.unwrap();
    assert!(error["error"].as_str().unwrap().contains("cross-site"));

    // Signed in with a cookie, a forged origin still cannot act (e.g. create a token or log out).
    app.register(&client, "csrf@example.com").await;
    for path in ["/api/tokens", "/api/auth/logout"] {
        let forged = client
            .post(app.url(path))
            .header(ORIGIN, "https://evil.example")
            .header(CONTENT_TYPE, "application/json")
            .body(r#"{"name":"x"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(forged.status(), 403, "{path}");
    }
    // A Referer from our own site is accepted when Origin is absent.
    let referer = client
        .post(app.url("/api/tokens"))
        .header("referer", format!("{}/settings", app.address))
        .header(CONTENT_TYPE, "application/json")
        .body(r#"{"name":"via referer"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(referer.status(), 201);
    // Server functions are protected the same way.
    let forged_rpc = client
        .post(app.url("/rpc/logout"))
        .header(ORIGIN, "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(forged_rpc.status(), 403);
    let me = client.get(app.url("/api/auth/me")).send().await.unwrap();
    assert_eq!(me.status(), 200, "the forged requests changed nothing");
}

#[tokio::test]
async fn repeated_failed_logins_are_rate_limited() {
    let app = TestApp::spawn().await;
    app.register(&TestApp::browser(), "limit@example.com").await;
    let client = TestApp::browser();
    let attempt = |password: &'static str| {
        app.post(
            &client,
            "/api/auth/login",
            json!({ "email": "limit@example.com", "password": password }),
        )
    };
    for _ in 0..engine::accounts::store::LOGIN_MAX_FAILURES {
        assert_eq!(attempt("wrong password").await.status(), 401);
    }
    let limited = attempt("wrong password").await;
    assert_eq!(limited.status(), 429);
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after > 0 && retry_after <= 15 * 60);
    let body: Value = limited.json().await.unwrap();
    assert!(body["details"]["retry_after_seconds"].as_u64().unwrap() > 0);
    // Even the right password waits: the limit is per account, not per guess.
    assert_eq!(attempt(PASSWORD).await.status(), 429);
}

#[tokio::test]
async fn api_tokens_are_shown_once_and_work_as_bearer() {
    let app = TestApp::spawn().await;
    let (alice, _) = app.signed_in_user("alice@example.com").await;
    let response = app
        .post(&alice, "/api/tokens", json!({ "name": "ci" }))
        .await;
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    let token = created["data"]["token"].as_str().unwrap().to_owned();
    let token_id = created["data"]["id"].as_str().unwrap().to_owned();
    assert!(token.starts_with("lpt_"));

    // Listed without the secret.
    let list: Value = alice
        .get(app.url("/api/tokens"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert!(list["data"][0].get("token").is_none());
    assert!(!list.to_string().contains(&token));

    // Bearer auth, without cookies and without an Origin header (scripts have none).
    let script = reqwest::Client::new();
    let me: Value = script
        .get(app.url("/api/auth/me"))
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["data"]["user"]["email"], "alice@example.com");
    let second = script
        .post(app.url("/api/tokens"))
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .json(&json!({ "name": "from a script" }))
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 201);

    // A bad token is 401, never anonymous.
    for header in ["Bearer lpt_nope", "Basic abc", "Bearer "] {
        let response = script
            .get(app.url("/api/auth/me"))
            .header(AUTHORIZATION, header)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{header}");
    }

    // Another user cannot see or revoke it: 404, exactly like a missing id.
    let (mallory, _) = app.signed_in_user("mallory@example.com").await;
    let list: Value = mallory
        .get(app.url("/api/tokens"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
    let steal = mallory
        .delete(app.url(&format!("/api/tokens/{token_id}")))
        .header(ORIGIN, &app.address)
        .send()
        .await
        .unwrap();
    assert_eq!(steal.status(), 404);
    let missing = mallory
        .delete(app.url(&format!("/api/tokens/{}", uuid::Uuid::new_v4())))
        .header(ORIGIN, &app.address)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    // The owner revokes it; it stops working at once.
    let revoke = alice
        .delete(app.url(&format!("/api/tokens/{token_id}")))
        .header(ORIGIN, &app.address)
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), 200);
    let after = script
        .get(app.url("/api/auth/me"))
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 401);

    // Token names are validated.
    let empty = app
        .post(&alice, "/api/tokens", json!({ "name": "  " }))
        .await;
    assert_eq!(empty.status(), 400);
}

#[tokio::test]
async fn health_and_readiness() {
    let app = TestApp::spawn().await;
    let client = reqwest::Client::new();
    let health = client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready: Value = client
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["migrations"], "current");
    let unknown = client
        .get(app.url("/api/nothing-here"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let body: Value = unknown.json().await.unwrap();
    assert_eq!(body["error"], "not found");
}

#[tokio::test]
async fn pages_need_a_login_and_keep_the_destination() {
    let app = TestApp::spawn().await;
    let anonymous = TestApp::browser();
    for path in [
        "/datasets",
        "/train",
        "/jobs",
        "/models",
        "/costs",
        "/notifications",
        "/",
    ] {
        let response = anonymous.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 303, "{path}");
        let location = response.headers()["location"].to_str().unwrap();
        assert!(location.starts_with("/login?next="), "{path} → {location}");
    }
    let (client, _) = app.signed_in_user("pages@example.com").await;
    for path in [
        "/",
        "/datasets",
        "/train",
        "/jobs",
        "/models",
        "/costs",
        "/notifications",
    ] {
        let response = client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let html = response.text().await.unwrap();
        assert!(
            html.contains("pages@example.com"),
            "{path} shows who is signed in"
        );
    }
    let login = client.get(app.url("/login")).send().await.unwrap();
    assert_eq!(login.status(), 303, "signed-in users skip the login page");
}
