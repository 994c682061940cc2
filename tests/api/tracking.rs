//! The Segment-compatible tracking API.
use serde_json::{Value, json};

use crate::helpers::{TestApp, columns_of, contains, spawn_app, tables};

#[tokio::test]
async fn a_write_key_sends_every_call_type_and_each_is_stored() {
    let app = spawn_app().await;
    let (_, key) = app.create_key("ingest").await;
    let calls = [
        (
            "/v1/identify",
            json!({"userId": "u1", "traits": {"plan": "gold"}}),
        ),
        (
            "/v1/track",
            json!({"userId": "u1", "event": "Order Completed", "properties": {"revenue": 30}}),
        ),
        ("/v1/page", json!({"userId": "u1", "name": "Home"})),
        ("/v1/screen", json!({"userId": "u1", "name": "Cart"})),
        ("/v1/group", json!({"userId": "u1", "groupId": "acme"})),
        ("/v1/alias", json!({"userId": "u1", "previousId": "anon-1"})),
    ];
    for (route, body) in &calls {
        let resp = app.track(&key, route, body).await;
        assert_eq!(resp.status(), 200, "{route}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["success"], true);
    }
    assert_eq!(app.count("events", "").await, 6);
    assert_eq!(app.active_subjects().await, 1);
    let names: i64 = app.count("events", "WHERE name = 'Order Completed'").await;
    assert_eq!(names, 1);
}

#[tokio::test]
async fn a_repeated_message_id_is_stored_once() {
    let app = spawn_app().await;
    let (_, key) = app.create_key("ingest").await;
    let body = json!({"batch": [
        {"type": "track", "userId": "u1", "event": "Product Viewed", "messageId": "m-1"},
        {"type": "track", "userId": "u1", "event": "Product Viewed", "messageId": "m-2"},
    ]});
    let v: Value = app
        .track(&key, "/v1/batch", &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["accepted"], 2);
    let v: Value = app
        .track(&key, "/v1/batch", &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (v["accepted"].clone(), v["duplicates"].clone()),
        (json!(0), json!(2))
    );
    assert_eq!(app.count("events", "").await, 2);
}

#[tokio::test]
async fn an_invalid_message_refuses_the_batch_and_nothing_is_written() {
    let app = spawn_app().await;
    let (_, key) = app.create_key("ingest").await;
    let entries = app.count("audit_entries", "").await;
    let body = json!({"batch": [
        {"type": "identify", "userId": "u1", "traits": {"email": "jane@example.com"}},
        {"type": "track", "userId": "u1"},
    ]});
    let resp = app.track(&key, "/v1/batch", &body).await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_message");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("batch[1].event"),
        "{v}"
    );
    let bad_email = json!({"userId": "u1", "traits": {"email": "not-an-address"}});
    let resp = app.track(&key, "/v1/identify", &bad_email).await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("traits.email"),
        "{v}"
    );
    assert_eq!(app.count("events", "").await, 0);
    assert_eq!(app.count("subjects", "").await, 0);
    assert_eq!(app.count("audit_entries", "").await, entries);
}

#[tokio::test]
async fn write_keys_come_as_basic_user_names_and_only_ingest_keys_may_write() {
    let app = spawn_app().await;
    let (_, dpo) = app.create_key("dpo").await;
    let body = json!({"userId": "u1", "event": "e"});
    let resp = app
        .client
        .post(app.url("/v1/track"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(
        resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    assert_eq!(
        app.track("cs_wrong", "/v1/track", &body).await.status(),
        401
    );
    assert_eq!(app.track(&dpo, "/v1/track", &body).await.status(), 403);
}

#[tokio::test]
async fn gzip_bodies_and_oversized_messages() {
    let app = spawn_app().await;
    let (_, key) = app.create_key("ingest").await;
    let body = crate::helpers::gzip(
        json!({"batch": [{"type": "track", "anonymousId": "a", "event": "e"}]})
            .to_string()
            .as_bytes(),
    );
    let resp = app
        .client
        .post(app.url("/v1/batch"))
        .basic_auth(&key, Some(""))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let big = json!({"anonymousId": "a", "event": "e", "properties": {"x": "y".repeat(40_000)}});
    assert_eq!(app.track(&key, "/v1/track", &big).await.status(), 413);
}

#[tokio::test]
async fn anonymous_browsing_then_identify_is_one_person() {
    let app = spawn_app().await;
    let (_, key) = app.create_key("ingest").await;
    app.track(
        &key,
        "/v1/page",
        &json!({"anonymousId": "anon-7", "name": "Shoes"}),
    )
    .await;
    app.track(
        &key,
        "/v1/track",
        &json!({"anonymousId": "anon-7", "event": "Product Viewed"}),
    )
    .await;
    assert_eq!(app.active_subjects().await, 1);
    app.track(
        &key,
        "/v1/identify",
        &json!({"userId": "u-7", "anonymousId": "anon-7",
        "traits": {"email": "Jane@Example.com"}}),
    )
    .await;
    assert_eq!(app.active_subjects().await, 1);
    // Later, the same person by email alone from another device: still one subject.
    app.track(
        &key,
        "/v1/track",
        &json!({"anonymousId": "anon-phone", "event": "Cart Viewed",
        "context": {"traits": {"email": "jane@example.com"}}}),
    )
    .await;
    assert_eq!(app.active_subjects().await, 1);
    assert_eq!(app.count("events", "").await, 4);
}

#[tokio::test]
async fn a_message_linking_two_subjects_merges_them() {
    let app = spawn_app().await;
    let (_, key) = app.create_key("ingest").await;
    app.track(
        &key,
        "/v1/track",
        &json!({"anonymousId": "laptop", "event": "Product Viewed"}),
    )
    .await;
    app.track(
        &key,
        "/v1/identify",
        &json!({"userId": "u-9", "traits": {"plan": "gold"}}),
    )
    .await;
    assert_eq!(app.active_subjects().await, 2);
    app.track(
        &key,
        "/v1/alias",
        &json!({"previousId": "laptop", "userId": "u-9"}),
    )
    .await;
    assert_eq!(app.active_subjects().await, 1);
    assert_eq!(
        app.count(
            "subjects",
            "WHERE status = 'merged' AND merged_into IS NOT NULL"
        )
        .await,
        1
    );
    assert_eq!(app.count("events", "").await, 3);
    let distinct = app
        .scalar_i64("SELECT COUNT(DISTINCT subject_id) FROM events")
        .await;
    assert_eq!(distinct, 1, "events were re-pointed");
    assert_eq!(
        app.count("subject_keys", "").await,
        1,
        "the merged subject's key is gone"
    );
    assert_eq!(
        app.count("audit_entries", "WHERE action = 'subject.merge'")
            .await,
        1
    );
    app.verify().await.expect("the audit log verifies");
}

#[tokio::test]
async fn two_different_user_ids_are_never_merged_but_recorded_as_a_conflict() {
    let app = spawn_app().await;
    let (_, key) = app.create_key("ingest").await;
    app.track(
        &key,
        "/v1/identify",
        &json!({"userId": "alice", "traits": {"email": "shared@example.com"}}),
    )
    .await;
    app.track(
        &key,
        "/v1/identify",
        &json!({"userId": "bob", "anonymousId": "b-device"}),
    )
    .await;
    app.track(
        &key,
        "/v1/identify",
        &json!({"userId": "bob", "traits": {"email": "shared@example.com"}}),
    )
    .await;
    assert_eq!(app.active_subjects().await, 2);
    assert_eq!(app.count("identity_conflicts", "").await, 1);
}

#[tokio::test]
async fn no_direct_identifier_is_stored_in_clear_anywhere() {
    let app = spawn_app().await;
    let (_, key) = app.create_key("ingest").await;
    let canary = "canary.7f3a@example.org";
    let phone = "+442079460958";
    app.track(
        &key,
        "/v1/identify",
        &json!({"userId": canary, "anonymousId": "canary-anon",
        "traits": {"email": canary, "phone": phone, "firstName": "Canaryfirst", "plan": "gold"}}),
    )
    .await;
    app.track(
        &key,
        "/v1/track",
        &json!({"userId": canary, "event": "Order Completed",
        "properties": {"email": canary, "revenue": 12, "customer": {"phone": phone}},
        "context": {"traits": {"email": canary}, "ip": "203.0.113.9"}}),
    )
    .await;
    // The same person's CRM row, imported.
    let r = app
        .import(
            &key,
            "source=crm",
            "row_key = \"Card\"\n[identifiers]\nemail = \"Email\"\nloyalty_id = \"Card\"\n[traits]\nlast_name = \"Last\"\n",
            "crm.csv",
            &format!("Email,Card,Last\n{canary},CANARY-CARD,Canarylast\n"),
        )
        .await;
    assert_eq!(r.status(), 200);
    let tables = tables(&app).await;
    assert!(tables.len() >= 15, "{tables:?}");
    for table in &tables {
        let columns = columns_of(&app, table).await;
        for needle in [
            canary,
            phone,
            "Canaryfirst",
            "Canarylast",
            "CANARY-CARD",
            "canary-anon",
            "203.0.113.9",
        ] {
            let sql = format!(
                "SELECT COUNT(*) FROM {table} WHERE {}",
                contains(&app, &columns, needle)
            );
            assert_eq!(
                app.scalar_i64(&sql).await,
                0,
                "{needle} found in clear in {table}"
            );
        }
    }
    // The same search does find what is meant to be in clear.
    let columns = columns_of(&app, "events").await;
    let sql = format!(
        "SELECT COUNT(*) FROM events WHERE {}",
        contains(&app, &columns, "Order Completed")
    );
    assert_eq!(app.scalar_i64(&sql).await, 1);
    // The non-identifying trait is there in clear, for segments to read.
    assert_eq!(
        app.count("traits", "WHERE name = 'plan' AND value = '\"gold\"'")
            .await,
        1
    );
}

async fn agg_i64(app: &TestApp, column: &str) -> i64 {
    app.scalar_i64(&format!("SELECT COALESCE({column}, -1) FROM aggregates"))
        .await
}

#[tokio::test]
async fn aggregates_follow_the_ecommerce_and_email_events() {
    let app = spawn_app().await;
    let (_, key) = app.create_key("ingest").await;
    let now = app.state.clock.now().unix_micros();
    let events = [
        ("/v1/page", json!({"userId": "u", "name": "Home"})),
        (
            "/v1/track",
            json!({"userId": "u", "event": "Product Viewed", "properties": {"product_id": "p1"}}),
        ),
        (
            "/v1/track",
            json!({"userId": "u", "event": "Product Added", "properties": {"product_id": "p1"}}),
        ),
        (
            "/v1/track",
            json!({"userId": "u", "event": "Order Completed", "properties": {"total": 80.0}}),
        ),
        (
            "/v1/track",
            json!({"userId": "u", "event": "Order Completed", "properties": {"revenue": 20}}),
        ),
        ("/v1/track", json!({"userId": "u", "event": "Email Opened"})),
        (
            "/v1/track",
            json!({"userId": "u", "event": "Email Link Clicked"}),
        ),
    ];
    for (route, body) in &events {
        assert_eq!(app.track(&key, route, body).await.status(), 200);
    }
    assert_eq!(agg_i64(&app, "purchase_count").await, 2);
    assert_eq!(agg_i64(&app, "CAST(lifetime_value AS BIGINT)").await, 100);
    assert_eq!(
        agg_i64(&app, "CAST(average_order_value AS BIGINT)").await,
        50
    );
    assert_eq!(agg_i64(&app, "last_purchase_at").await, now);
    assert_eq!(agg_i64(&app, "last_email_open_at").await, now);
    assert_eq!(agg_i64(&app, "last_email_click_at").await, now);
    assert_eq!(agg_i64(&app, "last_page_view_at").await, now);
    assert_eq!(
        app.count(
            "aggregates",
            "WHERE recently_viewed = '[\"p1\"]' AND cart = '[]'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn a_cart_left_alone_for_the_quiet_period_is_marked_abandoned() {
    let app = spawn_app().await;
    let (_, key) = app.create_key("ingest").await;
    let added =
        json!({"userId": "u", "event": "Product Added", "properties": {"product_id": "p9"}});
    assert_eq!(app.track(&key, "/v1/track", &added).await.status(), 200);
    let sweep = |app: &TestApp| {
        let state = app.state.clone();
        async move {
            consentry::profiles::ingest::sweep_abandoned_carts(
                &state.db,
                &state.audit,
                state.clock.now(),
                3600,
            )
            .await
            .unwrap()
        }
    };
    app.clock.advance_secs(1800);
    assert_eq!(sweep(&app).await, 0, "half an hour is not abandonment");
    app.clock.advance_secs(1801);
    assert_eq!(sweep(&app).await, 1);
    assert_eq!(sweep(&app).await, 0, "marked once");
    assert_eq!(
        agg_i64(&app, "cart_abandoned_at").await,
        app.state.clock.now().unix_micros()
    );
    let bought = json!({"userId": "u", "event": "Order Completed", "properties": {"total": 9.5}});
    assert_eq!(app.track(&key, "/v1/track", &bought).await.status(), 200);
    assert_eq!(agg_i64(&app, "cart_abandoned_at").await, -1);
    assert_eq!(
        app.count(
            "audit_entries",
            "WHERE action = 'aggregates.cart_abandoned'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn a_merge_adds_up_both_subjects_aggregates() {
    let app = spawn_app().await;
    let (_, key) = app.create_key("ingest").await;
    let order = |who: (&str, &str)| json!({who.0: who.1, "event": "Order Completed", "properties": {"total": 10}});
    app.track(&key, "/v1/track", &order(("anonymousId", "tablet")))
        .await;
    app.track(&key, "/v1/track", &order(("userId", "u-5")))
        .await;
    assert_eq!(app.count("aggregates", "").await, 2);
    app.track(
        &key,
        "/v1/alias",
        &json!({"previousId": "tablet", "userId": "u-5"}),
    )
    .await;
    assert_eq!(app.count("aggregates", "").await, 1);
    assert_eq!(agg_i64(&app, "purchase_count").await, 2);
}

#[tokio::test]
async fn a_dpo_finds_a_subject_by_any_identifier_and_the_look_up_is_audited() {
    let app = spawn_app().await;
    let (_, key) = app.create_key("ingest").await;
    let (_, dpo) = app.create_key("dpo").await;
    app.track(
        &key,
        "/v1/identify",
        &json!({"userId": "u-1", "anonymousId": "a-1",
        "traits": {"email": "Jane@Example.com", "plan": "gold", "shoe_size": 38}}),
    )
    .await;
    app.track(
        &key,
        "/v1/track",
        &json!({"userId": "u-1", "event": "Order Completed"}),
    )
    .await;
    let mut ids = Vec::new();
    for q in [
        "email=jane%40example.com",
        "email=JANE%40example.com",
        "user_id=u-1",
        "anonymous_id=a-1",
    ] {
        let resp = app.get(&format!("/v1/subjects?{q}"), Some(&dpo)).await;
        assert_eq!(resp.status(), 200, "{q}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["event_count"], 2);
        assert_eq!(
            v["identifier_kinds"],
            json!(["anonymous_id", "email", "user_id"])
        );
        assert!(!v.to_string().contains("jane"), "no identifier values: {v}");
        ids.push(v["subject_id"].as_str().unwrap().to_owned());
        let traits = v["traits"].as_array().unwrap();
        assert!(
            traits
                .iter()
                .any(|t| t["name"] == "email" && t["category"] == "user.contact.email")
        );
        assert!(
            traits
                .iter()
                .any(|t| t["name"] == "plan" && t["category"] == "user.account")
        );
        assert!(
            traits
                .iter()
                .any(|t| t["name"] == "shoe_size" && t["category"] == "unclassified")
        );
    }
    ids.dedup();
    assert_eq!(ids.len(), 1);
    assert_eq!(
        app.get("/v1/subjects?email=nobody%40example.com", Some(&dpo))
            .await
            .status(),
        404
    );
    for bad in [
        "",
        "?email=nonsense",
        "?email=a%40example.com&user_id=u",
        "?name=x",
    ] {
        let resp = app.get(&format!("/v1/subjects{bad}"), Some(&dpo)).await;
        assert_eq!(resp.status(), 400, "{bad}");
    }
    assert_eq!(
        app.count("audit_entries", "WHERE action = 'subject.lookup'")
            .await,
        5
    );
    assert_eq!(
        app.count(
            "audit_entries",
            "WHERE action = 'subject.lookup' AND subject_ref IS NOT NULL"
        )
        .await,
        4
    );
}

#[tokio::test]
async fn an_alias_to_an_unknown_previous_id_keeps_it_as_an_anonymous_id_only() {
    let app = spawn_app().await;
    let (_, key) = app.create_key("ingest").await;
    app.track(
        &key,
        "/v1/alias",
        &json!({"previousId": "fresh-device", "userId": "u-3"}),
    )
    .await;
    assert_eq!(app.count("identifiers", "WHERE kind = 'user_id'").await, 1);
    assert_eq!(
        app.count("identifiers", "WHERE kind = 'anonymous_id'")
            .await,
        1
    );
    // The previous id now finds the same person.
    app.track(
        &key,
        "/v1/track",
        &json!({"anonymousId": "fresh-device", "event": "Cart Viewed"}),
    )
    .await;
    assert_eq!(app.active_subjects().await, 1);
}

#[tokio::test]
async fn a_subject_without_a_user_id_never_joins_two_user_ids_by_merging() {
    let app = spawn_app().await;
    let (_, key) = app.create_key("ingest").await;
    // Y holds userId A and a phone; Z holds userId B and a device; X has only an email.
    app.track(
        &key,
        "/v1/identify",
        &json!({"userId": "A", "traits": {"phone": "+44 20 7946 0958"}}),
    )
    .await;
    app.track(
        &key,
        "/v1/identify",
        &json!({"userId": "B", "anonymousId": "dev-b"}),
    )
    .await;
    app.track(
        &key,
        "/v1/identify",
        &json!({"anonymousId": "x-anon", "traits": {"email": "x@example.com"}}),
    )
    .await;
    assert_eq!(app.active_subjects().await, 3);
    // One message names all three: X absorbs Y (and userId A), but must not absorb B.
    app.track(
        &key,
        "/v1/identify",
        &json!({"anonymousId": "dev-b",
        "traits": {"email": "x@example.com", "phone": "+442079460958"}}),
    )
    .await;
    assert_eq!(app.active_subjects().await, 2);
    assert_eq!(app.count("identity_conflicts", "").await, 1);
    let holders = app
        .scalar_i64("SELECT COUNT(DISTINCT subject_id) FROM identifiers WHERE kind = 'user_id'")
        .await;
    assert_eq!(holders, 2, "A and B stay with different subjects");
}

#[tokio::test]
async fn concurrent_requests_about_one_person_are_all_counted() {
    let app = spawn_app().await;
    let (_, key) = app.create_key("ingest").await;
    let body = json!({"userId": "buyer", "traits": {"email": "buyer@example.com"},
                      "timestamp": "2026-11-20T10:00:00Z"});
    assert_eq!(app.track(&key, "/v1/identify", &body).await.status(), 200);
    // Eight requests at once, ten orders each, every one for the same person, some
    // earlier and some later than anything stored so far.
    let sends = (0..8).map(|r| {
        let batch: Vec<Value> = (0..10)
            .map(|i| {
                json!({"type": "track", "userId": "buyer", "event": "Order Completed",
                       "messageId": format!("order-{r}-{i}"),
                       "timestamp": format!("2026-11-{:02}T10:00:00Z", 10 + r + i),
                       "properties": {"order_id": format!("o-{r}-{i}"), "total": 10.0,
                                      "currency": "EUR"}})
            })
            .collect();
        let (app, key) = (&app, &key);
        async move {
            app.track(key, "/v1/batch", &json!({"batch": batch}))
                .await
                .status()
        }
    });
    for status in futures_util::future::join_all(sends).await {
        assert_eq!(status, 200);
    }
    assert_eq!(app.active_subjects().await, 1);
    assert_eq!(
        app.count("events", "WHERE name = 'Order Completed'").await,
        80
    );
    assert_eq!(
        app.scalar_i64("SELECT purchase_count FROM aggregates")
            .await,
        80,
        "no request's counts overwrote another's"
    );
    assert_eq!(
        app.scalar_i64("SELECT CAST(lifetime_value AS BIGINT) FROM aggregates")
            .await,
        800
    );
    // First seen widened back to the earliest order; last seen stays the identify's
    // arrival, the test clock's now, later than every order (µs).
    assert_eq!(
        app.scalar_i64("SELECT first_seen_at FROM subjects").await,
        1_794_304_800_000_000,
        "2026-11-10T10:00:00Z"
    );
    assert_eq!(
        app.scalar_i64("SELECT last_seen_at FROM subjects").await,
        1_796_119_200_000_000,
        "2026-12-01T10:00:00Z"
    );
}
