//! Scores: RFM quintiles over the consented buyers, a propensity model that finds a known
//! signal (and reports chance where there is none), scores posted by an external system,
//! and the Art. 22 rule that only a profiling purpose on consent can use any of them.
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

const P13N: &str = "personalize";
const EMAIL: &str = "marketing.communications.email";
const DAY: i64 = 86_400;

fn ago(app: &TestApp, secs: i64) -> String {
    use consentry::domain::Clock;
    app.clock.now().plus_seconds(-secs).to_rfc3339()
}

async fn batch(app: &TestApp, ingest: &str, messages: Vec<Value>) {
    for chunk in messages.chunks(400) {
        let r = app
            .track(ingest, "/v1/batch", &json!({"batch": chunk}))
            .await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
}

async fn consent(app: &TestApp, dpo: &str, who: &str, status: &str) {
    let method = if status == "granted" {
        "double_opt_in"
    } else {
        "api"
    };
    let r = app
        .post_json(
            "/v1/consents",
            Some(dpo),
            &json!({"subject": {"user_id": who}, "purpose": "personalization",
                "status": status, "method": method, "source": "shop",
                "captured_at": ago(app, 400 * DAY)}),
        )
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}

async fn segment(app: &TestApp, esp: &str, purpose: &str, rule: Value) -> reqwest::Response {
    app.post_json(
        "/v1/segments",
        Some(esp),
        &json!({"name": "scores", "purpose": purpose, "rule": rule}),
    )
    .await
}

async fn count(app: &TestApp, esp: &str, rule: Value) -> u64 {
    let r = segment(app, esp, P13N, rule).await;
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.get_json(&format!("/v1/segments/{id}/count"), Some(esp))
        .await["count"]
        .as_u64()
        .unwrap()
}

async fn score_of(app: &TestApp, dpo: &str, who: &str, name: &str) -> Option<f64> {
    let id = app
        .get_json(&format!("/v1/subjects?user_id={who}"), Some(dpo))
        .await["subject_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let n = app
        .count(
            "scores",
            &format!("WHERE subject_id = '{id}' AND name = '{name}'"),
        )
        .await;
    if n == 0 {
        return None;
    }
    let v = app
        .scalar_i64(&format!(
            "SELECT CAST(ROUND(value * 1000) AS BIGINT) FROM scores WHERE subject_id = '{id}' AND name = '{name}'"
        ))
        .await;
    Some(v as f64 / 1000.0)
}

async fn compute(app: &TestApp) -> Value {
    let r = app
        .post_json("/v1/scores/compute", Some(&app.admin_token), &json!({}))
        .await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test]
async fn rfm_scores_are_quintiles_over_the_consented_buyers_and_only_a_profiling_purpose_reads_them()
 {
    let app = spawn_app().await;
    let (_, ingest) = app.create_key("ingest").await;
    let (_, dpo) = app.create_key("dpo").await;
    let esp = app.esp_key("acme-esp", &[P13N, EMAIL]).await;
    // Buyer i (1..10) bought i times, 10 × i each time, the last time 11 - i days ago:
    // the higher i, the more recent, frequent and valuable.
    let mut messages = Vec::new();
    for i in 1..=10i64 {
        let who = format!("b{i:02}");
        messages.push(json!({"type": "identify", "userId": who, "traits": {"country": "DE"}}));
        for k in 0..i {
            messages.push(json!({"type": "track", "userId": who, "event": "Order Completed",
                "properties": {"order_id": format!("{who}-{k}"), "total": 10 * i, "currency": "EUR"},
                "timestamp": ago(&app, (11 - i) * DAY + k * 3600)}));
        }
    }
    // Bought a lot but never consented; consented but never bought.
    messages.push(json!({"type": "track", "userId": "noconsent", "event": "Order Completed",
        "properties": {"order_id": "x", "total": 5000, "currency": "EUR"}, "timestamp": ago(&app, DAY)}));
    messages.push(json!({"type": "identify", "userId": "browser", "traits": {"country": "DE"}}));
    batch(&app, &ingest, messages).await;
    for i in 1..=10 {
        consent(&app, &dpo, &format!("b{i:02}"), "granted").await;
    }
    consent(&app, &dpo, "browser", "granted").await;

    let report = compute(&app).await;
    assert_eq!(report["rfm"]["scored"], 10, "{report}");
    assert_eq!(report["rfm"]["frequency_cuts"], json!([2.0, 4.0, 6.0, 8.0]));
    for (who, r, total) in [
        ("b01", 1.0, 0.0),
        ("b04", 2.0, 25.0),
        ("b08", 4.0, 75.0),
        ("b10", 5.0, 100.0),
    ] {
        assert_eq!(
            score_of(&app, &dpo, who, "rfm.recency").await,
            Some(r),
            "{who}"
        );
        assert_eq!(
            score_of(&app, &dpo, who, "rfm.frequency").await,
            Some(r),
            "{who}"
        );
        assert_eq!(
            score_of(&app, &dpo, who, "rfm.monetary").await,
            Some(r),
            "{who}"
        );
        assert_eq!(
            score_of(&app, &dpo, who, "rfm.score").await,
            Some(total),
            "{who}"
        );
    }
    assert_eq!(score_of(&app, &dpo, "noconsent", "rfm.score").await, None);
    assert_eq!(score_of(&app, &dpo, "browser", "rfm.score").await, None);

    // The seed's "RFM score > 80" is a segment of a profiling purpose; its rows carry
    // the scores; a non-profiling purpose may not use them at all.
    assert_eq!(
        count(&app, &esp, json!({"score": "rfm.score", "gt": 80})).await,
        2
    );
    assert_eq!(
        count(&app, &esp, json!({"score": "rfm.recency", "exists": false})).await,
        1,
        "the consented non-buyer"
    );
    let r = segment(&app, &esp, EMAIL, json!({"score": "rfm.score", "gt": 80})).await;
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "purpose_mismatch");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("score:rfm.score"),
        "{v}"
    );
    let r = segment(
        &app,
        &esp,
        P13N,
        json!({"score": "rfm.score", "gt": "high"}),
    )
    .await;
    assert_eq!(r.status(), 422, "a score is a number");
    let r = segment(&app, &esp, P13N, json!({"score": "RFM", "gt": 1})).await;
    assert_eq!(r.status(), 422);
    let r = segment(
        &app,
        &esp,
        P13N,
        json!({"attribute": "country", "eq": "DE"}),
    )
    .await;
    let seg = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = app
        .get(
            &format!("/v1/segments/{seg}/export?recipient=acme-esp"),
            Some(&esp),
        )
        .await
        .text()
        .await
        .unwrap();
    let rows: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 11);
    assert_eq!(
        rows.iter()
            .filter(|r| r["scores"]["rfm.score"] == 100.0)
            .count(),
        2
    );

    // Consent withdrawn: the next run drops that person's scores.
    consent(&app, &dpo, "b10", "withdrawn").await;
    app.clock.advance_secs(60);
    let report = compute(&app).await;
    assert_eq!(report["rfm"]["scored"], 9);
    assert_eq!(report["rfm"]["dropped"], 4);
    assert_eq!(score_of(&app, &dpo, "b10", "rfm.score").await, None);
    assert_eq!(score_of(&app, &dpo, "b09", "rfm.score").await, Some(100.0));
    assert!(app.verify().await.is_ok());
}

/// `n` consented people; `buys(i)` says whether person i ordered in the last 30 days,
/// `engaged(i)` whether they opened an email 35 days ago.
async fn history(
    app: &TestApp,
    ingest: &str,
    dpo: &str,
    n: usize,
    engaged: impl Fn(usize) -> bool,
    buys: impl Fn(usize) -> bool,
) {
    let mut messages = Vec::new();
    for i in 0..n {
        let who = format!("p{i:04}");
        messages.push(json!({"type": "identify", "userId": who, "traits": {"country": "DE"}}));
        messages.push(
            json!({"type": "track", "userId": who, "event": "Order Completed",
            "properties": {"order_id": format!("{who}-old"), "total": 20, "currency": "EUR"},
            "timestamp": ago(app, 200 * DAY)}),
        );
        if engaged(i) {
            messages.push(
                json!({"type": "track", "userId": who, "event": "Email Opened",
                "timestamp": ago(app, 35 * DAY)}),
            );
        }
        if buys(i) {
            messages.push(
                json!({"type": "track", "userId": who, "event": "Order Completed",
                "properties": {"order_id": format!("{who}-new"), "total": 30, "currency": "EUR"},
                "timestamp": ago(app, 10 * DAY)}),
            );
        }
    }
    batch(app, ingest, messages).await;
    for i in 0..n {
        consent(app, dpo, &format!("p{i:04}"), "granted").await;
    }
}

/// A deterministic "coin" for person i, unrelated to anything else about them.
fn coin(i: usize, salt: u64) -> f64 {
    let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt;
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 29;
    (x % 10_000) as f64 / 10_000.0
}

#[tokio::test]
async fn propensity_learns_a_known_signal_and_its_buckets_are_segments() {
    let app = spawn_app().await;
    let (_, ingest) = app.create_key("ingest").await;
    let (_, dpo) = app.create_key("dpo").await;
    let esp = app.esp_key("acme-esp", &[P13N]).await;
    let n = 400;
    // Those who opened an email mostly bought afterwards; the others mostly did not.
    let engaged = |i: usize| i.is_multiple_of(2);
    history(&app, &ingest, &dpo, n, engaged, |i| {
        coin(i, 7) < if engaged(i) { 0.8 } else { 0.1 }
    })
    .await;
    let report = compute(&app).await;
    let p = &report["propensity"];
    assert!(p.is_object(), "{report}");
    let auc = p["auc"].as_f64().unwrap();
    assert!(auc > 0.75, "a strong signal gives a high AUC: {auc}");
    assert_eq!(p["scored"], n);
    assert_eq!(
        p["training_rows"].as_u64().unwrap() + p["held_out_rows"].as_u64().unwrap(),
        n as u64
    );
    assert_eq!(p["features"].as_array().unwrap().len(), 7);
    // The email-open recency weighs against buying the longer ago it was.
    assert!(p["coefficients"][3].as_f64().unwrap() < 0.0, "{p}");
    let model = p["model_version"].as_str().unwrap();
    assert_eq!(
        app.count("score_models", &format!("WHERE version = '{model}'"))
            .await,
        1
    );
    assert_eq!(
        app.count(
            "scores",
            &format!("WHERE name = 'propensity.purchase' AND model_version = '{model}'")
        )
        .await,
        n as i64
    );
    let high = score_of(&app, &dpo, "p0000", "propensity.purchase")
        .await
        .unwrap();
    let low = score_of(&app, &dpo, "p0001", "propensity.purchase")
        .await
        .unwrap();
    assert!(high > low, "{high} {low}");
    // The seed's buckets partition the population.
    let s = "propensity.purchase";
    let hi = count(&app, &esp, json!({"score": s, "gt": 0.7})).await;
    let mid = count(
        &app,
        &esp,
        json!({"all": [{"score": s, "gte": 0.3}, {"score": s, "lte": 0.7}]}),
    )
    .await;
    let lo = count(&app, &esp, json!({"score": s, "lt": 0.3})).await;
    assert_eq!(hi + mid + lo, n as u64);
    assert!(hi > 0 && lo > 0, "{hi} {mid} {lo}");
}

#[tokio::test]
async fn propensity_without_a_signal_is_no_better_than_chance() {
    let app = spawn_app().await;
    let (_, ingest) = app.create_key("ingest").await;
    let (_, dpo) = app.create_key("dpo").await;
    // Not enough history yet: nothing is trained, and the report says why.
    let report = compute(&app).await;
    assert!(report["propensity"].is_null());
    assert!(
        report["propensity_skipped"]
            .as_str()
            .unwrap()
            .contains("need at least"),
        "{report}"
    );
    history(
        &app,
        &ingest,
        &dpo,
        400,
        |i| coin(i, 1) < 0.5,
        |i| coin(i, 2) < 0.4,
    )
    .await;
    let report = compute(&app).await;
    let auc = report["propensity"]["auc"].as_f64().unwrap();
    assert!((0.35..0.65).contains(&auc), "no signal, no lift: {auc}");
}

#[tokio::test]
async fn posted_scores_are_checked_stored_and_usable_only_for_profiling() {
    let app = spawn_app().await;
    let (_, ingest) = app.create_key("ingest").await;
    let (_, dpo) = app.create_key("dpo").await;
    let esp = app.esp_key("acme-esp", &[P13N, EMAIL]).await;
    batch(
        &app,
        &ingest,
        vec![json!({"type": "identify", "userId": "ann", "traits": {"country": "DE"}})],
    )
    .await;
    consent(&app, &dpo, "ann", "granted").await;
    let post = |body: Value| {
        let app = &app;
        let ingest = ingest.clone();
        async move {
            app.client
                .post(app.url("/v1/scores"))
                .bearer_auth(&ingest)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    let ok = json!({"subject": {"user_id": "ann"},
        "scores": [{"name": "churn.risk", "value": 0.8, "model_version": "xgb-2026-11"}]});
    let before = app.count("scores", "").await;
    for (body, status) in [
        (json!({"subject": {"user_id": "ann"}, "scores": []}), 422),
        (
            json!({"subject": {"user_id": "ann"}, "scores": [{"name": "churn", "value": 1, "model_version": "v"}]}),
            422,
        ),
        (
            json!({"subject": {"user_id": "ann"}, "scores": [{"name": "rfm.score", "value": 1, "model_version": "v"}]}),
            422,
        ),
        (
            json!({"subject": {"user_id": "ann"}, "scores": [{"name": "churn.risk", "value": 1, "model_version": ""}]}),
            422,
        ),
        (
            json!({"subject": {"user_id": "ann"}, "scores": [
            {"name": "churn.risk", "value": 1, "model_version": "v"},
            {"name": "churn.risk", "value": 2, "model_version": "v"}]}),
            422,
        ),
        (
            json!({"subject": {"user_id": "nobody"}, "scores": [{"name": "churn.risk", "value": 1, "model_version": "v"}]}),
            404,
        ),
        (
            json!({"subject": {"shoe_size": "9"}, "scores": [{"name": "churn.risk", "value": 1, "model_version": "v"}]}),
            422,
        ),
        (
            json!({"subject": {"user_id": "ann"}, "scores": [{"name": "churn.risk", "value": "high", "model_version": "v"}]}),
            400,
        ),
    ] {
        let r = post(body.clone()).await;
        assert_eq!(r.status(), status, "{body}: {}", r.text().await.unwrap());
    }
    assert_eq!(app.count("scores", "").await, before, "nothing stored");
    let r = app
        .client
        .post(app.url("/v1/scores"))
        .bearer_auth(&esp)
        .json(&ok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = post(ok).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["stored"], 1);
    assert_eq!(score_of(&app, &dpo, "ann", "churn.risk").await, Some(0.8));
    assert_eq!(
        count(&app, &esp, json!({"score": "churn.risk", "gt": 0.5})).await,
        1
    );
    assert_eq!(
        count(&app, &esp, json!({"score": "churn.risk", "lt": 0.5})).await,
        0
    );
    let r = segment(&app, &esp, EMAIL, json!({"score": "churn.risk", "gt": 0.5})).await;
    assert_eq!(r.status(), 422);
    // The rule engine's in-memory evaluation sees the same score in the view.
    let id = app.get_json("/v1/subjects?user_id=ann", Some(&dpo)).await["subject_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        app.count(
            "scores",
            &format!("WHERE subject_id = '{id}' AND source LIKE 'external:%'")
        )
        .await,
        1
    );
}

#[tokio::test]
async fn a_profiling_purpose_with_a_minimum_age_never_scores_someone_whose_age_is_on_record() {
    let app = spawn_app().await;
    let (_, ingest) = app.create_key("ingest").await;
    let (_, dpo) = app.create_key("dpo").await;
    let mut messages = Vec::new();
    for (who, traits) in [
        ("kid", json!({"country": "DE", "birthday": "2015-06-01"})),
        ("adult", json!({"country": "DE"})),
    ] {
        messages.push(json!({"type": "identify", "userId": who, "traits": traits}));
        messages.push(
            json!({"type": "track", "userId": who, "event": "Order Completed",
            "properties": {"order_id": format!("{who}-1"), "total": 30, "currency": "EUR"},
            "timestamp": ago(&app, 2 * DAY)}),
        );
    }
    batch(&app, &ingest, messages).await;
    consent(&app, &dpo, "kid", "granted").await;
    consent(&app, &dpo, "adult", "granted").await;
    let report = compute(&app).await;
    assert_eq!(report["rfm"]["scored"], 1, "{report}");
    assert!(score_of(&app, &dpo, "adult", "rfm.score").await.is_some());
    assert_eq!(score_of(&app, &dpo, "kid", "rfm.score").await, None);
}
