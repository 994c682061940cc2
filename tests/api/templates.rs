//! Templates: output identical to handlebars.js, the seed's template through the API with
//! and without recommendations, the static check against the purpose (each token with its
//! line), compile errors with line and column, and renders through the gate.
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

const EMAIL: &str = "marketing.communications.email";

#[test]
fn the_renderer_prints_what_handlebars_js_prints() {
    use consentry::rendering::{Renderer, compile};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let cases: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("handlebars_cases.json")).unwrap())
            .unwrap();
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("handlebars_js.json")).unwrap())
            .unwrap();
    assert!(cases.len() >= 20);
    for c in &cases {
        let name = c["name"].as_str().unwrap();
        let html = compile("html", c["template"].as_str().unwrap()).unwrap();
        let partials = c["partials"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), compile(k, v.as_str().unwrap()).unwrap()))
                    .collect()
            })
            .unwrap_or_default();
        let r = Renderer::with_partials(
            compile("subject", "s").unwrap(),
            html,
            compile("text", "t").unwrap(),
            partials,
        );
        let got = r.render(&c["data"]).unwrap().html;
        assert_eq!(got, expected[name].as_str().unwrap(), "case {name:?}");
    }
}

async fn person(app: &TestApp, ingest: &str, dpo: &str, who: &str, traits: Value, consent: bool) {
    let mut t = traits;
    t["email"] = json!(format!("{who}@example.com"));
    let r = app
        .track(ingest, "/v1/identify", &json!({"userId": who, "traits": t}))
        .await;
    assert_eq!(r.status(), 200);
    if consent {
        let r = app
            .post_json("/v1/consents", Some(dpo), &json!({"subject": {"user_id": who},
                "purpose": "email_marketing", "status": "granted", "method": "double_opt_in", "source": "shop"}))
            .await;
        assert_eq!(r.status(), 201);
    }
}

async fn pseudonym(app: &TestApp, esp: &str, who: &str) -> String {
    let r = app
        .post_json(
            "/v1/recipients/acme-esp/pseudonyms",
            Some(esp),
            &json!({"purpose": EMAIL, "email": format!("{who}@example.com")}),
        )
        .await;
    assert_eq!(r.status(), 200, "{who}");
    r.json::<Value>().await.unwrap()["pseudonym"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn render(app: &TestApp, esp: &str, id: &str, p: &str) -> reqwest::Response {
    app.post_json(
        &format!("/v1/templates/{id}/render"),
        Some(esp),
        &json!({"pseudonym": p}),
    )
    .await
}

const SEED: &str = "<div>Hello, {{customer_name}}!</div>\n<div>Based on your recent activity, we recommend:</div>\n{{#each recommendations}}\n<div><img src=\"{{this.image_url}}\" alt=\"{{this.product_name}}\" /></div>\n{{else}}\n<div>See what is new this week.</div>\n{{/each}}\n";

#[tokio::test]
async fn the_seed_template_renders_for_a_consented_person_and_falls_back_without_data() {
    let app = spawn_app().await;
    let (_, ingest) = app.create_key("ingest").await;
    let (_, dpo) = app.create_key("dpo").await;
    let esp = app.esp_key("acme-esp", &[EMAIL]).await;
    person(
        &app,
        &ingest,
        &dpo,
        "jane",
        json!({"firstName": "Jane & <Co>", "lastName": "Doe"}),
        true,
    )
    .await;
    person(&app, &ingest, &dpo, "anon", json!({}), true).await;
    person(
        &app,
        &ingest,
        &dpo,
        "nope",
        json!({"firstName": "No"}),
        false,
    )
    .await;
    let r = app
        .post_json(
            "/v1/templates",
            Some(&esp),
            &json!({"name": "seed", "purpose": EMAIL,
                "subject": "{{default customer_name \"Hello\"}}, picked for you",
                "html": SEED,
                "text": "Hello {{customer_name}},\nwe picked these for you.",
                "fallbacks": {"customer_name": "there"}}),
        )
        .await;
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();

    let jane = pseudonym(&app, &esp, "jane").await;
    let disclosures = app.count("disclosures", "").await;
    let r = render(&app, &esp, &id, &jane).await;
    assert_eq!(r.status(), 200);
    let m: Value = r.json().await.unwrap();
    assert_eq!(
        m["html"],
        "<div>Hello, Jane &amp; &lt;Co&gt;!</div>\n<div>Based on your recent activity, we recommend:</div>\n<div>See what is new this week.</div>\n"
    );
    assert_eq!(
        m["subject"], "Jane & <Co>, picked for you",
        "not HTML-escaped"
    );
    assert_eq!(m["text"], "Hello Jane & <Co>,\nwe picked these for you.");
    assert_eq!(
        app.count("disclosures", "").await,
        disclosures + 1,
        "a render is a disclosure"
    );

    // No first name: the template's fallback.
    let anon = pseudonym(&app, &esp, "anon").await;
    let m: Value = render(&app, &esp, &id, &anon).await.json().await.unwrap();
    assert!(
        m["html"]
            .as_str()
            .unwrap()
            .starts_with("<div>Hello, there!</div>"),
        "{m}"
    );
    assert_eq!(m["subject"], "there, picked for you");

    // No consent: the gate's 404, as for a profile read.
    let r = app
        .post_json(
            "/v1/recipients/acme-esp/pseudonyms",
            Some(&esp),
            &json!({"purpose": EMAIL, "email": "nope@example.com"}),
        )
        .await;
    assert_eq!(r.status(), 404);
    let r = render(
        &app,
        &esp,
        &id,
        "ps1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    )
    .await;
    assert_eq!(r.status(), 404);
    let r = render(&app, &esp, &id, "not-a-pseudonym").await;
    assert_eq!(r.status(), 400);

    let listed = app.get_json("/v1/templates", Some(&esp)).await;
    assert_eq!(listed["templates"].as_array().unwrap().len(), 1);
    assert!(app.verify().await.is_ok());
}

#[tokio::test]
async fn templates_reading_outside_their_purpose_or_not_compiling_are_refused_with_where() {
    let app = spawn_app().await;
    let esp = app.esp_key("acme-esp", &[EMAIL, "personalize"]).await;
    let save = |html: &str, purpose: &str| {
        let body =
            json!({"name": "t", "purpose": purpose, "subject": "Hi", "html": html, "text": ""});
        let app = &app;
        let esp = esp.clone();
        async move {
            let r = app.post_json("/v1/templates", Some(&esp), &body).await;
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    for (html, purpose, code, needle) in [
        (
            "<p>{{first_name}}</p>\n<p>{{last_name}}</p>",
            EMAIL,
            "purpose_mismatch",
            "html line 2, column 4: last_name: purpose marketing.communications.email may not read user.name.last",
        ),
        (
            "{{shoe_size}}",
            EMAIL,
            "purpose_mismatch",
            "shoe_size: not an attribute the taxonomy knows",
        ),
        (
            "{{shout first_name}}",
            EMAIL,
            "purpose_mismatch",
            "shout: unknown helper",
        ),
        (
            "{{#each recommendations}}{{this.sku}}{{/each}}",
            EMAIL,
            "purpose_mismatch",
            "this.sku: a recommendation has",
        ),
        ("{{scores.rfm.score}}", EMAIL, "purpose_mismatch", "Art. 22"),
        (
            "{{aggregates.last_page_view_at}}",
            EMAIL,
            "purpose_mismatch",
            "user.behavior.browsing_history",
        ),
        (
            "{{> footer}}",
            EMAIL,
            "purpose_mismatch",
            "> footer: unknown partial: this template has no partials",
        ),
        (
            "{{#> layout}}x{{/layout}}",
            EMAIL,
            "purpose_mismatch",
            "partial blocks are not supported",
        ),
        (
            "{{#if recommendations.length}}x{{/if}}",
            EMAIL,
            "purpose_mismatch",
            "`.length` is not supported",
        ),
        (
            "<p>\n{{#if first_name}}open",
            EMAIL,
            "invalid_template",
            "html line",
        ),
        ("{{first_name", EMAIL, "invalid_template", "html line 1"),
    ] {
        let (status, v) = save(html, purpose).await;
        assert_eq!(status, 422, "{html}: {v}");
        assert_eq!(v["error"]["code"], code, "{html}: {v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{html}: {message}");
    }
    // What a purpose may read, it may render; scores need a profiling purpose.
    let (status, v) = save(
        "{{scores.rfm.score}} {{aggregates.last_page_view_at}}",
        "personalize",
    )
    .await;
    assert_eq!(status, 201, "{v}");
    let r = app
        .post_json(
            "/v1/templates",
            Some(&esp),
            &json!({"name": "t", "purpose": EMAIL, "subject": "Hi", "html": "", "text": "", "fallbacks": {"last_name": "x"}}),
        )
        .await;
    assert_eq!(
        r.status(),
        422,
        "a fallback for a token the purpose may not read"
    );
    assert_eq!(app.count("templates", "").await, 1, "nothing else saved");
}

#[tokio::test]
async fn partials_are_checked_where_they_are_used_and_render_as_handlebars_js_does() {
    let app = spawn_app().await;
    let (_, ingest) = app.create_key("ingest").await;
    let (_, dpo) = app.create_key("dpo").await;
    let esp = app.esp_key("acme-esp", &[EMAIL]).await;
    person(
        &app,
        &ingest,
        &dpo,
        "jane",
        json!({"firstName": "Jane & Co"}),
        true,
    )
    .await;
    let save = |html: &str, partials: Value| {
        let body = json!({"name": "t", "purpose": EMAIL, "subject": "Hi {{> who}}",
            "html": html, "text": "{{> who}}", "partials": partials});
        let app = &app;
        let esp = esp.clone();
        async move {
            let r = app.post_json("/v1/templates", Some(&esp), &body).await;
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    // A token the purpose may not read, inside a partial: named with the partial's line.
    let (status, v) = save(
        "<p>{{> who}}</p>",
        json!({"who": "{{first_name}}\n{{last_name}}"}),
    )
    .await;
    assert_eq!(status, 422, "{v}");
    let m = v["error"]["message"].as_str().unwrap();
    assert!(
        m.contains("partials.who line 2, column 1: last_name: purpose marketing.communications.email may not read user.name.last"),
        "{m}"
    );
    for (html, partials, needle) in [
        (
            "{{> who}}",
            json!({"who": "{{> who}}"}),
            "may not include itself",
        ),
        (
            "{{> a}}",
            json!({"a": "{{> b}}{{> b}}", "b": "{{> c}}{{> c}}", "c": "{{> d}}{{> d}}",
                "d": "{{> e}}{{> e}}", "e": "{{> f}}{{> f}}", "f": "{{> g}}{{> g}}",
                "g": "{{> h}}{{> h}}", "h": "{{> i}}{{> i}}", "i": "{{> j}}{{> j}}",
                "j": "{{> k}}{{> k}}", "k": "x"}),
            "partials expand to more than 1000 copies",
        ),
        (
            "{{> who}}",
            json!({"who": "{{first_name"}),
            "partials.who line 1",
        ),
        ("{{> who x=1}}", json!({"who": "a"}), "partial parameters"),
        (
            "{{> who}}",
            json!({"html": "a", "who": "b"}),
            "partials: a name",
        ),
        (
            "{{> (lookup . \"who\")}}",
            json!({"who": "a"}),
            "html line 1, column",
        ),
    ] {
        let (status, v) = save(html, partials).await;
        assert_eq!(status, 422, "{html}: {v}");
        let m = v["error"]["message"].as_str().unwrap();
        assert!(m.contains(needle), "{html}: {m}");
    }
    assert_eq!(app.count("templates", "").await, 0, "nothing saved");
    let (status, v) = save(
        "<p>{{> who}}</p>{{#each recommendations}}{{> card this}}{{else}}{{> who}}{{/each}}",
        json!({"who": "{{first_name}}", "card": "<img src=\"{{image_url}}\">"}),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["partials"]["who"], "{{first_name}}");
    let id = v["id"].as_str().unwrap().to_owned();
    let p = pseudonym(&app, &esp, "jane").await;
    let r = render(&app, &esp, &id, &p).await;
    assert_eq!(r.status(), 200);
    let m: Value = r.json().await.unwrap();
    assert_eq!(m["html"], "<p>Jane &amp; Co</p>Jane &amp; Co");
    assert_eq!(m["subject"], "Hi Jane & Co", "not escaped outside HTML");
    assert_eq!(m["text"], "Jane & Co");
}
