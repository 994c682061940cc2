//! Segment count: the Engaged & Recent Buyers rule (an email opened in the last 7 days
//! and an order in the last 30) over `consentry demo` people
//! (`CONSENTRY_BENCH_SEGMENT_PROFILES`, default 100,000, about 20 events each), counted
//! by the gateway (the compiled rule with the gate's conditions in one query) against
//! the same query written by hand in SQL, on the same database in the same run; each the
//! median of 5.
//!
//! `cargo bench --bench segments`; `CONSENTRY_BENCH_PG=postgres://...` adds PostgreSQL;
//! `CONSENTRY_BENCH_SEGMENT_DIR=DIR` keeps the databases between runs (SQLite in DIR,
//! PostgreSQL as `consentry_bench_kept`), so the population is ingested once.
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
    let tmp = tempfile::tempdir().expect("tmp");
    // `CONSENTRY_BENCH_SEGMENT_DIR=DIR` keeps the databases between runs (SQLite in DIR,
    // PostgreSQL as `consentry_bench_kept`): the population is ingested only when the
    // database is empty.
    let kept = std::env::var("CONSENTRY_BENCH_SEGMENT_DIR").ok();
    let dir = kept
        .as_ref()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir).expect("dir");
    let app = consentry::startup::Application::build(common::settings(&dir, url))
        .await
        .expect("app");
    let state = app.state();
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
    let held = scalar(&state.db, "SELECT COUNT(*) FROM subjects").await;
    let (people, events) = if held == 0 {
        let report = consentry::profiles::demo::run(&ingest, n, 42, |_, _| {})
            .await
            .expect("demo");
        (report.profiles, report.events)
    } else {
        let events = scalar(&state.db, "SELECT COUNT(*) FROM events").await;
        (held as u64, events as u64)
    };
    eprintln!(
        "{label}: {people} profiles, {events} events in {:.0} s",
        t.elapsed().as_secs_f64()
    );
    if state.db.backend() == sea_orm::DbBackend::Postgres {
        // The statistics autovacuum would have gathered by now (this machine's server
        // runs without it); without them the planner takes every table for empty.
        state
            .db
            .conn()
            .execute_unprepared("ANALYZE")
            .await
            .expect("analyze");
    }
    let registry = consentry::policy::recipients::Registry {
        db: &state.db,
        master: &state.master,
        audit: &state.audit,
        policies: &policies,
        actor: Actor::cli(),
        request_id: None,
        now: state.clock.now(),
    };
    let row = match consentry::policy::recipients::get(&state.db, "acme-esp")
        .await
        .expect("recipient")
    {
        Some(row) => row,
        None => registry
            .create(&consentry::policy::recipients::NewRecipient {
                id: "acme-esp".into(),
                name: "Acme".into(),
                kind: "esp".into(),
                purposes: vec!["marketing.communications.email".into()],
                webhook_url: None,
                webhook_secret: None,
            })
            .await
            .expect("recipient"),
    };
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
        people,
        events,
        ours * 1e3,
        plain * 1e3,
        plain / ours
    );
    export(label, &state, &admin).await;
}

/// A line of `/proc/self/status` in kB (`VmHWM:`, `RssAnon:` ...).
fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Peak resident memory since the last reset (kB): with SQLite's memory map this
/// includes the database file's mapped pages.
fn peak_kb() -> u64 {
    status_kb("VmHWM:")
}

fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The columns an export of the email purpose holds, read by a plain query.
const PLAIN: &str = "SELECT s.id, i.sealed, a.last_email_open_at, a.last_email_click_at, \
    a.last_purchase_at, a.purchase_count, a.lifetime_value, a.average_order_value, a.cart, \
    a.cart_updated_at, a.cart_abandoned_at, \
    (SELECT t.value FROM traits t WHERE t.subject_id = s.id AND t.name = 'country') \
    FROM subjects s LEFT JOIN aggregates a ON a.subject_id = s.id \
    LEFT JOIN identifiers i ON i.subject_id = s.id AND i.kind = 'email' \
    WHERE s.status = 'active'";

/// The whole consented audience exported as NDJSON through the service (the gate, the
/// disclosure records, the audit entry), against the same columns read plainly: a
/// `SELECT` on SQLite, `COPY (SELECT ...) TO STDOUT` on PostgreSQL.
async fn export(
    label: &str,
    state: &consentry::startup::AppState,
    admin: &consentry::auth::Caller,
) {
    use consentry::policy::segments::{NewSegment, Segments};
    use consentry::segmentation::export::Format;
    let keyring = state.keyring_for("acme-esp").await.expect("keyring");
    let svc = Segments {
        db: &state.db,
        master: &state.master,
        keyring: &keyring,
        audit: &state.audit,
        policies: state.policies.get(),
        caller: admin,
        actor: admin.actor(),
        request_id: None,
        now: state.clock.now(),
    };
    let seg = svc
        .create(&NewSegment {
            name: "everyone consented".into(),
            purpose: "marketing.communications.email".into(),
            recipient: Some("acme-esp".into()),
            rule: json!({"aggregate": "purchase_count", "gte": 0}),
        })
        .await
        .expect("segment");
    reset_peak();
    let before = peak_kb();
    let t = Instant::now();
    let plan = svc
        .start_export(&seg.id, "acme-esp", Format::Ndjson, None)
        .await
        .expect("start");
    let (tx, mut rx): (consentry::policy::segments::ExportSink, _) = tokio::sync::mpsc::channel(1);
    let consume = async move {
        let (mut rows, mut bytes) = (0u64, 0u64);
        while let Some(chunk) = rx.recv().await {
            let chunk = chunk.expect("chunk");
            rows += chunk.iter().filter(|b| **b == b'\n').count() as u64;
            bytes += chunk.len() as u64;
        }
        (rows, bytes)
    };
    let ((), (rows, bytes)) = tokio::join!(svc.run_export(plan, state.clock.as_ref(), tx), consume);
    let ours = t.elapsed().as_secs_f64();
    let peak = peak_kb();
    let (anon, file) = (status_kb("RssAnon:"), status_kb("RssFile:"));
    let t = Instant::now();
    let plain_rows = if state.db.backend() == sea_orm::DbBackend::Postgres {
        use futures_util::StreamExt;
        let pool = state.db.conn().get_postgres_connection_pool();
        let mut conn = pool.acquire().await.expect("conn");
        let mut out = conn
            .copy_out_raw(&format!("COPY ({PLAIN}) TO STDOUT"))
            .await
            .expect("copy");
        let mut n = 0u64;
        while let Some(chunk) = out.next().await {
            n += chunk
                .expect("chunk")
                .iter()
                .filter(|b| **b == b'\n')
                .count() as u64;
        }
        n
    } else {
        let rows = state
            .db
            .conn()
            .query_all_raw(Statement::from_string(state.db.backend(), PLAIN.to_owned()))
            .await
            .expect("select");
        let mut out = String::new();
        for r in &rows {
            let id: String = r.try_get_by_index(0).expect("id");
            let ltv: Option<f64> = r.try_get_by_index(6).expect("ltv");
            out.push_str(&id);
            out.push_str(&format!("{ltv:?}\n"));
        }
        rows.len() as u64
    };
    let plain = t.elapsed().as_secs_f64();
    let (ours_rate, plain_rate) = (rows as f64 / ours, plain_rows as f64 / plain);
    println!(
        "| audience export, NDJSON, {label} | {rows} rows, {:.1} MB | {:.0} rows/s | {} {:.0} rows/s | {:.3} |",
        bytes as f64 / 1e6,
        ours_rate,
        if state.db.backend() == sea_orm::DbBackend::Postgres {
            "COPY TO STDOUT"
        } else {
            "plain SELECT"
        },
        plain_rate,
        ours_rate / plain_rate
    );
    println!(
        "| audience export peak memory, {label} | {rows} rows | {:.0} MiB peak RSS during the export (was {:.0} MiB at its start); heap (RssAnon) {:.0} MiB after it, {:.0} MiB of mapped files | | |",
        peak as f64 / 1024.0,
        before as f64 / 1024.0,
        anon as f64 / 1024.0,
        file as f64 / 1024.0
    );
}

#[tokio::main]
async fn main() {
    println!("| benchmark | size | Consentry | baseline | ratio |");
    println!("|---|---|---|---|---|");
    run("SQLite", None).await;
    if let Ok(base) = std::env::var("CONSENTRY_BENCH_PG") {
        if std::env::var("CONSENTRY_BENCH_SEGMENT_DIR").is_ok() {
            let url = common::kept_pg(&base, "consentry_bench_kept").await;
            run("PostgreSQL", Some(url)).await;
        } else {
            let url = common::fresh_pg(&base).await;
            run("PostgreSQL", Some(url.clone())).await;
            common::drop_pg(&base, &url).await;
        }
    }
}
