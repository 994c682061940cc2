//! Segment count: the Engaged & Recent Buyers rule (an email opened in the last 7 days
//! and an order in the last 30) over `consentry demo` people
//! (`CONSENTRY_BENCH_SEGMENT_PROFILES`, default 100,000, about 20 events each), counted
//! by the gateway (the compiled rule with the gate's conditions in one query) against
//! the same query written by hand in SQL, on the same database in the same run; each the
//! median of 5.
//!
//! `cargo bench --bench segments`; `CONSENTRY_BENCH_PG=postgres://...` adds PostgreSQL.
mod common;

use std::sync::Arc;
use std::time::Instant;

use consentry::domain::{Actor, Role};
use consentry::policy::gate::audience::{self, Condition};
use consentry::segmentation::{Rule, sql};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::json;

fn profiles() -> u64 {
    std::env::var("CONSENTRY_BENCH_SEGMENT_PROFILES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn scalar(db: &consentry::store::Db, sql: &str) -> i64 {
    let row = db
        .conn()
        .query_one_raw(Statement::from_string(db.backend(), sql.to_owned()))
        .await
        .expect("query")
        .expect("row");
    row.try_get_by_index(0).expect("count")
}

/// The same question, as one would write it by hand.
fn by_hand(now: i64) -> String {
    let day = 86_400_000_000i64;
    format!(
        "SELECT COUNT(*) FROM subjects s \
         WHERE s.status = 'active' \
         AND NOT EXISTS (SELECT 1 FROM subject_flags f WHERE f.subject_id = s.id AND f.flag = 'restricted') \
         AND (SELECT c.status FROM consents c WHERE c.subject_id = s.id AND c.consent = 'email_marketing' \
              AND c.captured_at <= {now} ORDER BY c.captured_at DESC, c.recorded_at DESC, c.id DESC LIMIT 1) = 'granted' \
         AND EXISTS (SELECT 1 FROM events e WHERE e.subject_id = s.id AND e.kind = 'track' \
              AND e.name = 'Email Opened' AND e.occurred_at >= {}) \
         AND EXISTS (SELECT 1 FROM events e WHERE e.subject_id = s.id AND e.kind = 'track' \
              AND e.name = 'Order Completed' AND e.occurred_at >= {})",
        now - 7 * day,
        now - 30 * day
    )
}

async fn run(label: &str, url: Option<String>) {
    let dir = tempfile::tempdir().expect("tmp");
    let common::Gateway { state, .. } = common::gateway(dir.path(), url).await;
    let keyring = state.keyring.get();
    let policies = state.policies.get();
    let ingest = consentry::profiles::ingest::Ingest {
        db: &state.db,
        master: &state.master,
        keyring: &keyring,
        audit: &state.audit,
        policies: &policies,
        scope: consentry::profiles::ingest::Scope::Tracking,
        gpc: false,
        source: Actor {
            key_id: "bench".into(),
            role: Role::Ingest.as_str().into(),
        },
        request_id: None,
        received_at: state.clock.now(),
    };
    let n = profiles();
    let t = Instant::now();
    let report = consentry::profiles::demo::run(&ingest, n, 42, |_, _| {})
        .await
        .expect("demo");
    eprintln!(
        "{label}: {} profiles, {} events in {:.0} s",
        report.profiles,
        report.events,
        t.elapsed().as_secs_f64()
    );
    let registry = consentry::policy::recipients::Registry {
        db: &state.db,
        master: &state.master,
        audit: &state.audit,
        policies: &policies,
        actor: Actor::cli(),
        request_id: None,
        now: state.clock.now(),
    };
    let row = registry
        .create(&consentry::policy::recipients::NewRecipient {
            id: "acme-esp".into(),
            name: "Acme".into(),
            kind: "esp".into(),
            purposes: vec!["marketing.communications.email".into()],
            webhook_url: None,
            webhook_secret: None,
        })
        .await
        .expect("recipient");
    let admin = consentry::auth::Caller {
        key_id: "bench".into(),
        name: "bench".into(),
        role: Role::Admin,
        recipient: None,
        purposes: vec![],
        via: consentry::auth::Credential::ApiKey,
    };
    let grant = consentry::policy::gate::authorize(
        &admin,
        &row,
        "marketing.communications.email",
        Arc::clone(&policies),
    )
    .expect("grant");
    let rule = Rule::parse(&json!({"all": [
        {"event": "Email Opened", "within": "7d"},
        {"event": "Order Completed", "within": "30d", "count": {"gte": 1}}]}))
    .expect("rule");
    let now = state.clock.now().unix_micros();
    let dialect = audience::dialect(state.db.backend());
    let mut ours = Vec::new();
    let mut plain = Vec::new();
    let (mut a, mut b) = (0, 0);
    for _ in 0..5 {
        let t = Instant::now();
        let cond = Condition {
            expr: sql::condition(&rule, dialect, now),
            aggregates: rule.reads_aggregates(),
        };
        a = audience::count(state.db.conn(), &grant, cond, now)
            .await
            .expect("count");
        ours.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        b = scalar(&state.db, &by_hand(now)).await;
        plain.push(t.elapsed().as_secs_f64());
    }
    assert_eq!(a as i64, b, "the same members");
    let (ours, plain) = (median(ours), median(plain));
    println!(
        "| segment count, Engaged & Recent Buyers, {label} | {} subjects, {} events; {a} members | {:.1} ms | hand-written SQL {:.1} ms | {:.2} |",
        report.profiles,
        report.events,
        ours * 1e3,
        plain * 1e3,
        plain / ours
    );
}

#[tokio::main]
async fn main() {
    println!("| benchmark | size | Consentry | baseline | ratio |");
    println!("|---|---|---|---|---|");
    run("SQLite", None).await;
    if let Ok(base) = std::env::var("CONSENTRY_BENCH_PG") {
        run("PostgreSQL", Some(common::fresh_pg(&base).await)).await;
    }
}
