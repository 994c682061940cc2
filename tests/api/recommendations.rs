//! Recommendations: the catalogue (all-or-nothing loads), models trained only from the
//! people a purpose may process (pairs only when two people bought both), the order of a
//! block (recently viewed and not bought, then bought together, then bestsellers), the
//! gate's 404, the purpose check, and the seed's template with a real block in renders
//! and campaign messages.
use serde_json::{Value, json};

use crate::helpers::{Options, TestApp, shipped_policies, spawn_app, spawn_app_with};

const EMAIL: &str = "marketing.communications.email";
const PERSONALIZE: &str = "personalize";

async fn load_catalog(app: &TestApp, token: &str, lines: &[Value]) -> reqwest::Response {
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    app.client
        .post(app.url("/v1/catalog"))
        .bearer_auth(token)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap()
}

fn product(id: &str) -> Value {
    json!({"id": id, "name": format!("Product {id}"), "url": format!("https://shop.example/p/{id}"),
        "image_url": format!("https://cdn.example/{id}.jpg"), "price": 10.5, "currency": "EUR"})
}

async fn person(app: &TestApp, ingest: &str, dpo: &str, who: &str, consents: &[&str]) {
    let r = app
        .track(
            ingest,
            "/v1/identify",
            &json!({"userId": who,
            "traits": {"email": format!("{who}@example.com"), "firstName": who.to_uppercase()}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    for c in consents {
        let method = if *c == "email_marketing" {
            "double_opt_in"
        } else {
            "web_form"
        };
        let r = app
            .post_json(
                "/v1/consents",
                Some(dpo),
                &json!({"subject": {"user_id": who},
                "purpose": c, "status": "granted", "method": method, "source": "shop"}),
            )
            .await;
        assert_eq!(r.status(), 201, "{who} {c}");
    }
}

async fn bought(app: &TestApp, ingest: &str, who: &str, at: &str, products: &[&str]) {
    let items: Vec<Value> = products.iter().map(|p| json!({"product_id": p})).collect();
    let r = app
        .track(ingest, "/v1/track", &json!({"userId": who, "event": "Order Completed",
            "timestamp": at, "properties": {"order_id": format!("{who}-{at}"), "total": 20, "products": items}}))
        .await;
    assert_eq!(r.status(), 200);
}

async fn viewed(app: &TestApp, ingest: &str, who: &str, at: &str, product: &str) {
    let r = app
        .track(
            ingest,
            "/v1/track",
            &json!({"userId": who, "event": "Product Viewed",
            "timestamp": at, "properties": {"product_id": product}}),
        )
        .await;
    assert_eq!(r.status(), 200);
}

async fn pseudonym(app: &TestApp, esp: &str, purpose: &str, who: &str) -> String {
    let r = app
        .post_json(
            "/v1/recipients/acme-esp/pseudonyms",
            Some(esp),
            &json!({"purpose": purpose, "email": format!("{who}@example.com")}),
        )
        .await;
    assert_eq!(r.status(), 200, "{who}");
    r.json::<Value>().await.unwrap()["pseudonym"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn block(app: &TestApp, esp: &str, p: &str, query: &str) -> (u16, Value) {
    let r = app
        .get(
            &format!("/v1/recipients/acme-esp/profiles/{p}/recommendations?{query}"),
            Some(esp),
        )
        .await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

fn ids(v: &Value) -> Vec<(String, String)> {
    v["products"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().to_owned(),
                p["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// ann bought p1 and viewed p4, p5, p1 and p8 (unavailable); bob bought p1 and p2; cy
/// p1, p2 and p3; dee (no consent) p1 and p3 many times.
async fn shop(app: &TestApp) -> (String, String, String) {
    let (_, ingest) = app.create_key("ingest").await;
    let (_, dpo) = app.create_key("dpo").await;
    let esp = app.esp_key("acme-esp", &[EMAIL, PERSONALIZE]).await;
    let mut lines: Vec<Value> = ["p1", "p2", "p3", "p4", "p5", "p6"]
        .iter()
        .map(|p| product(p))
        .collect();
    let mut p8 = product("p8");
    p8["available"] = json!(false);
    lines.push(p8);
    let r = load_catalog(app, &ingest, &lines).await;
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["created"], 7);
    for who in ["ann", "bob", "cy"] {
        person(
            app,
            &ingest,
            &dpo,
            who,
            &["personalization", "email_marketing"],
        )
        .await;
    }
    person(app, &ingest, &dpo, "dee", &[]).await;
    bought(app, &ingest, "ann", "2026-11-20T10:00:00Z", &["p1"]).await;
    viewed(app, &ingest, "ann", "2026-11-21T10:00:00Z", "p4").await;
    viewed(app, &ingest, "ann", "2026-11-22T10:00:00Z", "p5").await;
    viewed(app, &ingest, "ann", "2026-11-23T10:00:00Z", "p1").await;
    viewed(app, &ingest, "ann", "2026-11-24T10:00:00Z", "p8").await;
    bought(app, &ingest, "bob", "2026-11-20T11:00:00Z", &["p1", "p2"]).await;
    bought(app, &ingest, "cy", "2026-11-20T12:00:00Z", &["p1"]).await;
    bought(app, &ingest, "cy", "2026-11-21T12:00:00Z", &["p2", "p3"]).await;
    for day in 10..15 {
        bought(
            app,
            &ingest,
            "dee",
            &format!("2026-11-{day}T09:00:00Z"),
            &["p1", "p3", "p6"],
        )
        .await;
    }
    (ingest, dpo, esp)
}

async fn train(app: &TestApp) -> Value {
    let r = app
        .post_json(
            "/v1/recommendations/train",
            Some(&app.admin_token),
            &json!({}),
        )
        .await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test]
async fn a_block_is_recently_viewed_then_bought_together_then_bestsellers() {
    let app = spawn_app().await;
    let (_, _, esp) = shop(&app).await;
    let report = train(&app).await;
    let personalize = report
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["purpose"] == PERSONALIZE)
        .unwrap();
    // ann, bob and cy: dee has no consent, so her purchases are not counted.
    assert_eq!(personalize["subjects"], 3, "{report}");
    // p1-p2 bought by two people, kept both ways; p1-p3 and p2-p3 by one only.
    assert_eq!(personalize["pairs"], 2, "{report}");
    assert_eq!(personalize["products"], 3, "{report}");

    let ann = pseudonym(&app, &esp, PERSONALIZE, "ann").await;
    let disclosures = app.count("disclosures", "").await;
    let (status, v) = block(&app, &esp, &ann, "purpose=personalize").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        ids(&v),
        vec![
            ("p5".to_owned(), "recently_viewed".to_owned()),
            ("p4".to_owned(), "recently_viewed".to_owned()),
            ("p2".to_owned(), "bought_together".to_owned()),
            ("p3".to_owned(), "bestseller".to_owned()),
        ],
        "p8 is unavailable, p1 already bought, p6 only bought by dee"
    );
    let first = &v["products"][0];
    assert_eq!(first["name"], "Product p5");
    assert_eq!(first["product_name"], "Product p5");
    assert_eq!(first["url"], "https://shop.example/p/p5");
    assert_eq!(first["image_url"], "https://cdn.example/p5.jpg");
    assert_eq!(first["price"], 10.5);
    assert_eq!(app.count("disclosures", "").await, disclosures + 1);
    assert_eq!(
        app.count(
            "audit_entries",
            "WHERE action = 'disclosure.recommendations' AND outcome = 'ok'"
        )
        .await,
        1
    );

    let (_, v) = block(&app, &esp, &ann, "purpose=personalize&limit=1").await;
    assert_eq!(
        ids(&v),
        vec![("p5".to_owned(), "recently_viewed".to_owned())]
    );
    let (_, v) = block(&app, &esp, &ann, "purpose=personalize&strategy=bestsellers").await;
    assert_eq!(
        ids(&v),
        vec![
            ("p2".to_owned(), "bestseller".to_owned()),
            ("p3".to_owned(), "bestseller".to_owned())
        ]
    );
    let (_, v) = block(&app, &esp, &ann, "purpose=personalize&strategy=none").await;
    assert_eq!(ids(&v), vec![]);

    // The email purpose reads purchases but not browsing: no recently viewed.
    let ann_email = pseudonym(&app, &esp, EMAIL, "ann").await;
    let (status, v) = block(&app, &esp, &ann_email, &format!("purpose={EMAIL}")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        ids(&v),
        vec![
            ("p2".to_owned(), "bought_together".to_owned()),
            ("p3".to_owned(), "bestseller".to_owned()),
        ]
    );

    // A product marked unavailable later is no longer recommended.
    let mut p2 = product("p2");
    p2["available"] = json!(false);
    let r = load_catalog(&app, &app.admin_token, &[p2]).await;
    assert_eq!(r.status(), 200);
    let (_, v) = block(&app, &esp, &ann_email, &format!("purpose={EMAIL}")).await;
    assert_eq!(ids(&v), vec![("p3".to_owned(), "bestseller".to_owned())]);
}

#[tokio::test]
async fn a_person_who_may_not_be_disclosed_gets_the_gates_404_and_bad_queries_a_400() {
    let app = spawn_app().await;
    let (ingest, dpo, esp) = shop(&app).await;
    train(&app).await;
    let ann = pseudonym(&app, &esp, PERSONALIZE, "ann").await;
    let unknown = format!("ps1.{}", "A".repeat(43));
    let (status, v) = block(&app, &esp, &unknown, "purpose=personalize").await;
    assert_eq!(status, 404, "{v}");
    for q in [
        "purpose=personalize&limit=0",
        "purpose=personalize&limit=51",
        "purpose=personalize&strategy=random",
        "purpose=nope",
        "limit=3",
    ] {
        let (status, v) = block(&app, &esp, &ann, q).await;
        assert_eq!(status, 400, "{q}: {v}");
    }
    // Withdrawn: the same 404, refused and audited, nothing disclosed.
    let r = app
        .post_json("/v1/consents", Some(&dpo), &json!({"subject": {"user_id": "ann"},
            "purpose": "personalization", "status": "withdrawn", "method": "web_form", "source": "shop"}))
        .await;
    assert_eq!(r.status(), 201);
    let disclosures = app.count("disclosures", "").await;
    let (status, _) = block(&app, &esp, &ann, "purpose=personalize").await;
    assert_eq!(status, 404);
    assert_eq!(app.count("disclosures", "").await, disclosures);
    assert_eq!(
        app.count(
            "audit_entries",
            "WHERE action = 'disclosure.recommendations' AND outcome = 'denied'"
        )
        .await,
        1
    );
    // Once trained again, ann's history no longer counts.
    let report = train(&app).await;
    let m = report
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["purpose"] == PERSONALIZE)
        .unwrap();
    assert_eq!(m["subjects"], 2);
    assert_eq!(m["pairs"], 2, "bob and cy both bought p1 and p2");
    let _ = ingest;
}

#[tokio::test]
async fn a_purpose_without_behavioural_data_has_no_recommendations() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["taxonomy.yaml", "identifiers.yaml", "purposes.yaml"] {
        std::fs::copy(shipped_policies().join(f), dir.path().join(f)).unwrap();
    }
    let mut purposes = std::fs::read_to_string(dir.path().join("purposes.yaml")).unwrap();
    purposes.push_str(
        "  newsletter.plain:\n    description: The same newsletter for everyone.\n    legal_basis: consent\n    consent: email_marketing\n    reads:\n      - user.contact.email\n      - user.name.first\n    retention: 365d\n    recipients: [esp]\n",
    );
    std::fs::write(dir.path().join("purposes.yaml"), purposes).unwrap();
    let app = spawn_app_with(Options {
        policies: Some(dir.path().to_path_buf()),
        ..Options::default()
    })
    .await;
    let (_, ingest) = app.create_key("ingest").await;
    let (_, dpo) = app.create_key("dpo").await;
    let esp = app.esp_key("acme-esp", &["newsletter.plain"]).await;
    person(&app, &ingest, &dpo, "ann", &["email_marketing"]).await;
    let ann = pseudonym(&app, &esp, "newsletter.plain", "ann").await;
    let disclosures = app.count("disclosures", "").await;
    let (status, v) = block(&app, &esp, &ann, "purpose=newsletter.plain").await;
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["error"]["code"], "purpose_mismatch");
    assert_eq!(app.count("disclosures", "").await, disclosures);
    // And a template reading the block for it is refused when saved.
    let r = app
        .post_json("/v1/templates", Some(&esp), &json!({"name": "t", "purpose": "newsletter.plain",
            "subject": "Hi", "html": "{{#each recommendations}}{{this.name}}{{/each}}", "text": "x"}))
        .await;
    assert_eq!(r.status(), 422);
}

#[tokio::test]
async fn a_bad_catalogue_line_loads_nothing_and_says_where() {
    let app = spawn_app().await;
    let (_, ingest) = app.create_key("ingest").await;
    let r = load_catalog(
        &app,
        &ingest,
        &[
            product("p1"),
            json!({"id": "p2", "name": "Mug", "url": "javascript:alert(1)"}),
            json!({"id": "p3", "name": "Cup", "url": "https://shop.example/p3", "price": "cheap"}),
            json!({"name": "No id", "url": "https://shop.example/x"}),
        ],
    )
    .await;
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_catalog");
    let m = v["error"]["message"].as_str().unwrap();
    assert!(m.starts_with("3 bad line(s), nothing loaded"), "{m}");
    assert!(m.contains("line 2: url: an absolute http(s) URL"), "{m}");
    assert!(m.contains("line 3: price:"), "{m}");
    assert!(m.contains("line 4: id:"), "{m}");
    assert_eq!(app.count("products", "").await, 0);
    // Not JSON lines and an empty body.
    let r = app
        .client
        .post(app.url("/v1/catalog"))
        .bearer_auth(&ingest)
        .body("{\"id\": \"p1\"\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let r = load_catalog(&app, &ingest, &[]).await;
    assert_eq!(r.status(), 422);
    // Only ingest and admin keys load a catalogue.
    let esp = app.esp_key("acme-esp", &[EMAIL]).await;
    let r = load_catalog(&app, &esp, &[product("p1")]).await;
    assert_eq!(r.status(), 403);
    assert_eq!(app.count("products", "").await, 0);
    // A good load, then an update and a deletion.
    let r = load_catalog(&app, &ingest, &[product("p1"), product("p2")]).await;
    assert_eq!(r.status(), 200);
    let r = load_catalog(
        &app,
        &ingest,
        &[product("p1"), json!({"id": "p2", "deleted": true})],
    )
    .await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v,
        json!({"read": 2, "created": 0, "updated": 1, "deleted": 1, "products": 1})
    );
}

const SEED: &str = "<div>Hello, {{customer_name}}!</div>\n{{#each recommendations}}<div><img src=\"{{this.image_url}}\" alt=\"{{this.product_name}}\" /></div>\n{{else}}<div>See what is new this week.</div>\n{{/each}}";

#[tokio::test]
async fn the_seed_template_shows_the_block_in_renders_and_campaign_messages() {
    let app = spawn_app().await;
    let (_, _, esp) = shop(&app).await;
    let r = app
        .post_json(
            "/v1/templates",
            Some(&esp),
            &json!({"name": "seed", "purpose": EMAIL,
            "subject": "Picked for you", "html": SEED, "text": "Hello {{customer_name}}",
            "fallbacks": {"customer_name": "there"}}),
        )
        .await;
    let v: Value = r.json().await.unwrap();
    let template = v["id"].as_str().unwrap().to_owned();
    let ann = pseudonym(&app, &esp, EMAIL, "ann").await;
    // Before any model: the fallback path.
    let r = app
        .post_json(
            &format!("/v1/templates/{template}/render"),
            Some(&esp),
            &json!({"pseudonym": ann}),
        )
        .await;
    let m: Value = r.json().await.unwrap();
    assert_eq!(
        m["html"],
        "<div>Hello, ANN!</div>\n<div>See what is new this week.</div>\n"
    );
    train(&app).await;
    let r = app
        .post_json(
            &format!("/v1/templates/{template}/render"),
            Some(&esp),
            &json!({"pseudonym": ann}),
        )
        .await;
    let m: Value = r.json().await.unwrap();
    assert_eq!(
        m["html"],
        "<div>Hello, ANN!</div>\n<div><img src=\"https://cdn.example/p2.jpg\" alt=\"Product p2\" /></div>\n<div><img src=\"https://cdn.example/p3.jpg\" alt=\"Product p3\" /></div>\n"
    );
    assert!(
        app.count("disclosures", "WHERE attributes LIKE '%recommendations%'")
            .await
            >= 1
    );

    let r = app
        .post_json(
            "/v1/segments",
            Some(&esp),
            &json!({"name": "all", "purpose": EMAIL,
            "rule": {"aggregate": "purchase_count", "gte": 1}}),
        )
        .await;
    let v: Value = r.json().await.unwrap();
    assert!(v["id"].is_string(), "{v}");
    let segment = v["id"].as_str().unwrap().to_owned();
    let r = app
        .post_json(
            "/v1/campaigns",
            Some(&esp),
            &json!({"name": "c", "template": template, "segment": segment}),
        )
        .await;
    let v: Value = r.json().await.unwrap();
    let campaign = v["id"].as_str().unwrap().to_owned();
    let r = app
        .get(&format!("/v1/campaigns/{campaign}/messages"), Some(&esp))
        .await;
    assert_eq!(r.status(), 200);
    let messages: Vec<Value> = r
        .text()
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(messages.len(), 3, "ann, bob and cy");
    let html_of = |to: &str| {
        messages.iter().find(|m| m["to"] == to).unwrap()["html"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(html_of("ann@example.com").contains("p2.jpg"));
    // bob bought p1 and p2: his block is the bestseller he has not bought.
    let bob = html_of("bob@example.com");
    assert!(
        bob.contains("p3.jpg") && !bob.contains("p2.jpg") && !bob.contains("p1.jpg"),
        "{bob}"
    );
    // cy bought everything the model knows: the fallback.
    assert!(html_of("cy@example.com").contains("See what is new this week."));
}

#[tokio::test]
async fn an_experiment_variant_chooses_the_recommendation_strategy() {
    let app = spawn_app().await;
    let (ingest, dpo, esp) = shop(&app).await;
    for i in 0..16 {
        let who = format!("x{i}");
        person(&app, &ingest, &dpo, &who, &["email_marketing"]).await;
        bought(&app, &ingest, &who, "2026-11-25T10:00:00Z", &["p1"]).await;
    }
    train(&app).await;
    let r = app
        .post_json(
            "/v1/templates",
            Some(&esp),
            &json!({"name": "seed", "purpose": EMAIL,
            "subject": "Picked for you", "html": SEED, "text": "Hello {{customer_name}}",
            "fallbacks": {"customer_name": "there"}}),
        )
        .await;
    let template = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app
        .post_json(
            "/v1/segments",
            Some(&esp),
            &json!({"name": "buyers", "purpose": EMAIL,
            "rule": {"aggregate": "purchase_count", "gte": 1}}),
        )
        .await;
    let segment = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app
        .post_json("/v1/experiments", Some(&esp), &json!({"name": "blocks", "purpose": EMAIL,
            "variants": [{"name": "A", "weight": 50}, {"name": "B", "weight": 50, "recommendations": "none"}]}))
        .await;
    let v: Value = r.json().await.unwrap();
    let experiment = v["id"].as_str().expect("experiment").to_owned();
    let r = app
        .post_json(
            "/v1/campaigns",
            Some(&esp),
            &json!({"name": "c", "template": template,
            "segment": segment, "experiment": experiment}),
        )
        .await;
    let v: Value = r.json().await.unwrap();
    let campaign = v["id"].as_str().expect("campaign").to_owned();
    let r = app
        .get(&format!("/v1/campaigns/{campaign}/messages"), Some(&esp))
        .await;
    let messages: Vec<Value> = r
        .text()
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(messages.len(), 19);
    let mut seen = std::collections::BTreeSet::new();
    for m in &messages {
        let variant = m["variant"].as_str().unwrap();
        seen.insert(variant.to_owned());
        let html = m["html"].as_str().unwrap();
        let to = m["to"].as_str().unwrap();
        if variant == "B" {
            assert!(html.contains("See what is new this week."), "{to}: {html}");
        } else if to.starts_with('x') {
            assert!(
                html.contains("p2.jpg") && html.contains("p3.jpg"),
                "{to}: {html}"
            );
        }
    }
    assert_eq!(seen.len(), 2, "both variants among 19 people");
}

#[tokio::test]
async fn people_with_an_age_on_record_are_left_out_of_a_minimum_age_purposes_model() {
    let app = spawn_app().await;
    let (ingest, dpo, _) = shop(&app).await;
    // eve is 11, fay is an adult: both have a date of birth, which only the gate can read.
    for (who, born) in [("eve", "2015-01-01"), ("fay", "1990-01-01")] {
        person(
            &app,
            &ingest,
            &dpo,
            who,
            &["personalization", "email_marketing"],
        )
        .await;
        let r = app
            .track(
                &ingest,
                "/v1/identify",
                &json!({"userId": who, "traits": {"birthday": born}}),
            )
            .await;
        assert_eq!(r.status(), 200);
        bought(&app, &ingest, who, "2026-11-26T10:00:00Z", &["p4", "p5"]).await;
    }
    let report = train(&app).await;
    for m in report.as_array().unwrap() {
        if m["purpose"] == PERSONALIZE || m["purpose"] == EMAIL {
            assert_eq!(m["subjects"], 3, "{m}: ann, bob and cy only");
            assert_eq!(m["pairs"], 2, "{m}: p4-p5 not counted");
        }
    }
}
