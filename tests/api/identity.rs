//! External identifiers from `policies/identifiers.yaml` in identity resolution and look-up.
use serde_json::{Value, json};

use crate::helpers::spawn_app;

#[tokio::test]
async fn a_loyalty_card_links_an_anonymous_visit_to_the_identified_shopper() {
    let app = spawn_app().await;
    let (_, key) = app.create_key("ingest").await;
    let (_, dpo) = app.create_key("dpo").await;
    // A kiosk visit known only by its card, then the web shop's identify with the card.
    let r = app
        .track(
            &key,
            "/v1/track",
            &json!({"anonymousId": "kiosk-7", "event": "Product Viewed",
                "context": {"traits": {"loyalty_id": "LC-0042"}}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = app
        .track(
            &key,
            "/v1/identify",
            &json!({"userId": "u-42", "traits": {"loyalty_id": "LC-0042", "email": "ann@example.com"}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(app.active_subjects().await, 1);
    let v = app
        .get_json("/v1/subjects?loyalty_id=LC-0042", Some(&dpo))
        .await;
    assert_eq!(v["event_count"], 2);
    assert_eq!(
        v["identifier_kinds"],
        json!(["anonymous_id", "email", "loyalty_id", "user_id"])
    );
    let t = v["traits"].as_array().unwrap();
    assert!(
        t.iter()
            .any(|t| t["name"] == "loyalty_id" && t["category"] == "user.unique_id")
    );
    // Stored sealed, found only by blind index.
    assert_eq!(
        app.count("identifiers", "WHERE kind = 'loyalty_id'").await,
        1
    );
    assert_eq!(
        app.count("traits", "WHERE name = 'loyalty_id' AND value IS NOT NULL")
            .await,
        0
    );
}

#[tokio::test]
async fn a_device_id_joins_the_apps_sessions_and_a_number_id_matches_its_text() {
    let app = spawn_app().await;
    let (_, key) = app.create_key("ingest").await;
    let (_, dpo) = app.create_key("dpo").await;
    for (anon, event) in [("app-a", "Product Viewed"), ("app-b", "Product Added")] {
        let r = app
            .track(
                &key,
                "/v1/track",
                &json!({"anonymousId": anon, "event": event,
                    "context": {"device": {"id": "D-1", "type": "ios"}}}),
            )
            .await;
        assert_eq!(r.status(), 200);
    }
    assert_eq!(app.active_subjects().await, 1);
    let v: Value = app.get_json("/v1/subjects?device_id=D-1", Some(&dpo)).await;
    assert_eq!(v["event_count"], 2);
    // A customer number sent as a JSON number is the same id as its text.
    for id in [json!(1234), json!("1234")] {
        app.track(
            &key,
            "/v1/identify",
            &json!({"anonymousId": "crm", "traits": {"customer_id": id}}),
        )
        .await;
    }
    let v: Value = app
        .get_json("/v1/subjects?customer_id=1234", Some(&dpo))
        .await;
    assert_eq!(v["event_count"], 2);
}

#[tokio::test]
async fn a_malformed_external_id_rejects_the_message_and_unknown_kinds_are_refused() {
    let app = spawn_app().await;
    let (_, key) = app.create_key("ingest").await;
    let (_, dpo) = app.create_key("dpo").await;
    let r = app
        .track(
            &key,
            "/v1/identify",
            &json!({"userId": "u", "traits": {"loyalty_id": {"n": 1}}}),
        )
        .await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("traits.loyalty_id"),
        "{body}"
    );
    assert_eq!(app.count("events", "").await, 0);
    let r = app.get("/v1/subjects?shoe_size=38", Some(&dpo)).await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("shoe_size") && msg.contains("loyalty_id"),
        "{msg}"
    );
}

#[tokio::test]
async fn the_same_new_person_sent_by_concurrent_requests_is_one_subject() {
    let app = spawn_app().await;
    let (_, key) = app.create_key("ingest").await;
    let sends = (0..40).map(|i| {
        let body =
            json!({"anonymousId": format!("tab-{i}"), "traits": {"email": "new@example.com"}});
        let (app, key) = (&app, &key);
        async move { app.track(key, "/v1/identify", &body).await.status() }
    });
    let statuses = futures_util::future::join_all(sends).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(app.active_subjects().await, 1);
    assert_eq!(app.count("identifiers", "WHERE kind = 'email'").await, 1);
    assert_eq!(
        app.count("identifiers", "WHERE kind = 'anonymous_id'")
            .await,
        40
    );
    assert_eq!(app.count("events", "").await, 40);
}
