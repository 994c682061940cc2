//! Several gateway nodes over one PostgreSQL database, the production shape (SPEC §8):
//! three `consentry serve` processes driven at once keep one audit sequence with no gap,
//! fork or duplicate; a message sent to every node at once (and again) is stored once; a
//! key revoked on one node is refused by all within the verification cache's bound; a
//! policy reload on one node reaches every node within the sync interval.
//!
//! PostgreSQL only (`CONSENTRY_TEST_DATABASE_URL`): on SQLite the gateway is one node
//! (SPEC §8), so the test says why it skips. Figures are printed (`--nocapture`).
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{fresh_database_url, shipped_policies, test_master_key};

const NODES: usize = 3;
const CACHE_TTL_SECS: u64 = 2;
const SYNC_SECS: u64 = 1;
/// Time beyond a bound allowed for a loaded machine (2 shared cores, debug build).
const MARGIN: Duration = Duration::from_secs(3);
const MARKER: &str = "(published by node 2)";

struct Node {
    child: Child,
    base: String,
    data: tempfile::TempDir,
    policies: tempfile::TempDir,
    log: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn copy_policies() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("policies dir");
    for entry in std::fs::read_dir(shipped_policies()).expect("shipped policies") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            std::fs::copy(&path, dir.path().join(path.file_name().expect("name")))
                .expect("copy policy file");
        }
    }
    dir
}

async fn start(db: &str) -> Node {
    let data = tempfile::tempdir().expect("data dir");
    let policies = copy_policies();
    let log = data.path().join("gateway.log");
    let out = std::fs::File::create(&log).expect("log file");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_consentry"));
    for (k, _) in std::env::vars() {
        if k.starts_with("CONSENTRY_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .env("CONSENTRY_DATA_DIR", data.path())
        .env("CONSENTRY_DATABASE_URL", db)
        .env("CONSENTRY_MASTER_KEY", test_master_key())
        .env("CONSENTRY_POLICIES", policies.path())
        .env("CONSENTRY_TOKEN_CACHE_TTL_SECS", CACHE_TTL_SECS.to_string())
        .env("CONSENTRY_POLICY_SYNC_INTERVAL_SECS", SYNC_SECS.to_string())
        // Checkpoints signed inside appends from every node, and by every node's timer.
        .env("CONSENTRY_CHECKPOINT_EVERY_ENTRIES", "25")
        .env("CONSENTRY_CHECKPOINT_INTERVAL_SECS", "1")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("log file"))
        .stderr(out);
    let child = cmd.spawn().expect("consentry serve starts");
    let mut node = Node {
        child,
        base: String::new(),
        data,
        policies,
        log,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&node.log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("consentry listening on ")) {
            node.base = line
                .trim()
                .trim_start_matches("consentry listening on ")
                .to_owned();
            return node;
        }
        let exited = node.child.try_wait().expect("child status");
        assert!(exited.is_none(), "a node exited ({exited:?}):\n{text}");
        assert!(Instant::now() < deadline, "a node did not start:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn post(http: &reqwest::Client, url: String, token: &str, body: &Value) -> (u16, Value) {
    let r = http
        .post(url)
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn track(http: &reqwest::Client, url: String, key: &str, body: &Value) -> u16 {
    http.post(url)
        .basic_auth(key, Some(""))
        .json(body)
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}

async fn status_of(http: &reqwest::Client, url: String, token: &str) -> u16 {
    http.get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}

/// `consentry_audit_entries_appended_total` as a node's /metrics tells it.
async fn appended_by(http: &reqwest::Client, node: &Node) -> u64 {
    let text = http
        .get(format!("{}/metrics", node.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find(|l| l.starts_with("consentry_audit_entries_appended_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

async fn scalar(db: &consentry::store::Db, sql: &str) -> i64 {
    use sea_orm::ConnectionTrait;
    let row = db
        .conn()
        .query_one_raw(sea_orm::Statement::from_string(
            db.backend(),
            sql.to_owned(),
        ))
        .await
        .expect("query")
        .expect("a row");
    row.try_get_by_index::<i64>(0).expect("an integer")
}

/// Waits until every node answers `want` for `probe`; returns when each did, since `t0`.
async fn propagation<F, Fut>(
    nodes: &[Node],
    t0: Instant,
    bound: Duration,
    probe: F,
) -> Vec<Duration>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut seen = vec![None; nodes.len()];
    while seen.iter().any(Option::is_none) {
        for (i, node) in nodes.iter().enumerate() {
            if seen[i].is_none() && probe(node.base.clone()).await {
                seen[i] = Some(t0.elapsed());
            }
        }
        assert!(
            t0.elapsed() < bound,
            "not every node within {bound:?}: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    seen.into_iter().map(|d| d.expect("seen")).collect()
}

#[tokio::test]
async fn three_nodes_over_one_postgresql_share_one_audit_log_events_keys_and_policies() {
    let Ok(server) = std::env::var("CONSENTRY_TEST_DATABASE_URL") else {
        eprintln!(
            "skipped: several nodes need PostgreSQL (CONSENTRY_TEST_DATABASE_URL); on SQLite the gateway is a single node (SPEC §8)"
        );
        return;
    };
    let scratch = tempfile::tempdir().expect("scratch");
    let db_url = fresh_database_url(scratch.path()).await;
    let http = reqwest::Client::new();

    // The first node migrates the database and creates the admin key; then the others.
    let mut nodes = vec![start(&db_url).await];
    let admin = std::fs::read_to_string(nodes[0].data.path().join("admin.token"))
        .expect("bootstrap admin token")
        .trim()
        .to_owned();
    for _ in 1..NODES {
        nodes.push(start(&db_url).await);
    }
    let (s, v) = post(
        &http,
        format!("{}/v1/keys", nodes[0].base),
        &admin,
        &json!({"name": "nodes ingest", "role": "ingest"}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let ingest = v["token"].as_str().expect("token").to_owned();
    let (s, v) = post(
        &http,
        format!("{}/v1/keys", nodes[1].base),
        &admin,
        &json!({"name": "nodes dpo", "role": "dpo"}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let dpo = v["token"].as_str().expect("token").to_owned();

    // (a) and (b) at once: every node appends (identify, consent) from 4 clients, while
    // 100 orders are each sent to every node at the same moment, twice.
    let mut tasks = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for w in 0..4 {
            let (http, base, ingest, dpo) =
                (http.clone(), node.base.clone(), ingest.clone(), dpo.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..25 {
                    let user = format!("n{n}-w{w}-{i}");
                    let body = json!({"userId": user, "traits": {
                        "email": format!("{user}@nodes.example"), "country": "DE"}});
                    assert_eq!(
                        track(&http, format!("{base}/v1/identify"), &ingest, &body).await,
                        200
                    );
                    let (s, v) = post(
                        &http,
                        format!("{base}/v1/consents"),
                        &dpo,
                        &json!({"subject": {"user_id": user}, "purpose": "email_marketing",
                                "status": "granted", "method": "double_opt_in", "source": "nodes"}),
                    )
                    .await;
                    assert_eq!(s, 201, "{v}");
                }
            }));
        }
    }
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let orders = {
        let (http, ingest) = (http.clone(), ingest.clone());
        tokio::spawn(async move {
            for i in 0..100 {
                let body = json!({"userId": format!("buyer-{i}"), "event": "Order Completed",
                    "messageId": format!("order-{i}"),
                    "properties": {"order_id": format!("o-{i}"), "total": 10.0, "currency": "EUR"}});
                for _attempt in 0..2 {
                    let sends = bases
                        .iter()
                        .map(|b| track(&http, format!("{b}/v1/track"), &ingest, &body));
                    for status in futures_util::future::join_all(sends).await {
                        assert_eq!(status, 200, "order-{i}");
                    }
                }
            }
        })
    };
    for t in tasks {
        t.await.expect("client");
    }
    orders.await.expect("orders");

    let db = crate::helpers::connect(&db_url, 1).await;
    let events = scalar(
        &db,
        "SELECT COUNT(*) FROM events WHERE message_id LIKE 'order-%'",
    )
    .await;
    let distinct = scalar(
        &db,
        "SELECT COUNT(DISTINCT message_id) FROM events WHERE message_id LIKE 'order-%'",
    )
    .await;
    let purchases = scalar(
        &db,
        "SELECT CAST(COALESCE(SUM(purchase_count), 0) AS BIGINT) FROM aggregates",
    )
    .await;
    assert_eq!((events, distinct), (100, 100), "each order stored once");
    assert_eq!(purchases, 100, "each order counted once in the aggregates");

    // (c) A key used (so cached) on every node, revoked through node 1.
    let (s, v) = post(
        &http,
        format!("{}/v1/keys", nodes[0].base),
        &admin,
        &json!({"name": "to revoke", "role": "dpo"}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let (doomed_id, doomed) = (
        v["key"]["id"].as_str().expect("id").to_owned(),
        v["token"].as_str().expect("token").to_owned(),
    );
    for node in &nodes {
        assert_eq!(
            status_of(&http, format!("{}/v1/ropa", node.base), &doomed).await,
            200
        );
    }
    let t0 = Instant::now();
    let r = http
        .delete(format!("{}/v1/keys/{doomed_id}", nodes[1].base))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("revoke");
    assert!(r.status().is_success(), "revoke: {}", r.status());
    let revoked = propagation(
        &nodes,
        t0,
        Duration::from_secs(CACHE_TTL_SECS) + MARGIN,
        |base| {
            let (http, doomed) = (http.clone(), doomed.clone());
            async move { status_of(&http, format!("{base}/v1/ropa"), &doomed).await == 401 }
        },
    )
    .await;

    // (d) A changed set reloaded on node 2 only (the others' directories stay as they
    // were): it reaches every node through the database.
    let purposes = nodes[2].policies.path().join("purposes.yaml");
    let text = std::fs::read_to_string(&purposes).expect("purposes.yaml");
    let changed = text.replacen(
        "Sending marketing emails to people who asked for them.",
        &format!("Sending marketing emails to people who asked for them {MARKER}."),
        1,
    );
    assert_ne!(
        changed, text,
        "the description to change is in purposes.yaml"
    );
    std::fs::write(&purposes, changed).expect("write purposes.yaml");
    let t0 = Instant::now();
    let (s, reloaded) = post(
        &http,
        format!("{}/v1/policies/reload", nodes[2].base),
        &admin,
        &json!({}),
    )
    .await;
    assert_eq!(s, 200, "{reloaded}");
    let policy = propagation(
        &nodes,
        t0,
        Duration::from_secs(SYNC_SECS) + MARGIN,
        |base| {
            let (http, dpo) = (http.clone(), dpo.clone());
            async move {
                let r = http
                    .get(format!("{base}/v1/ropa"))
                    .bearer_auth(&dpo)
                    .send()
                    .await
                    .expect("ropa");
                r.status() == 200 && r.text().await.unwrap_or_default().contains(MARKER)
            }
        },
    )
    .await;

    // (a) One sequence: 0..N with no gap or duplicate, every entry appended by one of
    // the three nodes, and the log verifies end to end.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (count, min, max, head) = (
        scalar(&db, "SELECT COUNT(*) FROM audit_entries").await,
        scalar(&db, "SELECT COALESCE(MIN(seq), -1) FROM audit_entries").await,
        scalar(&db, "SELECT COALESCE(MAX(seq), -1) FROM audit_entries").await,
        scalar(&db, "SELECT size FROM audit_head WHERE id = 1").await,
    );
    let mut per_node = Vec::new();
    for node in &nodes {
        per_node.push(appended_by(&http, node).await);
    }
    assert_eq!(
        (min, max + 1, head),
        (0, count, count),
        "one gap-free sequence"
    );
    // Node 0's first entry (the bootstrap admin key) is appended before its metrics
    // recorder is installed; every other entry is counted by the node that appended it.
    assert_eq!(
        per_node.iter().sum::<u64>() + 1,
        count as u64,
        "every entry was appended by one of the nodes: {per_node:?}"
    );
    assert!(per_node.iter().all(|&n| n >= 50), "{per_node:?}");
    let checkpoints = scalar(&db, "SELECT COUNT(*) FROM audit_checkpoints").await;
    db.close().await.ok();
    drop(nodes);
    let out = Command::new(env!("CARGO_BIN_EXE_consentry"))
        .args(["audit", "verify"])
        .env_remove("CONSENTRY_TEST_DATABASE_URL")
        .env("CONSENTRY_DATA_DIR", scratch.path())
        .env("CONSENTRY_DATABASE_URL", &db_url)
        .env("CONSENTRY_MASTER_KEY", test_master_key())
        .env("CONSENTRY_POLICIES", shipped_policies())
        .output()
        .expect("consentry audit verify");
    let said = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success() && said.starts_with(&format!("ok: {count} entries")),
        "{said}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "nodes: {NODES}; audit entries appended per node {per_node:?} = {count}, seq 0..{max} with no gap, {checkpoints} checkpoints; `consentry audit verify`: {said}"
    );
    println!(
        "nodes: 100 orders each sent to every node at once, twice: {events} events, {purchases} purchases counted"
    );
    println!(
        "nodes: key revoked on node 1, refused by each node after {:?} (cache ttl {CACHE_TTL_SECS} s)",
        revoked
    );
    println!(
        "nodes: policy reload on node 2 (generation {}), in force on each node after {:?} (sync every {SYNC_SECS} s)",
        reloaded["generation"], policy
    );
    drop_database(&server, &db_url).await;
}

async fn drop_database(server: &str, db_url: &str) {
    use sea_orm::ConnectionTrait;
    let name = url::Url::parse(db_url)
        .expect("url")
        .path()
        .trim_start_matches('/')
        .to_owned();
    let admin = sea_orm::Database::connect(server)
        .await
        .expect("connect to the server");
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .await
        .expect("drop the test database");
    admin.close().await.ok();
}

/// What another node's reload leaves in the database, seen from this node: the published
/// set is put in force by one sync step, a set that does not compile here is skipped
/// (the old set stays), and a reload here publishes this node's directory again.
#[tokio::test]
async fn a_policy_set_published_by_another_node_is_put_in_force_by_the_sync_step() {
    use consentry::policy::PolicyTexts;
    use consentry::policy::reload::sync;
    let app = crate::helpers::spawn_app().await;
    let (_, dpo) = app.create_key("dpo").await;
    let state = &app.state;
    let ropa = || async { app.get("/v1/ropa", Some(&dpo)).await.text().await.unwrap() };
    let started = state.policies.generation();
    assert!(started >= 1, "a start publishes the directory's set");
    assert!(!ropa().await.contains(MARKER));

    // Another node publishes a changed set.
    let dir = shipped_policies();
    let read = |n: &str| std::fs::read_to_string(dir.join(n)).unwrap();
    let texts = PolicyTexts {
        taxonomy: read("taxonomy.yaml"),
        identifiers: read("identifiers.yaml"),
        purposes: read("purposes.yaml").replacen(
            "Sending marketing emails to people who asked for them.",
            &format!("Sending marketing emails to people who asked for them {MARKER}."),
            1,
        ),
    };
    let publish = |t: PolicyTexts| async move {
        let txn = state.db.begin_write().await.unwrap();
        let g = consentry::store::policy_sets::publish(
            &txn,
            &t.digest(),
            [&t.taxonomy, &t.identifiers, &t.purposes],
            0,
        )
        .await
        .unwrap();
        txn.commit().await.unwrap();
        g
    };
    let generation = publish(texts.clone()).await;
    assert_eq!(generation, started + 1);
    let run = || sync(&state.db, &state.master, &state.audit, &state.policies);
    assert_eq!(run().await.unwrap(), Some(generation));
    assert!(
        ropa().await.contains(MARKER),
        "the published set is in force"
    );
    assert_eq!(state.policies.generation(), generation);
    assert_eq!(run().await.unwrap(), None, "nothing new");

    // A set this node cannot compile is skipped once; the old set stays in force.
    let broken = publish(PolicyTexts {
        purposes: "purposes: [".into(),
        ..texts
    })
    .await;
    assert_eq!(run().await.unwrap(), None);
    assert_eq!(state.policies.generation(), broken);
    assert!(ropa().await.contains(MARKER));

    // A reload here publishes this node's directory (the shipped set) as the latest.
    let r = app
        .post_json("/v1/policies/reload", Some(&app.admin_token), &json!({}))
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["generation"], broken + 1);
    assert_eq!(
        v["digest"].as_str().unwrap(),
        consentry::policy::Policies::load(&dir)
            .unwrap()
            .texts
            .digest()
    );
    assert!(!ropa().await.contains(MARKER));
    assert_eq!(
        app.count(
            "audit_entries",
            &format!(
                "WHERE action = 'policy.reload' AND attributes LIKE '%policy_set:{}%'",
                v["digest"].as_str().unwrap()
            )
        )
        .await,
        1
    );
}
