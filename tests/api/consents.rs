//! The consent ledger: recording, history, state at a moment, bad input.
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

async fn post(app: &TestApp, key: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url("/v1/consents"))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap()
}

fn grant(purpose: &str, status: &str, at: &str) -> Value {
    json!({"subject": {"email": "Ann@Example.com"}, "purpose": purpose, "status": status,
           "method": "web_form", "source": "shop.example/signup", "notice_version": "2026-10",
           "captured_at": at,
           "proof": {"user_agent": "Mozilla/5.0", "form_id": "signup-1", "ip": "203.0.113.77"}})
}

#[tokio::test]
async fn history_answers_what_was_consented_at_any_moment() {
    let app = spawn_app().await;
    let (_, key) = app.create_key("ingest").await;
    let (_, dpo) = app.create_key("dpo").await;
    let r = post(
        &app,
        &key,
        &grant("personalization", "granted", "2026-11-01T10:00:00Z"),
    )
    .await;
    assert_eq!(r.status(), 201);
    let first: Value = r.json().await.unwrap();
    assert_eq!(first["status"], "granted");
    assert_eq!(first["proof"]["ip"], "203.0.113.0/24");
    // A consent-based purpose stands for the consent it needs.
    let r = post(
        &app,
        &dpo,
        &grant("personalize", "withdrawn", "2026-11-20T10:00:00Z"),
    )
    .await;
    assert_eq!(r.status(), 201);
    // A grant of a double opt-in consent waits for confirmation.
    let r = post(
        &app,
        &key,
        &grant("email_marketing", "granted", "2026-11-01T10:00:00Z"),
    )
    .await;
    let pending: Value = r.json().await.unwrap();
    assert_eq!(pending["status"], "pending");
    // The person was created from the identifier, once.
    assert_eq!(app.active_subjects().await, 1);

    let s = app
        .get_json("/v1/subjects?email=ann%40example.com", Some(&dpo))
        .await;
    let id = s["subject_id"].as_str().unwrap();
    let h = app
        .get_json(&format!("/v1/subjects/{id}/consents"), Some(&dpo))
        .await;
    assert_eq!(h["records"].as_array().unwrap().len(), 3);
    let state = |h: &Value, c: &str| {
        h["state"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["consent"] == c)
            .map(|s| s["status"].clone())
    };
    assert_eq!(state(&h, "personalization"), Some(json!("withdrawn")));
    assert_eq!(state(&h, "email_marketing"), Some(json!("pending")));
    let then = app
        .get_json(
            &format!("/v1/subjects/{id}/consents?at=2026-11-10T00:00:00Z"),
            Some(&dpo),
        )
        .await;
    assert_eq!(state(&then, "personalization"), Some(json!("granted")));
    let before = app
        .get_json(
            &format!("/v1/subjects/{id}/consents?at=2026-10-01T00:00:00Z"),
            Some(&dpo),
        )
        .await;
    assert_eq!(before["state"], json!([]));
    assert_eq!(
        app.get(
            &format!("/v1/subjects/{}/consents", "0".repeat(32)),
            Some(&dpo)
        )
        .await
        .status(),
        404
    );
    // Written with their audit entries; the raw IP is nowhere.
    assert_eq!(
        app.count("audit_entries", "WHERE action = 'consent.record'")
            .await,
        3
    );
    assert_eq!(
        app.count("consents", "WHERE proof LIKE '%203.0.113.77%'")
            .await,
        0
    );
}

#[tokio::test]
async fn bad_consent_requests_are_refused_and_write_nothing() {
    let app = spawn_app().await;
    let (_, key) = app.create_key("ingest").await;
    let good = grant("personalization", "granted", "2026-11-01T10:00:00Z");
    let with = |k: &str, v: Value| {
        let mut b = good.clone();
        b[k] = v;
        b
    };
    let cases = [
        (with("purpose", json!("shoe_polish")), 400, "purpose"),
        (
            with("purpose", json!("essential.service")),
            422,
            "not consent-based",
        ),
        (with("status", json!("maybe")), 400, "status"),
        (with("method", json!("telepathy")), 400, "method"),
        (
            with("captured_at", json!("2027-06-01T00:00:00Z")),
            400,
            "future",
        ),
        (with("captured_at", json!("yesterday")), 400, "captured_at"),
        (with("proof", json!({"ip": "300.1.1.1"})), 400, "proof.ip"),
        (
            with("subject", json!({"email": "a@example.com", "user_id": "u"})),
            400,
            "exactly one",
        ),
        (
            with("subject", json!({"email": "nonsense"})),
            400,
            "subject.email",
        ),
        (with("extra", json!(1)), 400, "extra"),
    ];
    for (body, status, needle) in cases {
        let r = post(&app, &key, &body).await;
        assert_eq!(r.status(), status, "{body}");
        let v: Value = r.json().await.unwrap();
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{needle}: {v}"
        );
    }
    assert_eq!(app.count("consents", "").await, 0);
    assert_eq!(app.count("subjects", "").await, 0);
}

#[tokio::test]
async fn a_merge_carries_the_consent_records_to_the_surviving_subject() {
    let app = spawn_app().await;
    let (_, key) = app.create_key("ingest").await;
    let (_, dpo) = app.create_key("dpo").await;
    post(
        &app,
        &key,
        &grant("analytics", "granted", "2026-11-01T10:00:00Z"),
    )
    .await;
    app.track(
        &key,
        "/v1/identify",
        &json!({"userId": "u-1", "anonymousId": "a-2"}),
    )
    .await;
    assert_eq!(app.active_subjects().await, 2);
    app.track(
        &key,
        "/v1/identify",
        &json!({"userId": "u-1", "traits": {"email": "ann@example.com"}}),
    )
    .await;
    assert_eq!(app.active_subjects().await, 1);
    let s = app.get_json("/v1/subjects?user_id=u-1", Some(&dpo)).await;
    let id = s["subject_id"].as_str().unwrap();
    let h = app
        .get_json(&format!("/v1/subjects/{id}/consents"), Some(&dpo))
        .await;
    assert_eq!(h["state"][0]["consent"], "analytics");
    assert_eq!(h["state"][0]["status"], "granted");
}

#[tokio::test]
async fn a_double_opt_in_grant_counts_only_once_its_signed_link_is_followed() {
    let app = spawn_app().await;
    let (_, key) = app.create_key("ingest").await;
    let (_, dpo) = app.create_key("dpo").await;
    let now = "2026-12-01T10:00:00Z";
    let pending: Value = post(&app, &key, &grant("email_marketing", "granted", now))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(pending["status"], "pending");
    let token = pending["confirm_token"].as_str().unwrap().to_owned();
    // A forged or altered link confirms nothing and says nothing.
    let mut forged = token.clone();
    forged.pop();
    forged.push(if token.ends_with('A') { 'B' } else { 'A' });
    for bad in [forged.as_str(), "c1.nothing.99999999999.AAAA", "garbage"] {
        assert_eq!(
            app.get(&format!("/v1/consents/confirm/{bad}"), None)
                .await
                .status(),
            404,
            "{bad}"
        );
    }
    let r = app
        .get(&format!("/v1/consents/confirm/{token}"), None)
        .await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    // Used once: the second click is refused.
    assert_eq!(
        app.get(&format!("/v1/consents/confirm/{token}"), None)
            .await
            .status(),
        410
    );
    let s = app
        .get_json("/v1/subjects?email=ann%40example.com", Some(&dpo))
        .await;
    let id = s["subject_id"].as_str().unwrap();
    let h = app
        .get_json(&format!("/v1/subjects/{id}/consents"), Some(&dpo))
        .await;
    let state = &h["state"][0];
    assert_eq!(
        (state["consent"].clone(), state["status"].clone()),
        (json!("email_marketing"), json!("granted"))
    );
    let last = h["records"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["method"].clone(), last["recorded_by"].clone()),
        (json!("double_opt_in"), json!("subject"))
    );

    // Unconfirmed for longer than the link lives: the link is gone and the grant lapses.
    let other = json!({"subject": {"email": "bo@example.com"}, "purpose": "email_marketing",
        "status": "granted", "method": "checkbox", "source": "shop"});
    let pending: Value = post(&app, &key, &other).await.json().await.unwrap();
    let token = pending["confirm_token"].as_str().unwrap().to_owned();
    app.clock.advance_secs(73 * 3600);
    assert_eq!(
        app.get(&format!("/v1/consents/confirm/{token}"), None)
            .await
            .status(),
        410
    );
    let s = app
        .get_json("/v1/subjects?email=bo%40example.com", Some(&dpo))
        .await;
    let id = s["subject_id"].as_str().unwrap();
    let h = app
        .get_json(&format!("/v1/subjects/{id}/consents"), Some(&dpo))
        .await;
    assert_eq!(h["state"][0]["status"], "expired");
}

#[tokio::test]
async fn a_receipt_is_signed_and_names_the_person_only_by_pseudonym() {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let app = spawn_app().await;
    let (_, key) = app.create_key("ingest").await;
    let (_, dpo) = app.create_key("dpo").await;
    let rec: Value = post(
        &app,
        &key,
        &grant("personalization", "granted", "2026-11-01T10:00:00Z"),
    )
    .await
    .json()
    .await
    .unwrap();
    let id = rec["id"].as_str().unwrap();
    let r = app
        .get_json(&format!("/v1/consents/{id}/receipt"), Some(&dpo))
        .await;
    assert_eq!(r["alg"], "Ed25519");
    let receipt = &r["receipt"];
    assert_eq!(receipt["version"], "KI-CR-v1.1.0");
    assert_eq!(receipt["consentReceiptID"], id);
    assert_eq!(receipt["services"][0]["service"], "personalization");
    assert_eq!(
        receipt["services"][0]["purposes"][0]["purposeCategory"],
        json!(["personalize"])
    );
    let subject = app
        .get_json("/v1/subjects?email=ann%40example.com", Some(&dpo))
        .await;
    let text = r.to_string();
    assert!(
        !text.contains("ann@example.com")
            && !text.contains(subject["subject_id"].as_str().unwrap()),
        "{text}"
    );
    // The signature covers the payload bytes, which decode to the receipt.
    let payload = URL_SAFE_NO_PAD
        .decode(r["payload"].as_str().unwrap())
        .unwrap();
    assert_eq!(&serde_json::from_slice::<Value>(&payload).unwrap(), receipt);
    let public = STANDARD.decode(r["public_key"].as_str().unwrap()).unwrap();
    let sig = URL_SAFE_NO_PAD
        .decode(r["signature"].as_str().unwrap())
        .unwrap();
    let key = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &public);
    assert!(key.verify(&payload, &sig).is_ok());
    let mut tampered = payload.clone();
    tampered[10] ^= 1;
    assert!(key.verify(&tampered, &sig).is_err());
    assert_eq!(
        app.get("/v1/consents/nope/receipt", Some(&dpo))
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn segment_consent_categories_and_gpc_are_recorded_when_they_change_something() {
    let app = spawn_app().await;
    let (_, key) = app.create_key("ingest").await;
    let (_, dpo) = app.create_key("dpo").await;
    let event = |prefs: Value| {
        json!({"userId": "u-1", "event": "Product Viewed",
               "context": {"consent": {"categoryPreferences": prefs}}})
    };
    let prefs = json!({"Analytics": true, "Advertising": false, "Functional": true});
    for _ in 0..3 {
        assert_eq!(
            app.track(&key, "/v1/track", &event(prefs.clone()))
                .await
                .status(),
            200
        );
    }
    let s = app.get_json("/v1/subjects?user_id=u-1", Some(&dpo)).await;
    let id = s["subject_id"].as_str().unwrap().to_owned();
    let history = || async {
        app.get_json(&format!("/v1/subjects/{id}/consents"), Some(&dpo))
            .await
    };
    let h = history().await;
    // Only the mapped categories, and only once for three identical events.
    assert_eq!(h["records"].as_array().unwrap().len(), 2, "{h}");
    let status = |h: &Value, c: &str| {
        h["state"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["consent"] == c)
            .map(|s| s["status"].clone())
    };
    assert_eq!(status(&h, "analytics"), Some(json!("granted")));
    assert_eq!(status(&h, "advertising"), Some(json!("denied")));
    assert!(
        h["records"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["method"] == "cmp")
    );
    app.track(&key, "/v1/track", &event(json!({"Advertising": true})))
        .await;
    assert_eq!(
        status(&history().await, "advertising"),
        Some(json!("granted"))
    );

    // The browser's Global Privacy Control opts out of every sale/share purpose.
    let r = app
        .client
        .post(app.url("/v1/track"))
        .basic_auth(&key, Some(""))
        .header("Sec-GPC", "1")
        .json(&json!({"userId": "u-1", "event": "Product Viewed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let h = history().await;
    assert_eq!(status(&h, "advertising"), Some(json!("denied")));
    assert_eq!(
        h["records"].as_array().unwrap().last().unwrap()["method"],
        "gpc"
    );
    assert_eq!(
        status(&h, "analytics"),
        Some(json!("granted")),
        "GPC is not about analytics"
    );

    // A mapped category that is not a boolean refuses the message; nothing is written.
    let before = app.count("events", "").await;
    let r = app
        .track(&key, "/v1/track", &event(json!({"Analytics": "yes"})))
        .await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("categoryPreferences.Analytics"),
        "{v}"
    );
    assert_eq!(app.count("events", "").await, before);
}

#[tokio::test]
async fn concurrent_records_are_each_committed_with_their_audit_entry() {
    let app = spawn_app().await;
    let (_, key) = app.create_key("ingest").await;
    for i in 0..3 {
        let mut body = grant("personalization", "granted", "2026-11-01T10:00:00Z");
        body["subject"] = json!({"email": format!("p{i}@example.com")});
        assert_eq!(post(&app, &key, &body).await.status(), 201);
    }
    let entries_before = app.scalar_i64("SELECT COUNT(*) FROM audit_entries").await;
    // Enough at once that the writers contend for the audit head and the write lock.
    let mut tasks = Vec::new();
    for i in 0..24 {
        let (client, url, key) = (app.client.clone(), app.url("/v1/consents"), key.clone());
        tasks.push(tokio::spawn(async move {
            let body = json!({"subject": {"email": format!("p{}@example.com", i % 3)},
                "purpose": "personalization",
                "status": if i % 2 == 0 { "granted" } else { "withdrawn" },
                "method": "web_form", "source": "shop.example/signup"});
            let r = client
                .post(url)
                .bearer_auth(&key)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 24);
    // Every answered record is stored, each with its entry, and the log has no gap.
    assert_eq!(app.scalar_i64("SELECT COUNT(*) FROM consents").await, 27);
    assert_eq!(
        app.scalar_i64("SELECT COUNT(*) FROM audit_entries WHERE action = 'consent.record'")
            .await,
        27
    );
    let report = app.verify().await.expect("the log verifies");
    assert!(report.entries as i64 >= entries_before + 24);
}

/// The record and its audit entry go to the database in one round trip; when another
/// node or process appends to the log meanwhile, the record is still stored once, with
/// its entry, and the log has no gap.
#[tokio::test]
async fn a_record_is_stored_once_with_its_entry_when_another_writer_appends_to_the_log() {
    let app = spawn_app().await;
    let (_, key) = app.create_key("ingest").await;
    let body = grant("personalization", "granted", "2026-11-01T10:00:00Z");
    assert_eq!(post(&app, &key, &body).await.status(), 201);
    // A second writer of the same log (another node).
    let other = consentry::audit::AuditLog::new(
        app.keyring.clone(),
        app.clock.clone(),
        app.state.settings.audit_origin.clone(),
        1000,
    );
    for _ in 0..3 {
        let entry = consentry::audit::NewEntry::new(
            consentry::domain::Actor::anonymous(),
            "test.other_node",
            consentry::audit::Outcome::Ok,
        );
        other
            .record(&app.db, entry)
            .await
            .expect("the other node appends");
    }
    let withdrawn = grant("personalization", "withdrawn", "2026-11-02T10:00:00Z");
    let r = post(&app, &key, &withdrawn).await;
    assert_eq!(r.status(), 201);
    assert_eq!(app.count("consents", "").await, 2, "stored once");
    assert_eq!(
        app.count("audit_entries", "WHERE action = 'consent.record'")
            .await,
        2
    );
    let report = app.verify().await.expect("the log verifies");
    let size = app.scalar_i64("SELECT size FROM audit_head").await;
    assert_eq!(report.entries as i64, size);
    assert_eq!(app.count("audit_entries", "").await, size, "no gap");
}

/// The group commit's one call: several records and their audit entries in one statement
/// each side (on PostgreSQL one statement in all), on either database; rolled back, neither
/// the records nor their entries remain.
#[tokio::test]
async fn several_records_and_their_entries_go_in_together_or_not_at_all() {
    use consentry::audit::{NewEntry, Outcome};
    use consentry::domain::Actor;
    use consentry::store::consents::{ConsentRow, insert_many_statement};
    let app = spawn_app().await;
    let audit = &app.state.audit;
    // The five people the records are about (a record must name a subject that exists).
    for i in 0..5 {
        app.exec(&format!(
            "INSERT INTO subjects (id, status, created_at, first_seen_at, last_seen_at) \
             VALUES ('s{i}', 'active', 1, 1, 1)"
        ))
        .await;
    }
    let rows = |tag: &str| -> Vec<ConsentRow> {
        (0..5)
            .map(|i| ConsentRow {
                id: format!("{tag}{i}"),
                subject_id: format!("s{i}"),
                consent: "personalization".into(),
                status: "granted".into(),
                method: "api".into(),
                source: "test".into(),
                notice_version: Some("v1".into()),
                captured_at: 1_796_000_000_000_000,
                recorded_at: 1_796_000_000_000_000,
                recorded_by: "k".into(),
                proof: None,
            })
            .collect()
    };
    // Five records and their five entries, in a transaction left open for the caller.
    let app = &app;
    let rows = &rows;
    let batch = |tag: &'static str| async move {
        let txn = app.db.begin_write().await.expect("begin");
        let entries = vec![NewEntry::new(Actor::anonymous(), "consent.record", Outcome::Ok); 5];
        audit
            .append_batch_with(
                &txn,
                (insert_many_statement(app.backend(), &rows(tag)), 5),
                entries,
            )
            .await
            .expect("append");
        txn
    };
    let records = "WHERE action = 'consent.record'";
    batch("a").await.commit().await.expect("commit");
    assert_eq!(app.count("consents", "").await, 5);
    assert_eq!(app.count("audit_entries", records).await, 5);
    app.verify().await.expect("the log verifies");

    batch("b").await.rollback().await.expect("rollback");
    assert_eq!(app.count("consents", "").await, 5);
    assert_eq!(app.count("audit_entries", records).await, 5);
    assert_eq!(app.count("audit_pending", "").await, 0);
}

/// A record whose subject is erased between its look-up and its insert is not stored: on
/// PostgreSQL the record names its subject by a foreign key (migration 19), and the
/// request then answers as for an erased person. The erasure is simulated by deleting the
/// subject's row and leaving its identifier, so the look-up still finds it.
#[tokio::test]
async fn a_record_for_a_subject_erased_after_its_look_up_is_not_stored() {
    let app = spawn_app().await;
    if app.backend() != sea_orm::DbBackend::Postgres {
        // SQLite's writer looks the subject up inside the inserting transaction.
        return;
    }
    let dpo = app.create_key("dpo").await.1;
    let body = serde_json::json!({"subject": {"email": "gone@example.com"},
        "purpose": "email_marketing", "status": "granted", "method": "web_form",
        "source": "test"});
    let resp = app.post_json("/v1/consents", Some(&dpo), &body).await;
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    let subject: String = sea_orm::ConnectionTrait::query_one_raw(
        app.db.conn(),
        sea_orm::Statement::from_string(app.backend(), "SELECT subject_id FROM consents"),
    )
    .await
    .unwrap()
    .unwrap()
    .try_get_by_index(0)
    .unwrap();
    // The erasure as the look-up did not see it: the person's rows, records and data key
    // gone and the address on the suppression list, but its identifier still found.
    app.exec(&format!(
        "DELETE FROM subject_keys WHERE subject_id = '{subject}'; \
         DELETE FROM aggregates WHERE subject_id = '{subject}'; \
         DELETE FROM subjects WHERE id = '{subject}'"
    ))
    .await;
    assert_eq!(
        app.count("consents", "").await,
        0,
        "the records go with their subject"
    );
    let hash = app
        .keyring
        .get()
        .suppression_hash("email", "gone@example.com")
        .unwrap();
    consentry::store::suppressions::insert_all(
        app.db.conn(),
        &[("email".to_owned(), hash)],
        "erasure",
        1,
    )
    .await
    .unwrap();
    let resp = app.post_json("/v1/consents", Some(&dpo), &body).await;
    assert_eq!(resp.status(), 422);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "validation_failed", "{v}");
    assert_eq!(app.count("consents", "").await, 0);
}
