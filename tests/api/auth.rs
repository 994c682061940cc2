use serde_json::Value;

use crate::helpers::{Options, spawn_app, spawn_app_with};

#[tokio::test]
async fn missing_or_bad_credentials_get_401_with_www_authenticate() {
    let app = spawn_app().await;
    for token in [
        None,
        Some("nonsense"),
        Some("cs_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
    ] {
        let resp = app.get("/v1/whoami", token).await;
        assert_eq!(resp.status(), 401, "{token:?}");
        let h = resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(h.starts_with("Bearer"), "{h}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], "unauthorized");
    }
}

#[tokio::test]
async fn client_credentials_give_a_short_lived_token_that_carries_the_role() {
    let app = spawn_app().await;
    let (id, secret) = app.create_key("auditor").await;

    let resp = app.token_request(&id, &secret).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 900);
    let access = v["access_token"].as_str().unwrap().to_owned();
    let me: Value = app
        .get("/v1/whoami", Some(&access))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["role"], "auditor");
    assert_eq!(me["credential"], "access_token");

    // Form fields work as well as HTTP Basic.
    let resp = app
        .client
        .post(app.url("/oauth/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", id.as_str()),
            ("client_secret", secret.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // Tampering with any part breaks it.
    let mut bytes = access.clone().into_bytes();
    let mid = bytes.len() / 2;
    bytes[mid] = if bytes[mid] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(bytes).unwrap();
    assert_eq!(app.get("/v1/whoami", Some(&tampered)).await.status(), 401);

    // Expired by the clock.
    app.clock.advance_secs(901);
    assert_eq!(app.get("/v1/whoami", Some(&access)).await.status(), 401);
}

#[tokio::test]
async fn wrong_client_secrets_and_grants_are_refused_in_oauth_form() {
    let app = spawn_app().await;
    let (id, secret) = app.create_key("dpo").await;
    let (other_id, _) = app.create_key("auditor").await;

    let resp = app.token_request(&id, "cs_wrong").await;
    assert_eq!(resp.status(), 401);
    assert!(
        resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"], "invalid_client");

    // A valid secret presented under another key's id.
    assert_eq!(app.token_request(&other_id, &secret).await.status(), 401);

    let resp = app
        .client
        .post(app.url("/oauth/token"))
        .basic_auth(&id, Some(&secret))
        .form(&[("grant_type", "password")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"], "unsupported_grant_type");

    let resp = app
        .client
        .post(app.url("/oauth/token"))
        .basic_auth(&id, Some(&secret))
        .json(&serde_json::json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
}

#[tokio::test]
async fn access_tokens_of_a_revoked_key_stop_working() {
    let app = spawn_app().await;
    let (id, secret) = app.create_key("auditor").await;
    let v: Value = app.token_request(&id, &secret).await.json().await.unwrap();
    let access = v["access_token"].as_str().unwrap().to_owned();
    assert_eq!(app.get("/v1/whoami", Some(&access)).await.status(), 200);
    let resp = app
        .delete(&format!("/v1/keys/{id}"), Some(&app.admin_token))
        .await;
    assert_eq!(resp.status(), 204);
    assert_eq!(app.get("/v1/whoami", Some(&access)).await.status(), 401);
    assert_eq!(app.token_request(&id, &secret).await.status(), 401);
}

#[tokio::test]
async fn a_key_revoked_elsewhere_stops_working_within_the_cache_bound() {
    let app = spawn_app_with(Options {
        token_cache_ttl_secs: 1,
        ..Options::default()
    })
    .await;
    let (id, secret) = app.create_key("dpo").await;
    assert_eq!(app.get("/v1/whoami", Some(&secret)).await.status(), 200);
    // As `consentry keys revoke` does from another process: straight to the database.
    app.exec(&format!(
        "UPDATE api_keys SET revoked_at = 1 WHERE id = '{id}'"
    ))
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(app.get("/v1/whoami", Some(&secret)).await.status(), 401);
}

#[tokio::test]
async fn requests_arriving_at_once_with_a_new_key_verify_it_once() {
    let app = spawn_app().await;
    let (_, secret) = app.create_key("dpo").await;
    let before = app.state.auth.verifications();
    let calls = (0..8).map(|_| app.get("/v1/whoami", Some(&secret)));
    for resp in futures_util::future::join_all(calls).await {
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(app.state.auth.verifications() - before, 1);
    // A wrong secret is verified on every attempt: failures are never cached or shared.
    let last = if secret.ends_with('A') { 'B' } else { 'A' };
    let wrong = format!("{}{last}", &secret[..secret.len() - 1]);
    let before = app.state.auth.verifications();
    let calls = (0..3).map(|_| app.get("/v1/whoami", Some(&wrong)));
    for resp in futures_util::future::join_all(calls).await {
        assert_eq!(resp.status(), 401);
    }
    assert_eq!(app.state.auth.verifications() - before, 3);
}

#[tokio::test]
async fn repeated_failures_from_one_client_are_refused_with_retry_after() {
    let app = spawn_app_with(Options {
        auth_failures_per_minute: 3,
        ..Options::default()
    })
    .await;
    for _ in 0..3 {
        assert_eq!(app.get("/v1/whoami", Some("bad")).await.status(), 401);
    }
    let resp = app.get("/v1/whoami", Some(&app.admin_token)).await;
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "too_many_requests");
}

#[tokio::test]
async fn failed_attempts_are_never_answered_faster_than_successes() {
    let app = spawn_app().await;
    let (_, good) = app.create_key("dpo").await;
    // Warm the cache for the good key, then compare the fastest of several attempts.
    app.get("/v1/whoami", Some(&good)).await;
    let mut fastest_good = std::time::Duration::MAX;
    let mut fastest_bad = std::time::Duration::MAX;
    for i in 0..5 {
        let t = std::time::Instant::now();
        app.get("/v1/whoami", Some(&good)).await;
        fastest_good = fastest_good.min(t.elapsed());
        let bad = format!("cs_0123456789abcdef_{:A>43}", i);
        let t = std::time::Instant::now();
        app.get("/v1/whoami", Some(&bad)).await;
        fastest_bad = fastest_bad.min(t.elapsed());
    }
    assert!(
        fastest_bad > fastest_good,
        "bad {fastest_bad:?} vs good {fastest_good:?}"
    );
}

#[tokio::test]
async fn denials_are_audited_with_route_and_reason() {
    let app = spawn_app().await;
    let (_, auditor) = app.create_key("auditor").await;
    app.get("/v1/keys", None).await;
    app.get("/v1/keys", Some(&auditor)).await;
    let v: Value = app
        .get("/v1/audit/entries?limit=1000", Some(&auditor))
        .await
        .json()
        .await
        .unwrap();
    let denied: Vec<&Value> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "auth.denied")
        .collect();
    assert_eq!(denied.len(), 2, "{v}");
    assert_eq!(denied[0]["actor"]["role"], "none");
    assert!(
        denied[0]["attributes"]
            .to_string()
            .contains("reason:missing")
    );
    assert_eq!(denied[1]["actor"]["role"], "auditor");
    assert!(
        denied[1]["attributes"]
            .to_string()
            .contains("route:GET /v1/keys")
    );
    assert!(denied[1]["attributes"].to_string().contains("reason:role"));
}
