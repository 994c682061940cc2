//! Campaigns: messages for every consented member with RFC 8058 headers, one-click
//! unsubscribe that withdraws consent (a GET never does), forged and expired links
//! refused with nothing recorded, the person absent from the next messages and exports.
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

const EMAIL: &str = "marketing.communications.email";

async fn setup(app: &TestApp) -> (String, String, String) {
    let (_, ingest) = app.create_key("ingest").await;
    let (_, dpo) = app.create_key("dpo").await;
    let esp = app.esp_key("acme-esp", &[EMAIL, "essential.service"]).await;
    for (who, consent) in [("ann", true), ("bob", true), ("cy", true), ("dee", false)] {
        let r = app
            .track(&ingest, "/v1/identify", &json!({"userId": who,
                "traits": {"email": format!("{who}@example.com"), "firstName": who.to_uppercase(), "country": "DE"}}))
            .await;
        assert_eq!(r.status(), 200);
        if consent {
            let r = app
                .post_json("/v1/consents", Some(&dpo), &json!({"subject": {"user_id": who},
                    "purpose": "email_marketing", "status": "granted", "method": "double_opt_in", "source": "shop"}))
                .await;
            assert_eq!(r.status(), 201);
        }
    }
    (ingest, dpo, esp)
}

async fn created(app: &TestApp, token: &str, path: &str, body: Value) -> String {
    let r = app.post_json(path, Some(token), &body).await;
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 201, "{path}: {v}");
    v["id"].as_str().unwrap().to_owned()
}

async fn messages(app: &TestApp, esp: &str, id: &str) -> Vec<Value> {
    let r = app
        .get(&format!("/v1/campaigns/{id}/messages"), Some(esp))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    r.text()
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn token_of(m: &Value) -> String {
    let h = m["headers"]["List-Unsubscribe"].as_str().unwrap();
    let start = h.find("/u/").unwrap() + 3;
    let end = start + h[start..].find('>').unwrap();
    h[start..end].to_owned()
}

#[tokio::test]
async fn a_campaign_renders_for_consented_members_and_one_click_unsubscribes() {
    let app = spawn_app().await;
    let (_, _dpo, esp) = setup(&app).await;
    let template = created(&app, &esp, "/v1/templates", json!({"name": "t", "purpose": EMAIL,
        "subject": "Hi {{first_name}}", "html": "<p>Hello {{first_name}}</p><a href=\"{{unsubscribe_url}}\">Unsubscribe</a>",
        "text": "Hello {{first_name}}\nUnsubscribe: {{unsubscribe_url}}"})).await;
    let segment = created(
        &app,
        &esp,
        "/v1/segments",
        json!({"name": "de", "purpose": EMAIL,
        "rule": {"attribute": "country", "eq": "DE"}}),
    )
    .await;
    let campaign = created(
        &app,
        &esp,
        "/v1/campaigns",
        json!({"name": "December", "template": template, "segment": segment}),
    )
    .await;

    let sent = messages(&app, &esp, &campaign).await;
    let mut to: Vec<&str> = sent.iter().map(|m| m["to"].as_str().unwrap()).collect();
    to.sort_unstable();
    assert_eq!(to, ["ann@example.com", "bob@example.com", "cy@example.com"]);
    let bob = sent.iter().find(|m| m["to"] == "bob@example.com").unwrap();
    assert!(bob.get("variant").is_none(), "no experiment, no variant");
    assert_eq!(bob["subject"], "Hi BOB");
    assert_eq!(
        bob["headers"]["List-Unsubscribe-Post"],
        "List-Unsubscribe=One-Click"
    );
    let lu = bob["headers"]["List-Unsubscribe"].as_str().unwrap();
    assert!(
        lu.starts_with("<http") && lu.contains(">, <mailto:unsubscribe@localhost?subject="),
        "{lu}"
    );
    let token = token_of(bob);
    assert!(
        bob["html"]
            .as_str()
            .unwrap()
            .contains(&format!("/u/{token}"))
    );
    assert!(
        bob["text"]
            .as_str()
            .unwrap()
            .contains(&format!("/u/{token}"))
    );
    assert!(!token.contains("bob"), "the link names no one in clear");

    // Opening the link changes nothing.
    let consents = app.count("consents", "").await;
    let r = app
        .client
        .get(app.url(&format!("/u/{token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("<form method=\"post\">"));
    assert_eq!(app.count("consents", "").await, consents);

    // A forged link (another person's pseudonym under bob's signature) records nothing.
    let ann_token = token_of(sent.iter().find(|m| m["to"] == "ann@example.com").unwrap());
    let ann_pseudonym = ann_token.split('~').nth(2).unwrap();
    let parts: Vec<&str> = token.split('~').collect();
    let forged = [parts[0], parts[1], ann_pseudonym, parts[3], parts[4]].join("~");
    for bad in [forged.as_str(), "u1~x~y~1~zz", "nonsense"] {
        let r = app
            .client
            .post(app.url(&format!("/u/{bad}")))
            .form(&[("List-Unsubscribe", "One-Click")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "invalid_unsubscribe_link");
    }
    assert_eq!(app.count("consents", "").await, consents);

    // The one-click POST, as a mailbox provider sends it (RFC 8058), withdraws; again is a no-op.
    for _ in 0..2 {
        let r = app
            .client
            .post(app.url(&format!("/u/{token}")))
            .form(&[("List-Unsubscribe", "One-Click")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(app.count("consents", "").await, consents + 1);
    assert_eq!(
        app.count("consents", "WHERE method = 'unsubscribe_link' AND status = 'withdrawn' AND consent = 'email_marketing'")
            .await,
        1
    );
    let sent = messages(&app, &esp, &campaign).await;
    assert_eq!(sent.len(), 2);
    assert!(sent.iter().all(|m| m["to"] != "bob@example.com"));
    let export = app
        .get(
            &format!("/v1/segments/{segment}/export?recipient=acme-esp"),
            Some(&esp),
        )
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(export.lines().count(), 2);
    assert!(!export.contains("bob@example.com"));

    // Links expire.
    app.clock.advance_secs(91 * 86_400);
    let r = app
        .client
        .post(app.url(&format!("/u/{ann_token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(app.verify().await.is_ok());
}

#[tokio::test]
async fn a_campaign_needs_one_purpose_that_can_be_unsubscribed_from() {
    let app = spawn_app().await;
    let (_, _, esp) = setup(&app).await;
    let email_tpl = created(
        &app,
        &esp,
        "/v1/templates",
        json!({"name": "t", "purpose": EMAIL,
        "subject": "Hi", "html": "x", "text": "x"}),
    )
    .await;
    let service_tpl = created(
        &app,
        &esp,
        "/v1/templates",
        json!({"name": "t", "purpose": "essential.service",
        "subject": "Your order", "html": "x", "text": "x"}),
    )
    .await;
    let service_seg = created(
        &app,
        &esp,
        "/v1/segments",
        json!({"name": "s", "purpose": "essential.service",
        "rule": {"aggregate": "purchase_count", "gte": 0}}),
    )
    .await;
    for (template, segment, status) in [
        (&email_tpl, &service_seg, 422),
        (&service_tpl, &service_seg, 422),
        (&email_tpl, &"nope".to_owned(), 404),
    ] {
        let r = app
            .post_json(
                "/v1/campaigns",
                Some(&esp),
                &json!({"name": "c", "template": template, "segment": segment}),
            )
            .await;
        assert_eq!(r.status(), status, "{template} {segment}");
    }
    assert_eq!(app.count("campaigns", "").await, 0);
}
