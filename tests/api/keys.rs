use serde_json::{Value, json};

use crate::helpers::spawn_app;

#[tokio::test]
async fn an_admin_creates_lists_and_revokes_keys_and_secrets_never_show() {
    let app = spawn_app().await;
    let (id, token) = app.create_key("auditor").await;
    assert!(token.starts_with(&format!("cs_{id}_")));

    let resp = app.get("/v1/keys", Some(&app.admin_token)).await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(!text.contains("cs_"), "a token leaked into the list");
    assert!(!text.contains("argon2"), "a hash leaked into the list");
    let v: Value = serde_json::from_str(&text).unwrap();
    let keys = v["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert!(
        keys.iter()
            .any(|k| k["id"] == id.as_str() && k["role"] == "auditor")
    );

    let resp = app
        .delete(&format!("/v1/keys/{id}"), Some(&app.admin_token))
        .await;
    assert_eq!(resp.status(), 204);
    assert_eq!(app.get("/v1/whoami", Some(&token)).await.status(), 401);
    let again = app
        .delete(&format!("/v1/keys/{id}"), Some(&app.admin_token))
        .await;
    assert_eq!(again.status(), 404);
}

#[tokio::test]
async fn secrets_are_stored_only_as_argon2id_hashes() {
    let app = spawn_app().await;
    let (id, token) = app.create_key("dpo").await;
    let secret = token.rsplit_once('_').unwrap().1;
    let n = app
        .scalar_i64(&format!(
            "SELECT COUNT(*) FROM api_keys WHERE id = '{id}' AND secret_hash LIKE '$argon2id$v=19$m=19456,t=2,p=1$%'"
        ))
        .await;
    assert_eq!(n, 1);
    let leaked = app
        .scalar_i64(&format!(
            "SELECT COUNT(*) FROM api_keys WHERE secret_hash LIKE '%{secret}%'"
        ))
        .await;
    assert_eq!(leaked, 0);
}

#[tokio::test]
async fn esp_keys_need_a_recipient_and_purposes_and_others_refuse_them() {
    let app = spawn_app().await;
    let cases = [
        (json!({"name": "e", "role": "esp"}), "recipient"),
        (
            json!({"name": "e", "role": "esp", "recipient": "acme"}),
            "purpose",
        ),
        (
            json!({"name": "a", "role": "auditor", "recipient": "acme"}),
            "esp keys only",
        ),
        (json!({"name": "a", "role": "superuser"}), "unknown role"),
        (json!({"name": "", "role": "dpo"}), "name"),
        (
            json!({"name": "e", "role": "esp", "recipient": "Bad Name", "purposes": ["x"]}),
            "recipient id",
        ),
    ];
    for (body, needle) in cases {
        let resp = app
            .post_json("/v1/keys", Some(&app.admin_token), &body)
            .await;
        assert_eq!(resp.status(), 422, "{body}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], "validation_failed");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{msg} should mention {needle}");
    }
    let keys: Value = app
        .get("/v1/keys", Some(&app.admin_token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        keys["keys"].as_array().unwrap().len(),
        1,
        "nothing was created"
    );

    let (_, esp) = app.create_key("esp").await;
    let me: Value = app
        .get("/v1/whoami", Some(&esp))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["recipient"], "acme-esp");
    assert_eq!(me["purposes"], json!(["marketing.communications.email"]));
}

#[tokio::test]
async fn rotating_a_key_kind_adds_a_version_and_old_tokens_keep_working() {
    let app = spawn_app().await;
    let (id, token) = app.create_key("auditor").await;
    let old = app.access_token(&id, &token).await;
    let resp = app
        .client
        .post(app.url("/v1/keyring/token_signing/rotate"))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["version"], 2);
    let new = app.access_token(&id, &token).await;
    let new = new.as_str();
    assert_ne!(old, new);
    assert_eq!(app.get("/v1/whoami", Some(&old)).await.status(), 200);
    assert_eq!(app.get("/v1/whoami", Some(new)).await.status(), 200);

    let resp = app
        .client
        .post(app.url("/v1/keyring/no_such_kind/rotate"))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn the_bootstrap_admin_token_is_saved_readable_only_by_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let app = spawn_app().await;
    let path = app.data_dir.path().join("admin.token");
    let saved = std::fs::read_to_string(&path).unwrap();
    assert_eq!(saved.trim(), app.admin_token);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let me: Value = app
        .get("/v1/whoami", Some(&app.admin_token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["role"], "admin");
}
