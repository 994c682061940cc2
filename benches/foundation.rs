//! Foundation benchmarks, each against its baseline in the same run:
//! - audit append (one transaction per entry) vs a plain INSERT of the same row;
//! - audit verify over a 1,000,000-entry log;
//! - an authenticated read (`/v1/whoami`) vs `/healthz` on the same server and client.
//!
//! `cargo bench --bench foundation [-- append|verify|auth ...]`. Set
//! `CONSENTRY_BENCH_PG=postgres://postgres@127.0.0.1:5432/postgres` to run append on
//! PostgreSQL as well. Sizes: `CONSENTRY_BENCH_APPEND_N`, `CONSENTRY_BENCH_VERIFY_N`.
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use consentry::audit::{NewEntry, Outcome};
use consentry::domain::{Actor, SystemClock};
use consentry::startup::{Application, Core};
use sea_orm::{ConnectionTrait, DbBackend, Statement, Value};

fn env_n(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn entry(i: u64) -> NewEntry {
    NewEntry {
        purpose: Some("marketing.communications.email".into()),
        subject_ref: Some(format!("as1.{:032x}", i)),
        ..NewEntry::new(
            Actor {
                key_id: "0123456789abcdef".into(),
                role: "esp".into(),
            },
            "profile.read",
            Outcome::Ok,
        )
        .attributes(vec!["email".into(), "first_name".into(), "country".into()])
        .request_id(Some(uuid::Uuid::new_v4().to_string()))
    }
}

async fn bench_append(label: &str, url: Option<String>, n: u64) {
    let dir = tempfile::tempdir().expect("tmp");
    let core = Core::open(common::settings(dir.path(), url), Arc::new(SystemClock))
        .await
        .expect("open");
    let backend = core.db.backend();
    let blob = if backend == DbBackend::Postgres {
        "BYTEA"
    } else {
        "BLOB"
    };
    core.db
        .conn()
        .execute_unprepared(&format!(
            "CREATE TABLE bench_plain (seq BIGINT PRIMARY KEY, at_us BIGINT NOT NULL, \
             actor_key_id TEXT NOT NULL, actor_role TEXT NOT NULL, action TEXT NOT NULL, \
             purpose TEXT, subject_ref TEXT, attributes TEXT NOT NULL, outcome TEXT NOT NULL, \
             request_id TEXT, leaf_hash {blob} NOT NULL)"
        ))
        .await
        .expect("baseline table");
    let insert = if backend == DbBackend::Postgres {
        "INSERT INTO bench_plain VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)"
    } else {
        "INSERT INTO bench_plain VALUES (?,?,?,?,?,?,?,?,?,?,?)"
    };
    let mut plain = Duration::ZERO;
    let mut audited = Duration::ZERO;
    let block = 250;
    let mut i = 0;
    while i < n {
        let t = Instant::now();
        for j in i..(i + block).min(n) {
            let e = entry(j);
            let values: Vec<Value> = vec![
                (j as i64).into(),
                1_796_000_000_000_000i64.into(),
                e.actor.key_id.into(),
                e.actor.role.into(),
                e.action.into(),
                e.purpose.into(),
                e.subject_ref.into(),
                serde_json::to_string(&e.attributes).expect("json").into(),
                "ok".into(),
                e.request_id.into(),
                vec![0u8; 32].into(),
            ];
            let txn = core.db.begin_write().await.expect("begin");
            txn.execute_raw(Statement::from_sql_and_values(backend, insert, values))
                .await
                .expect("insert");
            txn.commit().await.expect("commit");
        }
        plain += t.elapsed();
        let t = Instant::now();
        for j in i..(i + block).min(n) {
            let txn = core.db.begin_write().await.expect("begin");
            core.audit.append(&txn, entry(j)).await.expect("append");
            txn.commit().await.expect("commit");
        }
        audited += t.elapsed();
        i += block;
    }
    let plain_rate = n as f64 / plain.as_secs_f64();
    let audit_rate = n as f64 / audited.as_secs_f64();
    println!(
        "| audit append, {label} | {n} | {audit_rate:.0} entries/s | plain INSERT {plain_rate:.0} rows/s | {:.2} |",
        audit_rate / plain_rate
    );
}

async fn bench_verify(n: u64) {
    let dir = tempfile::tempdir().expect("tmp");
    let core = Core::open(common::settings(dir.path(), None), Arc::new(SystemClock))
        .await
        .expect("open");
    let t = Instant::now();
    let mut i = 0;
    while i < n {
        let txn = core.db.begin_write().await.expect("begin");
        for j in i..(i + 10_000).min(n) {
            core.audit.append(&txn, entry(j)).await.expect("append");
        }
        txn.commit().await.expect("commit");
        i += 10_000;
    }
    eprintln!("filled {n} entries in {:.1} s", t.elapsed().as_secs_f64());
    let keyring = core.keyring.get();
    let t = Instant::now();
    let report = consentry::audit::verify(&core.db, &keyring)
        .await
        .expect("verifies");
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(report.entries, n);
    println!(
        "| audit verify, SQLite | {n} | {:.0} entries/s | goal 300000 entries/s | {:.2} |",
        n as f64 / secs,
        n as f64 / secs / 300_000.0
    );
}

async fn closed_loop(client: &reqwest::Client, url: &str, token: Option<&str>, secs: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let client = client.clone();
        let url = url.to_owned();
        let token = token.map(str::to_owned);
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let mut req = client.get(&url);
                if let Some(t) = &token {
                    req = req.bearer_auth(t);
                }
                let resp = req.send().await.expect("request");
                assert!(resp.status().is_success(), "{}", resp.status());
                resp.bytes().await.expect("body");
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("task");
    }
    total as f64 / secs
}

async fn bench_auth() {
    let dir = tempfile::tempdir().expect("tmp");
    let app = Application::build(common::settings(dir.path(), None))
        .await
        .expect("app");
    let base = format!("http://127.0.0.1:{}", app.port());
    let token = app.bootstrap_token().expect("token").to_owned();
    tokio::spawn(app.run_until_stopped());
    let client = reqwest::Client::new();
    closed_loop(&client, &format!("{base}/v1/whoami"), Some(&token), 1.0).await;
    let (mut health, mut authed) = (0.0, 0.0);
    for _ in 0..3 {
        health += closed_loop(&client, &format!("{base}/healthz"), None, 3.0).await;
        authed += closed_loop(&client, &format!("{base}/v1/whoami"), Some(&token), 3.0).await;
    }
    println!(
        "| authenticated GET /v1/whoami, SQLite | 16 clients, 9 s each | {:.0} req/s | GET /healthz {:.0} req/s | {:.2} |",
        authed / 3.0,
        health / 3.0,
        authed / health
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let want = |name: &str| args.is_empty() || args.iter().any(|a| a == name);
    println!("| benchmark | size | Consentry | baseline | ratio |");
    println!("|---|---|---|---|---|");
    if want("append") {
        let n = env_n("CONSENTRY_BENCH_APPEND_N", 5_000);
        let label = match std::env::var("CONSENTRY_BENCH_SQLITE_SYNC").as_deref() {
            Ok("full") => "SQLite (WAL, synchronous=FULL)",
            _ => "SQLite (WAL, synchronous=NORMAL)",
        };
        bench_append(label, None, n).await;
        if let Ok(base) = std::env::var("CONSENTRY_BENCH_PG") {
            let url = common::fresh_pg(&base).await;
            bench_append(
                "PostgreSQL",
                Some(url.clone()),
                env_n("CONSENTRY_BENCH_APPEND_N", 2_000),
            )
            .await;
            common::drop_pg(&base, &url).await;
        }
    }
    if want("verify") {
        bench_verify(env_n("CONSENTRY_BENCH_VERIFY_N", 1_000_000)).await;
    }
    if want("auth") {
        bench_auth().await;
    }
}
