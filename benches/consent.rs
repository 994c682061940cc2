//! Consent writes: `POST /v1/consents` from 4 concurrent clients, each record committed
//! with its audit entry, against a plain INSERT of the same consent row (one transaction
//! each) from 4 concurrent tasks on the same database, in the same run. p50/p99 of the
//! HTTP writes. 10,000 writes each (at ~2,000 a second a run of 2,000 was too short to
//! tell changes of 10% from noise).
//!
//! `cargo bench --bench consent`; `CONSENTRY_BENCH_PG=postgres://...` adds PostgreSQL.
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, Value};
use serde_json::json;

const WRITES: usize = 10_000;
const CLIENTS: usize = 4;
const PEOPLE: usize = 200;

/// The baseline: the same row, plain INSERT, one transaction each, 4 writers; rows/s.
/// The rows name the people the gateway's records are about (`subjects`), as a record
/// must on PostgreSQL.
async fn plain_inserts(db: &consentry::store::Db, subjects: &Arc<Vec<String>>) -> f64 {
    let db = db.clone();
    let backend = db.backend();
    let db = Arc::new(db);
    let t = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (db, subjects) = (Arc::clone(&db), Arc::clone(subjects));
        tasks.push(tokio::spawn(async move {
            for i in (c..WRITES).step_by(CLIENTS) {
                let sql = format!("INSERT INTO consents (id, subject_id, consent, status, method, source, notice_version, captured_at, recorded_at, recorded_by, proof) VALUES ({})", common::placeholders(backend, 1, 11));
                let values: Vec<Value> = vec![
                    uuid::Uuid::new_v4().simple().to_string().into(),
                    subjects[i % subjects.len()].clone().into(),
                    "personalization".to_owned().into(),
                    "granted".to_owned().into(),
                    "web_form".to_owned().into(),
                    "bench".to_owned().into(),
                    Some("v1".to_owned()).into(),
                    1_796_000_000_000_000i64.into(),
                    1_796_000_000_000_000i64.into(),
                    "key".to_owned().into(),
                    Some(r#"{"user_agent":"bench","ip":"203.0.113.0/24"}"#.to_owned()).into(),
                ];
                common::commit_statement(&db, &sql, values).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    WRITES as f64 / t.elapsed().as_secs_f64()
}

async fn run(label: &str, url: Option<String>) {
    let dir = tempfile::tempdir().expect("tmp");
    let common::Gateway { base, key, state } = common::gateway(dir.path(), url).await;
    let client = reqwest::Client::new();
    // The people exist already: what is measured is the consent write.
    let people: Vec<serde_json::Value> = (0..PEOPLE)
        .map(|i| {
            json!({"type": "identify", "userId": format!("u{i}"),
                        "traits": {"email": format!("p{i}@example.com")}})
        })
        .collect();
    let r = client
        .post(format!("{base}/v1/batch"))
        .basic_auth(&key, Some(""))
        .json(&json!({"batch": people}))
        .send()
        .await
        .expect("people");
    assert_eq!(r.status(), 200);
    let subjects: Vec<String> = state
        .db
        .conn()
        .query_all_raw(sea_orm::Statement::from_string(
            state.db.backend(),
            "SELECT id FROM subjects",
        ))
        .await
        .expect("subjects")
        .iter()
        .map(|r| r.try_get_by_index(0).expect("id"))
        .collect();
    assert_eq!(subjects.len(), PEOPLE);
    let subjects = Arc::new(subjects);

    // The baseline runs before and after the gateway's writes (the tables grow, and the
    // machine's pace drifts); the ratio is against the mean of the two.
    let raw_before = plain_inserts(&state.db, &subjects).await;
    let t = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (client, base, key) = (client.clone(), base.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for i in (c..WRITES).step_by(CLIENTS) {
                let body = json!({"subject": {"email": format!("p{}@example.com", i % PEOPLE)},
                    "purpose": "personalization",
                    "status": if i % 2 == 0 { "granted" } else { "withdrawn" },
                    "method": "web_form", "source": "bench", "notice_version": "v1",
                    "proof": {"user_agent": "bench", "ip": "203.0.113.7"}});
                let t = Instant::now();
                let resp = client
                    .post(format!("{base}/v1/consents"))
                    .bearer_auth(&key)
                    .json(&body)
                    .send()
                    .await
                    .expect("send");
                assert_eq!(resp.status(), 201);
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat: Vec<Duration> = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("client"));
    }
    let ours = WRITES as f64 / t.elapsed().as_secs_f64();
    lat.sort();
    let raw_after = plain_inserts(&state.db, &subjects).await;
    let raw = (raw_before + raw_after) / 2.0;

    println!(
        "| consent writes, {label} | {WRITES}, {CLIENTS} clients | {ours:.0} writes/s, p50 {:.2} ms, p99 {:.2} ms | plain INSERT {raw:.0} rows/s ({raw_before:.0} before, {raw_after:.0} after) | {:.2} |",
        lat[WRITES / 2].as_secs_f64() * 1e3,
        lat[WRITES * 99 / 100].as_secs_f64() * 1e3,
        ours / raw
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
