//! The gate.
//!
//! 1. `minimise` decisions/s on one core, on a profile loaded from the database (15 traits,
//!    12 aggregates, a consent history), against a plain clone of the same profile's
//!    allowed fields, in the same run.
//! 2. The ESP read route `GET /v1/recipients/{rid}/profiles/{pseudonym}` under load from a
//!    second process (this binary started again as a load generator), 4 connections for
//!    `CONSENTRY_BENCH_SECS` (default 30) seconds: requests/s, p50, p99; then `/healthz` on
//!    the same server the same way.
//!
//! `cargo bench --bench gate`; `CONSENTRY_BENCH_PG=postgres://...` adds PostgreSQL.
mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use consentry::auth::{Caller, Credential};
use consentry::domain::Role;
use consentry::policy::gate::{authorize, load_record, minimise};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};

const PEOPLE: usize = 1000;
const PURPOSE: &str = "marketing.communications.email";
const DECISIONS: usize = 2_000_000;

fn secs() -> u64 {
    std::env::var("CONSENTRY_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30)
}

fn person(i: usize) -> Value {
    json!({"type": "identify", "userId": format!("u{i}"),
        "traits": {"email": format!("p{i}@example.com"), "first_name": format!("Name{i}"),
            "last_name": "Smith", "country": "DE", "language": "de", "plan": "gold",
            "created_at": "2024-01-01", "interests": "shoes", "city": "Berlin",
            "postal_code": "10115", "birthday": "1990-04-01", "gender": "f",
            "email_frequency": "weekly", "age": 36, "shoe_size": 38}})
}

async fn post(client: &reqwest::Client, url: &str, token: &str, body: &Value) -> Value {
    let r = client
        .post(url)
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("send");
    assert!(r.status().is_success(), "{url}: {}", r.status());
    r.json().await.expect("json")
}

async fn run(label: &str, url: Option<String>) {
    let dir = tempfile::tempdir().expect("tmp");
    let app = consentry::startup::Application::build(common::settings(dir.path(), url))
        .await
        .expect("app");
    let base = format!("http://127.0.0.1:{}", app.port());
    let admin = app.bootstrap_token().expect("token").to_owned();
    let state = app.state();
    tokio::spawn(app.run_until_stopped());
    let client = reqwest::Client::new();
    let key = |role: &str, extra: Value| {
        let mut body = json!({"name": role, "role": role});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        body
    };
    let ingest = post(
        &client,
        &format!("{base}/v1/keys"),
        &admin,
        &key("ingest", json!({})),
    )
    .await;
    let ingest = ingest["token"].as_str().expect("token").to_owned();
    let dpo = post(
        &client,
        &format!("{base}/v1/keys"),
        &admin,
        &key("dpo", json!({})),
    )
    .await;
    let dpo = dpo["token"].as_str().expect("token").to_owned();
    post(
        &client,
        &format!("{base}/v1/recipients"),
        &admin,
        &json!({"id": "acme-esp", "name": "Acme", "kind": "esp", "purposes": [PURPOSE]}),
    )
    .await;
    let esp = post(
        &client,
        &format!("{base}/v1/keys"),
        &admin,
        &key(
            "esp",
            json!({"recipient": "acme-esp", "purposes": [PURPOSE]}),
        ),
    )
    .await;
    let esp = esp["token"].as_str().expect("token").to_owned();

    for chunk in (0..PEOPLE).collect::<Vec<_>>().chunks(250) {
        let mut batch: Vec<Value> = chunk.iter().map(|i| person(*i)).collect();
        for i in chunk {
            batch.push(json!({"type": "track", "userId": format!("u{i}"), "event": "Order Completed",
                "properties": {"order_id": format!("o{i}"), "total": 40 + i % 60, "currency": "EUR"}}));
            batch.push(
                json!({"type": "page", "userId": format!("u{i}"), "name": "Product",
                "properties": {"product_id": format!("sku-{}", i % 50)}}),
            );
        }
        let r = client
            .post(format!("{base}/v1/batch"))
            .basic_auth(&ingest, Some(""))
            .json(&json!({"batch": batch}))
            .send()
            .await
            .expect("batch");
        assert_eq!(r.status(), 200);
    }
    let mut pseudonyms = Vec::new();
    for i in 0..PEOPLE {
        let email = format!("p{i}@example.com");
        post(
            &client,
            &format!("{base}/v1/consents"),
            &dpo,
            &json!({"subject": {"email": email}, "purpose": "email_marketing", "status": "granted",
                    "method": "double_opt_in", "source": "bench"}),
        )
        .await;
        let p = post(
            &client,
            &format!("{base}/v1/recipients/acme-esp/pseudonyms"),
            &esp,
            &json!({"purpose": PURPOSE, "email": email}),
        )
        .await;
        pseudonyms.push(p["pseudonym"].as_str().expect("pseudonym").to_owned());
    }

    // 1. minimise on one loaded profile.
    let caller = Caller {
        key_id: "bench".into(),
        name: "bench".into(),
        role: Role::Admin,
        recipient: None,
        purposes: vec![],
        via: Credential::ApiKey,
    };
    let recipient = consentry::policy::recipients::get(&state.db, "acme-esp")
        .await
        .expect("recipient")
        .expect("registered");
    let grant = authorize(&caller, &recipient, PURPOSE, state.policies.get()).expect("grant");
    let backend = state.db.backend();
    let row = state
        .db
        .conn()
        .query_one_raw(Statement::from_string(
            backend,
            "SELECT subject_id FROM pseudonyms ORDER BY created_at LIMIT 1",
        ))
        .await
        .expect("query")
        .expect("a pseudonym");
    let subject: String = row.try_get_by_index(0).expect("subject id");
    let keyring = state.keyring.get();
    let pseudonym = keyring.pseudonym("acme-esp", &subject).expect("pseudonym");
    let record = load_record(
        state.db.conn(),
        &state.master,
        &keyring,
        &grant,
        &subject,
        pseudonym,
    )
    .await
    .expect("load")
    .expect("a record");
    let now = state.clock.now();
    let view = minimise(&record, &grant, now).expect("a view");
    let fields = view.disclosed().len();

    let t = Instant::now();
    for _ in 0..DECISIONS {
        black_box(minimise(black_box(&record), black_box(&grant), now).ok());
    }
    let ours = DECISIONS as f64 / t.elapsed().as_secs_f64();
    // Baseline: the same allowed fields, already picked out, cloned.
    type Fields = Vec<(Arc<str>, Value)>;
    let plain: (String, String, Fields, Fields) = (
        view.pseudonym().to_string(),
        view.email().unwrap_or_default().to_owned(),
        view.traits()
            .map(|(k, v)| (Arc::from(k), v.clone()))
            .collect(),
        view.aggregates()
            .map(|(k, v)| (Arc::from(k), v.clone()))
            .collect(),
    );
    let t = Instant::now();
    for _ in 0..DECISIONS {
        black_box(black_box(&plain).clone());
    }
    let raw = DECISIONS as f64 / t.elapsed().as_secs_f64();
    println!(
        "| minimise, {label} | {DECISIONS} decisions, one core, {fields} fields disclosed of {} attributes | {ours:.0} decisions/s | plain clone of the allowed fields {raw:.0}/s | {:.2} |",
        record.attribute_count(),
        ours / raw
    );

    // 2. The ESP read route from a second process, then /healthz the same way.
    let exe = std::env::current_exe().expect("exe");
    let list = dir.path().join("pseudonyms.txt");
    std::fs::write(&list, pseudonyms.join("\n")).expect("write list");
    let profile_url = format!("{base}/v1/recipients/acme-esp/profiles/{{p}}?purpose={PURPOSE}");
    let ours = load(exe.clone(), profile_url, esp.clone(), list.clone()).await;
    let health = load(exe, format!("{base}/healthz"), String::new(), list).await;
    println!(
        "| ESP read route, {label} | {PEOPLE} profiles, 4 connections, {} s | {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms | /healthz {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms | {:.2} |",
        secs(),
        ours.0,
        ours.1,
        ours.2,
        health.0,
        health.1,
        health.2,
        ours.0 / health.0
    );
}

/// Runs this binary as a load generator against `url`; returns (req/s, p50 ms, p99 ms).
async fn load(
    exe: std::path::PathBuf,
    url: String,
    token: String,
    list: std::path::PathBuf,
) -> (f64, f64, f64) {
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(exe)
            .env("CONSENTRY_LOADGEN_URL", url)
            .env("CONSENTRY_LOADGEN_TOKEN", token)
            .env("CONSENTRY_LOADGEN_LIST", list)
            .env("CONSENTRY_BENCH_SECS", secs().to_string())
            .output()
    })
    .await
    .expect("join")
    .expect("load generator");
    assert!(out.status.success(), "load generator failed");
    let v: Value = serde_json::from_slice(&out.stdout).expect("load generator output");
    assert_eq!(v["errors"], 0, "errors under load: {v}");
    (
        v["rps"].as_f64().unwrap_or(0.0),
        v["p50_ms"].as_f64().unwrap_or(0.0),
        v["p99_ms"].as_f64().unwrap_or(0.0),
    )
}

/// The second process: 4 connections, each a client with one kept-alive connection.
async fn loadgen(url: String, token: String, list: String) {
    let pseudonyms: Vec<String> = std::fs::read_to_string(list)
        .expect("list")
        .lines()
        .map(str::to_owned)
        .collect();
    let pseudonyms = Arc::new(pseudonyms);
    let until = Instant::now() + Duration::from_secs(secs());
    let mut tasks = Vec::new();
    for c in 0..4usize {
        let (url, token, pseudonyms) = (url.clone(), token.clone(), Arc::clone(&pseudonyms));
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .expect("client");
            let (mut lat, mut errors, mut i) = (Vec::new(), 0u64, c * 7919);
            while Instant::now() < until {
                let target = url.replace("{p}", &pseudonyms[i % pseudonyms.len()]);
                i += 1;
                let t = Instant::now();
                let mut req = client.get(&target);
                if !token.is_empty() {
                    req = req.bearer_auth(&token);
                }
                match req.send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                    }
                    _ => errors += 1,
                }
                lat.push(t.elapsed());
            }
            (lat, errors)
        }));
    }
    let (mut lat, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (l, e) = t.await.expect("task");
        lat.extend(l);
        errors += e;
    }
    lat.sort();
    let ms = |q: usize| lat[(lat.len() * q / 100).min(lat.len() - 1)].as_secs_f64() * 1e3;
    println!(
        "{}",
        json!({"rps": lat.len() as f64 / secs() as f64, "p50_ms": ms(50), "p99_ms": ms(99), "errors": errors})
    );
}

#[tokio::main]
async fn main() {
    if let (Ok(url), Ok(token), Ok(list)) = (
        std::env::var("CONSENTRY_LOADGEN_URL"),
        std::env::var("CONSENTRY_LOADGEN_TOKEN"),
        std::env::var("CONSENTRY_LOADGEN_LIST"),
    ) {
        loadgen(url, token, list).await;
        return;
    }
    println!("| benchmark | size | Consentry | baseline | ratio |");
    println!("|---|---|---|---|---|");
    run("SQLite", None).await;
    if let Ok(base) = std::env::var("CONSENTRY_BENCH_PG") {
        let url = common::fresh_pg(&base).await;
        run("PostgreSQL", Some(url.clone())).await;
        common::drop_pg(&base, &url).await;
    }
}
