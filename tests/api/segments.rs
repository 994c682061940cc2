//! Segments: the seed's examples over people whose membership is known, the static check
//! against the purpose, the gate's conditions in the count and the preview, and SQL
//! against in-memory evaluation on random rules and data.
use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

const BOTH: [&str; 2] = ["marketing.communications.email", "personalize"];
const DAY: i64 = 86_400;
const EMAIL: &str = "marketing.communications.email";

/// An event name, how long ago it happened (seconds), its properties.
type Event<'a> = (&'a str, i64, Value);

/// The test clock's "now" minus `secs`, as RFC 3339.
fn ago(app: &TestApp, secs: i64) -> String {
    use consentry::domain::Clock;
    app.clock.now().plus_seconds(-secs).to_rfc3339()
}

async fn person(
    app: &TestApp,
    ingest: &str,
    dpo: &str,
    who: &str,
    events: &[(&str, i64, Value)],
    consent: bool,
) -> String {
    let email = format!("{who}@example.com");
    let r = app
        .track(
            ingest,
            "/v1/identify",
            &json!({"userId": who, "traits": {"email": email, "country": "DE"}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    for (name, secs, props) in events {
        let r = app
            .track(
                ingest,
                "/v1/track",
                &json!({"userId": who, "event": name,
                "properties": props, "timestamp": ago(app, *secs)}),
            )
            .await;
        assert_eq!(r.status(), 200, "{name}");
    }
    if consent {
        for purpose in ["email_marketing", "personalization"] {
            let r = app
                .post_json("/v1/consents", Some(dpo), &json!({"subject": {"email": email},
                    "purpose": purpose, "status": "granted", "method": "double_opt_in", "source": "shop",
                    "captured_at": ago(app, 100 * DAY)}))
                .await;
            assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        }
    }
    app.get_json(
        &format!("/v1/subjects?email={who}%40example.com"),
        Some(dpo),
    )
    .await["subject_id"]
        .as_str()
        .expect("subject")
        .to_owned()
}

async fn segment(app: &TestApp, esp: &str, purpose: &str, rule: Value) -> String {
    let r = app
        .post_json(
            "/v1/segments",
            Some(esp),
            &json!({"name": "s", "purpose": purpose, "rule": rule}),
        )
        .await;
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 201, "{v}");
    v["id"].as_str().unwrap().to_owned()
}

async fn members(app: &TestApp, esp: &str, id: &str) -> (u64, BTreeSet<String>) {
    let c = app
        .get_json(&format!("/v1/segments/{id}/count"), Some(esp))
        .await;
    let p = app
        .get_json(&format!("/v1/segments/{id}/preview?limit=100"), Some(esp))
        .await;
    let rows: BTreeSet<String> = p["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["pseudonym"].as_str().unwrap().to_owned())
        .collect();
    // The export holds exactly the people the preview shows.
    let recipient = app.get_json(&format!("/v1/segments/{id}"), Some(esp)).await["recipient"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = app
        .get(
            &format!("/v1/segments/{id}/export?recipient={recipient}"),
            Some(esp),
        )
        .await
        .text()
        .await
        .unwrap();
    let exported: BTreeSet<String> = body
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["pseudonym"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(exported, rows, "export and preview of {id}");
    (c["count"].as_u64().unwrap(), rows)
}

#[tokio::test]
async fn the_seed_segments_find_exactly_their_members_and_never_the_excluded() {
    let app = spawn_app().await;
    let (_, ingest) = app.create_key("ingest").await;
    let (_, dpo) = app.create_key("dpo").await;
    let esp = app.esp_key("acme-esp", &BOTH).await;
    let order = |total: f64| json!({"order_id": "o", "total": total, "currency": "EUR"});
    let none = json!({});
    let viewed = json!({"product_id": "p1"});
    let mut ids = std::collections::BTreeMap::new();
    let people: Vec<(&str, Vec<Event>, bool)> = vec![
        (
            "browser",
            vec![("Product Viewed", 10 * 3600, viewed.clone())],
            true,
        ),
        (
            "oldbrowser",
            vec![("Product Viewed", 5 * DAY, viewed.clone())],
            true,
        ),
        (
            "bigspender",
            vec![("Order Completed", 40 * DAY, order(800.0))],
            true,
        ),
        (
            "engaged",
            vec![
                ("Email Opened", 2 * DAY, none.clone()),
                ("Order Completed", 10 * DAY, order(50.0)),
            ],
            true,
        ),
        (
            "lapsing",
            vec![("Email Opened", 45 * DAY, none.clone())],
            true,
        ),
        (
            "dormant",
            vec![("Email Opened", 90 * DAY, none.clone())],
            true,
        ),
        (
            "carter",
            vec![("Product Added", 2 * DAY, viewed.clone())],
            true,
        ),
        // These would match and must never appear:
        (
            "noconsent",
            vec![
                ("Product Viewed", 3600, viewed.clone()),
                ("Order Completed", DAY, order(900.0)),
            ],
            false,
        ),
        (
            "restricted",
            vec![
                ("Product Viewed", 3600, viewed.clone()),
                ("Order Completed", DAY, order(900.0)),
            ],
            true,
        ),
        (
            "withdrawn",
            vec![
                ("Product Viewed", 3600, viewed.clone()),
                ("Order Completed", DAY, order(900.0)),
            ],
            true,
        ),
        (
            "erased",
            vec![
                ("Product Viewed", 3600, viewed.clone()),
                ("Order Completed", DAY, order(900.0)),
            ],
            true,
        ),
    ];
    for (who, events, consent) in &people {
        ids.insert(
            *who,
            person(&app, &ingest, &dpo, who, events, *consent).await,
        );
    }
    // The cart has been quiet for two days: the sweep marks it abandoned.
    let state = app.state.clone();
    use consentry::domain::Clock;
    consentry::profiles::ingest::sweep_abandoned_carts(
        &state.db,
        &state.audit,
        app.clock.now(),
        3600,
    )
    .await
    .unwrap();
    let r = app
        .client
        .put(app.url(&format!("/v1/subjects/{}/restriction", ids["restricted"])))
        .bearer_auth(&dpo)
        .json(&json!({"reason": "accuracy contested"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for purpose in ["email_marketing", "personalization"] {
        let r = app
            .post_json("/v1/consents", Some(&dpo), &json!({"subject": {"email": "withdrawn@example.com"},
                "purpose": purpose, "status": "withdrawn", "method": "unsubscribe_link", "source": "email"}))
            .await;
        assert_eq!(r.status(), 201);
    }
    let r = app
        .post_json(
            "/v1/dsar",
            Some(&dpo),
            &json!({"kind": "erasure", "channel": "email",
            "identifiers": {"email": "erased@example.com"}}),
        )
        .await;
    let dsar = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app
        .post_json(
            &format!("/v1/dsar/{dsar}/verify"),
            Some(&dpo),
            &json!({"method": "dpo_attested", "note": "seen"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = app
        .post_json(&format!("/v1/dsar/{dsar}/execute"), Some(&dpo), &json!({}))
        .await;
    assert_eq!(r.status(), 200);

    let keyring = app.keyring.get();
    let expect = |who: &[&str]| -> BTreeSet<String> {
        who.iter()
            .map(|w| {
                keyring
                    .pseudonym("acme-esp", &ids[w])
                    .unwrap()
                    .as_ref()
                    .to_owned()
            })
            .collect()
    };
    let email = "marketing.communications.email";
    let cases: Vec<(&str, &str, Value, Vec<&str>)> = vec![
        (
            "Recent Browsers",
            "personalize",
            json!({"event": "Product Viewed", "within": "48h"}),
            vec!["browser"],
        ),
        (
            "High-Value Buyers",
            email,
            json!({"aggregate": "lifetime_value", "gt": 500}),
            vec!["bigspender"],
        ),
        (
            "Inactive Subscribers",
            email,
            json!({"not": {"any": [{"event": "Email Opened", "within": "30d"}, {"event": "Email Link Clicked", "within": "30d"}]}}),
            vec![
                "browser",
                "oldbrowser",
                "bigspender",
                "lapsing",
                "dormant",
                "carter",
            ],
        ),
        (
            "Engaged & Recent Buyers",
            email,
            json!({"all": [{"event": "Email Opened", "within": "7d"}, {"event": "Order Completed", "within": "30d", "count": {"gte": 1}}]}),
            vec!["engaged"],
        ),
        (
            "Dormant Users",
            email,
            json!({"all": [{"not": {"any": [{"aggregate": "last_email_open_at", "within": "60d"}, {"aggregate": "last_email_click_at", "within": "60d"}]}}, {"aggregate": "purchase_count", "eq": 0}]}),
            vec!["browser", "oldbrowser", "dormant", "carter"],
        ),
        (
            "Cart Abandoners",
            email,
            json!({"aggregate": "cart_abandoned_at", "exists": true}),
            vec!["carter"],
        ),
        (
            "Big orders",
            email,
            json!({"event": "Order Completed", "where": [{"property": "total", "gte": 100}]}),
            vec!["bigspender"],
        ),
    ];
    for (name, purpose, rule, who) in cases {
        let id = segment(&app, &esp, purpose, rule).await;
        let (count, rows) = members(&app, &esp, &id).await;
        let want = expect(&who);
        assert_eq!(rows, want, "{name}: preview");
        assert_eq!(count, want.len() as u64, "{name}: count");
    }
    // Each preview was a recorded disclosure, audited once.
    assert_eq!(
        app.count(
            "audit_entries",
            "WHERE action = 'disclosure.segment_preview'"
        )
        .await,
        7
    );
    assert!(app.count("disclosures", "").await >= 14);
    app.verify().await.expect("the audit log verifies");
}

#[tokio::test]
async fn a_rule_is_checked_against_its_purpose_and_bad_rules_name_their_path() {
    let app = spawn_app().await;
    let esp = app
        .esp_key("acme-esp", &["marketing.communications.email"])
        .await;
    let post = |body: Value| {
        let app = &app;
        let esp = esp.clone();
        async move {
            let r = app.post_json("/v1/segments", Some(&esp), &body).await;
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap();
            (
                status,
                v["error"]["code"].as_str().unwrap_or_default().to_owned(),
                v["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        }
    };
    let email = "marketing.communications.email";
    // Browsing history and a sealed name are not the email purpose's to compare.
    let (s, code, msg) = post(json!({"name": "x", "purpose": email, "rule": {"all": [
        {"aggregate": "lifetime_value", "gt": 1},
        {"event": "Product Viewed", "within": "2d"},
        {"attribute": "first_name", "eq": "Ann"},
        {"attribute": "shoe_size", "gt": 40}]}}))
    .await;
    assert_eq!((s, code.as_str()), (422, "purpose_mismatch"), "{msg}");
    assert!(
        msg.contains("all[1] (event:Product Viewed)")
            && msg.contains("user.behavior.browsing_history"),
        "{msg}"
    );
    assert!(
        msg.contains("all[2] (attribute:first_name)") && msg.contains("sealed"),
        "{msg}"
    );
    assert!(
        msg.contains("all[3] (attribute:shoe_size)") && msg.contains("not classified"),
        "{msg}"
    );
    assert!(!msg.contains("lifetime_value"), "{msg}");
    for (rule, path) in [
        (
            json!({"all": [{"aggregate": "purchase_count", "gt": 0}, {"aggregate": "last_purchase_at", "within": "1d"}, {"event": "Order Completed", "within": "-3d"}]}),
            "all[2].event.within",
        ),
        (
            json!({"event": "Order Completed", "within": "48x"}),
            "event.within",
        ),
        (json!({"aggregate": "lifetime", "gt": 1}), "aggregate"),
        (json!({"any": [{"nonsense": true}]}), "any[0]"),
    ] {
        let (s, code, msg) = post(json!({"name": "x", "purpose": email, "rule": rule})).await;
        assert_eq!((s, code.as_str()), (422, "invalid_rule"), "{msg}");
        assert!(msg.starts_with(&format!("{path}:")), "{path}: {msg}");
    }
    let mut deep = json!({"aggregate": "purchase_count", "gt": 0});
    for _ in 0..20 {
        deep = json!({"not": deep});
    }
    let (s, code, _) = post(json!({"name": "x", "purpose": email, "rule": deep})).await;
    assert_eq!((s, code.as_str()), (422, "invalid_rule"));
    // A purpose the key was not given, another recipient.
    let (s, code, _) = post(json!({"name": "x", "purpose": "personalize", "rule": {"aggregate": "purchase_count", "gt": 0}})).await;
    assert_eq!((s, code.as_str()), (403, "forbidden"));
    let (s, _, _) = post(json!({"name": "x", "purpose": email, "recipient": "other-esp", "rule": {"aggregate": "purchase_count", "gt": 0}})).await;
    assert_eq!(s, 403);
    assert_eq!(app.count("segments", "").await, 0, "nothing saved");

    // Another recipient's segment is invisible; a saved one can be deleted.
    let id = segment(
        &app,
        &esp,
        email,
        json!({"aggregate": "purchase_count", "gt": 0}),
    )
    .await;
    let other = app.esp_key("other-esp", &[email]).await;
    assert_eq!(
        app.get(&format!("/v1/segments/{id}"), Some(&other))
            .await
            .status(),
        404
    );
    assert_eq!(
        app.get(&format!("/v1/segments/{id}/count"), Some(&other))
            .await
            .status(),
        404
    );
    let list = app.get_json("/v1/segments", Some(&other)).await;
    assert_eq!(list["segments"].as_array().unwrap().len(), 0);
    let r = app
        .get(&format!("/v1/segments/{id}/preview?limit=0"), Some(&esp))
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        app.delete(&format!("/v1/segments/{id}"), Some(&esp))
            .await
            .status(),
        204
    );
    assert_eq!(
        app.get(&format!("/v1/segments/{id}"), Some(&esp))
            .await
            .status(),
        404
    );
}

/// A small deterministic generator for the random people.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[self.below(v.len() as u64) as usize]
    }
}

const EVENTS: [&str; 6] = [
    "Product Viewed",
    "Order Completed",
    "Email Opened",
    "Email Link Clicked",
    "Product Added",
    "Checkout Started",
];
const COUNTRIES: [&str; 4] = ["DE", "FR", "GB", "de"];
const PLANS: [&str; 3] = ["gold", "silver", "gold plus"];
const PRODUCTS: [&str; 4] = ["p1", "p2", "p3", "p10"];

fn random_rules() -> Vec<Value> {
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;
    let window = prop_oneof![
        Just("1h"),
        Just("36h"),
        Just("7d"),
        Just("30d"),
        Just("60d"),
        Just("2w")
    ];
    let num = prop_oneof![
        Just(0.0),
        Just(1.0),
        Just(2.5),
        Just(50.0),
        Just(100.0),
        Just(500.0)
    ];
    let op = prop_oneof![
        Just("eq"),
        Just("ne"),
        Just("gt"),
        Just("gte"),
        Just("lt"),
        Just("lte")
    ];
    let text = prop_oneof![
        Just("DE"),
        Just("gold"),
        Just("p1"),
        Just("old"),
        Just("G"),
        Just("")
    ];
    let json_test = prop_oneof![
        (op.clone(), num.clone()).prop_map(|(o, n)| json!({o: n})),
        (op.clone(), text.clone()).prop_map(|(o, t)| json!({o: t})),
        text.clone().prop_map(|t| json!({"contains": t})),
        num.clone().prop_map(|n| json!({"contains": n})),
        (text.clone(), num.clone()).prop_map(|(t, n)| json!({"in": [t, n]})),
        any::<bool>().prop_map(|b| json!({"exists": b})),
        any::<bool>().prop_map(|b| json!({"eq": b})),
    ];
    let attribute = (
        prop_oneof![
            Just("country"),
            Just("plan"),
            Just("interests"),
            Just("email_frequency"),
            Just("language")
        ],
        json_test.clone(),
    )
        .prop_map(|(a, mut t)| {
            t["attribute"] = json!(a);
            t
        });
    let times = prop_oneof![
        Just("last_page_view_at"),
        Just("last_email_open_at"),
        Just("last_email_click_at"),
        Just("last_purchase_at"),
        Just("cart_updated_at")
    ];
    let aggregate = prop_oneof![
        (times.clone(), window.clone()).prop_map(|(a, w)| json!({"aggregate": a, "within": w})),
        (times.clone(), window.clone()).prop_map(|(a, w)| json!({"aggregate": a, "older_than": w})),
        (times, any::<bool>()).prop_map(|(a, b)| json!({"aggregate": a, "exists": b})),
        (
            prop_oneof![
                Just("purchase_count"),
                Just("lifetime_value"),
                Just("average_order_value")
            ],
            op.clone(),
            num.clone()
        )
            .prop_map(|(a, o, n)| json!({"aggregate": a, o: n})),
        (
            prop_oneof![Just("purchase_count"), Just("average_order_value")],
            any::<bool>()
        )
            .prop_map(|(a, b)| json!({"aggregate": a, "exists": b})),
        (
            prop_oneof![Just("recently_viewed"), Just("cart")],
            prop_oneof![Just("p1"), Just("p2"), Just("p9")]
        )
            .prop_map(|(a, p)| json!({"aggregate": a, "contains": p})),
        (
            prop_oneof![Just("recently_viewed"), Just("cart")],
            any::<bool>()
        )
            .prop_map(|(a, b)| json!({"aggregate": a, "exists": b})),
    ];
    let prop_test = (
        prop_oneof![Just("total"), Just("product_id"), Just("note")],
        json_test,
    )
        .prop_map(|(p, mut t)| {
            t["property"] = json!(p);
            t
        });
    let event = (
        prop_oneof![
            Just("Product Viewed"),
            Just("Order Completed"),
            Just("Email Opened"),
            Just("Email Link Clicked")
        ],
        proptest::option::of(window.clone()),
        proptest::option::of(window),
        proptest::option::of((op.clone(), 0u64..3)),
        proptest::collection::vec(prop_test, 0..2),
    )
        .prop_map(|(name, within, older, count, props)| {
            let mut e = json!({"event": name});
            if let Some(w) = within {
                e["within"] = json!(w);
            }
            if let Some(w) = older {
                e["older_than"] = json!(w);
            }
            if let Some((o, n)) = count {
                e["count"] = json!({o: n});
            }
            if !props.is_empty() {
                e["where"] = json!(props);
            }
            e
        });
    let page = prop_oneof![
        Just(json!({"event": "*", "type": "page", "within": "7d"})),
        Just(json!({"event": "Home", "type": "page"}))
    ];
    let score = prop_oneof![
        (
            prop_oneof![Just("churn.risk"), Just("rfm.score")],
            op.clone(),
            num.clone()
        )
            .prop_map(|(n, o, v)| json!({"score": n, o: v})),
        (
            prop_oneof![Just("churn.risk"), Just("ltv.band")],
            any::<bool>()
        )
            .prop_map(|(n, b)| json!({"score": n, "exists": b})),
        proptest::collection::vec(num.clone(), 1..3)
            .prop_map(|v| json!({"score": "churn.risk", "in": v})),
    ];
    let leaf = prop_oneof![attribute, aggregate, event, page, score];
    let rule = leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 1..4).prop_map(|v| json!({"all": v})),
            proptest::collection::vec(inner.clone(), 1..4).prop_map(|v| json!({"any": v})),
            inner.prop_map(|r| json!({"not": r})),
        ]
    });
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    (0..250)
        .map(|_| rule.new_tree(&mut runner).expect("a rule").current())
        .collect()
}

#[tokio::test]
async fn sql_and_in_memory_evaluation_agree_on_random_rules_and_people() {
    use consentry::domain::Clock;
    use consentry::policy::gate::{Gate, authorize, load_record, minimise, minimised_events};
    use consentry::segmentation::{Rule, eval, sql};
    use sea_orm::ConnectionTrait;
    let app = spawn_app().await;
    let (_, ingest) = app.create_key("ingest").await;
    let ingest_bearer = ingest.clone();
    let (_, dpo) = app.create_key("dpo").await;
    app.ensure_recipient("acme-esp", "esp", &["personalize"])
        .await;
    let mut rng = Lcg(7);
    let mut batch = Vec::new();
    for i in 0..40 {
        let user = format!("u{i}");
        let mut traits = json!({"email": format!("{user}@example.com")});
        if rng.below(4) > 0 {
            traits["country"] = json!(rng.pick(&COUNTRIES));
        }
        if rng.below(3) > 0 {
            traits["plan"] = json!(rng.pick(&PLANS));
        }
        if rng.below(3) == 0 {
            traits["interests"] = json!([
                rng.pick(&["gold", "DE", "shoes"]),
                rng.pick(&["p1", "old", "2.5"])
            ]);
        }
        if rng.below(3) == 0 {
            traits["email_frequency"] = json!(rng.below(4) as f64 * 1.25);
        }
        if rng.below(5) == 0 {
            traits["language"] = json!(rng.below(2) == 0);
        }
        batch.push(json!({"type": "identify", "userId": user, "traits": traits}));
        for _ in 0..rng.below(6) {
            let name = rng.pick(&EVENTS);
            let mut props = json!({});
            match rng.below(4) {
                0 => props["total"] = json!(rng.below(7) as f64 * 25.0),
                1 => props["total"] = json!(rng.pick(&["50", "gold"])),
                _ => {}
            }
            if rng.below(2) == 0 {
                props["product_id"] = json!(rng.pick(&PRODUCTS));
            }
            if rng.below(4) == 0 {
                props["note"] = json!([rng.pick(&["p1", "G"]), 2.5]);
            }
            let secs = (rng.below(180) as i64) * 43_200 - 43_200;
            batch.push(json!({"type": "track", "userId": user, "event": name, "properties": props, "timestamp": ago(&app, secs)}));
        }
        if rng.below(3) == 0 {
            batch.push(
                json!({"type": "page", "userId": user, "name": rng.pick(&["Home", "Shoes"]),
                "timestamp": ago(&app, (rng.below(14 * 24) as i64) * 3600)}),
            );
        }
    }
    let r = app
        .track(&ingest, "/v1/batch", &json!({"batch": batch}))
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    // People exactly on the windows' edges, so that `>` for `>=` shows.
    for (i, secs) in [
        (40, 36 * 3600),
        (41, 7 * DAY),
        (42, 30 * DAY),
        (43, 60 * DAY),
    ] {
        let user = format!("u{i}");
        let mut edge = vec![
            json!({"type": "identify", "userId": user, "traits": {"email": format!("{user}@example.com")}}),
        ];
        for name in EVENTS {
            edge.push(json!({"type": "track", "userId": user, "event": name,
                "properties": {"total": 50, "product_id": "p1"}, "timestamp": ago(&app, secs)}));
        }
        edge.push(
            json!({"type": "page", "userId": user, "name": "Home", "timestamp": ago(&app, secs)}),
        );
        let r = app
            .track(&ingest, "/v1/batch", &json!({"batch": edge}))
            .await;
        assert_eq!(r.status(), 200);
    }
    for i in 0..44 {
        let status = if i >= 40 {
            "granted"
        } else {
            ["granted", "granted", "denied", "withdrawn", "none"][rng.below(5) as usize]
        };
        if status != "none" {
            let r = app
                .post_json("/v1/consents", Some(&dpo), &json!({"subject": {"user_id": format!("u{i}")},
                    "purpose": "personalization", "status": status, "method": "web_form", "source": "shop"}))
                .await;
            assert_eq!(r.status(), 201);
        }
        // Scores an external model posted, on the values the rules compare with.
        let mut scores = Vec::new();
        for name in ["churn.risk", "ltv.band"] {
            if rng.below(3) > 0 {
                let v = [0.0, 1.0, 2.5, 50.0, 100.0, 500.0, 7.0][rng.below(7) as usize];
                scores.push(json!({"name": name, "value": v, "model_version": "test"}));
            }
        }
        if !scores.is_empty() {
            let r = app
                .client
                .post(app.url("/v1/scores"))
                .bearer_auth(&ingest_bearer)
                .json(&json!({"subject": {"user_id": format!("u{i}")}, "scores": scores}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
        if rng.below(8) == 0 {
            let sid = app
                .get_json(&format!("/v1/subjects?user_id=u{i}"), Some(&dpo))
                .await["subject_id"]
                .as_str()
                .unwrap()
                .to_owned();
            let r = app
                .client
                .put(app.url(&format!("/v1/subjects/{sid}/restriction")))
                .bearer_auth(&dpo)
                .json(&json!({"reason": "contested"}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    }
    let state = app.state.clone();
    let keyring = state.keyring_for("acme-esp").await.unwrap();
    let policies = state.policies.get();
    let row = consentry::policy::recipients::get(&state.db, "acme-esp")
        .await
        .unwrap()
        .unwrap();
    let admin = consentry::auth::Caller {
        key_id: "test".into(),
        name: "test".into(),
        role: consentry::domain::Role::Admin,
        recipient: None,
        purposes: vec![],
        via: consentry::auth::Credential::ApiKey,
    };
    let grant = authorize(&admin, &row, "personalize", policies.clone()).unwrap();
    let now = app.clock.now();
    // Every subject's view and events, through the gate.
    let subjects: Vec<String> = {
        let rows = state
            .db
            .conn()
            .query_all_raw(sea_orm::Statement::from_string(
                state.db.backend(),
                "SELECT id FROM subjects WHERE status = 'active' ORDER BY id",
            ))
            .await
            .unwrap();
        rows.iter()
            .map(|r| r.try_get_by_index::<String>(0).unwrap())
            .collect()
    };
    let mut facts = Vec::new();
    for s in &subjects {
        let p = keyring.pseudonym("acme-esp", s).unwrap();
        let record = load_record(state.db.conn(), &state.master, &keyring, &grant, s, p)
            .await
            .unwrap()
            .unwrap();
        if let Ok(view) = minimise(&record, &grant, now) {
            let events = minimised_events(state.db.conn(), &grant, s, &view)
                .await
                .unwrap();
            facts.push((s.clone(), view, events));
        }
    }
    assert!(
        facts.len() >= 10 && facts.len() < subjects.len(),
        "some pass the gate, some do not: {} of {}",
        facts.len(),
        subjects.len()
    );
    let gate = Gate {
        db: &state.db,
        master: &state.master,
        keyring: &keyring,
        audit: &state.audit,
        actor: consentry::domain::Actor::cli(),
        request_id: None,
        now,
    };
    let dialect = consentry::policy::gate::audience::dialect(state.db.backend());
    let mut nonempty = 0;
    for v in random_rules() {
        let rule = Rule::parse(&v).unwrap_or_else(|e| panic!("{v}: {e}"));
        assert!(
            consentry::segmentation::check(&rule, &grant).is_empty(),
            "{v}"
        );
        let memory: BTreeSet<String> = facts
            .iter()
            .filter(|(_, view, events)| {
                eval::matches(
                    &rule,
                    &eval::Facts {
                        profile: view,
                        events,
                    },
                    now,
                )
            })
            .map(|(s, ..)| s.clone())
            .collect();
        let cond = consentry::policy::gate::audience::Condition {
            expr: sql::condition(&rule, dialect, now.unix_micros()),
            aggregates: rule.reads_aggregates(),
        };
        let (rows, _) = gate
            .members(&grant, cond.clone(), None, 1000, false)
            .await
            .unwrap();
        let in_sql: BTreeSet<String> = rows.into_iter().map(|(s, _)| s).collect();
        assert_eq!(in_sql, memory, "rule {v}");
        let n = consentry::policy::gate::audience::count(
            state.db.conn(),
            &grant,
            cond,
            now.unix_micros(),
        )
        .await
        .unwrap();
        assert_eq!(n as usize, memory.len(), "count of rule {v}");
        if !memory.is_empty() && memory.len() < facts.len() {
            nonempty += 1;
        }
    }
    assert!(nonempty > 50, "the rules discriminate: {nonempty}");
}

#[tokio::test]
async fn an_attribute_matches_whatever_spelling_the_trait_was_sent_with() {
    let app = spawn_app().await;
    let (_, ingest) = app.create_key("ingest").await;
    let (_, dpo) = app.create_key("dpo").await;
    let esp = app.esp_key("acme-esp", &[EMAIL]).await;
    person(&app, &ingest, &dpo, "ann", &[], true).await;
    person(&app, &ingest, &dpo, "bob", &[], true).await;
    // Segment's clients send camelCase (`firstName`); rules name the taxonomy's spelling.
    let r = app
        .track(
            &ingest,
            "/v1/identify",
            &json!({"userId": "ann", "traits": {"firstName": "Ann", "Plan": "gold"}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    for rule in [
        json!({"attribute": "first_name", "exists": true}),
        json!({"attribute": "plan", "eq": "gold"}),
        json!({"attribute": "PLAN", "in": ["gold", "silver"]}),
    ] {
        let id = segment(&app, &esp, EMAIL, rule.clone()).await;
        let (n, rows) = members(&app, &esp, &id).await;
        assert_eq!((n, rows.len()), (1, 1), "{rule}");
    }
    let id = segment(
        &app,
        &esp,
        EMAIL,
        json!({"attribute": "first_name", "exists": false}),
    )
    .await;
    assert_eq!(members(&app, &esp, &id).await.0, 1, "bob");
}
