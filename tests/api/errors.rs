use serde_json::Value;

use crate::helpers::{Options, spawn_app, spawn_app_with};

async fn error_of(resp: reqwest::Response) -> (u16, String, String) {
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert!(
        ct.contains("application/json"),
        "status {status}: content type {ct}"
    );
    let v: Value = resp.json().await.unwrap();
    (
        status,
        v["error"]["code"].as_str().unwrap_or_default().to_owned(),
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[tokio::test]
async fn bad_bodies_get_a_4xx_that_says_what_to_fix_and_create_nothing() {
    let app = spawn_app().await;
    let raw = |body: &'static str, ct: &'static str| {
        app.client
            .post(app.url("/v1/keys"))
            .bearer_auth(&app.admin_token)
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let cases: [(&str, &str, u16, &str, &str); 6] = [
        (
            "{not json",
            "application/json",
            400,
            "invalid_json",
            "key must be a string",
        ),
        (
            r#"{"name": 5, "role": "dpo"}"#,
            "application/json",
            400,
            "invalid_json",
            "`name`",
        ),
        (
            r#"{"name": "n", "role": "dpo", "admin": true}"#,
            "application/json",
            400,
            "invalid_json",
            "unknown field `admin`",
        ),
        (
            r#"{"role": "dpo"}"#,
            "application/json",
            400,
            "invalid_json",
            "missing field `name`",
        ),
        (
            r#"{"name":"n","role":"dpo"} trailing"#,
            "application/json",
            400,
            "invalid_json",
            "trailing",
        ),
        (
            r#"{"name":"n","role":"dpo"}"#,
            "text/plain",
            415,
            "unsupported_media_type",
            "application/json",
        ),
    ];
    for (body, ct, status, code, needle) in cases {
        let (s, c, m) = error_of(raw(body, ct).await.unwrap()).await;
        assert_eq!((s, c.as_str()), (status, code), "{body}: {m}");
        assert!(m.contains(needle), "{body}: `{m}` should contain {needle}");
    }
    let (s, _, m) = error_of(
        app.post_json(
            "/v1/keys",
            Some(&app.admin_token),
            &serde_json::json!({"name": "jane.doe@example.com", "role": 7}),
        )
        .await,
    )
    .await;
    assert_eq!(s, 400);
    assert!(!m.contains("jane.doe"), "values are never echoed: {m}");
    let n = app.scalar_i64("SELECT COUNT(*) FROM api_keys").await;
    assert_eq!(n, 1, "only the bootstrap key exists");
}

#[tokio::test]
async fn oversized_bodies_get_413_whether_declared_or_streamed() {
    let app = spawn_app_with(Options {
        body_limit_bytes: 4096,
        ..Options::default()
    })
    .await;
    let big = format!(r#"{{"name": "{}", "role": "dpo"}}"#, "x".repeat(10_000));
    let (s, c, _) = error_of(
        app.client
            .post(app.url("/v1/keys"))
            .bearer_auth(&app.admin_token)
            .header("content-type", "application/json")
            .body(big.clone())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, c.as_str()), (413, "payload_too_large"));
    let stream = futures_util::stream::iter(
        big.into_bytes()
            .chunks(1000)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let (s, c, _) = error_of(
        app.client
            .post(app.url("/v1/keys"))
            .bearer_auth(&app.admin_token)
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, c.as_str()), (413, "payload_too_large"));
}

#[tokio::test]
async fn gzip_json_bodies_are_accepted() {
    let app = spawn_app().await;
    let body = crate::helpers::gzip(br#"{"name": "zipped", "role": "auditor"}"#);
    let resp = app
        .client
        .post(app.url("/v1/keys"))
        .bearer_auth(&app.admin_token)
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
}

#[tokio::test]
async fn unknown_routes_methods_and_bad_queries_get_json_errors() {
    let app = spawn_app().await;
    let (_, auditor) = app.create_key("auditor").await;
    let (s, c, _) = error_of(app.get("/v1/nothing-here", None).await).await;
    assert_eq!((s, c.as_str()), (404, "not_found"));
    let (s, c, _) = error_of(app.client.put(app.url("/v1/keys")).send().await.unwrap()).await;
    assert_eq!((s, c.as_str()), (405, "method_not_allowed"));
    let (s, c, _) = error_of(app.client.post(app.url("/healthz")).send().await.unwrap()).await;
    assert_eq!((s, c.as_str()), (405, "method_not_allowed"));
    for q in [
        "/v1/audit/entries?limit=abc",
        "/v1/audit/entries?limit=0",
        "/v1/audit/entries?after=-1",
        "/v1/audit/entries?bogus=1",
        "/v1/audit/consistency?from=1",
    ] {
        let (s, c, m) = error_of(app.get(q, Some(&auditor)).await).await;
        assert_eq!((s, c.as_str()), (400, "invalid_query"), "{q}: {m}");
    }
    let (s, c, _) = error_of(app.get("/v1/audit/proof/abc", Some(&auditor)).await).await;
    assert_eq!((s, c.as_str()), (400, "invalid_path"));
}

#[test]
fn every_error_code_is_in_the_readme_table() {
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .unwrap();
    for code in consentry::http::error::ErrorCode::ALL {
        let row = format!("| {} | `{}` |", code.status().as_u16(), code.as_str());
        assert!(readme.contains(&row), "README lacks the row {row}");
    }
}

#[tokio::test]
async fn a_method_a_route_lacks_is_refused_with_the_methods_it_has_in_allow() {
    let app = spawn_app().await;
    for (method, path, allow) in [
        ("PUT", "/v1/keys", "GET, POST"),
        ("TRACE", "/healthz", "GET"),
        ("PATCH", "/v1/keys/k1", "DELETE"),
        ("POST", "/v1/subjects/s1/restriction", "GET, PUT, DELETE"),
    ] {
        let resp = app
            .client
            .request(method.parse().unwrap(), app.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 405, "{method} {path}");
        assert_eq!(
            resp.headers().get("allow").and_then(|v| v.to_str().ok()),
            Some(allow),
            "{method} {path}"
        );
    }
}
