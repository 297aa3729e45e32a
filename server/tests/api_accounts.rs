//! Accounts over the REST API: register / login / logout / me, tokens, and the bad inputs.

mod common;

use common::{PASSWORD, TestApp};
use engine::accounts::store::RegistrationMode;
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
    let response = app.log_in(&client, "ADA@example.com").await;
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

/// A login from `address` (the tests are the trusted proxy that names it).
async fn login_from(
    app: &TestApp,
    address: &str,
    email: &str,
    password: &str,
) -> reqwest::Response {
    TestApp::browser()
        .post(app.url("/api/auth/login"))
        .header(ORIGIN, app.address.as_str())
        .header("X-Forwarded-For", address)
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await
        .unwrap()
}

/// A 429's `Retry-After`, in seconds.
fn retry_after(response: &reqwest::Response) -> u64 {
    response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn failing_addresses_are_slowed_down_and_never_lock_the_owner_out() {
    let app = TestApp::spawn().await;
    app.register(&TestApp::browser(), "limit@example.com").await;
    let attacker = "198.51.100.7";
    for _ in 0..engine::accounts::store::LOGIN_MAX_FAILURES {
        let r = login_from(&app, attacker, "limit@example.com", "wrong password").await;
        assert_eq!(r.status(), 401);
    }
    let limited = login_from(&app, attacker, "limit@example.com", "wrong password").await;
    assert_eq!(limited.status(), 429);
    let first_wait = retry_after(&limited);
    assert!((1..=2).contains(&first_wait), "first delay: {first_wait} s");
    let body: Value = limited.json().await.unwrap();
    assert!(body["details"]["retry_after_seconds"].as_u64().unwrap() > 0);
    // The owner, from an address that has not been failing, logs in.
    let owner = login_from(&app, "203.0.113.5", "limit@example.com", PASSWORD).await;
    assert_eq!(owner.status(), 200, "no per-account lockout");
    // IPv6 callers count per /64: another address of the same /64 is the same caller.
    for _ in 0..engine::accounts::store::LOGIN_MAX_FAILURES {
        login_from(
            &app,
            "2001:db8:5:6::1",
            "limit@example.com",
            "nope nope nope",
        )
        .await;
    }
    let same_64 = login_from(&app, "2001:db8:5:6::ffff", "limit@example.com", PASSWORD).await;
    assert_eq!(same_64.status(), 429);
    // After the wait, the failing address may guess again (and is slowed further).
    tokio::time::sleep(std::time::Duration::from_millis(1100 * first_wait)).await;
    let again = login_from(&app, attacker, "limit@example.com", "wrong password").await;
    assert_eq!(again.status(), 401);
    let next = login_from(&app, attacker, "limit@example.com", "wrong password").await;
    assert_eq!(next.status(), 429);
    let wait = retry_after(&next);
    assert!(wait >= 2, "the delay doubles: {wait}");

    // Race-free: 20 parallel guesses from a fresh address get at most the free ones.
    let guesses = (0..20).map(|_| login_from(&app, "192.0.2.44", "limit@example.com", "bad guess"));
    let statuses: Vec<u16> = futures_join_all(guesses).await;
    let evaluated = statuses.iter().filter(|s| **s == 401).count() as i64;
    assert!(
        evaluated <= engine::accounts::store::LOGIN_MAX_FAILURES,
        "{evaluated} guesses evaluated: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
}

/// Runs the requests at once; their statuses.
async fn futures_join_all(
    requests: impl Iterator<Item = impl std::future::Future<Output = reqwest::Response>>,
) -> Vec<u16> {
    futures::future::join_all(requests)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect()
}

/// 200 parallel bad logins (from 200 addresses, so each runs argon2) leave the site answering:
/// no connection waits on argon2, and argon2 runs one per core.
#[tokio::test]
async fn a_burst_of_bad_logins_does_not_take_the_site_down() {
    let app = TestApp::spawn().await;
    let (user, _) = app.signed_in_user("steady@example.com").await;
    let burst: Vec<_> =
        (0..200)
            .map(|i| {
                let url = app.url("/api/auth/login");
                let origin = app.address.clone();
                tokio::spawn(async move {
                    TestApp::browser()
                    .post(url)
                    .header(ORIGIN, origin)
                    .header("X-Forwarded-For", format!("10.20.{}.{}", i / 250, i % 250 + 1))
                    .json(&json!({ "email": "steady@example.com", "password": "not the password" }))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                })
            })
            .collect();
    // While the burst is in flight: readiness and a signed-in page answer promptly.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), 200);
        let page = user.get(app.url("/settings")).send().await.unwrap();
        assert_eq!(page.status(), 200);
        // A number to read, not a pass mark (timing is for benchmarks).
        println!("readyz + page during the burst: {:?}", started.elapsed());
    }
    let mut failed = 0;
    for handle in burst {
        if handle.await.unwrap().unwrap() == 401 {
            failed += 1;
        }
    }
    assert_eq!(failed, 200, "every bad login was answered 401");
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
    assert_eq!(second.status(), 403, "a token cannot mint tokens");
    let revoke_itself = script
        .delete(app.url(&format!("/api/tokens/{}", uuid::Uuid::new_v4())))
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(revoke_itself.status(), 403, "nor revoke them");

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

/// Server functions read their whole body: a 10 MB one is refused with 413 (from its
/// Content-Length, before it is read), as the API's JSON routes refuse theirs.
#[tokio::test]
async fn oversized_bodies_are_refused_on_rpc_and_api() {
    let app = TestApp::spawn().await;
    let (client, _) = app.signed_in_user("big-body@example.com").await;
    let big = vec![b'a'; 10 << 20];
    for (path, kind) in [
        ("/rpc/login", "application/x-www-form-urlencoded"),
        ("/rpc/save_spending", "application/x-www-form-urlencoded"),
        ("/api/datasets", "application/json"),
    ] {
        let response = client
            .post(app.url(path))
            .header("Origin", app.address.as_str())
            .header("Content-Type", kind)
            .body(big.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 413, "{path}");
    }
}

/// Every response carries the security headers; a page's policy allows only its own nonce's
/// inline scripts, and the nonce is the one its scripts carry.
#[tokio::test]
async fn security_headers_on_pages_api_and_downloads() {
    let app = TestApp::spawn().await;
    let (client, _) = app.signed_in_user("headers@example.com").await;
    let page = client.get(app.url("/settings")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert!(policy.contains("object-src 'none'"), "{policy}");
    assert!(!policy.contains(" 'unsafe-eval'"), "{policy}");
    assert!(
        !policy.contains("script-src 'self' 'unsafe-inline'"),
        "{policy}"
    );
    let nonce = policy
        .split("'nonce-")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .expect("a nonce in the policy")
        .to_owned();
    assert!(nonce.len() >= 16);
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    assert_eq!(page.headers()["referrer-policy"], "same-origin");
    let html = page.text().await.unwrap();
    assert!(
        html.contains(&format!("nonce=\"{nonce}\"")),
        "the page's scripts carry the policy's nonce"
    );
    // Another page, another nonce.
    let again = client.get(app.url("/settings")).send().await.unwrap();
    assert!(
        !again.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains(&nonce)
    );

    let api = client.get(app.url("/api/auth/me")).send().await.unwrap();
    assert_eq!(api.headers()["cache-control"], "no-store");
    assert!(
        api.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .starts_with("default-src 'none'")
    );
    assert_eq!(api.headers()["x-content-type-options"], "nosniff");
    // A CSV download is sandboxed.
    let csv = client
        .get(app.url("/api/costs?format=csv"))
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status(), 200);
    assert_eq!(csv.headers()["content-security-policy"], "sandbox");
    assert!(
        csv.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );
}

/// "Sign out everywhere" ends every session of the account; a session also ends 30 days after
/// it began, however active it was.
#[tokio::test]
async fn sessions_end_everywhere_at_once_and_after_thirty_days() {
    let app = TestApp::spawn().await;
    let (laptop, _) = app.signed_in_user("everywhere@example.com").await;
    let phone = TestApp::browser();
    let login = app.log_in(&phone, "everywhere@example.com").await;
    assert_eq!(login.status(), 200);
    let me = |client: reqwest::Client| {
        let url = app.url("/api/auth/me");
        async move { client.get(url).send().await.unwrap().status() }
    };
    assert_eq!(me(phone.clone()).await, 200);
    let ended = app.post(&laptop, "/api/auth/logout-all", json!({})).await;
    assert_eq!(ended.status(), 200);
    let body: Value = ended.json().await.unwrap();
    assert_eq!(body["data"]["sessions_ended"], 2);
    assert_eq!(me(laptop.clone()).await, 401);
    assert_eq!(me(phone.clone()).await, 401);

    // A new session, made 31 days old: it has ended, even though it was used a minute ago.
    let login = app.log_in(&phone, "everywhere@example.com").await;
    assert_eq!(login.status(), 200);
    assert_eq!(me(phone.clone()).await, 200);
    let mut tx = app.db.system().await.unwrap();
    sqlx::query(
        "UPDATE sessions SET created_at = now() - interval '31 days',
                             last_seen_at = now() - interval '2 minutes'",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(me(phone.clone()).await, 401);
}

/// The embedded executor is not on the public listener (it has a loopback one of its own).
#[tokio::test]
async fn the_executor_is_not_reachable_on_the_public_listener() {
    let app = TestApp::spawn().await;
    for path in ["/executor/v2/local/health", "/executor/v2/local/run"] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
    }
}

/// With `REGISTRATION=invite` (the default) the first account registers and is the
/// administrator; after it, only an invite link registers, once.
#[tokio::test]
async fn registration_by_invitation() {
    let app = TestApp::spawn_with_registration(RegistrationMode::Invite).await;
    let register = |email: &'static str, invite: Option<String>| {
        let app = &app;
        async move {
            app.post(
                &TestApp::browser(),
                "/api/auth/register",
                json!({ "email": email, "password": PASSWORD, "invite": invite }),
            )
            .await
        }
    };
    assert_eq!(
        register("admin@example.com", None).await.status(),
        201,
        "the first account"
    );
    let stranger = register("stranger@example.com", None).await;
    assert_eq!(stranger.status(), 403);
    let body: Value = stranger.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("invite"), "{body}");
    assert_eq!(
        register("guess@example.com", Some("made-up".into()))
            .await
            .status(),
        403
    );

    // The administrator makes a link; it registers one account, once.
    let admin = TestApp::browser();
    let login = app.log_in(&admin, "admin@example.com").await;
    assert_eq!(login.status(), 200);
    let made = app.post(&admin, "/api/invites", json!({})).await;
    assert_eq!(made.status(), 201);
    let made: Value = made.json().await.unwrap();
    let url = made["data"]["invite_url"].as_str().unwrap();
    let token = url.split("invite=").nth(1).unwrap().to_owned();
    assert!(url.starts_with(&app.address), "{url}");
    assert_eq!(
        register("friend@example.com", Some(token.clone()))
            .await
            .status(),
        201
    );
    assert_eq!(
        register("second@example.com", Some(token)).await.status(),
        403,
        "used once"
    );
    // A member who is not an administrator cannot invite.
    let friend = TestApp::browser();
    app.log_in(&friend, "friend@example.com").await;
    assert_eq!(
        app.post(&friend, "/api/invites", json!({})).await.status(),
        403
    );

    // Closed: nobody registers after the first account, invite or not.
    let closed = TestApp::spawn_with_registration(RegistrationMode::Closed).await;
    let first = closed
        .post(
            &TestApp::browser(),
            "/api/auth/register",
            json!({ "email": "owner@example.com", "password": PASSWORD }),
        )
        .await;
    assert_eq!(first.status(), 201);
    let later = closed
        .post(
            &TestApp::browser(),
            "/api/auth/register",
            json!({ "email": "late@example.com", "password": PASSWORD }),
        )
        .await;
    assert_eq!(later.status(), 403);
}

/// Registrations are limited per client address, race-free: ten parallel attempts from one
/// address create at most the allowed accounts; another address still registers.
#[tokio::test]
async fn registrations_are_limited_per_address() {
    let app = TestApp::spawn_with_policy(engine::accounts::store::RegistrationPolicy {
        mode: RegistrationMode::Open,
        per_address: 3,
    })
    .await;
    let attempt = |address: &'static str, email: String, password: &'static str| {
        let url = app.url("/api/auth/register");
        let origin = app.address.clone();
        async move {
            TestApp::browser()
                .post(url)
                .header(ORIGIN, origin)
                .header("X-Forwarded-For", address)
                .json(&json!({ "email": email, "password": password }))
                .send()
                .await
                .expect("register")
        }
    };
    // A refused input is not an attempt (it never reaches argon2).
    assert_eq!(
        attempt("10.9.9.9", "short@example.com".into(), "short")
            .await
            .status(),
        400
    );
    let parallel: Vec<_> = (0..10)
        .map(|i| {
            tokio::spawn(attempt(
                "10.9.9.9",
                format!("burst{i}@example.com"),
                PASSWORD,
            ))
        })
        .collect();
    let mut created = 0;
    let mut limited = 0;
    for handle in parallel {
        let response = handle.await.unwrap();
        match response.status().as_u16() {
            201 => created += 1,
            429 => {
                limited += 1;
                let wait: u64 = response.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!((1..=3600).contains(&wait), "Retry-After {wait}");
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["details"]["retry_after_seconds"], wait, "{body}");
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((created, limited), (3, 7));
    // Another address is not affected.
    assert_eq!(
        attempt("10.9.9.10", "other@example.com".into(), PASSWORD)
            .await
            .status(),
        201
    );
}

/// A token may be given a lifetime: it works until then, answers 401 after, and says when.
#[tokio::test]
async fn api_tokens_may_expire() {
    let app = TestApp::spawn().await;
    let (alice, _) = app.signed_in_user("expiring@example.com").await;
    for bad in [json!(0), json!(367), json!("soon")] {
        let response = app
            .post(
                &alice,
                "/api/tokens",
                json!({ "name": "ci", "expires_in_days": bad }),
            )
            .await;
        assert_eq!(response.status(), 400, "{bad}");
    }
    let created: Value = app
        .post(
            &alice,
            "/api/tokens",
            json!({ "name": "ci", "expires_in_days": 30 }),
        )
        .await
        .json()
        .await
        .unwrap();
    let token = created["data"]["token"].as_str().unwrap().to_owned();
    let expires: chrono::DateTime<chrono::Utc> = created["data"]["expires_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let days = (expires - chrono::Utc::now()).num_hours() as f64 / 24.0;
    assert!((29.9..=30.0).contains(&days), "{days}");
    let me = |token: String| {
        let url = app.url("/api/auth/me");
        async move {
            reqwest::Client::new()
                .get(url)
                .header(AUTHORIZATION, format!("Bearer {token}"))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(me(token.clone()).await, 200);
    // Time passes.
    let mut tx = app.db.system().await.unwrap();
    sqlx::query("UPDATE api_tokens SET expires_at = now() - interval '1 second'")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(me(token).await, 401);
    let listed: Value = app.get_json(&alice, "/api/tokens").await;
    assert_eq!(listed["data"][0]["expired"], true, "{listed}");
    // Without a lifetime, a token works until revoked.
    let forever: Value = app
        .post(&alice, "/api/tokens", json!({ "name": "forever" }))
        .await
        .json()
        .await
        .unwrap();
    assert!(forever["data"]["expires_at"].is_null());
}

/// Pages link their hydrate bundle under its content hash, and those URLs are kept for good;
/// the same files under any other path are revalidated. (The login page's bundle is `auth`.)
#[tokio::test]
async fn assets_are_linked_under_their_hash_and_kept_for_good() {
    let app = TestApp::spawn().await;
    let page = app
        .client
        .get(app.url("/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let at = page.find("/pkg/").expect("the page links the bundle");
    let version: String = page[at + 5..].chars().take(16).collect();
    assert!(version.chars().all(|c| c.is_ascii_hexdigit()), "{version}");
    for file in [
        "lora-pipeline.css",
        "lora-pipeline-auth.js",
        "lora-pipeline-auth_bg.wasm",
    ] {
        assert!(
            page.contains(&format!("/pkg/{version}/{file}")),
            "{file} is linked under the hash"
        );
    }
    let get = |path: String| {
        let client = app.client.clone();
        let url = app.url(&path);
        async move {
            let response = client.get(url).send().await.unwrap();
            assert_eq!(response.status(), 200, "{path}");
            response.headers()["cache-control"]
                .to_str()
                .unwrap()
                .to_owned()
        }
    };
    assert_eq!(
        get(format!("/pkg/{version}/lora-pipeline.css")).await,
        "public, max-age=31536000, immutable"
    );
    assert_eq!(
        get(format!("/pkg/{version}/echarts.min.js")).await,
        "public, max-age=31536000, immutable"
    );
    assert_eq!(get("/pkg/lora-pipeline.css".into()).await, "no-cache");
    assert_eq!(
        get("/pkg/0123456789abcdef/lora-pipeline.css".into()).await,
        "no-cache",
        "another build's hash is not kept"
    );
}
