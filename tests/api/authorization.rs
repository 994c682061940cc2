//! Every route in the OpenAPI document × {no token, each role} → the expected status
//! class, from one table. A route missing from the table fails the test.
use serde_json::Value;

use crate::helpers::spawn_app;

const ANY: &[&str] = &["admin", "dpo", "auditor", "esp", "ingest"];

/// (method, path as in the spec, roles allowed; `None` = no authentication at all)
const ROUTES: &[(&str, &str, Option<&[&str]>)] = &[
    ("get", "/healthz", None),
    ("get", "/readyz", None),
    ("get", "/metrics", None),
    ("get", "/openapi.json", None),
    ("post", "/oauth/token", None),
    ("get", "/u/{token}", None),
    ("post", "/u/{token}", None),
    ("get", "/v1/whoami", Some(ANY)),
    ("post", "/v1/keys", Some(&["admin"])),
    ("get", "/v1/keys", Some(&["admin"])),
    ("delete", "/v1/keys/{id}", Some(&["admin"])),
    ("post", "/v1/keyring/{kind}/rotate", Some(&["admin"])),
    ("get", "/v1/audit/entries", Some(&["auditor"])),
    ("get", "/v1/audit/checkpoint", Some(&["auditor"])),
    ("get", "/v1/audit/proof/{seq}", Some(&["auditor"])),
    ("get", "/v1/audit/consistency", Some(&["auditor"])),
    ("get", "/v1/subjects", Some(&["dpo"])),
    ("post", "/v1/imports", Some(&["ingest"])),
    ("get", "/v1/ropa", Some(&["dpo", "auditor"])),
    ("post", "/v1/consents", Some(&["ingest", "dpo"])),
    ("get", "/v1/consents/confirm/{token}", None),
    ("get", "/v1/consents/{id}/receipt", Some(&["dpo"])),
    ("get", "/v1/subjects/{subject_id}/consents", Some(&["dpo"])),
    ("post", "/v1/policies/reload", Some(&["admin"])),
    ("post", "/v1/identify", Some(&["ingest"])),
    ("post", "/v1/track", Some(&["ingest"])),
    ("post", "/v1/page", Some(&["ingest"])),
    ("post", "/v1/screen", Some(&["ingest"])),
    ("post", "/v1/group", Some(&["ingest"])),
    ("post", "/v1/alias", Some(&["ingest"])),
    ("post", "/v1/batch", Some(&["ingest"])),
    (
        "put",
        "/v1/subjects/{subject_id}/restriction",
        Some(&["dpo"]),
    ),
    (
        "get",
        "/v1/subjects/{subject_id}/restriction",
        Some(&["dpo"]),
    ),
    (
        "delete",
        "/v1/subjects/{subject_id}/restriction",
        Some(&["dpo"]),
    ),
    (
        "put",
        "/v1/subjects/{subject_id}/legal-hold",
        Some(&["dpo"]),
    ),
    (
        "get",
        "/v1/subjects/{subject_id}/legal-hold",
        Some(&["dpo"]),
    ),
    (
        "delete",
        "/v1/subjects/{subject_id}/legal-hold",
        Some(&["dpo"]),
    ),
    ("post", "/v1/recipients", Some(&["admin"])),
    ("get", "/v1/recipients", Some(&["admin", "dpo", "auditor"])),
    (
        "get",
        "/v1/recipients/{rid}",
        Some(&["admin", "dpo", "auditor"]),
    ),
    ("post", "/v1/recipients/{rid}/keys/rotate", Some(&["admin"])),
    (
        "post",
        "/v1/recipients/{rid}/keys/{version}/retire",
        Some(&["admin"]),
    ),
    (
        "get",
        "/v1/recipients/{rid}/profiles/{pseudonym}",
        Some(&["esp"]),
    ),
    (
        "get",
        "/v1/recipients/{rid}/profiles/{pseudonym}/recommendations",
        Some(&["esp"]),
    ),
    ("post", "/v1/recipients/{rid}/pseudonyms", Some(&["esp"])),
    ("post", "/v1/catalog", Some(&["ingest", "admin"])),
    ("post", "/v1/recommendations/train", Some(&["admin"])),
    ("post", "/v1/dsar", Some(&["dpo", "ingest"])),
    ("get", "/v1/dsar", Some(&["dpo"])),
    ("get", "/v1/dsar/{id}", Some(&["dpo"])),
    ("post", "/v1/dsar/{id}/verify", Some(&["dpo"])),
    ("post", "/v1/dsar/{id}/extend", Some(&["dpo"])),
    ("post", "/v1/dsar/{id}/reject", Some(&["dpo"])),
    ("post", "/v1/dsar/{id}/withdraw", Some(&["dpo"])),
    ("post", "/v1/dsar/{id}/execute", Some(&["dpo"])),
    ("post", "/v1/dsar/{id}/rectify", Some(&["dpo"])),
    ("get", "/v1/dsar/{id}/package", Some(&["dpo"])),
    ("post", "/v1/segments", Some(&["esp", "admin"])),
    ("get", "/v1/segments", Some(&["esp", "admin"])),
    ("get", "/v1/segments/{id}", Some(&["esp", "admin"])),
    ("delete", "/v1/segments/{id}", Some(&["esp", "admin"])),
    ("get", "/v1/segments/{id}/count", Some(&["esp", "admin"])),
    ("get", "/v1/segments/{id}/preview", Some(&["esp", "admin"])),
    ("get", "/v1/segments/{id}/export", Some(&["esp", "admin"])),
    ("get", "/v1/segments/{id}/exports", Some(&["esp", "admin"])),
    ("get", "/v1/exports/{id}", Some(&["esp", "admin"])),
    ("post", "/v1/scores", Some(&["ingest"])),
    ("post", "/v1/templates", Some(&["esp", "admin"])),
    ("get", "/v1/templates", Some(&["esp", "admin"])),
    ("get", "/v1/templates/{id}", Some(&["esp", "admin"])),
    ("delete", "/v1/templates/{id}", Some(&["esp", "admin"])),
    ("post", "/v1/templates/{id}/render", Some(&["esp", "admin"])),
    ("post", "/v1/campaigns", Some(&["esp", "admin"])),
    ("get", "/v1/campaigns/{id}", Some(&["esp", "admin"])),
    (
        "get",
        "/v1/campaigns/{id}/messages",
        Some(&["esp", "admin"]),
    ),
    ("post", "/v1/experiments", Some(&["esp", "admin"])),
    ("get", "/v1/experiments/{id}", Some(&["esp", "admin"])),
    (
        "get",
        "/v1/experiments/{id}/results",
        Some(&["esp", "admin"]),
    ),
    ("post", "/v1/scores/compute", Some(&["admin"])),
];

/// The tracking API takes its write key as the HTTP Basic user name, as Segment's clients send it.
fn uses_write_key(path: &str) -> bool {
    [
        "/v1/identify",
        "/v1/track",
        "/v1/page",
        "/v1/screen",
        "/v1/group",
        "/v1/alias",
        "/v1/batch",
    ]
    .contains(&path)
}

fn concrete(path: &str) -> String {
    path.replace("{id}", "0000000000000000")
        .replace("{kind}", "pseudonym")
        .replace("{seq}", "0")
        .replace("{subject_id}", "00000000000000000000000000000000")
        .replace("{token}", "c1.x.0.x")
        .replace("{rid}", "acme-esp")
        .replace("{version}", "1")
        .replace("{pseudonym}", "ps1.x")
}

#[tokio::test]
async fn every_route_answers_each_role_as_the_table_says() {
    let app = spawn_app().await;
    let spec: Value = app.get("/openapi.json", None).await.json().await.unwrap();
    let mut in_spec = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            in_spec.push((method.clone(), path.clone()));
        }
    }
    for (method, path) in &in_spec {
        assert!(
            ROUTES.iter().any(|(m, p, _)| m == method && p == path),
            "{method} {path} is in the OpenAPI spec but not in the authorization table"
        );
    }
    for (m, p, _) in ROUTES {
        assert!(
            in_spec.iter().any(|(sm, sp)| sm == m && sp == p),
            "{m} {p} is in the table but not in the OpenAPI spec"
        );
        let scheme = if uses_write_key(p) { "basic" } else { "bearer" };
        let secured = spec["paths"][p][m]["security"]
            .as_array()
            .is_some_and(|s| s.iter().any(|r| r.get(scheme).is_some()));
        let protected = ROUTES
            .iter()
            .any(|(tm, tp, r)| tm == m && tp == p && r.is_some());
        assert_eq!(
            secured, protected,
            "{m} {p}: security in the spec must match the table"
        );
    }

    let mut tokens = Vec::new();
    for role in ANY {
        let token = if *role == "admin" {
            app.admin_token.clone()
        } else {
            app.create_key(role).await.1
        };
        tokens.push((*role, token));
    }

    for (method, path, roles) in ROUTES {
        let Some(roles) = roles else { continue };
        let url = app.url(&concrete(path));
        let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let resp = app.client.request(m.clone(), &url).send().await.unwrap();
        assert_eq!(resp.status(), 401, "{method} {path} without a token");
        for (role, token) in &tokens {
            let req = app.client.request(m.clone(), &url);
            let req = if uses_write_key(path) {
                req.basic_auth(token, Some(""))
            } else {
                req.bearer_auth(token)
            };
            let resp = req
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            if roles.contains(role) {
                assert!(
                    status != 401 && status != 403,
                    "{method} {path} as {role}: got {status}, expected access"
                );
            } else {
                assert_eq!(status, 403, "{method} {path} as {role}");
            }
        }
    }
}
