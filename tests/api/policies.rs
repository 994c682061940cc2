//! The policy set over HTTP: the record of processing activities, and atomic reloads.
use serde_json::{Value, json};

use crate::helpers::{Options, shipped_policies, spawn_app, spawn_app_with};

#[tokio::test]
async fn the_record_of_processing_lists_every_purpose_of_the_policy_files() {
    let app = spawn_app().await;
    let (_, dpo) = app.create_key("dpo").await;
    let (_, auditor) = app.create_key("auditor").await;
    let text = std::fs::read_to_string(shipped_policies().join("purposes.yaml")).unwrap();
    let file: Value = yaml_serde::from_str(&text).unwrap();
    let ropa = app.get_json("/v1/ropa", Some(&dpo)).await;
    let activities = ropa["activities"].as_array().unwrap();
    let purposes = file["purposes"].as_object().unwrap();
    assert_eq!(activities.len(), purposes.len());
    for (name, def) in purposes {
        let a = activities
            .iter()
            .find(|a| a["purpose"] == name.as_str())
            .unwrap_or_else(|| panic!("{name} missing from the record"));
        assert_eq!(a["legal_basis"], def["legal_basis"], "{name}");
        let read: Vec<&Value> = a["categories_of_data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| &c["category"])
            .collect();
        let declared: Vec<&Value> = def["reads"].as_array().unwrap().iter().collect();
        assert_eq!(read, declared, "{name}");
        let kinds: Vec<&Value> = a["recipients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| &r["kind"])
            .collect();
        let declared: Vec<&Value> = def["recipients"].as_array().unwrap().iter().collect();
        assert_eq!(kinds, declared, "{name}");
        assert_eq!(
            a["profiling"],
            def.get("profiling").cloned().unwrap_or(json!(false)),
            "{name}"
        );
    }
    assert!(ropa["safeguards"].as_array().unwrap().len() >= 3);
    let r = app.get("/v1/ropa?format=markdown", Some(&auditor)).await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/markdown")
    );
    let md = r.text().await.unwrap();
    assert!(
        md.contains("## marketing.communications.email") && md.contains("Art. 6(1)(a)"),
        "{md}"
    );
    assert_eq!(
        app.get("/v1/ropa?format=pdf", Some(&dpo)).await.status(),
        400
    );
}

#[tokio::test]
async fn a_reload_takes_a_good_set_whole_and_refuses_a_bad_one_keeping_the_old() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["taxonomy.yaml", "identifiers.yaml", "purposes.yaml"] {
        std::fs::copy(shipped_policies().join(f), dir.path().join(f)).unwrap();
    }
    let app = spawn_app_with(Options {
        policies: Some(dir.path().to_path_buf()),
        ..Options::default()
    })
    .await;
    let (_, key) = app.create_key("ingest").await;
    let (_, dpo) = app.create_key("dpo").await;
    app.track(
        &key,
        "/v1/identify",
        &json!({"userId": "u1", "traits": {"shoe_size": 38}}),
    )
    .await;
    let category = |v: &Value| {
        v["traits"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == "shoe_size")
            .unwrap()["category"]
            .clone()
    };
    assert_eq!(
        category(&app.get_json("/v1/subjects?user_id=u1", Some(&dpo)).await),
        "unclassified"
    );

    // A bad set: refused whole, each problem with its file and line; the old set stays.
    let taxonomy = std::fs::read_to_string(dir.path().join("taxonomy.yaml")).unwrap();
    std::fs::write(
        dir.path().join("taxonomy.yaml"),
        format!("{taxonomy}  shoe_size:\n    category: user.shoes\n"),
    )
    .unwrap();
    let reload = || async {
        app.client
            .post(app.url("/v1/policies/reload"))
            .bearer_auth(&app.admin_token)
            .send()
            .await
            .unwrap()
    };
    let r = reload().await;
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("taxonomy.yaml:") && msg.contains("unknown category `user.shoes`"),
        "{msg}"
    );
    app.track(
        &key,
        "/v1/identify",
        &json!({"userId": "u2", "traits": {"shoe_size": 40}}),
    )
    .await;
    assert_eq!(
        category(&app.get_json("/v1/subjects?user_id=u2", Some(&dpo)).await),
        "unclassified"
    );

    // A good set: in force at once, and stored traits are reclassified.
    std::fs::write(
        dir.path().join("taxonomy.yaml"),
        format!("{taxonomy}  shoe_size:\n    category: user.preferences\n"),
    )
    .unwrap();
    let r = reload().await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(v["summary"].as_str().unwrap().contains("purposes"), "{v}");
    assert_eq!(
        category(&app.get_json("/v1/subjects?user_id=u1", Some(&dpo)).await),
        "user.preferences"
    );
    assert_eq!(
        app.count(
            "audit_entries",
            "WHERE action = 'policy.reload' AND outcome = 'failed'"
        )
        .await,
        1
    );
    assert_eq!(
        app.count(
            "audit_entries",
            "WHERE action = 'policy.reload' AND outcome = 'ok'"
        )
        .await,
        1
    );
}
