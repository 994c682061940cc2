//! Data-subject requests: the state machine, deadlines, duplicates, bad input.
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

async fn file(app: &TestApp, key: &str, body: Value) -> reqwest::Response {
    app.post_json("/v1/dsar", Some(key), &body).await
}

async fn filed(app: &TestApp, key: &str, body: Value) -> Value {
    let r = file(app, key, body).await;
    assert_eq!(r.status(), 201);
    r.json().await.unwrap()
}

async fn act(app: &TestApp, dpo: &str, id: &str, what: &str, body: Value) -> reqwest::Response {
    app.post_json(&format!("/v1/dsar/{id}/{what}"), Some(dpo), &body)
        .await
}

async fn known_person(app: &TestApp, email: &str) {
    let (_, ingest) = app.create_key("ingest").await;
    let r = app
        .track(
            &ingest,
            "/v1/identify",
            &json!({"userId": format!("u-{email}"), "traits": {"email": email}}),
        )
        .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_request_moves_through_its_states_and_every_move_is_recorded() {
    let app = spawn_app().await;
    known_person(&app, "ann@example.com").await;
    let (dpo_id, dpo) = app.create_key("dpo").await;
    let v = filed(
        &app,
        &dpo,
        json!({"kind": "access", "identifiers": {"email": "Ann@Example.com"}, "channel": "email"}),
    )
    .await;
    assert_eq!(v["status"], "received");
    assert!(
        v["subject_id"].is_string(),
        "the identifiers found the person"
    );
    assert_eq!(v["identifier_kinds"], json!(["email"]));
    // One calendar month from 2026-12-01T10:00Z (the test clock).
    assert!(
        v["due_at"]
            .as_str()
            .unwrap()
            .starts_with("2027-01-01T10:00:00")
    );
    assert_eq!(v["days_left"], 31);
    assert_eq!(v["overdue"], false);
    let id = v["id"].as_str().unwrap();

    let r = act(
        &app,
        &dpo,
        id,
        "verify",
        json!({"method": "dpo_attested", "note": "replied from the account's address"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "verified");
    assert_eq!(v["verification_method"], "dpo_attested");
    let r = act(
        &app,
        &dpo,
        id,
        "verify",
        json!({"method": "dpo_attested", "note": "again"}),
    )
    .await;
    assert_eq!(r.status(), 409);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "invalid_state");

    let v = app.get_json(&format!("/v1/dsar/{id}"), Some(&dpo)).await;
    let moves = v["transitions"].as_array().unwrap();
    assert_eq!(moves.len(), 2);
    assert_eq!(moves[0]["from"], Value::Null);
    assert_eq!(moves[0]["to"], "received");
    assert_eq!(moves[1]["from"], "received");
    assert_eq!(moves[1]["to"], "verified");
    assert_eq!(moves[1]["by"], dpo_id.as_str());
    assert_eq!(moves[1]["reason"], "replied from the account's address");
    assert_eq!(
        app.count("audit_entries", "WHERE action = 'dsar.transition'")
            .await,
        2
    );
    // Withdrawn is final.
    let r = act(&app, &dpo, id, "withdraw", json!({})).await;
    assert_eq!(r.status(), 200);
    let r = act(
        &app,
        &dpo,
        id,
        "reject",
        json!({"reason": "manifestly_unfounded"}),
    )
    .await;
    assert_eq!(r.status(), 409);
    app.verify().await.expect("the audit log verifies");
}

#[tokio::test]
async fn deadlines_extend_once_and_overdue_requests_are_flagged() {
    let app = spawn_app().await;
    let (_, dpo) = app.create_key("dpo").await;
    let late = filed(
        &app,
        &dpo,
        json!({"kind": "erasure", "identifiers": {"email": "late@example.com"}, "channel": "letter",
               "received_at": "2026-10-31T09:00:00Z"}),
    )
    .await;
    // 31 October + one month = 30 November: already past on 1 December.
    assert!(
        late["due_at"]
            .as_str()
            .unwrap()
            .starts_with("2026-11-30T09:00:00")
    );
    assert_eq!(late["overdue"], true);
    assert_eq!(late["days_left"], -2);
    let soon = filed(
        &app,
        &dpo,
        json!({"kind": "access", "identifiers": {"email": "soon@example.com"}, "channel": "web_form",
               "received_at": "2026-11-20T09:00:00Z"}),
    )
    .await;
    let queue = app.get_json("/v1/dsar?status=received", Some(&dpo)).await;
    let ids: Vec<&str> = queue["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec![late["id"].as_str().unwrap(), soon["id"].as_str().unwrap()]
    );
    let due = app
        .get_json("/v1/dsar?due_before=2026-12-15T00:00:00Z", Some(&dpo))
        .await;
    assert_eq!(due["requests"].as_array().unwrap().len(), 1);
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    assert!(metrics.contains("consentry_dsar_overdue"), "{metrics}");

    let id = late["id"].as_str().unwrap();
    for (body, status) in [
        (json!({"months": 3, "reason": "complex"}), 422),
        (json!({"months": 0, "reason": "complex"}), 422),
        (json!({"months": 2, "reason": " "}), 422),
    ] {
        assert_eq!(act(&app, &dpo, id, "extend", body).await.status(), status);
    }
    let r = act(
        &app,
        &dpo,
        id,
        "extend",
        json!({"months": 2, "reason": "many systems to search"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["due_at"]
            .as_str()
            .unwrap()
            .starts_with("2027-01-30T09:00:00")
    );
    assert_eq!(v["overdue"], false);
    assert_eq!(v["extended_months"], 2);
    let r = act(
        &app,
        &dpo,
        id,
        "extend",
        json!({"months": 1, "reason": "more"}),
    )
    .await;
    assert_eq!(r.status(), 409, "only once");
    app.clock.advance_secs(61 * 86_400);
    let v = app.get_json(&format!("/v1/dsar/{id}"), Some(&dpo)).await;
    assert_eq!(v["overdue"], true);
    for bad in ["status=lost", "due_before=tomorrow", "colour=red"] {
        let r = app.get(&format!("/v1/dsar?{bad}"), Some(&dpo)).await;
        assert_eq!(r.status(), 400, "{bad}");
    }
}

#[tokio::test]
async fn a_second_open_request_of_the_same_kind_is_linked_to_the_first() {
    let app = spawn_app().await;
    known_person(&app, "ann@example.com").await;
    let (_, dpo) = app.create_key("dpo").await;
    let body =
        json!({"kind": "erasure", "identifiers": {"email": "ann@example.com"}, "channel": "email"});
    let first = filed(&app, &dpo, body.clone()).await;
    assert_eq!(first["duplicate_of"], Value::Null);
    let second = filed(&app, &dpo, body.clone()).await;
    assert_eq!(second["duplicate_of"], first["id"]);
    let other = filed(
        &app,
        &dpo,
        json!({"kind": "access", "identifiers": {"email": "ann@example.com"}, "channel": "email"}),
    )
    .await;
    assert_eq!(
        other["duplicate_of"],
        Value::Null,
        "another kind is its own request"
    );
    let id = first["id"].as_str().unwrap();
    let r = act(
        &app,
        &dpo,
        id,
        "reject",
        json!({"reason": "identity_not_verified"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let third = filed(&app, &dpo, body).await;
    assert_eq!(third["duplicate_of"], Value::Null, "the first is closed");
}

#[tokio::test]
async fn bad_requests_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    known_person(&app, "ann@example.com").await;
    let (_, ingest) = app.create_key("ingest").await;
    let r = app
        .track(
            &ingest,
            "/v1/identify",
            &json!({"userId": "u-bob", "traits": {"email": "bob@example.com"}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let (_, dpo) = app.create_key("dpo").await;
    let ok =
        json!({"kind": "access", "identifiers": {"email": "ann@example.com"}, "channel": "email"});
    let with = |k: &str, v: Value| {
        let mut b = ok.clone();
        b[k] = v;
        b
    };
    for (body, status, needle) in [
        (with("kind", json!("deletion")), 422, "kind: use one of"),
        (with("identifiers", json!({})), 422, "at least one"),
        (
            with("identifiers", json!({"shoe": "38"})),
            422,
            "not an identifier kind",
        ),
        (
            with("identifiers", json!({"email": "not-an-email"})),
            422,
            "identifiers.email",
        ),
        (
            with(
                "identifiers",
                json!({"email": "ann@example.com", "user_id": "u-bob"}),
            ),
            422,
            "different people",
        ),
        (with("channel", json!("")), 422, "channel"),
        (
            with("received_at", json!("2027-06-01T00:00:00Z")),
            422,
            "future",
        ),
        (with("received_at", json!("yesterday")), 422, "RFC 3339"),
        (with("colour", json!("red")), 400, "colour"),
    ] {
        let r = file(&app, &dpo, body.clone()).await;
        assert_eq!(r.status(), status, "{body}");
        let v: Value = r.json().await.unwrap();
        let m = v["error"]["message"].as_str().unwrap();
        assert!(m.contains(needle), "{m} should mention {needle}");
        assert!(!m.contains("ann@example.com"), "no personal data in errors");
    }
    assert_eq!(app.count("dsar_requests", "").await, 0);
    let v = filed(&app, &dpo, ok).await;
    let id = v["id"].as_str().unwrap();
    for (what, body) in [
        ("verify", json!({"method": "email_code", "note": "x"})),
        ("verify", json!({"method": "dpo_attested", "note": ""})),
        ("reject", json!({"reason": "busy"})),
    ] {
        assert_eq!(act(&app, &dpo, id, what, body).await.status(), 422);
    }
    assert_eq!(
        act(&app, &dpo, "dsar_nope", "withdraw", json!({}))
            .await
            .status(),
        404
    );
    let v = app.get_json(&format!("/v1/dsar/{id}"), Some(&dpo)).await;
    assert_eq!(v["status"], "received");
    assert_eq!(v["transitions"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_public_form_files_with_an_ingest_key_and_learns_only_the_receipt() {
    let app = spawn_app().await;
    known_person(&app, "ann@example.com").await;
    let (_, ingest) = app.create_key("ingest").await;
    let v = filed(
        &app,
        &ingest,
        json!({"kind": "erasure", "identifiers": {"email": "ann@example.com"}, "channel": "web_form"}),
    )
    .await;
    assert_eq!(v["status"], "received");
    assert!(v.get("subject_id").is_none(), "{v}");
    assert!(v.get("identifier_kinds").is_none());
    assert_eq!(app.get("/v1/dsar", Some(&ingest)).await.status(), 403);
    // A person the gateway does not know: filed, nobody found, rejected for no data.
    let (_, dpo) = app.create_key("dpo").await;
    let v = filed(
        &app,
        &dpo,
        json!({"kind": "access", "identifiers": {"email": "stranger@example.com"}, "channel": "email"}),
    )
    .await;
    assert_eq!(v["subject_id"], Value::Null);
    let r = act(
        &app,
        &dpo,
        v["id"].as_str().unwrap(),
        "reject",
        json!({"reason": "no_data_held"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    // Requests hold no identifier value.
    for (table, column) in [
        ("dsar_requests", "identifier_kinds"),
        ("dsar_transitions", "reason"),
    ] {
        let n = app
            .count(table, &format!("WHERE {column} LIKE '%example.com%'"))
            .await;
        assert_eq!(n, 0, "{table}.{column}");
    }
}

async fn verified(app: &TestApp, dpo: &str, kind: &str, email: &str) -> String {
    let v = filed(
        app,
        dpo,
        json!({"kind": kind, "identifiers": {"email": email}, "channel": "email"}),
    )
    .await;
    let id = v["id"].as_str().unwrap().to_owned();
    let r = act(app, dpo, &id, "execute", json!({})).await;
    assert_eq!(r.status(), 409, "nothing runs before verification");
    let r = act(
        app,
        dpo,
        &id,
        "verify",
        json!({"method": "dpo_attested", "note": "checked"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    id
}

#[tokio::test]
async fn an_access_request_gives_everything_held_and_its_package_expires() {
    let app = spawn_app().await;
    let (_, ingest) = app.create_key("ingest").await;
    let (_, dpo) = app.create_key("dpo").await;
    let r = app
        .track(
            &ingest,
            "/v1/identify",
            &json!({"userId": "u-1", "traits": {"email": "ann@example.com", "first_name": "Ann <b>",
                    "birthday": "1990-05-01", "plan": "gold"}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = app
        .track(
            &ingest,
            "/v1/track",
            &json!({"userId": "u-1", "event": "Order Completed", "properties": {"order_id": "o-1", "total": 42}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = app
        .post_json(
            "/v1/consents",
            Some(&dpo),
            &json!({"subject": {"email": "ann@example.com"}, "purpose": "email_marketing",
                    "status": "granted", "method": "double_opt_in", "source": "shop"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let esp = app
        .esp_key("acme-esp", &["marketing.communications.email"])
        .await;
    let r = app
        .post_json(
            "/v1/recipients/acme-esp/pseudonyms",
            Some(&esp),
            &json!({"purpose": "marketing.communications.email", "email": "ann@example.com"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    // Two segments: Ann is in the first.
    for (name, rule) in [
        ("Buyers", json!({"aggregate": "purchase_count", "gte": 1})),
        (
            "Big spenders",
            json!({"aggregate": "lifetime_value", "gt": 1000}),
        ),
    ] {
        let r = app
            .post_json(
                "/v1/segments",
                Some(&esp),
                &json!({"name": name, "purpose": "marketing.communications.email", "rule": rule}),
            )
            .await;
        assert_eq!(r.status(), 201);
    }

    let id = verified(&app, &dpo, "access", "ann@example.com").await;
    let r = app.get(&format!("/v1/dsar/{id}/package"), Some(&dpo)).await;
    assert_eq!(r.status(), 409, "not executed yet");
    let r = act(&app, &dpo, &id, "execute", json!({})).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "completed");

    let p = app
        .get_json(&format!("/v1/dsar/{id}/package"), Some(&dpo))
        .await;
    let ids = p["identifiers"].as_array().unwrap();
    assert!(
        ids.iter()
            .any(|i| i["kind"] == "email" && i["value"] == "ann@example.com")
    );
    assert!(
        ids.iter()
            .any(|i| i["kind"] == "user_id" && i["value"] == "u-1")
    );
    let t = |name: &str| {
        p["traits"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(
        t("first_name")["value"],
        "Ann <b>",
        "sealed traits are opened"
    );
    assert_eq!(t("birthday")["category"], "user.demographic.date_of_birth");
    assert_eq!(p["aggregates"]["lifetime_value"], 42.0);
    assert!(
        p["aggregates"]["last_purchase_at"]
            .as_str()
            .unwrap()
            .starts_with("20")
    );
    assert_eq!(p["events"].as_array().unwrap().len(), 2);
    let segments = p["segments"].as_array().unwrap();
    assert_eq!(segments.len(), 1, "{segments:?}");
    assert_eq!(segments[0]["name"], "Buyers");
    assert_eq!(segments[0]["rule"]["aggregate"], "purchase_count");
    assert_eq!(p["consents"][0]["status"], "granted");
    assert_eq!(p["consent_receipts"].as_array().unwrap().len(), 1);
    assert_eq!(p["disclosures"][0]["recipient"], "acme-esp");
    assert!(
        p["purposes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["legal_basis"] == "contract")
    );

    let html = app
        .get(&format!("/v1/dsar/{id}/package?format=html"), Some(&dpo))
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("Ann &lt;b&gt;"), "values are escaped");
    assert!(!html.contains("Ann <b>"));
    let r = app
        .get(&format!("/v1/dsar/{id}/package?format=zip"), Some(&dpo))
        .await;
    assert_eq!(r.headers()["content-type"], "application/zip");
    let bytes = r.bytes().await.unwrap();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec())).unwrap();
    let names: Vec<String> = zip.file_names().map(|n| n.unwrap().into_owned()).collect();
    for f in [
        "profile.json",
        "events.csv",
        "traits.csv",
        "consents.csv",
        "identifiers.csv",
        "disclosures.csv",
        "segments.csv",
    ] {
        assert!(names.iter().any(|n| n == f), "{f} in {names:?}");
    }
    let mut events = String::new();
    std::io::Read::read_to_string(&mut zip.by_name("events.csv").unwrap(), &mut events).unwrap();
    assert!(events.contains("Order Completed"));
    assert_eq!(
        app.get(&format!("/v1/dsar/{id}/package?format=pdf"), Some(&dpo))
            .await
            .status(),
        400
    );
    assert_eq!(
        app.count("audit_entries", "WHERE action = 'dsar.package'")
            .await,
        3
    );
    app.clock.advance_secs(8 * 86_400);
    let r = app.get(&format!("/v1/dsar/{id}/package"), Some(&dpo)).await;
    assert_eq!(r.status(), 410);
    app.verify().await.expect("the audit log verifies");
}

#[tokio::test]
async fn erasure_is_total_and_the_person_does_not_come_back() {
    let app = spawn_app().await;
    let (_, ingest) = app.create_key("ingest").await;
    let (_, dpo) = app.create_key("dpo").await;
    let esp = app
        .esp_key("acme-esp", &["marketing.communications.email"])
        .await;
    for who in ["Erasea", "Keepb"] {
        let email = format!("{}.canary@example.org", who.to_lowercase());
        let traits = json!({"email": email, "first_name": format!("{who}First"),
            "last_name": format!("{who}Last"), "phone": if who == "Erasea" { "+442079460111" } else { "+442079460222" },
            "notes": format!("{who} free text note"), "loyalty_id": format!("{who}-LOYAL")});
        let r = app
            .track(&ingest, "/v1/identify", &json!({"userId": format!("{who}-uid"), "anonymousId": format!("{who}-anon"), "traits": traits}))
            .await;
        assert_eq!(r.status(), 200);
        let r = app
            .track(&ingest, "/v1/track", &json!({"userId": format!("{who}-uid"), "event": "Product Reviewed",
                "properties": {"review": format!("{who} says hello"), "meta": {"nick": format!("{who}Nick")}}}))
            .await;
        assert_eq!(r.status(), 200);
        let r = app
            .post_json("/v1/consents", Some(&dpo), &json!({"subject": {"email": email}, "purpose": "email_marketing",
                "status": "granted", "method": "double_opt_in", "source": "shop",
                "proof": {"user_agent": format!("{who}Agent/1.0"), "form_id": format!("{who}-form")}}))
            .await;
        assert_eq!(r.status(), 201);
        let r = app
            .post_json(
                "/v1/recipients/acme-esp/pseudonyms",
                Some(&esp),
                &json!({"purpose": "marketing.communications.email", "email": email}),
            )
            .await;
        assert_eq!(r.status(), 200);
    }
    // The CRM's file knows both people too.
    const MAPPING: &str = "row_key = \"CustomerNo\"\n[identifiers]\ncustomer_id = \"CustomerNo\"\nemail = \"Email\"\nphone = \"Mobile\"\n[traits]\nfirst_name = \"First\"\n";
    const CRM: &str = "CustomerNo,Email,Mobile,First\nEraseaCRM,erasea.canary@example.org,+442079460111,EraseaFirst\nKeepbCRM,keepb.canary@example.org,+442079460222,KeepbFirst\n";
    let r = app
        .import(&ingest, "source=crm", MAPPING, "crm.csv", CRM)
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        app.active_subjects().await,
        2,
        "the file's rows are the same two people"
    );
    let id = verified(&app, &dpo, "erasure", "erasea.canary@example.org").await;
    let r = act(&app, &dpo, &id, "execute", json!({})).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "completed");

    let canaries = [
        "erasea.canary@example.org",
        "+442079460111",
        "EraseaFirst",
        "EraseaLast",
        "Erasea free text note",
        "Erasea-LOYAL",
        "Erasea-uid",
        "Erasea-anon",
        "Erasea says hello",
        "EraseaNick",
        "EraseaAgent",
        "Erasea-form",
        "EraseaCRM",
    ];
    let all = crate::helpers::tables(&app).await;
    assert!(all.iter().any(|t| t == "dsar_requests"), "{all:?}");
    for table in &all {
        let columns = crate::helpers::columns_of(&app, table).await;
        for canary in canaries {
            for form in crate::helpers::forms(canary) {
                let sql = format!(
                    "SELECT COUNT(*) FROM {table} WHERE {}",
                    crate::helpers::contains(&app, &columns, &form.replace('\'', "''"))
                );
                assert_eq!(app.scalar_i64(&sql).await, 0, "{form} left in {table}");
            }
        }
    }
    // The other person is intact.
    let other = app
        .get("/v1/subjects?email=keepb.canary%40example.org", Some(&dpo))
        .await;
    assert_eq!(other.status(), 200);
    let kept = crate::helpers::columns_of(&app, "traits").await;
    let sql = format!(
        "SELECT COUNT(*) FROM traits WHERE {}",
        crate::helpers::contains(&app, &kept, "Keepb free text note")
    );
    assert_eq!(
        app.scalar_i64(&sql).await,
        1,
        "the search finds what it should"
    );
    assert_eq!(app.active_subjects().await, 1);

    // Tracking, consent and re-identification do not bring the person back.
    let before = app.count("events", "").await;
    let r = app
        .track(
            &ingest,
            "/v1/identify",
            &json!({"userId": "new-uid", "traits": {"email": "ERASEA.canary@example.org"}}),
        )
        .await;
    assert_eq!(r.status(), 200, "acknowledged, and dropped");
    let r = app
        .track(
            &ingest,
            "/v1/track",
            &json!({"userId": "Erasea-uid", "event": "Product Viewed"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(app.count("events", "").await, before);
    assert_eq!(app.active_subjects().await, 1);
    let r = app
        .post_json("/v1/consents", Some(&dpo), &json!({"subject": {"email": "erasea.canary@example.org"},
            "purpose": "personalization", "status": "granted", "method": "web_form", "source": "shop"}))
        .await;
    assert_eq!(r.status(), 422);
    assert_eq!(app.active_subjects().await, 1);
    let r = app
        .get("/v1/subjects?email=erasea.canary%40example.org", Some(&dpo))
        .await;
    assert_eq!(r.status(), 404);
    // Re-importing the original file recreates nobody.
    let r = app
        .import(&ingest, "source=crm", MAPPING, "crm.csv", CRM)
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["skipped_suppressed"], 1, "{v}");
    assert_eq!(app.active_subjects().await, 1);
    let r = app
        .import(&ingest, "source=other-crm", MAPPING, "crm.csv", CRM)
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        app.active_subjects().await,
        1,
        "not under another source either"
    );
    assert!(app.count("suppressions", "WHERE reason = 'erasure'").await >= 4);
    assert_eq!(
        app.count("audit_entries", "WHERE action = 'subject.erase'")
            .await,
        1
    );
    app.verify().await.expect("the audit log still verifies");
}

#[tokio::test]
async fn restriction_and_objection_requests_take_effect_at_once() {
    let app = spawn_app().await;
    known_person(&app, "ann@example.com").await;
    let (_, dpo) = app.create_key("dpo").await;
    let id = verified(&app, &dpo, "objection", "ann@example.com").await;
    assert_eq!(
        act(&app, &dpo, &id, "execute", json!({})).await.status(),
        200
    );
    let s = app
        .get_json("/v1/subjects?email=ann%40example.com", Some(&dpo))
        .await;
    let sid = s["subject_id"].as_str().unwrap();
    let h = app
        .get_json(&format!("/v1/subjects/{sid}/consents"), Some(&dpo))
        .await;
    let denied: Vec<&str> = h["state"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "denied")
        .map(|s| s["consent"].as_str().unwrap())
        .collect();
    assert_eq!(
        denied,
        vec!["advertising", "email_marketing"],
        "every marketing purpose"
    );
    let id = verified(&app, &dpo, "restriction", "ann@example.com").await;
    assert_eq!(
        act(&app, &dpo, &id, "execute", json!({})).await.status(),
        200
    );
    let r = app
        .get(&format!("/v1/subjects/{sid}/restriction"), Some(&dpo))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        act(&app, &dpo, &id, "execute", json!({})).await.status(),
        409,
        "done once"
    );
    // A duplicate is not executed on its own.
    let a = verified(&app, &dpo, "access", "ann@example.com").await;
    let b = filed(
        &app,
        &dpo,
        json!({"kind": "access", "identifiers": {"email": "ann@example.com"}, "channel": "email"}),
    )
    .await;
    assert_eq!(b["duplicate_of"], a.as_str());
    let b = b["id"].as_str().unwrap();
    assert_eq!(
        act(
            &app,
            &dpo,
            b,
            "verify",
            json!({"method": "dpo_attested", "note": "x"})
        )
        .await
        .status(),
        200
    );
    assert_eq!(act(&app, &dpo, b, "execute", json!({})).await.status(), 409);
}

/// A recipient's webhook endpoint that fails its first `fail` calls, recording each.
struct Receiver {
    url: String,
    calls: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

async fn receiver(fail: usize) -> Receiver {
    use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
    let calls = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, String)>::new()));
    let seen = calls.clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = HttpServer::new(move || {
        let seen = seen.clone();
        App::new().route(
            "/hook",
            web::post().to(move |req: HttpRequest, body: String| {
                let seen = seen.clone();
                async move {
                    let sig = req
                        .headers()
                        .get("consentry-signature")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let mut calls = seen.lock().unwrap();
                    calls.push((sig, body));
                    if calls.len() <= fail {
                        HttpResponse::InternalServerError().finish()
                    } else {
                        HttpResponse::Ok().finish()
                    }
                }
            }),
        )
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    Receiver {
        url: format!("http://127.0.0.1:{port}/hook"),
        calls,
    }
}

#[tokio::test]
async fn recipients_that_received_the_data_get_a_signed_notice_retried_until_acknowledged() {
    let app = spawn_app().await;
    let hook = receiver(2).await;
    let secret = "whsec-notices-0123456789";
    let r = app
        .post_json(
            "/v1/recipients",
            Some(&app.admin_token),
            &json!({"id": "acme-esp", "name": "Acme", "kind": "esp",
                    "purposes": ["marketing.communications.email"],
                    "webhook_url": hook.url, "webhook_secret": secret}),
        )
        .await;
    assert_eq!(r.status(), 201);
    app.ensure_recipient("quiet-esp", "esp", &["marketing.communications.email"])
        .await;
    let (_, dpo) = app.create_key("dpo").await;
    known_person(&app, "ann@example.com").await;
    let r = app
        .post_json("/v1/consents", Some(&dpo), &json!({"subject": {"email": "ann@example.com"},
            "purpose": "email_marketing", "status": "granted", "method": "double_opt_in", "source": "shop"}))
        .await;
    assert_eq!(r.status(), 201);
    let mut pseudonyms = Vec::new();
    for rid in ["acme-esp", "quiet-esp"] {
        let esp = app.esp_key(rid, &["marketing.communications.email"]).await;
        let r = app
            .post_json(
                &format!("/v1/recipients/{rid}/pseudonyms"),
                Some(&esp),
                &json!({"purpose": "marketing.communications.email", "email": "ann@example.com"}),
            )
            .await;
        let v: Value = r.json().await.unwrap();
        pseudonyms.push(v["pseudonym"].as_str().unwrap().to_owned());
    }
    let id = verified(&app, &dpo, "erasure", "ann@example.com").await;
    let r = act(&app, &dpo, &id, "execute", json!({})).await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "completed_with_pending_notices");
    let v = app.get_json(&format!("/v1/dsar/{id}"), Some(&dpo)).await;
    let notices = v["notices"].as_array().unwrap();
    assert_eq!(notices.len(), 2, "{v}");
    let status = |rid: &str, v: &Value| {
        v["notices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["recipient"] == rid)
            .unwrap()["status"]
            .clone()
    };
    assert_eq!(status("quiet-esp", &v), "no_webhook");
    assert_eq!(status("acme-esp", &v), "pending");

    let client = reqwest::Client::new();
    for _ in 0..10 {
        let outbox = consentry::subject_requests::notices::Outbox {
            db: &app.state.db,
            master: &app.state.master,
            audit: &app.state.audit,
            client: &client,
            now: consentry::domain::Clock::now(app.clock.as_ref()),
        };
        outbox.deliver_due().await.unwrap();
        let v = app.get_json(&format!("/v1/dsar/{id}"), Some(&dpo)).await;
        if status("acme-esp", &v) == "delivered" {
            break;
        }
        app.clock.advance_secs(3600);
    }
    let v = app.get_json(&format!("/v1/dsar/{id}"), Some(&dpo)).await;
    assert_eq!(status("acme-esp", &v), "delivered");
    assert_eq!(v["status"], "completed", "every webhook acknowledged");
    let calls = hook.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 3, "two failures, then the acknowledgement");
    let (sig, body) = &calls[2];
    let notice: Value = serde_json::from_str(body).unwrap();
    assert_eq!(notice["action"], "erasure");
    assert_eq!(notice["request_id"], id.as_str());
    assert_eq!(
        notice["pseudonyms"],
        json!([pseudonyms[0]]),
        "only its own pseudonym"
    );
    assert!(!body.contains("ann@example.com"));
    let t = sig
        .split(',')
        .next()
        .unwrap()
        .trim_start_matches("t=")
        .parse::<i64>()
        .unwrap();
    assert_eq!(
        *sig,
        consentry::subject_requests::notices::signature(secret.as_bytes(), t, body)
    );
    let n = v["notices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["recipient"] == "acme-esp")
        .unwrap()
        .clone();
    assert_eq!(n["attempts"], 3);
    assert_eq!(
        app.count("audit_entries", "WHERE action = 'notice.failed'")
            .await,
        2
    );
    app.verify().await.expect("the audit log verifies");
}

#[tokio::test]
async fn a_legal_hold_blocks_erasure_with_its_reason_until_lifted() {
    let app = spawn_app().await;
    known_person(&app, "ann@example.com").await;
    let (_, dpo) = app.create_key("dpo").await;
    let s = app
        .get_json("/v1/subjects?email=ann%40example.com", Some(&dpo))
        .await;
    let sid = s["subject_id"].as_str().unwrap().to_owned();
    let hold = |body: Value| {
        let (app, dpo, sid) = (&app, &dpo, &sid);
        async move {
            app.client
                .put(app.url(&format!("/v1/subjects/{sid}/legal-hold")))
                .bearer_auth(dpo)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(hold(json!({"reason": ""})).await.status(), 422);
    assert_eq!(
        hold(json!({"reason": "litigation 2026-114"}))
            .await
            .status(),
        200
    );
    let id = verified(&app, &dpo, "erasure", "ann@example.com").await;
    let r = act(&app, &dpo, &id, "execute", json!({})).await;
    assert_eq!(r.status(), 409);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("litigation 2026-114")
    );
    let v = app.get_json(&format!("/v1/dsar/{id}"), Some(&dpo)).await;
    assert_eq!(v["status"], "verified", "nothing changed");
    assert_eq!(app.active_subjects().await, 1);
    let r = app
        .delete(&format!("/v1/subjects/{sid}/legal-hold"), Some(&dpo))
        .await;
    assert_eq!(r.status(), 204);
    let r = act(&app, &dpo, &id, "execute", json!({})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(app.active_subjects().await, 0);
}

/// A minimal SMTP relay that accepts every message and keeps its text.
async fn smtp_relay() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mails = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = mails.clone();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let kept = kept.clone();
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                write.write_all(b"220 test ESMTP\r\n").await.unwrap();
                let mut data: Option<String> = None;
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(d) = data.as_mut() {
                        if line == "." {
                            kept.lock().unwrap().push(data.take().unwrap());
                            write.write_all(b"250 queued\r\n").await.unwrap();
                        } else {
                            d.push_str(&line);
                            d.push('\n');
                        }
                        continue;
                    }
                    let verb = line.split_whitespace().next().unwrap_or("").to_uppercase();
                    let reply: &[u8] = match verb.as_str() {
                        "EHLO" | "HELO" => b"250 test\r\n",
                        "DATA" => {
                            data = Some(String::new());
                            b"354 go on\r\n"
                        }
                        "QUIT" => {
                            write.write_all(b"221 bye\r\n").await.unwrap();
                            return;
                        }
                        _ => b"250 ok\r\n",
                    };
                    write.write_all(reply).await.unwrap();
                }
            });
        }
    });
    (format!("smtp://127.0.0.1:{port}"), mails)
}

fn code_in(mail: &str) -> String {
    let i = mail.find(" is ").unwrap() + 4;
    mail[i..i + 6].to_owned()
}

#[tokio::test]
async fn an_emailed_code_verifies_the_requester_within_its_time_and_attempts() {
    let (url, mails) = smtp_relay().await;
    let app = crate::helpers::spawn_app_with(crate::helpers::Options {
        smtp_url: Some(url),
        ..Default::default()
    })
    .await;
    known_person(&app, "ann@example.com").await;
    let (_, dpo) = app.create_key("dpo").await;
    let file_one = || async {
        let v = filed(&app, &dpo, json!({"kind": "access", "identifiers": {"user_id": "u-ann@example.com"}, "channel": "web_form"})).await;
        v["id"].as_str().unwrap().to_owned()
    };
    let id = file_one().await;
    let r = act(&app, &dpo, &id, "verify", json!({"method": "email_code"})).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["status"], "verifying");
    let mail = mails.lock().unwrap().last().unwrap().clone();
    assert!(
        mail.contains("ann@example.com"),
        "sent to the address on file"
    );
    let code = code_in(&mail);
    assert!(!text.contains(&code), "the code is not in the answer");
    assert_eq!(
        app.count("dsar_requests", &format!("WHERE code_hash LIKE '%{code}%'"))
            .await,
        0
    );
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let r = act(
        &app,
        &dpo,
        &id,
        "verify",
        json!({"method": "email_code", "code": wrong}),
    )
    .await;
    assert_eq!(r.status(), 422);
    let e: Value = r.json().await.unwrap();
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("4 attempts left")
    );
    let r = act(
        &app,
        &dpo,
        &id,
        "verify",
        json!({"method": "email_code", "code": code}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "verified");
    assert_eq!(v["verification_method"], "email_code");

    // Five wrong entries void the code, even for the right one after.
    let id = file_one().await;
    assert_eq!(
        act(&app, &dpo, &id, "verify", json!({"method": "email_code"}))
            .await
            .status(),
        200
    );
    let code = code_in(&mails.lock().unwrap().last().unwrap().clone());
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for _ in 0..5 {
        let r = act(
            &app,
            &dpo,
            &id,
            "verify",
            json!({"method": "email_code", "code": wrong}),
        )
        .await;
        assert_eq!(r.status(), 422);
    }
    let r = act(
        &app,
        &dpo,
        &id,
        "verify",
        json!({"method": "email_code", "code": code}),
    )
    .await;
    assert_eq!(r.status(), 409, "void after five wrong codes");
    assert_eq!(
        app.count("audit_entries", "WHERE action = 'dsar.code_wrong'")
            .await,
        6
    );
    // A new code works again.
    assert_eq!(
        act(&app, &dpo, &id, "verify", json!({"method": "email_code"}))
            .await
            .status(),
        200
    );
    let code = code_in(&mails.lock().unwrap().last().unwrap().clone());
    let r = act(
        &app,
        &dpo,
        &id,
        "verify",
        json!({"method": "email_code", "code": code}),
    )
    .await;
    assert_eq!(r.status(), 200);

    // An expired code.
    let id = file_one().await;
    assert_eq!(
        act(&app, &dpo, &id, "verify", json!({"method": "email_code"}))
            .await
            .status(),
        200
    );
    let code = code_in(&mails.lock().unwrap().last().unwrap().clone());
    app.clock.advance_secs(16 * 60);
    let r = act(
        &app,
        &dpo,
        &id,
        "verify",
        json!({"method": "email_code", "code": code}),
    )
    .await;
    assert_eq!(r.status(), 410);
    let v = app.get_json(&format!("/v1/dsar/{id}"), Some(&dpo)).await;
    assert_eq!(v["status"], "verifying", "nothing executed");
    // Without a relay the method is refused and says why.
    let plain = spawn_app().await;
    known_person(&plain, "bob@example.com").await;
    let (_, dpo2) = plain.create_key("dpo").await;
    let v = filed(
        &plain,
        &dpo2,
        json!({"kind": "access", "identifiers": {"email": "bob@example.com"}, "channel": "email"}),
    )
    .await;
    let r = act(
        &plain,
        &dpo2,
        v["id"].as_str().unwrap(),
        "verify",
        json!({"method": "email_code"}),
    )
    .await;
    assert_eq!(r.status(), 422);
    let e: Value = r.json().await.unwrap();
    assert!(e["error"]["message"].as_str().unwrap().contains("smtp_url"));
}

#[tokio::test]
async fn rectification_replaces_values_and_leaves_no_trace_of_the_old_ones() {
    let app = spawn_app().await;
    let (_, ingest) = app.create_key("ingest").await;
    let r = app
        .track(
            &ingest,
            "/v1/identify",
            &json!({"userId": "u-1",
            "traits": {"email": "ann.oldname@example.com", "lastName": "Oldname", "plan": "gold"}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    known_person(&app, "bob@example.com").await;
    let (_, dpo) = app.create_key("dpo").await;
    let id = verified(&app, &dpo, "rectification", "ann.oldname@example.com").await;
    let rectify = |body: Value| {
        let (app, dpo, id) = (&app, &dpo, &id);
        async move {
            app.post_json(&format!("/v1/dsar/{id}/rectify"), Some(dpo), &body)
                .await
        }
    };
    assert_eq!(
        act(&app, &dpo, &id, "execute", json!({})).await.status(),
        409,
        "needs the values"
    );
    assert_eq!(rectify(json!({})).await.status(), 422);
    assert_eq!(
        rectify(json!({"traits": {"email": "x@example.com"}}))
            .await
            .status(),
        422,
        "identifiers go under identifiers"
    );
    assert_eq!(
        rectify(json!({"identifiers": {"email": "not-an-email"}}))
            .await
            .status(),
        422
    );
    let r = rectify(json!({"identifiers": {"email": "bob@example.com"}})).await;
    assert_eq!(r.status(), 409, "belongs to another person");
    let r = rectify(json!({"identifiers": {"email": "ann.newname@example.com"},
        "traits": {"last_name": "Newname", "plan": null}}))
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "completed");

    let s = app
        .get_json("/v1/subjects?email=ann.newname%40example.com", Some(&dpo))
        .await;
    let sid = s["subject_id"].as_str().unwrap();
    assert_eq!(
        app.get("/v1/subjects?email=ann.oldname%40example.com", Some(&dpo))
            .await
            .status(),
        404,
        "the old address no longer finds anyone"
    );
    let names: Vec<&str> = s["traits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"last_name") && !names.contains(&"lastName") && !names.contains(&"plan"),
        "{names:?}"
    );
    // The package shows the new values only.
    let access = verified(&app, &dpo, "access", "ann.newname@example.com").await;
    assert_eq!(
        act(&app, &dpo, &access, "execute", json!({}))
            .await
            .status(),
        200
    );
    let p = app
        .get(&format!("/v1/dsar/{access}/package"), Some(&dpo))
        .await
        .text()
        .await
        .unwrap();
    assert!(p.contains("Newname") && p.contains("ann.newname@example.com"));
    assert!(!p.contains("Oldname") && !p.contains("ann.oldname"), "{p}");
    let _ = sid;
}

#[tokio::test]
async fn the_retention_sweep_deletes_what_no_purpose_may_keep_any_longer() {
    let app = spawn_app().await;
    let (_, ingest) = app.create_key("ingest").await;
    let calls = [
        json!({"type": "identify", "userId": "u-1", "timestamp": "2026-11-30T00:00:00Z",
               "traits": {"email": "ann@example.com", "plan": "gold", "gender": "f", "shoe_size": 38}}),
        json!({"type": "page", "userId": "u-1", "name": "Shoes", "timestamp": "2024-06-01T00:00:00Z"}),
        json!({"type": "page", "userId": "u-1", "name": "Bags", "timestamp": "2026-11-01T00:00:00Z"}),
        json!({"type": "track", "userId": "u-1", "event": "Order Completed", "timestamp": "2024-06-01T00:00:00Z",
               "properties": {"order_id": "o-1", "total": 10}}),
        json!({"type": "track", "userId": "u-1", "event": "Order Completed", "timestamp": "2019-06-01T00:00:00Z",
               "properties": {"order_id": "o-0", "total": 10}}),
        json!({"type": "track", "userId": "u-1", "event": "Email Opened", "timestamp": "2024-06-01T00:00:00Z"}),
    ];
    let r = app
        .track(&ingest, "/v1/batch", &json!({"batch": calls}))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(app.count("events", "").await, 6);
    let policies = app.state.policies.get();
    let sweeper = consentry::subject_requests::retention::Sweeper {
        db: &app.state.db,
        audit: &app.state.audit,
        policies: &policies,
        actor: consentry::domain::Actor::cli(),
        now: consentry::domain::Clock::now(app.clock.as_ref()),
    };
    let dry = sweeper.sweep(true).await.unwrap();
    // The 2024 page view (browsing kept 395 days), the 2019 order (purchases kept 2190
    // days) and the 2024 email open (730 days); the gender trait (no purpose reads it).
    assert_eq!((dry.events, dry.traits), (3, 1), "{dry:?}");
    assert_eq!(
        app.count("events", "").await,
        6,
        "a dry run deletes nothing"
    );
    let done = sweeper.sweep(false).await.unwrap();
    assert_eq!((done.events, done.traits), (3, 1));
    assert_eq!(app.count("events", "").await, 3);
    assert_eq!(app.count("traits", "WHERE name = 'gender'").await, 0);
    assert_eq!(
        app.count("traits", "WHERE name IN ('plan', 'shoe_size', 'email')")
            .await,
        3
    );
    assert_eq!(
        app.count("audit_entries", "WHERE action = 'retention.sweep'")
            .await,
        1
    );
    let again = sweeper.sweep(false).await.unwrap();
    assert_eq!((again.events, again.traits), (0, 0));
}

/// PostgreSQL: ingest locks a person's subject row, then writes their aggregates; an
/// erasure of that person at the same moment must queue behind it (or be run again if
/// the database gives it up in a deadlock), and complete, never fail.
#[tokio::test]
async fn an_erasure_meeting_an_ingest_on_the_same_person_completes() {
    use sea_orm::ConnectionTrait;
    let app = spawn_app().await;
    if app.backend() != sea_orm::DbBackend::Postgres {
        return; // SQLite has one writer at a time: the two cannot interleave.
    }
    let (_, dpo) = app.create_key("dpo").await;
    known_person(&app, "locked.canary@example.org").await;
    assert_eq!(app.count("aggregates", "").await, 1);
    let id = verified(&app, &dpo, "erasure", "locked.canary@example.org").await;
    // What ingest does for a known person, held open: the subject row locked first.
    let ingest = app.db.begin_write().await.expect("begin");
    ingest
        .execute_unprepared("SELECT id FROM subjects ORDER BY id FOR UPDATE")
        .await
        .expect("lock the subject");
    let erase = act(&app, &dpo, &id, "execute", json!({}));
    let rest_of_ingest = async {
        // Once the erasure waits for a lock, ingest goes on to the aggregates.
        let mut waited = 0;
        while app
            .scalar_i64(
                "SELECT COUNT(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .await
            == 0
        {
            waited += 1;
            assert!(
                waited < 500,
                "the erasure never waited for the ingest's lock"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let r = ingest
            .execute_unprepared("UPDATE aggregates SET purchase_count = purchase_count + 1")
            .await;
        ingest.commit().await.expect("ingest commits");
        r
    };
    let (erased, ingested) = tokio::join!(erase, rest_of_ingest);
    ingested.expect("the ingest is not the one given up");
    assert_eq!(erased.status(), 200, "{}", erased.text().await.unwrap());
    assert_eq!(app.count("aggregates", "").await, 0);
    assert_eq!(app.active_subjects().await, 0);
}
