//! The gate as an ESP meets it: recipients, pseudonyms, minimised views, every reason to
//! refuse one, BOLA, unlinkability and key rotation.
use serde_json::{Value, json};

use crate::helpers::{Options, TestApp, shipped_policies, spawn_app, spawn_app_with};

const EMAIL: &str = "marketing.communications.email";

async fn identify(app: &TestApp, key: &str, user: &str, traits: Value) {
    let r = app
        .track(
            key,
            "/v1/identify",
            &json!({"userId": user, "traits": traits}),
        )
        .await;
    assert_eq!(r.status(), 200);
}

async fn consent(app: &TestApp, key: &str, email: &str, consent: &str, status: &str) {
    let r = app
        .post_json(
            "/v1/consents",
            Some(key),
            &json!({"subject": {"email": email}, "purpose": consent, "status": status,
                    "method": "double_opt_in", "source": "test"}),
        )
        .await;
    assert_eq!(r.status(), 201, "{consent} {status}");
}

async fn pseudonym(
    app: &TestApp,
    esp: &str,
    rid: &str,
    purpose: &str,
    email: &str,
) -> reqwest::Response {
    app.post_json(
        &format!("/v1/recipients/{rid}/pseudonyms"),
        Some(esp),
        &json!({"purpose": purpose, "email": email}),
    )
    .await
}

async fn pseudonym_of(app: &TestApp, esp: &str, rid: &str, purpose: &str, email: &str) -> String {
    let r = pseudonym(app, esp, rid, purpose, email).await;
    assert_eq!(r.status(), 200, "pseudonym for {rid}");
    let v: Value = r.json().await.unwrap();
    v["pseudonym"].as_str().unwrap().to_owned()
}

async fn profile(app: &TestApp, esp: &str, rid: &str, p: &str, purpose: &str) -> reqwest::Response {
    app.get(
        &format!("/v1/recipients/{rid}/profiles/{p}?purpose={purpose}"),
        Some(esp),
    )
    .await
}

async fn denials(app: &TestApp, reason: &str) -> i64 {
    app.count(
        "audit_entries",
        &format!(
            "WHERE action = 'disclosure.profile' AND outcome = 'denied' AND attributes LIKE '%reason:{reason}%'"
        ),
    )
    .await
}

#[tokio::test]
async fn an_esp_sees_only_what_the_purpose_reads_under_its_own_pseudonym() {
    let app = spawn_app().await;
    let (_, ingest) = app.create_key("ingest").await;
    let (_, dpo) = app.create_key("dpo").await;
    identify(
        &app,
        &ingest,
        "u-1",
        json!({"email": "Ann@Example.com", "first_name": "Ann", "last_name": "Smith",
               "phone": "+44 20 7946 0958", "country": "GB", "birthday": "1990-05-01",
               "plan": "gold", "interests": "shoes", "shoe_size": 38}),
    )
    .await;
    let r = app
        .track(
            &ingest,
            "/v1/track",
            &json!({"userId": "u-1", "event": "Order Completed",
                    "properties": {"order_id": "o-1", "total": 120.5, "currency": "EUR"}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    consent(&app, &dpo, "ann@example.com", "email_marketing", "granted").await;
    let esp = app.esp_key("acme-esp", &[EMAIL]).await;

    let p = pseudonym_of(&app, &esp, "acme-esp", EMAIL, "ANN@example.com").await;
    assert!(p.starts_with("ps1."), "{p}");
    let r = profile(&app, &esp, "acme-esp", &p, EMAIL).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["pseudonym"], p.as_str());
    assert_eq!(v["purpose"], EMAIL);
    assert_eq!(v["email"], "ann@example.com");
    assert_eq!(v["traits"]["first_name"], "Ann");
    assert_eq!(v["traits"]["country"], "GB");
    assert_eq!(v["traits"]["plan"], "gold");
    for absent in [
        "last_name",
        "phone",
        "birthday",
        "interests",
        "shoe_size",
        "email",
    ] {
        assert!(v["traits"].get(absent).is_none(), "{absent} leaked: {v}");
    }
    assert!(v.get("phone").is_none());
    assert_eq!(v["aggregates"]["lifetime_value"], 120.5);
    assert_eq!(v["aggregates"]["purchase_count"], 1);
    assert!(
        v["aggregates"].get("recently_viewed").is_none(),
        "browsing is not read for email marketing"
    );
    // No internal id anywhere in the answer.
    let s = app
        .get_json("/v1/subjects?email=ann%40example.com", Some(&dpo))
        .await;
    let subject_id = s["subject_id"].as_str().unwrap();
    assert!(!text.contains(subject_id));
    assert!(
        !text.contains("u-1"),
        "the shop's user id is not for the ESP"
    );

    // Both disclosures are recorded, with attribute names and never values.
    assert_eq!(app.count("disclosures", "").await, 2);
    assert_eq!(
        app.count(
            "disclosures",
            "WHERE purpose = 'marketing.communications.email' AND attributes LIKE '%traits.first_name%' AND attributes NOT LIKE '%Ann%'"
        )
        .await,
        1
    );
    assert_eq!(
        app.count(
            "audit_entries",
            "WHERE action = 'disclosure.profile' AND outcome = 'ok' AND purpose = 'marketing.communications.email' AND attributes LIKE '%disclosed:email%'"
        )
        .await,
        1
    );
    app.verify().await.expect("the audit log verifies");
}

/// The shipped policies plus a legitimate-interest purpose, to test objections.
fn policies_with_legitimate_interest() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["taxonomy.yaml", "identifiers.yaml", "purposes.yaml"] {
        std::fs::copy(shipped_policies().join(f), dir.path().join(f)).unwrap();
    }
    let mut purposes = std::fs::read_to_string(dir.path().join("purposes.yaml")).unwrap();
    purposes.push_str(
        "  service.improvement:\n    description: Improving the shop from how it is used.\n    legal_basis: legitimate_interest\n    reads:\n      - user.behavior.browsing_history\n    retention: 90d\n    recipients: [analytics_tool, internal]\n",
    );
    std::fs::write(dir.path().join("purposes.yaml"), purposes).unwrap();
    dir
}

#[tokio::test]
async fn every_reason_to_refuse_answers_like_an_unknown_pseudonym() {
    let policies = policies_with_legitimate_interest();
    let app = spawn_app_with(Options {
        policies: Some(policies.path().to_path_buf()),
        ..Options::default()
    })
    .await;
    let (_, ingest) = app.create_key("ingest").await;
    let (_, dpo) = app.create_key("dpo").await;
    let esp = app.esp_key("acme-esp", &[EMAIL]).await;
    let unknown = format!("ps1.{}", "A".repeat(43));
    let r = profile(&app, &esp, "acme-esp", &unknown, EMAIL).await;
    assert_eq!(r.status(), 404);
    let not_found: Value = r.json().await.unwrap();

    let grant_and_pseudonym = |user: &'static str, email: &'static str, traits: Value| {
        let (app, ingest, dpo, esp) = (&app, &ingest, &dpo, &esp);
        async move {
            let mut t = traits;
            t["email"] = json!(email);
            identify(app, ingest, user, t).await;
            consent(app, dpo, email, "email_marketing", "granted").await;
            let p = pseudonym_of(app, esp, "acme-esp", EMAIL, email).await;
            assert_eq!(profile(app, esp, "acme-esp", &p, EMAIL).await.status(), 200);
            p
        }
    };
    let same_404 = |r: reqwest::Response| {
        let expected = not_found.clone();
        async move {
            assert_eq!(r.status(), 404);
            let v: Value = r.json().await.unwrap();
            assert_eq!(v, expected, "a refusal must look like an unknown pseudonym");
        }
    };

    // Consent withdrawn.
    let p = grant_and_pseudonym("u-1", "a@example.com", json!({})).await;
    consent(&app, &dpo, "a@example.com", "email_marketing", "withdrawn").await;
    same_404(profile(&app, &esp, "acme-esp", &p, EMAIL).await).await;
    assert_eq!(denials(&app, "no_consent").await, 1);
    let r = pseudonym(&app, &esp, "acme-esp", EMAIL, "a@example.com").await;
    assert_eq!(r.status(), 404, "no pseudonym for a person without consent");

    // Restricted (Art. 18), then lifted.
    let p = grant_and_pseudonym("u-2", "b@example.com", json!({})).await;
    let id = app
        .get_json("/v1/subjects?email=b%40example.com", Some(&dpo))
        .await["subject_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app
        .client
        .put(app.url(&format!("/v1/subjects/{id}/restriction")))
        .bearer_auth(&dpo)
        .json(&json!({"reason": "accuracy contested"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    same_404(profile(&app, &esp, "acme-esp", &p, EMAIL).await).await;
    assert_eq!(denials(&app, "restricted").await, 1);
    let r = app
        .delete(&format!("/v1/subjects/{id}/restriction"), Some(&dpo))
        .await;
    assert_eq!(r.status(), 204);
    assert_eq!(
        profile(&app, &esp, "acme-esp", &p, EMAIL).await.status(),
        200
    );

    // Younger than the purpose's minimum age (16 for email marketing).
    let p = grant_and_pseudonym("u-3", "c@example.com", json!({"birthday": "1999-01-01"})).await;
    identify(&app, &ingest, "u-3", json!({"birthday": "2014-06-30"})).await;
    same_404(profile(&app, &esp, "acme-esp", &p, EMAIL).await).await;
    assert_eq!(denials(&app, "under_age").await, 1);

    // On the suppression list.
    let p = grant_and_pseudonym("u-4", "d@example.com", json!({})).await;
    let hash = app
        .keyring
        .get()
        .suppression_hash("email", "d@example.com")
        .unwrap();
    app.exec(&format!(
        "INSERT INTO suppressions (kind, hash, reason, created_at) VALUES ('email', '{hash}', 'erased', 0)"
    ))
    .await;
    same_404(profile(&app, &esp, "acme-esp", &p, EMAIL).await).await;
    assert_eq!(denials(&app, "suppressed").await, 1);

    // GPC opts out of a sale/share purpose.
    app.ensure_recipient("adnet", "ad_network", &["marketing.advertising"])
        .await;
    let ads = app.esp_key("adnet", &["marketing.advertising"]).await;
    identify(
        &app,
        &ingest,
        "u-5",
        json!({"email": "e@example.com", "birthday": "1980-01-01"}),
    )
    .await;
    consent(&app, &dpo, "e@example.com", "advertising", "granted").await;
    let p = pseudonym_of(
        &app,
        &ads,
        "adnet",
        "marketing.advertising",
        "e@example.com",
    )
    .await;
    let r = profile(&app, &ads, "adnet", &p, "marketing.advertising").await;
    assert_eq!(r.status(), 200);
    let r = app
        .client
        .post(app.url("/v1/page"))
        .basic_auth(&ingest, Some(""))
        .header("Sec-GPC", "1")
        .json(&json!({"userId": "u-5", "name": "Home"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    same_404(profile(&app, &ads, "adnet", &p, "marketing.advertising").await).await;
    assert_eq!(denials(&app, "gpc_opt_out").await, 1);

    // An objection to a legitimate-interest purpose.
    app.ensure_recipient("stats", "analytics_tool", &["service.improvement"])
        .await;
    let stats = app.esp_key("stats", &["service.improvement"]).await;
    identify(&app, &ingest, "u-6", json!({"email": "f@example.com"})).await;
    let p = pseudonym_of(
        &app,
        &stats,
        "stats",
        "service.improvement",
        "f@example.com",
    )
    .await;
    let r = app
        .post_json(
            "/v1/consents",
            Some(&dpo),
            &json!({"subject": {"email": "f@example.com"}, "purpose": "service.improvement",
                    "status": "granted", "method": "web_form", "source": "test"}),
        )
        .await;
    assert_eq!(r.status(), 422, "nothing to grant on legitimate interest");
    consent(&app, &dpo, "f@example.com", "service.improvement", "denied").await;
    same_404(profile(&app, &stats, "stats", &p, "service.improvement").await).await;
    assert_eq!(denials(&app, "objection").await, 1);
    app.verify().await.expect("the audit log verifies");
}

#[tokio::test]
async fn another_recipients_key_or_pseudonym_gets_nothing_and_pseudonyms_do_not_link() {
    let app = spawn_app().await;
    let (_, ingest) = app.create_key("ingest").await;
    let (_, dpo) = app.create_key("dpo").await;
    identify(&app, &ingest, "u-1", json!({"email": "ann@example.com"})).await;
    consent(&app, &dpo, "ann@example.com", "email_marketing", "granted").await;
    let a = app.esp_key("mail-a", &[EMAIL]).await;
    let b = app.esp_key("mail-b", &[EMAIL]).await;
    let pa = pseudonym_of(&app, &a, "mail-a", EMAIL, "ann@example.com").await;
    let pb = pseudonym_of(&app, &b, "mail-b", EMAIL, "ann@example.com").await;
    assert_ne!(pa, pb, "two recipients never share a pseudonym");
    assert_eq!(
        pa,
        pseudonym_of(&app, &a, "mail-a", EMAIL, "ann@example.com").await,
        "stable for one recipient"
    );

    // A's key on B's routes: refused before anything is looked up.
    assert_eq!(profile(&app, &a, "mail-b", &pb, EMAIL).await.status(), 403);
    assert_eq!(
        pseudonym(&app, &a, "mail-b", EMAIL, "ann@example.com")
            .await
            .status(),
        403
    );
    assert_eq!(profile(&app, &a, "no-such", &pa, EMAIL).await.status(), 403);
    // B's pseudonym on A's own route means nobody to A.
    assert_eq!(profile(&app, &a, "mail-a", &pb, EMAIL).await.status(), 404);
    // Other roles never read profiles, admins included.
    assert_eq!(
        profile(&app, &app.admin_token, "mail-a", &pa, EMAIL)
            .await
            .status(),
        403
    );
    // A purpose the key was not given, and one that does not exist.
    let r = profile(&app, &a, "mail-a", &pa, "essential.service").await;
    assert_eq!(r.status(), 403);
    let r = profile(&app, &a, "mail-a", &pa, "no.such.purpose").await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "unknown_purpose");
    let r = profile(&app, &a, "mail-a", "not-a-pseudonym", EMAIL).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_pseudonym");
    let r = app
        .get(&format!("/v1/recipients/mail-a/profiles/{pa}"), Some(&a))
        .await;
    assert_eq!(r.status(), 400, "purpose is required");
    assert_eq!(
        app.count(
            "disclosures",
            "WHERE recipient_id = 'mail-b' AND purpose = 'essential.service'"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn rotation_keeps_old_pseudonyms_resolving_until_their_version_is_retired() {
    let app = spawn_app().await;
    let (_, ingest) = app.create_key("ingest").await;
    let (_, dpo) = app.create_key("dpo").await;
    identify(&app, &ingest, "u-1", json!({"email": "ann@example.com"})).await;
    consent(&app, &dpo, "ann@example.com", "email_marketing", "granted").await;
    let esp = app.esp_key("acme-esp", &[EMAIL]).await;
    let p1 = pseudonym_of(&app, &esp, "acme-esp", EMAIL, "ann@example.com").await;

    let r = app
        .post_json(
            "/v1/recipients/acme-esp/keys/rotate",
            Some(&app.admin_token),
            &json!({}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["version"], 2);
    let p2 = pseudonym_of(&app, &esp, "acme-esp", EMAIL, "ann@example.com").await;
    assert!(p2.starts_with("ps2."), "{p2}");
    assert_ne!(p1[4..], p2[4..]);
    assert_eq!(
        profile(&app, &esp, "acme-esp", &p1, EMAIL).await.status(),
        200
    );
    assert_eq!(
        profile(&app, &esp, "acme-esp", &p2, EMAIL).await.status(),
        200
    );

    let r = app
        .post_json(
            "/v1/recipients/acme-esp/keys/1/retire",
            Some(&app.admin_token),
            &json!({}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = profile(&app, &esp, "acme-esp", &p1, EMAIL).await;
    assert_eq!(r.status(), 410);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "pseudonym_retired");
    assert_eq!(
        profile(&app, &esp, "acme-esp", &p2, EMAIL).await.status(),
        200
    );
    // The last active version cannot be retired.
    let r = app
        .post_json(
            "/v1/recipients/acme-esp/keys/2/retire",
            Some(&app.admin_token),
            &json!({}),
        )
        .await;
    assert_eq!(r.status(), 422);
    let r = app
        .get_json("/v1/recipients/acme-esp", Some(&app.admin_token))
        .await;
    assert_eq!(r["pseudonym_keys"][0]["retired"], true);
    assert_eq!(r["pseudonym_keys"][1]["retired"], false);
    app.verify().await.expect("the audit log verifies");
}

#[tokio::test]
async fn recipients_are_checked_against_the_policies_and_keep_their_secret() {
    let app = spawn_app().await;
    let admin = app.admin_token.clone();
    let base = json!({"id": "acme-esp", "name": "Acme Mail", "kind": "esp", "purposes": [EMAIL]});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    let cases = [
        (with("id", json!("Acme ESP")), "id"),
        (with("kind", json!("printer")), "kind: use one of"),
        (with("purposes", json!([])), "at least one purpose"),
        (with("purposes", json!(["no.such"])), "not a purpose"),
        (
            with("purposes", json!(["marketing.advertising"])),
            "does not allow recipients of kind `esp`",
        ),
        (
            with("webhook_url", json!("https://hooks.example/consentry")),
            "needs a secret",
        ),
        (
            {
                let mut b = with("webhook_url", json!("http://hooks.example/x"));
                b["webhook_secret"] = json!("s".repeat(32));
                b
            },
            "https://",
        ),
    ];
    for (body, needle) in cases {
        let r = app.post_json("/v1/recipients", Some(&admin), &body).await;
        assert_eq!(r.status(), 422, "{body}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "validation_failed");
        let m = v["error"]["message"].as_str().unwrap();
        assert!(m.contains(needle), "{m} should mention {needle}");
    }
    assert_eq!(app.count("recipients", "").await, 0, "nothing was created");

    let secret = "whsec-0123456789abcdef-secret";
    let mut good = with("webhook_url", json!("https://hooks.example/consentry"));
    good["webhook_secret"] = json!(secret);
    let r = app.post_json("/v1/recipients", Some(&admin), &good).await;
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["has_webhook_secret"], true);
    assert!(v.get("webhook_secret").is_none());
    assert_eq!(v["pseudonym_keys"][0]["version"], 1);
    let r = app.post_json("/v1/recipients", Some(&admin), &good).await;
    assert_eq!(r.status(), 409);
    let leaked = app
        .count(
            "recipients",
            &format!("WHERE webhook_secret = {}", app.blob(secret.as_bytes())),
        )
        .await;
    assert_eq!(leaked, 0, "the webhook secret is stored wrapped");

    // An esp key needs a registered recipient and only its purposes.
    for (body, needle) in [
        (
            json!({"name": "e", "role": "esp", "recipient": "other", "purposes": [EMAIL]}),
            "not registered",
        ),
        (
            json!({"name": "e", "role": "esp", "recipient": "acme-esp", "purposes": ["essential.service"]}),
            "not registered for essential.service",
        ),
    ] {
        let r = app.post_json("/v1/keys", Some(&admin), &body).await;
        assert_eq!(r.status(), 422, "{body}");
        let v: Value = r.json().await.unwrap();
        assert!(v["error"]["message"].as_str().unwrap().contains(needle));
    }

    // The record of processing names the registered recipient under its purposes.
    let (_, dpo) = app.create_key("dpo").await;
    let ropa = app.get_json("/v1/ropa", Some(&dpo)).await;
    let activity = ropa["activities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["purpose"] == EMAIL)
        .unwrap()
        .clone();
    let esp = activity["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "esp")
        .unwrap()
        .clone();
    assert_eq!(esp["registered"][0]["id"], "acme-esp");
    let listed = app.get_json("/v1/recipients", Some(&dpo)).await;
    assert_eq!(listed["recipients"].as_array().unwrap().len(), 1);
}
