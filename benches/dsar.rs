//! Data-subject requests at scale.
//!
//! 1. A person with 10,000 events among `CONSENTRY_BENCH_DSAR_SUBJECTS` (default
//!    1,000,000) subjects with one event each: the access package's build (with its
//!    audit entry) against plain SELECTs of the same rows (median of 7); the erasure
//!    against plain DELETEs of a twin's same rows in one transaction (median of 5 pairs).
//! 2. Erasure throughput: 10,000 people with 5 events each, erased one request at a time,
//!    and the process's peak memory.
//!
//! `cargo bench --bench dsar`; `CONSENTRY_BENCH_PG=postgres://...` adds PostgreSQL.
mod common;

use std::collections::BTreeMap;
use std::time::Instant;

use consentry::domain::Actor;
use consentry::subject_requests::execute::Executor;
use consentry::subject_requests::requests::{NewRequest, Requests, Verification};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::json;

const EVENTS: usize = 10_000;
/// Pairs of measured people (one erased by the gateway, its twin by plain DELETEs).
const ROUNDS: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
fn erase_count() -> usize {
    std::env::var("CONSENTRY_BENCH_DSAR_ERASE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000)
}

fn background() -> usize {
    std::env::var("CONSENTRY_BENCH_DSAR_SUBJECTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000)
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Subjects with one event each, by multi-row INSERTs straight into the tables (the
/// crowd the measured person hides in; no identifiers needed for that).
async fn crowd(db: &consentry::store::Db, n: usize) {
    let chunk = 1000;
    let mut i = 0;
    while i < n {
        let end = (i + chunk).min(n);
        let subjects: Vec<String> = (i..end)
            .map(|k| format!("('crowd-{k:08}', 'active', NULL, 0, 0, 0)"))
            .collect();
        let events: Vec<String> = (i..end)
            .map(|k| {
                format!(
                    "('ev-crowd-{k:08}', 'crowd-{k:08}', 'bench', 'm-{k}', 'track', 'Product Viewed', '{{}}', 0, 0)"
                )
            })
            .collect();
        let txn = db.begin_write().await.expect("begin");
        txn.execute_unprepared(&format!(
            "INSERT INTO subjects (id, status, merged_into, created_at, first_seen_at, last_seen_at) VALUES {}",
            subjects.join(",")
        ))
        .await
        .expect("subjects");
        txn.execute_unprepared(&format!(
            "INSERT INTO events (id, subject_id, source_key_id, message_id, kind, name, properties, occurred_at, received_at) VALUES {}",
            events.join(",")
        ))
        .await
        .expect("events");
        txn.commit().await.expect("commit");
        i = end;
    }
}

/// One person with `EVENTS` events through the tracking API.
async fn person(base: &str, key: &str, user: &str) {
    let client = reqwest::Client::new();
    let mut sent = 0;
    let mut first = true;
    while sent < EVENTS {
        let mut batch = Vec::new();
        if first {
            batch.push(json!({"type": "identify", "userId": user,
                "traits": {"email": format!("{user}@example.com"), "first_name": "Ann", "country": "DE",
                           "plan": "gold", "phone": format!("+4420794{:05}", user.len() * 1000 + user.bytes().map(usize::from).sum::<usize>())}}));
            first = false;
        }
        while batch.len() < 100 && sent < EVENTS {
            batch.push(
                json!({"type": "track", "userId": user, "event": "Product Viewed",
                "messageId": format!("{user}-{sent}"),
                "properties": {"product_id": format!("sku-{}", sent % 300), "price": 19.99}}),
            );
            sent += 1;
        }
        let r = client
            .post(format!("{base}/v1/batch"))
            .basic_auth(key, Some(""))
            .json(&json!({"batch": batch}))
            .send()
            .await
            .expect("batch");
        assert_eq!(r.status(), 200);
    }
}

async fn subject_of(db: &consentry::store::Db, user: &str) -> String {
    // The identify above made the user_id identifier; its subject is the only one with
    // 10,000 events of this user's message ids.
    let row = db
        .conn()
        .query_one_raw(Statement::from_string(
            db.backend(),
            format!("SELECT subject_id FROM events WHERE message_id = '{user}-0'"),
        ))
        .await
        .expect("query")
        .expect("row");
    row.try_get_by_index(0).expect("subject")
}

fn requests(
    state: &consentry::startup::AppState,
) -> (
    std::sync::Arc<consentry::crypto::Keyring>,
    std::sync::Arc<consentry::policy::Policies>,
) {
    (state.keyring.get(), state.policies.get())
}

async fn verified(state: &consentry::startup::AppState, kind: &str, email: &str) -> String {
    let (keyring, policies) = requests(state);
    let r = Requests {
        db: &state.db,
        keyring: &keyring,
        audit: &state.audit,
        policies: &policies,
        actor: Actor::cli(),
        request_id: None,
        now: state.clock.now(),
    };
    let v = r
        .create(&NewRequest {
            kind: kind.into(),
            identifiers: BTreeMap::from([("email".to_owned(), email.to_owned())]),
            channel: "bench".into(),
            received_at: None,
        })
        .await
        .expect("create");
    assert!(v.subject_id.is_some(), "the person is found");
    r.verify(
        &v.id,
        &Verification {
            method: "dpo_attested".into(),
            note: Some("bench".into()),
            code: None,
        },
    )
    .await
    .expect("verify");
    v.id
}

async fn execute(state: &consentry::startup::AppState, id: &str) {
    let (keyring, policies) = requests(state);
    executor(state, &keyring, &policies)
        .execute(id)
        .await
        .expect("execute");
}

fn executor<'a>(
    state: &'a consentry::startup::AppState,
    keyring: &'a consentry::crypto::Keyring,
    policies: &'a consentry::policy::Policies,
) -> Executor<'a> {
    Executor {
        requests: Requests {
            db: &state.db,
            keyring,
            audit: &state.audit,
            policies,
            actor: Actor::cli(),
            request_id: None,
            now: state.clock.now(),
        },
        master: &state.master,
        controller: "Bench Shop",
        package_ttl_secs: 86_400,
    }
}

async fn plain_selects(db: &consentry::store::Db, subject: &str) -> usize {
    let mut rows = 0;
    for table in [
        "identifiers",
        "traits",
        "events",
        "aggregates",
        "consents",
        "disclosures",
    ] {
        rows += db
            .conn()
            .query_all_raw(Statement::from_string(
                db.backend(),
                format!("SELECT * FROM {table} WHERE subject_id = '{subject}'"),
            ))
            .await
            .expect("select")
            .len();
    }
    rows
}

/// Writes out what earlier steps left in the write-ahead log (SQLite's WAL checkpoint,
/// PostgreSQL's CHECKPOINT), so that neither side pays for the other's.
async fn settle(db: &consentry::store::Db) {
    let sql = match db.backend() {
        sea_orm::DbBackend::Sqlite => "PRAGMA wal_checkpoint(TRUNCATE)",
        _ => "CHECKPOINT",
    };
    db.conn().execute_unprepared(sql).await.expect("checkpoint");
}

async fn plain_deletes(db: &consentry::store::Db, subject: &str) {
    let txn = db.begin_write().await.expect("begin");
    for table in [
        "events",
        "traits",
        "identifiers",
        "aggregates",
        "consents",
        "disclosures",
        "pseudonyms",
        "subject_keys",
        "subjects",
    ] {
        let col = if table == "subjects" {
            "id"
        } else {
            "subject_id"
        };
        txn.execute_unprepared(&format!("DELETE FROM {table} WHERE {col} = '{subject}'"))
            .await
            .expect("delete");
    }
    txn.commit().await.expect("commit");
}

async fn run(label: &str, url: Option<String>) {
    let dir = tempfile::tempdir().expect("tmp");
    let common::Gateway { base, key, state } = common::gateway(dir.path(), url).await;
    let n = background();
    let t = Instant::now();
    crowd(&state.db, n).await;
    eprintln!(
        "{label}: {n} background subjects in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    for r in 0..ROUNDS {
        person(&base, &key, &format!("target{r}")).await;
        person(&base, &key, &format!("twin{r}")).await;
    }
    eprintln!("{label}: {ROUNDS} pairs of people with {EVENTS} events each");

    // Access package vs plain SELECTs of the same rows, each the median of 7 runs.
    let target = subject_of(&state.db, "target0").await;
    let access = verified(&state, "access", "target0@example.com").await;
    execute(&state, &access).await;
    let (keyring, policies) = requests(&state);
    let mut ours = Vec::new();
    let mut plain = Vec::new();
    let mut events = 0;
    let mut rows = 0;
    for _ in 0..7 {
        let t = Instant::now();
        let p = executor(&state, &keyring, &policies)
            .package(&access)
            .await
            .expect("package");
        ours.push(t.elapsed().as_secs_f64());
        events = p.events.len();
        let t = Instant::now();
        rows = plain_selects(&state.db, &target).await;
        plain.push(t.elapsed().as_secs_f64());
    }
    assert_eq!(events, EVENTS + 1, "the events and the identify");
    let (ours, plain) = (median(ours), median(plain));
    println!(
        "| access package, {label} | {EVENTS} events among {n} subjects ({rows} rows), median of 7 | {:.1} ms | plain SELECTs {:.1} ms | {:.2} |",
        ours * 1e3,
        plain * 1e3,
        plain / ours
    );

    // Erasure vs plain DELETEs of a twin's same rows in one transaction, per pair.
    let mut ours = Vec::new();
    let mut plain = Vec::new();
    for r in 0..ROUNDS {
        let twin = subject_of(&state.db, &format!("twin{r}")).await;
        let erase = verified(&state, "erasure", &format!("target{r}@example.com")).await;
        // Each goes first in every other round.
        for side in [r % 2, 1 - r % 2] {
            settle(&state.db).await;
            let t = Instant::now();
            if side == 0 {
                plain_deletes(&state.db, &twin).await;
                plain.push(t.elapsed().as_secs_f64());
            } else {
                execute(&state, &erase).await;
                ours.push(t.elapsed().as_secs_f64());
            }
        }
    }
    let (ours, plain) = (median(ours), median(plain));
    println!(
        "| erasure, {label} | {EVENTS} events among {n} subjects, median of {ROUNDS} | {:.1} ms | plain DELETEs in one transaction {:.1} ms | {:.2} |",
        ours * 1e3,
        plain * 1e3,
        plain / ours
    );

    // Throughput: 10,000 people with 5 events each.
    let client = reqwest::Client::new();
    let erase_n = erase_count();
    for chunk in (0..erase_n).collect::<Vec<_>>().chunks(100) {
        let mut batch = Vec::new();
        for i in chunk {
            batch.push(json!({"type": "identify", "userId": format!("e{i}"),
                "traits": {"email": format!("e{i}@example.com"), "first_name": "Eve"}}));
            for k in 0..4 {
                batch.push(
                    json!({"type": "track", "userId": format!("e{i}"), "event": "Product Viewed",
                    "properties": {"product_id": format!("sku-{k}")}}),
                );
            }
        }
        let r = client
            .post(format!("{base}/v1/batch"))
            .basic_auth(&key, Some(""))
            .json(&json!({"batch": batch}))
            .send()
            .await
            .expect("batch");
        assert_eq!(r.status(), 200);
    }
    let mut ids = Vec::with_capacity(erase_n);
    for i in 0..erase_n {
        ids.push(verified(&state, "erasure", &format!("e{i}@example.com")).await);
    }
    let before = peak_rss_mib();
    let t = Instant::now();
    for id in &ids {
        execute(&state, id).await;
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "| erasure throughput, {label} | {erase_n} people, 5 events each | {:.0} subjects/s | peak RSS {before:.0} MiB before, {:.0} MiB after | |",
        erase_n as f64 / secs,
        peak_rss_mib()
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
