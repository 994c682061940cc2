//! Experiments: bad definitions refused with a stable code and nothing saved; a campaign
//! running one sends each member the variant the keyed assignment gives them (the same at
//! every run), the holdout nothing, links tagged with UTM parameters; results counted
//! from ingested events; exposures in access packages and gone after erasure.
use std::collections::{BTreeMap, BTreeSet};

use consentry::crypto::KeyKind;
use consentry::rendering::experiments::{Arm, Assigner};
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

const EMAIL: &str = "marketing.communications.email";
const SERVICE: &str = "essential.service";
const PEOPLE: usize = 60;

fn user(i: usize) -> String {
    format!("p{i:02}")
}

fn email(i: usize) -> String {
    format!("p{i:02}@example.com")
}

/// `PEOPLE` people with email consent; returns (ingest, dpo, esp).
async fn setup(app: &TestApp) -> (String, String, String) {
    let (_, ingest) = app.create_key("ingest").await;
    let (_, dpo) = app.create_key("dpo").await;
    let esp = app.esp_key("acme-esp", &[EMAIL, SERVICE]).await;
    let batch: Vec<Value> = (0..PEOPLE)
        .map(|i| {
            json!({"type": "identify", "userId": user(i),
                "traits": {"email": email(i), "firstName": format!("N{i}"), "country": "DE"}})
        })
        .collect();
    let r = app
        .track(&ingest, "/v1/batch", &json!({"batch": batch}))
        .await;
    assert_eq!(r.status(), 200);
    for i in 0..PEOPLE {
        let r = app
            .post_json("/v1/consents", Some(&dpo), &json!({"subject": {"user_id": user(i)},
                "purpose": "email_marketing", "status": "granted", "method": "double_opt_in", "source": "shop"}))
            .await;
        assert_eq!(r.status(), 201);
    }
    (ingest, dpo, esp)
}

async fn created(app: &TestApp, token: &str, path: &str, body: Value) -> Value {
    let r = app.post_json(path, Some(token), &body).await;
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 201, "{path}: {v}");
    v
}

async fn id_of(app: &TestApp, token: &str, path: &str, body: Value) -> String {
    created(app, token, path, body).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn messages(app: &TestApp, esp: &str, campaign: &str) -> Vec<Value> {
    let r = app
        .get(&format!("/v1/campaigns/{campaign}/messages"), Some(esp))
        .await;
    assert_eq!(r.status(), 200);
    r.text()
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

const HTML: &str = r##"<p>{{#if variant}}Variant {{variant}}{{/if}} for {{first_name}}</p><a href="https://shop.example/p?x=1&amp;y=2#top">Shop</a> <a href="mailto:help@shop.example">Help</a> <a href="{{unsubscribe_url}}">Unsubscribe</a>"##;

/// A template, a segment of everyone, and an experiment: A (the campaign's template,
/// 50%), B (its own template, 30%), C (a subject line of its own, 20%), 20% holdout.
/// Returns (experiment id, campaign id).
async fn experiment_campaign(app: &TestApp, esp: &str) -> (String, String) {
    let base = id_of(
        app,
        esp,
        "/v1/templates",
        json!({"name": "base", "purpose": EMAIL,
        "subject": "Hi {{first_name}}", "html": HTML, "text": "Hello {{first_name}}"}),
    )
    .await;
    let b = id_of(
        app,
        esp,
        "/v1/templates",
        json!({"name": "b", "purpose": EMAIL,
        "subject": "B for {{first_name}}", "html": HTML, "text": "B {{first_name}}"}),
    )
    .await;
    let segment = id_of(
        app,
        esp,
        "/v1/segments",
        json!({"name": "de", "purpose": EMAIL, "rule": {"attribute": "country", "eq": "DE"}}),
    )
    .await;
    let experiment = id_of(app, esp, "/v1/experiments", json!({"name": "December test", "purpose": EMAIL,
        "holdout": 20,
        "variants": [
            {"name": "A", "weight": 50},
            {"name": "B", "weight": 30, "template": b, "recommendations": "bestsellers"},
            {"name": "C", "weight": 20, "subject": "C: {{default first_name \"friend\"}}, our picks"}
        ]}))
    .await;
    let campaign = id_of(
        app,
        esp,
        "/v1/campaigns",
        json!({"name": "December", "template": base, "segment": segment, "experiment": experiment}),
    )
    .await;
    (experiment, campaign)
}

/// Each person's arm, computed here from the documented derivation: HMAC-SHA256 of
/// `consentry/experiment-assignment/v1` under the token-signing key, then the assigner.
async fn expected_arms(app: &TestApp, dpo: &str, experiment: &str) -> BTreeMap<usize, Arm> {
    let keyring = app.keyring.get();
    let k = keyring.current(KeyKind::TokenSigning).unwrap();
    let key = consentry::crypto::hmac_sha256(k.material(), b"consentry/experiment-assignment/v1");
    let a = Assigner::new(&key, experiment, 20, vec![50, 30, 20]);
    let mut out = BTreeMap::new();
    for i in 0..PEOPLE {
        let v = app
            .get_json(
                &format!("/v1/subjects?email=p{i:02}%40example.com"),
                Some(dpo),
            )
            .await;
        out.insert(i, a.arm(v["subject_id"].as_str().unwrap()));
    }
    out
}

fn person_of(m: &Value) -> usize {
    m["to"].as_str().unwrap()[1..3].parse().unwrap()
}

fn name_of(arm: Arm) -> &'static str {
    match arm {
        Arm::Holdout => "holdout",
        Arm::Variant(0) => "A",
        Arm::Variant(1) => "B",
        Arm::Variant(_) => "C",
    }
}

#[tokio::test]
async fn bad_experiments_are_refused_with_a_stable_code_and_nothing_saved() {
    let app = spawn_app().await;
    let (_, _, esp) = setup(&app).await;
    let email_tpl = id_of(
        &app,
        &esp,
        "/v1/templates",
        json!({"name": "t", "purpose": EMAIL,
        "subject": "Hi", "html": "x", "text": "x"}),
    )
    .await;
    let service_tpl = id_of(
        &app,
        &esp,
        "/v1/templates",
        json!({"name": "t", "purpose": SERVICE,
        "subject": "Your order", "html": "x", "text": "x"}),
    )
    .await;
    let ab = |a: Value, b: Value| json!({"name": "t", "purpose": EMAIL, "variants": [a, b]});
    let cases = [
        (
            ab(
                json!({"name": "A", "weight": 60}),
                json!({"name": "B", "weight": 30}),
            ),
            422,
            "invalid_experiment",
            "sum to 90",
        ),
        (
            ab(
                json!({"name": "A", "weight": 50}),
                json!({"name": "B", "weight": 50, "template": "nope"}),
            ),
            422,
            "invalid_experiment",
            "variants[1].template: no template",
        ),
        (
            ab(
                json!({"name": "A", "weight": 50}),
                json!({"name": "B", "weight": 50, "template": service_tpl}),
            ),
            422,
            "invalid_experiment",
            "variants[1].template: the template is for purpose essential.service",
        ),
        (
            ab(
                json!({"name": "A", "weight": 50}),
                json!({"name": "B", "weight": 50, "recommendations": "popular"}),
            ),
            422,
            "invalid_experiment",
            "variants[1].recommendations: one of default, recently_viewed",
        ),
        (
            json!({"name": "t", "purpose": EMAIL, "holdout": 60,
                "variants": [{"name": "A", "weight": 50}, {"name": "B", "weight": 50}]}),
            422,
            "invalid_experiment",
            "holdout: a whole percentage from 0 to 50",
        ),
        (
            json!({"name": "t", "purpose": EMAIL, "holdout": -1,
                "variants": [{"name": "A", "weight": 50}, {"name": "B", "weight": 50}]}),
            422,
            "invalid_experiment",
            "holdout",
        ),
        (
            json!({"name": "t", "purpose": EMAIL, "variants": [{"name": "A", "weight": 100}]}),
            422,
            "invalid_experiment",
            "2 to 10 variants",
        ),
        (
            json!({"name": "t", "purpose": EMAIL, "variants":
                (0..11).map(|i| json!({"name": format!("v{i}"), "weight": 9})).collect::<Vec<_>>()}),
            422,
            "invalid_experiment",
            "2 to 10 variants",
        ),
        (
            ab(
                json!({"name": "A", "weight": 50}),
                json!({"name": "a", "weight": 50}),
            ),
            422,
            "invalid_experiment",
            "same name",
        ),
        (
            ab(
                json!({"name": "A b", "weight": 50}),
                json!({"name": "B", "weight": 50}),
            ),
            422,
            "invalid_experiment",
            "variants[0].name",
        ),
        (
            ab(
                json!({"name": "A", "weight": 50}),
                json!({"name": "holdout", "weight": 50}),
            ),
            422,
            "invalid_experiment",
            "variants[1].name",
        ),
        (
            ab(
                json!({"name": "A", "weight": 0}),
                json!({"name": "B", "weight": 100}),
            ),
            422,
            "invalid_experiment",
            "variants[0].weight",
        ),
        (
            json!({"name": "t", "purpose": EMAIL, "control": "Z",
                "variants": [{"name": "A", "weight": 50}, {"name": "B", "weight": 50}]}),
            422,
            "invalid_experiment",
            "control",
        ),
        (
            ab(
                json!({"name": "A", "weight": 50}),
                json!({"name": "B", "weight": 50, "subject": "Hi {{last_name}}"}),
            ),
            422,
            "purpose_mismatch",
            "variants[1].subject line 1",
        ),
        (
            ab(
                json!({"name": "A", "weight": 50}),
                json!({"name": "B", "weight": 50, "subject": "Hi {{first_name"}),
            ),
            422,
            "invalid_template",
            "variants[1].subject",
        ),
        (
            ab(
                json!({"name": "A", "weight": 50.5}),
                json!({"name": "B", "weight": 49.5}),
            ),
            400,
            "invalid_json",
            "weight",
        ),
        (
            json!({"name": "t", "purpose": "nonsense", "variants": [{"name": "A", "weight": 50}, {"name": "B", "weight": 50}]}),
            400,
            "unknown_purpose",
            "purpose",
        ),
    ];
    for (body, status, code, says) in cases {
        let r = app.post_json("/v1/experiments", Some(&esp), &body).await;
        let got = r.status().as_u16();
        let v: Value = r.json().await.unwrap();
        assert_eq!(
            (got, v["error"]["code"].as_str().unwrap()),
            (status, code),
            "{body}: {v}"
        );
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{message} lacks {says}");
    }
    assert_eq!(app.count("experiments", "").await, 0);
    assert_eq!(
        app.count("audit_entries", "WHERE action = 'experiment.create'")
            .await,
        0
    );

    // A good one, and what it is; another recipient's key does not see it.
    let v = created(&app, &esp, "/v1/experiments", json!({"name": "Subject test", "purpose": EMAIL,
        "holdout": 10, "control": "B",
        "variants": [{"name": "A", "weight": 50, "template": email_tpl}, {"name": "B", "weight": 50, "subject": "Hello {{first_name}}"}]}))
    .await;
    assert_eq!(v["recipient"], "acme-esp");
    assert_eq!(v["holdout"], 10);
    assert_eq!(v["control"], "B");
    assert_eq!(v["variants"][0]["recommendations"], "default");
    let id = v["id"].as_str().unwrap();
    let got = app
        .get_json(&format!("/v1/experiments/{id}"), Some(&esp))
        .await;
    assert_eq!(got, v);
    let other = app.esp_key("other-esp", &[EMAIL]).await;
    for path in [
        format!("/v1/experiments/{id}"),
        format!("/v1/experiments/{id}/results"),
    ] {
        assert_eq!(app.get(&path, Some(&other)).await.status(), 404);
    }
    assert_eq!(
        app.get("/v1/experiments/nope", Some(&esp)).await.status(),
        404
    );
    assert_eq!(
        app.count("audit_entries", "WHERE action = 'experiment.create'")
            .await,
        1
    );

    // A campaign runs an experiment of its own purpose only.
    let service_exp = id_of(
        &app,
        &esp,
        "/v1/experiments",
        json!({"name": "s", "purpose": SERVICE,
        "variants": [{"name": "A", "weight": 50}, {"name": "B", "weight": 50}]}),
    )
    .await;
    let segment = id_of(
        &app,
        &esp,
        "/v1/segments",
        json!({"name": "de", "purpose": EMAIL, "rule": {"attribute": "country", "eq": "DE"}}),
    )
    .await;
    for (experiment, status) in [(service_exp.as_str(), 422), ("nope", 404)] {
        let r = app
            .post_json(
                "/v1/campaigns",
                Some(&esp),
                &json!({"name": "c", "template": email_tpl, "segment": segment, "experiment": experiment}),
            )
            .await;
        assert_eq!(r.status(), status, "{experiment}");
    }
    assert_eq!(app.count("campaigns", "").await, 0);
}

#[tokio::test]
async fn each_member_gets_their_assigned_variant_every_time_and_the_holdout_nothing() {
    let app = spawn_app().await;
    let (_, dpo, esp) = setup(&app).await;
    let (experiment, campaign) = experiment_campaign(&app, &esp).await;
    let arms = expected_arms(&app, &dpo, &experiment).await;
    let holdout: BTreeSet<usize> = arms
        .iter()
        .filter(|(_, a)| **a == Arm::Holdout)
        .map(|(i, _)| *i)
        .collect();

    let first = messages(&app, &esp, &campaign).await;
    assert_eq!(first.len() + holdout.len(), PEOPLE);
    for m in &first {
        let i = person_of(m);
        let arm = arms[&i];
        let (subject, html) = (m["subject"].as_str().unwrap(), m["html"].as_str().unwrap());
        let variant = name_of(arm);
        assert_eq!(m["variant"], variant);
        let want = match variant {
            "A" => format!("Hi N{i}"),
            "B" => format!("B for N{i}"),
            "C" => format!("C: N{i}, our picks"),
            other => panic!("{other} got a message"),
        };
        assert_eq!(subject, want, "person {i}");
        assert!(
            html.contains(&format!("Variant {variant} for N{i}")),
            "{html}"
        );
        assert_eq!(
            m["text"],
            if variant == "B" {
                format!("B N{i}")
            } else {
                format!("Hello N{i}")
            }
        );
        // UTM on the shop link, with the query and fragment kept; not on mailto or unsubscribe.
        let shop = format!(
            "https://shop.example/p?x=1&amp;y=2&amp;utm_source=consentry&amp;utm_medium=email&amp;utm_campaign={campaign}&amp;utm_content={variant}#top"
        );
        assert!(html.contains(&shop), "{html}");
        assert!(
            html.contains(r#"href="mailto:help@shop.example""#),
            "{html}"
        );
        let unsubscribe = m["headers"]["List-Unsubscribe"].as_str().unwrap();
        let url = &unsubscribe[1..unsubscribe.find('>').unwrap()];
        assert!(html.contains(&format!(r#"href="{url}""#)), "{html}");
        assert_eq!(html.matches("utm_").count(), 4, "{html}");
    }
    assert!(first.iter().all(|m| !holdout.contains(&person_of(m))));
    for v in ["A", "B", "C"] {
        assert!(
            arms.values().any(|a| name_of(*a) == v),
            "{v} has members among {PEOPLE}"
        );
    }

    // Every member is exposed once; a second run sends the same variants and adds nothing.
    assert_eq!(app.count("experiment_exposures", "").await, PEOPLE as i64);
    assert_eq!(
        app.count("experiment_exposures", "WHERE variant = 'holdout'")
            .await,
        holdout.len() as i64
    );
    app.clock.advance_secs(3600);
    let second = messages(&app, &esp, &campaign).await;
    let shown = |ms: &[Value]| -> BTreeMap<String, String> {
        ms.iter()
            .map(|m| {
                (
                    m["to"].as_str().unwrap().to_owned(),
                    m["subject"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    assert_eq!(shown(&first), shown(&second));
    assert_eq!(app.count("experiment_exposures", "").await, PEOPLE as i64);
    assert_eq!(
        app.scalar_i64("SELECT COUNT(DISTINCT exposed_at) FROM experiment_exposures")
            .await,
        1,
        "the first exposure is kept"
    );
    // Disclosures are only for those sent a message.
    assert_eq!(
        app.count("disclosures", "").await,
        2 * (PEOPLE - holdout.len()) as i64
    );
    assert!(app.verify().await.is_ok());
}

#[tokio::test]
async fn results_count_the_events_that_name_the_campaign_and_variant() {
    let app = spawn_app().await;
    let (ingest, dpo, esp) = setup(&app).await;
    let (experiment, campaign) = experiment_campaign(&app, &esp).await;
    let arms = expected_arms(&app, &dpo, &experiment).await;
    let track = |i: usize, event: &str, properties: Value, context: Value| {
        let body = json!({"userId": user(i), "event": event, "properties": properties, "context": context});
        let app = &app;
        let ingest = ingest.clone();
        async move {
            let r = app.track(&ingest, "/v1/track", &body).await;
            assert_eq!(r.status(), 200);
        }
    };
    // Before the campaign: does not count.
    for i in 0..PEOPLE {
        track(
            i,
            "Order Completed",
            json!({"order_id": format!("before-{i}"), "campaign_id": campaign}),
            json!({}),
        )
        .await;
    }
    app.clock.advance_secs(60);
    let sent = messages(&app, &esp, &campaign).await;
    assert!(!sent.is_empty());
    app.clock.advance_secs(60);

    let mut want: BTreeMap<&str, [u64; 4]> = BTreeMap::new();
    for (i, arm) in &arms {
        let (i, v) = (*i, name_of(*arm));
        let w = want.entry(v).or_default();
        w[0] += 1;
        if v == "holdout" {
            // Sent nothing: an open is noise; any order after exposure is a conversion.
            track(
                i,
                "Email Opened",
                json!({"campaign_id": campaign}),
                json!({}),
            )
            .await;
            if i % 2 == 0 {
                track(
                    i,
                    "Order Completed",
                    json!({"order_id": format!("h-{i}")}),
                    json!({}),
                )
                .await;
                w[3] += 1;
            }
            continue;
        }
        if i % 2 == 0 {
            // Opened twice: one open.
            for _ in 0..2 {
                track(
                    i,
                    "Email Opened",
                    json!({"campaign_id": campaign, "variant": v}),
                    json!({}),
                )
                .await;
            }
            w[1] += 1;
        }
        if i % 3 == 0 {
            let link = format!("https://shop.example/p?utm_campaign={campaign}&utm_content={v}");
            track(
                i,
                "Email Link Clicked",
                json!({"link_url": link}),
                json!({}),
            )
            .await;
            w[2] += 1;
        }
        if i % 4 == 0 {
            // Segment's UTM object from the landing page.
            track(i, "Order Completed", json!({"order_id": format!("o-{i}"), "revenue": 20}),
                json!({"campaign": {"name": campaign, "source": "consentry", "medium": "email", "content": v}})).await;
            w[3] += 1;
        }
        // Noise: another campaign, another variant, an order not from the campaign.
        track(
            i,
            "Email Opened",
            json!({"campaign_id": "another"}),
            json!({}),
        )
        .await;
        track(
            i,
            "Email Link Clicked",
            json!({"campaign_id": campaign, "variant": "Z"}),
            json!({}),
        )
        .await;
        track(
            i,
            "Order Completed",
            json!({"order_id": format!("x-{i}")}),
            json!({}),
        )
        .await;
    }

    let r = app
        .get_json(&format!("/v1/experiments/{experiment}/results"), Some(&esp))
        .await;
    assert_eq!(r["control"], "A");
    assert_eq!(r["campaigns"], json!([campaign]));
    let variants = r["variants"].as_array().unwrap();
    assert_eq!(variants.len(), 3);
    for v in variants {
        let name = v["variant"].as_str().unwrap();
        let w = want.get(name).copied().unwrap_or_default();
        let got = [
            &v["exposures"],
            &v["opens"],
            &v["clicks"],
            &v["conversions"],
        ]
        .map(|x| x.as_u64().unwrap());
        assert_eq!(got, w, "{name}: {v}");
        if w[0] > 0 {
            let rate = v["open_rate"]["rate"].as_f64().unwrap();
            assert!((rate - w[1] as f64 / w[0] as f64).abs() < 1e-12);
            let (low, high) = (
                v["open_rate"]["low"].as_f64().unwrap(),
                v["open_rate"]["high"].as_f64().unwrap(),
            );
            assert!(low <= rate && rate <= high, "{v}");
        }
        assert_eq!(v["control"], name == "A");
        if name == "A" {
            assert!(v["against_control"].is_null());
        } else {
            for metric in ["open_rate", "click_rate", "conversion_rate"] {
                let verdict = v["against_control"][metric]["verdict"].as_str().unwrap();
                assert!(
                    verdict.starts_with("too few messages so far to tell: need at least"),
                    "{verdict}"
                );
            }
        }
    }
    let h = want.get("holdout").copied().unwrap_or_default();
    assert_eq!(r["holdout"]["exposures"], h[0]);
    assert_eq!(r["holdout"]["conversions"], h[3]);
    assert!(
        r["holdout"]["control_against_holdout"]["verdict"]
            .as_str()
            .unwrap()
            .starts_with("too few messages")
    );
    let text = r.to_string();
    assert!(
        !text.contains("example.com") && !text.contains("ps1."),
        "counts only"
    );
}

#[tokio::test]
async fn exposures_follow_merges_are_in_the_access_package_and_gone_after_erasure() {
    let app = spawn_app().await;
    let (ingest, dpo, esp) = setup(&app).await;
    // Someone known only by a device and an email address, and a login not yet linked.
    for body in [
        json!({"anonymousId": "anon-m", "traits": {"email": "m@example.com", "country": "DE"}}),
        json!({"userId": "u-m"}),
    ] {
        assert_eq!(
            app.track(&ingest, "/v1/identify", &body).await.status(),
            200
        );
    }
    let r = app
        .post_json("/v1/consents", Some(&dpo), &json!({"subject": {"email": "m@example.com"},
            "purpose": "email_marketing", "status": "granted", "method": "double_opt_in", "source": "shop"}))
        .await;
    assert_eq!(r.status(), 201);
    let (experiment, campaign) = experiment_campaign(&app, &esp).await;
    messages(&app, &esp, &campaign).await;
    assert_eq!(
        app.count("experiment_exposures", "").await,
        PEOPLE as i64 + 1
    );
    let before = app
        .get_json("/v1/subjects?email=m%40example.com", Some(&dpo))
        .await["subject_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The login links them: the device's subject merges into the user's, exposure and all.
    let r = app
        .track(
            &ingest,
            "/v1/identify",
            &json!({"userId": "u-m", "anonymousId": "anon-m"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let after = app
        .get_json("/v1/subjects?email=m%40example.com", Some(&dpo))
        .await["subject_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(before, after, "the user's subject survives");
    assert_eq!(
        app.count(
            "experiment_exposures",
            &format!("WHERE subject_id = '{before}'")
        )
        .await,
        0
    );
    assert_eq!(
        app.count(
            "experiment_exposures",
            &format!("WHERE subject_id = '{after}'")
        )
        .await,
        1
    );
    let subject = app
        .get_json("/v1/subjects?email=p07%40example.com", Some(&dpo))
        .await["subject_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mine = format!("WHERE subject_id = '{subject}'");
    assert_eq!(app.count("experiment_exposures", &mine).await, 1);

    let file = |kind: &str| {
        let body =
            json!({"kind": kind, "identifiers": {"email": "p07@example.com"}, "channel": "email"});
        let (app, dpo) = (&app, dpo.clone());
        async move {
            let r = app.post_json("/v1/dsar", Some(&dpo), &body).await;
            assert_eq!(r.status(), 201);
            let id = r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned();
            let r = app
                .post_json(
                    &format!("/v1/dsar/{id}/verify"),
                    Some(&dpo),
                    &json!({"method": "dpo_attested", "note": "checked"}),
                )
                .await;
            assert_eq!(r.status(), 200);
            let r = app
                .post_json(&format!("/v1/dsar/{id}/execute"), Some(&dpo), &json!({}))
                .await;
            assert_eq!(r.status(), 200);
            id
        }
    };
    let access = file("access").await;
    let package = app
        .get_json(&format!("/v1/dsar/{access}/package"), Some(&dpo))
        .await;
    let entries = package["experiments"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{package}");
    assert_eq!(entries[0]["experiment"], experiment);
    assert_eq!(entries[0]["campaign"], campaign);

    file("erasure").await;
    assert_eq!(app.count("experiment_exposures", &mine).await, 0);
    assert_eq!(app.count("experiment_exposures", "").await, PEOPLE as i64);
}
