//! Ingest through `/v1/batch` (100 events a batch, 4 concurrent clients) against a raw
//! multi-row INSERT of the same event rows into the same database, in the same run;
//! and the latency of a single `/v1/track`.
//!
//! `cargo bench --bench ingest`; `CONSENTRY_BENCH_PG=postgres://...` adds PostgreSQL.
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, Value};
use serde_json::json;

const BATCHES: usize = 200;
const PER_BATCH: usize = 100;
const CLIENTS: usize = 4;

fn batch(b: usize) -> serde_json::Value {
    let user = format!("user-{}", b % 50);
    let events: Vec<serde_json::Value> = (0..PER_BATCH)
        .map(|i| {
            let (event, props) = if i % 10 == 9 {
                ("Order Completed", json!({"total": 42.5, "currency": "EUR"}))
            } else {
                (
                    "Product Viewed",
                    json!({"product_id": format!("p{}", i % 37), "price": 9.99}),
                )
            };
            json!({"type": "track", "userId": user, "event": event, "properties": props,
                   "messageId": format!("b{b}-{i}"), "context": {"library": {"name": "bench"}}})
        })
        .collect();
    json!({"batch": events})
}

async fn run(label: &str, url: Option<String>) {
    let dir = tempfile::tempdir().expect("tmp");
    let common::Gateway { base, key, state } = common::gateway(dir.path(), url).await;
    let client = reqwest::Client::new();
    let bodies: Arc<Vec<String>> = Arc::new((0..BATCHES).map(|b| batch(b).to_string()).collect());

    // Consentry: 4 clients share the batches.
    let t = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (client, base, key, bodies) =
            (client.clone(), base.clone(), key.clone(), bodies.clone());
        tasks.push(tokio::spawn(async move {
            for b in (c..BATCHES).step_by(CLIENTS) {
                let resp = client
                    .post(format!("{base}/v1/batch"))
                    .basic_auth(&key, Some(""))
                    .header("content-type", "application/json")
                    .body(bodies[b].clone())
                    .send()
                    .await
                    .expect("send");
                assert_eq!(
                    resp.status(),
                    200,
                    "{}",
                    resp.text().await.unwrap_or_default()
                );
            }
        }));
    }
    for t in tasks {
        t.await.expect("client");
    }
    let ours = (BATCHES * PER_BATCH) as f64 / t.elapsed().as_secs_f64();

    // Baseline: the same rows, 100 to a multi-row INSERT, 4 concurrent writers.
    let db = state.db.clone();
    let backend = db.backend();
    db.conn()
        .execute_unprepared(
            "CREATE TABLE bench_events (id TEXT PRIMARY KEY, subject_id TEXT NOT NULL, \
             source_key_id TEXT NOT NULL, message_id TEXT NOT NULL, kind TEXT NOT NULL, \
             name TEXT, properties TEXT NOT NULL, occurred_at BIGINT NOT NULL, \
             received_at BIGINT NOT NULL, UNIQUE (source_key_id, message_id))",
        )
        .await
        .expect("baseline table");
    let t = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            for b in (c..BATCHES).step_by(CLIENTS) {
                let mut sql = String::from("INSERT INTO bench_events VALUES ");
                let mut values: Vec<Value> = Vec::new();
                for i in 0..PER_BATCH {
                    let n = values.len();
                    if i > 0 {
                        sql.push(',');
                    }
                    sql.push_str(&format!("({})", common::placeholders(backend, n + 1, 9)));
                    values.extend([
                        uuid::Uuid::new_v4().simple().to_string().into(),
                        format!("subject-{}", b % 50).into(),
                        "key".to_owned().into(),
                        format!("b{b}-{i}").into(),
                        "track".to_owned().into(),
                        Some("Product Viewed".to_owned()).into(),
                        r#"{"product_id":"p1","price":9.99}"#.to_owned().into(),
                        1_796_000_000_000_000i64.into(),
                        1_796_000_000_000_000i64.into(),
                    ]);
                }
                common::commit_statement(&db, &sql, values).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    let raw = (BATCHES * PER_BATCH) as f64 / t.elapsed().as_secs_f64();
    println!(
        "| ingest /v1/batch, {label} | {BATCHES} × {PER_BATCH} events, {CLIENTS} clients | {ours:.0} events/s | raw multi-row INSERT {raw:.0} rows/s | {:.2} |",
        ours / raw
    );

    // Latency of single /v1/track calls, one client.
    let mut lat: Vec<Duration> = Vec::new();
    for i in 0..500 {
        let body = json!({"userId": format!("solo-{}", i % 20), "event": "Product Viewed",
                          "properties": {"product_id": "p1"}, "messageId": format!("solo-{i}")});
        let t = Instant::now();
        let resp = client
            .post(format!("{base}/v1/track"))
            .basic_auth(&key, Some(""))
            .json(&body)
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 200);
        lat.push(t.elapsed());
    }
    lat.sort();
    println!(
        "| single /v1/track latency, {label} | 500 sequential | p50 {:.2} ms, p99 {:.2} ms | | |",
        lat[250].as_secs_f64() * 1e3,
        lat[495].as_secs_f64() * 1e3
    );
}

#[tokio::main]
async fn main() {
    println!("| benchmark | size | Consentry | baseline | ratio |");
    println!("|---|---|---|---|---|");
    run("SQLite", None).await;
    if let Ok(base) = std::env::var("CONSENTRY_BENCH_PG") {
        let url = common::fresh_pg(&base).await;
        run("PostgreSQL", Some(url.clone())).await;
        common::drop_pg(&base, &url).await;
    }
}
