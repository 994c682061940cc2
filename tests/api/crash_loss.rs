//! Crash without loss: `consentry serve` killed with SIGKILL at random moments while a
//! client ingests events, while erasures run and while an audience export streams, then
//! restarted on the same database. Production settings (SQLite `synchronous=FULL`), or
//! PostgreSQL with `CONSENTRY_TEST_DATABASE_URL`.
//!
//! - Ingest: every event whose request was answered 200 is stored exactly once, after
//!   the client retried the unanswered requests with the same `messageId`s (as Segment's
//!   clients do); the audit log verifies.
//! - Erasure: each killed erasure ends, after the restart (and a second `execute` where
//!   the kill came before the claim), in the same state as an uninterrupted one.
//! - Export: what the client received was recorded before it was sent; every export ends
//!   with one audit entry whose row count is the disclosure records' and the held
//!   pseudonyms'; an export after the restart is whole.
//!
//! `cargo test` runs a short version (2,000 events, 5 kills each); `CONSENTRY_CRASH_EVENTS`
//! and `CONSENTRY_CRASH_KILLS` raise it (tests/crash/run.sh: 10,000 events, 20 kills),
//! `CONSENTRY_CRASH_SEED` replays a run.
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use consentry::store::Db;
use futures_util::StreamExt;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};

use crate::crash::{Client, Gateway, audit_verifies, start_with};
use crate::helpers::fresh_database_url;

/// A small deterministic generator (SplitMix64): a failing run is replayed from its seed.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn from_env() -> (Self, u64) {
        let seed: u64 = std::env::var("CONSENTRY_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        eprintln!("random moments from CONSENTRY_CRASH_SEED={seed}");
        (Self(seed), seed)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

pub(crate) fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn kills() -> usize {
    setting("CONSENTRY_CRASH_KILLS", 5)
}

fn backend() -> &'static str {
    if std::env::var("CONSENTRY_TEST_DATABASE_URL").is_ok() {
        "postgresql"
    } else {
        "sqlite synchronous=full"
    }
}

/// The production settings every run uses (on SQLite: `synchronous=FULL`).
fn production() -> Vec<(&'static str, String)> {
    vec![
        ("CONSENTRY_MODE", "production".into()),
        // An export of the killed process is recorded as interrupted 3 to 6 s after the
        // kill; a live one makes progress every page, well within 3 s.
        ("CONSENTRY_EXPORT_STALE_SECS", "3".into()),
        ("RUST_LOG", "warn".into()),
    ]
}

/// The gateway of a test: one data directory and database, restarted as often as killed.
struct Node {
    dir: tempfile::TempDir,
    db: String,
    gateway: Option<Gateway>,
    starts: usize,
    restarts: Vec<Duration>,
}

impl Node {
    async fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = fresh_database_url(dir.path()).await;
        let mut node = Self {
            dir,
            db,
            gateway: None,
            starts: 0,
            restarts: Vec::new(),
        };
        node.start().await;
        node
    }

    async fn start(&mut self) -> String {
        self.starts += 1;
        let log = self.dir.path().join(format!("serve-{}.log", self.starts));
        let began = Instant::now();
        let g = start_with(self.dir.path(), &self.db, &log, &production()).await;
        if self.starts > 1 {
            self.restarts.push(began.elapsed());
        }
        let address = g.address.clone();
        self.gateway = Some(g);
        address
    }

    fn address(&self) -> String {
        self.gateway.as_ref().expect("running").address.clone()
    }

    fn client(&self) -> Client {
        Client {
            http: reqwest::Client::new(),
            address: self.address(),
        }
    }

    /// SIGKILL (std's `Child::kill`), and wait for the process to be gone.
    fn kill(&mut self) {
        if let Some(mut g) = self.gateway.take() {
            g.child.kill().expect("SIGKILL");
            g.child.wait().expect("reaped");
        }
    }

    fn admin(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("admin.token"))
            .expect("bootstrap admin token")
            .trim()
            .to_owned()
    }

    fn logs(&self) -> Vec<PathBuf> {
        (1..=self.starts)
            .map(|i| self.dir.path().join(format!("serve-{i}.log")))
            .collect()
    }

    fn verify_audit(&self) {
        audit_verifies(self.dir.path(), &self.db);
    }

    fn restart_figures(&self) -> String {
        let mut ms: Vec<u128> = self.restarts.iter().map(Duration::as_millis).collect();
        ms.sort_unstable();
        match (ms.first(), ms.get(ms.len() / 2), ms.last()) {
            (Some(a), Some(m), Some(z)) => format!("restart_ms min/median/max={a}/{m}/{z}"),
            _ => "no restarts".into(),
        }
    }
}

/// Every audit entry committed, placed in the log or still pending (a process killed
/// right after a commit leaves its entries for the next start's sequencer to place).
pub(crate) const COMMITTED_ENTRIES: &str = "(SELECT action, attributes FROM audit_entries \
    UNION ALL SELECT action, attributes FROM audit_pending) AS e";

/// A direct connection to the test's database, for counting what is stored.
pub(crate) struct Probe(Db);

impl Probe {
    pub(crate) async fn open(url: &str) -> Self {
        let db = crate::helpers::connect(url, 1).await;
        Self(db)
    }

    async fn rows(&self, sql: &str) -> Vec<sea_orm::QueryResult> {
        self.0
            .conn()
            .query_all_raw(Statement::from_string(self.0.backend(), sql))
            .await
            .expect("query")
    }

    pub(crate) async fn count(&self, sql: &str) -> i64 {
        let rows = self.rows(sql).await;
        rows[0].try_get_by_index::<i64>(0).expect("count")
    }

    /// Stored events by message id, with how many times each is stored.
    pub(crate) async fn events_by_message(&self) -> HashMap<String, i64> {
        self.rows("SELECT message_id, COUNT(*) FROM events GROUP BY message_id")
            .await
            .into_iter()
            .map(|r| {
                (
                    r.try_get_by_index::<String>(0).expect("message_id"),
                    r.try_get_by_index::<i64>(1).expect("count"),
                )
            })
            .collect()
    }

    async fn strings(&self, sql: &str) -> Vec<String> {
        self.rows(sql)
            .await
            .into_iter()
            .map(|r| r.try_get_by_index::<String>(0).expect("text"))
            .collect()
    }

    pub(crate) async fn close(self) {
        self.0.close().await.ok();
    }
}

/// One tracking request of the client: its route, body and the message ids it carries.
pub(crate) struct Call {
    pub(crate) route: &'static str,
    pub(crate) body: Value,
    pub(crate) ids: Vec<String>,
}

/// `n` track events in requests of 1 to 40: a fifth single `/v1/track` calls, the rest
/// `/v1/batch`.
pub(crate) fn calls(rng: &mut Rng, n: usize, tag: &str) -> Vec<Call> {
    let event = |i: usize| {
        json!({"type": "track", "messageId": format!("{tag}-{i:06}"),
            "userId": format!("{tag}-user-{}", i % 250), "event": "Product Viewed",
            "properties": {"sku": format!("sku-{}", i % 97), "price": (i % 50) as f64 + 0.99},
            "timestamp": "2026-12-01T10:00:00Z"})
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < n {
        if rng.below(5) == 0 {
            let mut e = event(i);
            e.as_object_mut().expect("object").remove("type");
            out.push(Call {
                route: "/v1/track",
                ids: vec![format!("{tag}-{i:06}")],
                body: e,
            });
            i += 1;
            continue;
        }
        let size = (1 + rng.below(40) as usize).min(n - i);
        let batch: Vec<Value> = (i..i + size).map(event).collect();
        out.push(Call {
            route: "/v1/batch",
            ids: (i..i + size).map(|j| format!("{tag}-{j:06}")).collect(),
            body: json!({"batch": batch}),
        });
        i += size;
    }
    out
}

/// What the client saw.
#[derive(Default)]
pub(crate) struct Ledger {
    /// Message id -> how many 200 answers covered it.
    pub(crate) acknowledged: HashMap<String, u32>,
    /// Requests sent again after no answer, or an answer other than 200.
    pub(crate) retries: usize,
    /// Answers by status (0: no answer, the connection was cut or refused).
    pub(crate) statuses: HashMap<u16, usize>,
}

/// A Segment-like sender: `workers` tasks send the calls to the address in `address`,
/// each call again (same body, same message ids) until it is answered 200.
pub(crate) struct Sender {
    pub(crate) queue: Mutex<VecDeque<usize>>,
    pub(crate) calls: Vec<Call>,
    pub(crate) outstanding: AtomicUsize,
    pub(crate) acked_events: AtomicUsize,
    /// Requests sent and not answered yet.
    pub(crate) in_flight: AtomicUsize,
    pub(crate) ledger: Mutex<Ledger>,
    pub(crate) key: String,
}

impl Sender {
    pub(crate) fn new(calls: Vec<Call>, key: String) -> Arc<Self> {
        Arc::new(Self {
            queue: Mutex::new((0..calls.len()).collect()),
            outstanding: AtomicUsize::new(calls.len()),
            calls,
            acked_events: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            ledger: Mutex::new(Ledger::default()),
            key,
        })
    }

    /// Books an answer to call `i`; `true` when it acknowledged the call.
    fn answered(&self, i: usize, status: u16, body: &str) -> bool {
        let call = &self.calls[i];
        let mut ledger = self.ledger.lock().expect("ledger");
        *ledger.statuses.entry(status).or_default() += 1;
        if status == 200 {
            for id in &call.ids {
                *ledger.acknowledged.entry(id.clone()).or_default() += 1;
            }
            self.acked_events
                .fetch_add(call.ids.len(), Ordering::SeqCst);
            self.outstanding.fetch_sub(1, Ordering::SeqCst);
            return true;
        }
        assert!(
            status == 0 || status == 503,
            "{} answered {status}: {body}",
            call.route
        );
        ledger.retries += 1;
        false
    }

    pub(crate) fn done(&self) -> bool {
        self.outstanding.load(Ordering::SeqCst) == 0
    }

    /// Sends until every call is acknowledged; `on_answer` sees each answer's status and
    /// body (for a test that checks what an outage answers).
    pub(crate) async fn work(
        self: Arc<Self>,
        address: tokio::sync::watch::Receiver<String>,
        on_answer: impl Fn(u16, &str, Duration) + Send + Sync,
    ) {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        while !self.done() {
            let next = self.queue.lock().expect("queue").pop_front();
            let Some(i) = next else {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            };
            let call = &self.calls[i];
            let url = format!("{}{}", address.borrow().clone(), call.route);
            let began = Instant::now();
            self.in_flight.fetch_add(1, Ordering::SeqCst);
            let sent = http
                .post(url)
                .basic_auth(&self.key, Some(""))
                .json(&call.body)
                .send()
                .await;
            let (status, body) = match sent {
                Ok(r) => {
                    let status = r.status().as_u16();
                    (status, r.text().await.unwrap_or_default())
                }
                Err(_) => (0, String::new()),
            };
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            on_answer(status, &body, began.elapsed());
            if self.answered(i, status, &body) {
                continue;
            }
            self.queue.lock().expect("queue").push_back(i);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// What the database holds against what the client was told: (stored, duplicates, lost).
pub(crate) async fn reconcile(db: &str, sender: &Sender) -> (usize, usize, usize) {
    let probe = Probe::open(db).await;
    let stored = probe.events_by_message().await;
    probe.close().await;
    let ledger = sender.ledger.lock().expect("ledger");
    let duplicates = stored.values().filter(|n| **n > 1).count();
    let lost = ledger
        .acknowledged
        .keys()
        .filter(|id| !stored.contains_key(*id))
        .count();
    let sent: HashSet<&String> = sender.calls.iter().flat_map(|c| &c.ids).collect();
    let strangers: Vec<&String> = stored.keys().filter(|id| !sent.contains(id)).collect();
    assert!(strangers.is_empty(), "stored but never sent: {strangers:?}");
    (stored.len(), duplicates, lost)
}

#[tokio::test]
async fn every_acknowledged_event_is_stored_once_however_often_the_gateway_is_killed() {
    let (mut rng, seed) = Rng::from_env();
    let events = setting("CONSENTRY_CRASH_EVENTS", 2_000);
    let kills = kills();
    let mut node = Node::new().await;
    let c = node.client();
    let ingest = c.key(&node.admin(), "ingest").await;
    let sender = Sender::new(calls(&mut rng, events, "crash"), ingest);
    let requests = sender.calls.len();
    let (tx, rx) = tokio::sync::watch::channel(node.address());
    let began = Instant::now();
    let workers: Vec<_> = (0..4)
        .map(|_| tokio::spawn(sender.clone().work(rx.clone(), |_, _, _| {})))
        .collect();
    // One kill in each of `kills` equal slices of the run, at a random point of its slice
    // (counted in acknowledged events), and never before the restarted gateway has
    // acknowledged something: every kill lands while requests are in flight.
    let slice = events / (kills + 1);
    let mut done = 0;
    let mut acked_at_start = 0;
    let mut cut_in_flight = 0;
    for k in 0..kills {
        let threshold = k * slice + rng.below(slice as u64) as usize;
        loop {
            let acked = sender.acked_events.load(Ordering::SeqCst);
            if acked >= threshold && acked > acked_at_start || sender.done() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if sender.done() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(rng.below(15))).await;
        cut_in_flight += sender.in_flight.load(Ordering::SeqCst);
        node.kill();
        done += 1;
        tx.send(node.start().await).expect("workers listen");
        acked_at_start = sender.acked_events.load(Ordering::SeqCst);
    }
    for w in workers {
        w.await.expect("worker");
    }
    let elapsed = began.elapsed();
    node.kill();
    assert_eq!(
        done, kills,
        "every kill landed before the last acknowledgement"
    );
    let (stored, duplicates, lost) = reconcile(&node.db, &sender).await;
    let ledger = sender.ledger.lock().expect("ledger");
    let acknowledged = ledger.acknowledged.len();
    let twice = ledger.acknowledged.values().filter(|n| **n > 1).count();
    println!(
        "crash_loss ingest [{}]: events={events} requests={requests} kills={done} \
         in_flight_at_kills={cut_in_flight} resends={} acknowledged={acknowledged} \
         acknowledged_twice={twice} stored={stored} duplicates={duplicates} lost={lost} \
         {} elapsed_s={:.1} seed={seed}",
        backend(),
        ledger.retries,
        node.restart_figures(),
        elapsed.as_secs_f64()
    );
    assert_eq!(lost, 0, "acknowledged events lost (seed {seed})");
    assert_eq!(duplicates, 0, "events stored twice (seed {seed})");
    assert_eq!(
        acknowledged, events,
        "every event was acknowledged in the end"
    );
    assert_eq!(stored, events);
    assert_eq!(twice, 0, "a call is sent again only when unanswered");
    node.verify_audit();
}

const ERASURE_EVENTS: usize = 600;

/// The counts an erasure changes.
async fn erasure_counts(db: &str) -> Value {
    let probe = Probe::open(db).await;
    let mut out = serde_json::Map::new();
    for (name, sql) in [
        ("events", "SELECT COUNT(*) FROM events"),
        ("traits", "SELECT COUNT(*) FROM traits"),
        ("identifiers", "SELECT COUNT(*) FROM identifiers"),
        ("consents", "SELECT COUNT(*) FROM consents"),
        (
            "active subjects",
            "SELECT COUNT(*) FROM subjects WHERE status = 'active'",
        ),
        ("subject keys", "SELECT COUNT(*) FROM subject_keys"),
        ("suppressions", "SELECT COUNT(*) FROM suppressions"),
        (
            "erase entries",
            &format!("SELECT COUNT(*) FROM {COMMITTED_ENTRIES} WHERE action = 'subject.erase'"),
        ),
    ] {
        out.insert(name.into(), json!(probe.count(sql).await));
    }
    probe.close().await;
    Value::Object(out)
}

fn delta(before: &Value, after: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for (k, v) in after.as_object().expect("counts") {
        let d = v.as_i64().expect("n") - before[k].as_i64().expect("n");
        out.insert(k.clone(), json!(d));
    }
    Value::Object(out)
}

/// Person `i`: an identify with contact details, `ERASURE_EVENTS` events, a consent.
async fn person(c: &Client, ingest: &str, dpo: &str, i: usize) {
    let uid = format!("erase-{i}");
    let email = format!("erase{i}@example.org");
    let r = c
        .track(
            "/v1/identify",
            ingest,
            &json!({"userId": uid, "traits": {"email": email, "first_name": "Er",
                "phone": format!("+4420794{:05}", 60_000 + i)}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let batch: Vec<Value> = (0..ERASURE_EVENTS)
        .map(|j| {
            json!({"type": "track", "userId": uid, "event": "Product Viewed",
            "messageId": format!("{uid}-{j}"), "properties": {"sku": format!("s{j}")}})
        })
        .collect();
    let r = c.track("/v1/batch", ingest, &json!({"batch": batch})).await;
    assert_eq!(r.status(), 200);
    let r = c
        .post(
            "/v1/consents",
            dpo,
            &json!({"subject": {"email": email}, "purpose": "email_marketing",
                "status": "granted", "method": "web_form", "source": "shop"}),
        )
        .await;
    assert_eq!(r.status(), 201);
}

/// A verified erasure request for person `i`.
async fn erasure_request(c: &Client, dpo: &str, i: usize) -> String {
    let r = c
        .post(
            "/v1/dsar",
            dpo,
            &json!({"kind": "erasure", "channel": "email",
                "identifiers": {"email": format!("erase{i}@example.org")}}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let r = c
        .post(
            &format!("/v1/dsar/{id}/verify"),
            dpo,
            &json!({"method": "dpo_attested", "note": "seen"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    id
}

async fn moves(c: &Client, dpo: &str, id: &str) -> (String, Vec<Value>) {
    let v = c.get(&format!("/v1/dsar/{id}"), dpo).await;
    let moves = v["transitions"]
        .as_array()
        .expect("transitions")
        .iter()
        .map(|t| json!([t["from"], t["to"], t["reason"]]))
        .collect();
    (v["status"].as_str().expect("status").to_owned(), moves)
}

/// After an erasure: the person calls again, and stays erased.
async fn calls_again(c: &Client, ingest: &str, i: usize) {
    let r = c
        .track(
            "/v1/identify",
            ingest,
            &json!({"userId": format!("erase-{i}"),
                "traits": {"email": format!("erase{i}@example.org")}}),
        )
        .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn erasures_killed_at_random_moments_end_as_an_uninterrupted_one() {
    let (mut rng, seed) = Rng::from_env();
    let kills = kills();
    let mut node = Node::new().await;
    let c = node.client();
    let admin = node.admin();
    let ingest = c.key(&admin, "ingest").await;
    let dpo = c.key(&admin, "dpo").await;
    for i in 0..=kills + 1 {
        person(&c, &ingest, &dpo, i).await;
    }
    // Person 0, uninterrupted: the reference.
    let id = erasure_request(&c, &dpo, 0).await;
    let before = erasure_counts(&node.db).await;
    let began = Instant::now();
    let r = c
        .post(&format!("/v1/dsar/{id}/execute"), &dpo, &json!({}))
        .await;
    let took = began.elapsed();
    assert_eq!(r.status(), 200);
    calls_again(&c, &ingest, 0).await;
    let expected = delta(&before, &erasure_counts(&node.db).await);
    let (status, expected_moves) = moves(&c, &dpo, &id).await;
    assert_eq!(status, "completed");
    assert_eq!(expected["erase entries"], 1, "{expected}");
    // Their events and the identify (stored as an event too).
    assert_eq!(
        expected["events"],
        -(ERASURE_EVENTS as i64 + 1),
        "{expected}"
    );
    // Kills at a random moment of the time an erasure takes end to end (and a little
    // after): before the request arrives, while it runs, after it committed.
    let window = took.as_micros() as u64 + 2_000;
    let mut landed: HashMap<String, usize> = HashMap::new();
    for i in 1..=kills {
        let id = erasure_request(&node.client(), &dpo, i).await;
        let before = erasure_counts(&node.db).await;
        let call = tokio::spawn({
            let url = format!("{}/v1/dsar/{id}/execute", node.address());
            let dpo = dpo.clone();
            async move {
                reqwest::Client::new()
                    .post(url)
                    .bearer_auth(dpo)
                    .json(&json!({}))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            }
        });
        let delay = rng.below(window);
        tokio::time::sleep(Duration::from_micros(delay)).await;
        node.kill();
        let answered = call.await.expect("task").ok();
        eprintln!("erasure round {i}: delay_us={delay} answered={answered:?}");
        let probe = Probe::open(&node.db).await;
        let at_kill = probe
            .strings(&format!(
                "SELECT status FROM dsar_requests WHERE id = '{id}'"
            ))
            .await;
        probe.close().await;
        let at_kill = at_kill.first().cloned().unwrap_or_default();
        if let Some(s) = answered {
            assert_eq!(s, 200, "execute answered {s}");
        }
        *landed.entry(at_kill.clone()).or_default() += 1;
        node.start().await;
        let c = node.client();
        if at_kill == "verified" {
            // Killed before the claim: nothing started; the DPO executes again.
            let r = c
                .post(&format!("/v1/dsar/{id}/execute"), &dpo, &json!({}))
                .await;
            assert_eq!(r.status(), 200);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, got) = moves(&c, &dpo, &id).await;
            if status == "completed" {
                assert_eq!(got, expected_moves, "killed while {at_kill} (seed {seed})");
                break;
            }
            assert!(Instant::now() < deadline, "not resumed: {status} {got:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        calls_again(&c, &ingest, i).await;
        let d = delta(&before, &erasure_counts(&node.db).await);
        assert_eq!(d, expected, "killed while {at_kill} (seed {seed})");
    }
    // The person nobody erased is whole.
    let probe = Probe::open(&node.db).await;
    let kept = probe
        .count(&format!(
            "SELECT COUNT(*) FROM events WHERE message_id LIKE 'erase-{}-%'",
            kills + 1
        ))
        .await;
    probe.close().await;
    assert_eq!(kept, ERASURE_EVENTS as i64);
    node.kill();
    let mut landed: Vec<_> = landed.into_iter().collect();
    landed.sort();
    println!(
        "crash_loss erasure [{}]: erasures={} kills={kills} window_ms={:.1} \
         status_at_kill={landed:?} end_state_equal={kills}/{kills} {} seed={seed}",
        backend(),
        kills + 1,
        window as f64 / 1000.0,
        node.restart_figures()
    );
    node.verify_audit();
    for log in node.logs() {
        let text = std::fs::read_to_string(&log).expect("log");
        for i in 0..=kills + 1 {
            let email = format!("erase{i}@example.org");
            assert!(!text.contains(&email), "{email} is in {}", log.display());
        }
    }
}

const EXPORT_RECIPIENT: &str = "crash-esp";
const EXPORT_PURPOSE: &str = "essential.service";

/// What one export request got before its end (or the kill).
#[derive(Default)]
struct Received {
    id: Option<String>,
    pseudonyms: Vec<String>,
    whole: bool,
}

async fn read_export(http: reqwest::Client, url: String, token: String, got: Arc<Mutex<Received>>) {
    let Ok(r) = http.get(url).bearer_auth(token).send().await else {
        return;
    };
    assert_eq!(r.status(), 200, "export answered {}", r.status());
    got.lock().expect("received").id = r
        .headers()
        .get("consentry-export-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut stream = r.bytes_stream();
    let mut pending = Vec::new();
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else { return };
        pending.extend_from_slice(&chunk);
        while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=nl).collect();
            let v: Value = serde_json::from_slice(&line).expect("one JSON row a line");
            let p = v["pseudonym"].as_str().expect("pseudonym").to_owned();
            got.lock().expect("received").pseudonyms.push(p);
        }
    }
    got.lock().expect("received").whole = pending.is_empty();
}

/// Every export ended, with one audit entry naming it whose row count is the export's;
/// the disclosure records are the rows of all exports.
async fn exports_consistent(db: &str) -> Vec<(String, String, i64)> {
    let probe = Probe::open(db).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while probe
        .count("SELECT COUNT(*) FROM exports WHERE status = 'running'")
        .await
        > 0
    {
        assert!(
            Instant::now() < deadline,
            "an export of the killed process is still running"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rows = probe
        .rows("SELECT id, status, rows, members, members_kept FROM exports ORDER BY id")
        .await;
    let mut out = Vec::new();
    let mut total = 0;
    for r in rows {
        let id: String = r.try_get_by_index(0).expect("id");
        let status: String = r.try_get_by_index(1).expect("status");
        let n: i64 = r.try_get_by_index(2).expect("rows");
        let members: i64 = r.try_get_by_index(3).expect("members");
        let kept: bool = r.try_get_by_index(4).expect("members_kept");
        let entries = probe
            .strings(&format!(
                "SELECT attributes FROM {COMMITTED_ENTRIES} WHERE action = \
                 'disclosure.segment_export' AND attributes LIKE '%\"export:{id}\"%'"
            ))
            .await;
        assert_eq!(entries.len(), 1, "export {id} ({status}): {entries:?}");
        assert!(
            entries[0].contains(&format!("\"rows:{n}\"")),
            "export {id} recorded {n} rows: {}",
            entries[0]
        );
        assert!(entries[0].contains(&format!("\"status:{status}\"")));
        if kept {
            let held = probe
                .count(&format!(
                    "SELECT COUNT(*) FROM export_members WHERE export_id = '{id}'"
                ))
                .await;
            assert_eq!(held, members, "export {id}: held pseudonyms");
        }
        total += n;
        out.push((id, status, n));
    }
    let disclosed = probe.count("SELECT COUNT(*) FROM disclosures").await;
    assert_eq!(
        disclosed, total,
        "one disclosure record per row of every export"
    );
    probe.close().await;
    out
}

#[tokio::test]
async fn an_export_killed_mid_stream_disclosed_only_what_it_recorded_and_a_retry_is_whole() {
    let (mut rng, seed) = Rng::from_env();
    let kills = kills();
    let members = setting("CONSENTRY_CRASH_EXPORT_MEMBERS", 2_000);
    let mut node = Node::new().await;
    let c = node.client();
    let admin = node.admin();
    let ingest = c.key(&admin, "ingest").await;
    let r = c
        .post(
            "/v1/recipients",
            &admin,
            &json!({"id": EXPORT_RECIPIENT, "name": "crash test esp", "kind": "esp",
                "purposes": [EXPORT_PURPOSE]}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let r = c
        .post(
            "/v1/keys",
            &admin,
            &json!({"name": "esp", "role": "esp", "recipient": EXPORT_RECIPIENT,
                "purposes": [EXPORT_PURPOSE]}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let esp = r.json::<Value>().await.expect("json")["token"]
        .as_str()
        .expect("token")
        .to_owned();
    for start in (0..members).step_by(400) {
        let batch: Vec<Value> = (start..(start + 400).min(members))
            .map(|i| {
                json!({"type": "identify", "userId": format!("m{i:05}"),
                "traits": {"email": format!("m{i:05}@example.com"), "firstName": "M"}})
            })
            .collect();
        let r = c
            .track("/v1/batch", &ingest, &json!({"batch": batch}))
            .await;
        assert_eq!(r.status(), 200);
    }
    let r = c
        .post(
            "/v1/segments",
            &esp,
            &json!({"name": "everyone", "purpose": EXPORT_PURPOSE,
                "rule": {"attribute": "firstName", "exists": true}}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let seg = r.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let path = format!("/v1/segments/{seg}/export?recipient={EXPORT_RECIPIENT}");
    let export = |node: &Node| {
        let got = Arc::new(Mutex::new(Received::default()));
        let task = tokio::spawn(read_export(
            reqwest::Client::new(),
            format!("{}{path}", node.address()),
            esp.clone(),
            got.clone(),
        ));
        (got, task)
    };
    // Uninterrupted: the reference, and how long an export takes.
    let began = Instant::now();
    let (got, task) = export(&node);
    task.await.expect("reader");
    let took = began.elapsed();
    {
        let got = got.lock().expect("received");
        assert!(got.whole);
        assert_eq!(got.pseudonyms.len(), members);
    }
    exports_consistent(&node.db).await;
    let window = (took.as_micros() as u64 * 5 / 4).max(1_000);
    let mut cut = Vec::new();
    for _ in 0..kills {
        let (got, task) = export(&node);
        tokio::time::sleep(Duration::from_micros(rng.below(window))).await;
        node.kill();
        task.await.expect("reader");
        node.start().await;
        let ended = exports_consistent(&node.db).await;
        let got = std::mem::take(&mut *got.lock().expect("received"));
        let Some(id) = got.id.clone() else {
            cut.push("before the headers".to_owned());
            continue;
        };
        let (_, status, rows) = ended
            .iter()
            .find(|(e, _, _)| *e == id)
            .expect("the export is recorded")
            .clone();
        let received = got.pseudonyms.len() as i64;
        assert!(
            received <= rows,
            "export {id}: {received} rows received, {rows} recorded (seed {seed})"
        );
        // Only an interrupted export is pruned later: its held pseudonyms are still here.
        let probe = Probe::open(&node.db).await;
        let held: HashSet<String> = probe
            .strings(&format!(
                "SELECT pseudonym FROM export_members WHERE export_id = '{id}'"
            ))
            .await
            .into_iter()
            .collect();
        probe.close().await;
        if status == "interrupted" {
            for p in &got.pseudonyms {
                assert!(held.contains(p), "export {id} sent an unrecorded row");
            }
        }
        if got.whole {
            assert_eq!(status, "complete");
        }
        cut.push(format!("{status} {received}/{rows}"));
    }
    // After the last restart an export is whole.
    let (got, task) = export(&node);
    task.await.expect("reader");
    let got = std::mem::take(&mut *got.lock().expect("received"));
    assert!(got.whole, "the export after the restarts was cut");
    assert_eq!(got.pseudonyms.len(), members);
    let ended = exports_consistent(&node.db).await;
    let id = got.id.clone().expect("export id");
    assert!(ended.contains(&(id, "complete".into(), members as i64)));
    node.kill();
    println!(
        "crash_loss export [{}]: members={members} kills={kills} window_ms={:.1} \
         received/recorded at kill={cut:?} exports={} all_ended_with_one_audit_entry=true {} seed={seed}",
        backend(),
        window as f64 / 1000.0,
        ended.len(),
        node.restart_figures()
    );
    node.verify_audit();
}

/// The stale-export sweep ending a live export (its client read too slowly, or a clock
/// moved): the client's transfer is cut, never ended as if whole, and the audit entry
/// counts every page the producer recorded before it stopped.
#[tokio::test]
async fn an_export_ended_by_the_stale_sweep_is_cut_and_its_audit_entry_counts_every_recorded_page()
{
    use consentry::auth::{Caller, Credential};
    use consentry::domain::{Clock, Role};
    use consentry::policy::segments::Segments;
    use consentry::segmentation::export::Format;

    let app = crate::helpers::spawn_app().await;
    let (_, ingest) = app.create_key("ingest").await;
    let esp = app.esp_key("slow-esp", &[EXPORT_PURPOSE]).await;
    let batch: Vec<Value> = (0..1_100)
        .map(|i| {
            json!({"type": "identify", "userId": format!("s{i:05}"),
            "traits": {"email": format!("s{i:05}@example.com"), "firstName": "S"}})
        })
        .collect();
    let r = app
        .track(&ingest, "/v1/batch", &json!({"batch": batch}))
        .await;
    assert_eq!(r.status(), 200);
    let r = app
        .post_json(
            "/v1/segments",
            Some(&esp),
            &json!({"name": "all", "purpose": EXPORT_PURPOSE,
                "rule": {"attribute": "firstName", "exists": true}}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let seg = r.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let state = app.state.clone();
    let caller = Caller {
        key_id: "test-admin".into(),
        name: "test admin".into(),
        role: Role::Admin,
        recipient: None,
        purposes: Vec::new(),
        via: Credential::ApiKey,
    };
    let keyring = state.keyring_for("slow-esp").await.expect("keyring");
    let svc = Segments {
        db: &state.db,
        master: &state.master,
        keyring: &keyring,
        audit: &state.audit,
        policies: state.policies.get(),
        caller: &caller,
        actor: caller.actor(),
        request_id: None,
        now: app.clock.now(),
    };
    let plan = svc
        .start_export(&seg, "slow-esp", Format::Ndjson, None)
        .await
        .expect("started");
    let id = plan.export.id.clone();
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let producer = svc.run_export(plan, app.clock.as_ref(), tx);
    let consumer = async {
        let first = rx.recv().await.expect("a chunk").expect("rows");
        // The client stalls past export_stale_secs; the sweep ends the export.
        app.clock.advance_secs(601);
        let swept = consentry::startup::interrupt_stale_exports(&state)
            .await
            .expect("sweep");
        let mut rest = Vec::new();
        while let Some(chunk) = rx.recv().await {
            rest.push(chunk.is_ok());
        }
        (first, swept, rest)
    };
    let ((), (first, swept, rest)) = tokio::join!(producer, consumer);
    assert_eq!(
        String::from_utf8(first).expect("utf-8").lines().count(),
        500
    );
    assert_eq!(swept, 1);
    assert_eq!(rest.last(), Some(&false), "the transfer ends cut: {rest:?}");
    let status = app.get_json(&format!("/v1/exports/{id}"), Some(&esp)).await;
    assert_eq!(status["status"], "interrupted", "{status}");
    let rows = status["rows"].as_i64().expect("rows");
    assert_eq!(app.count("disclosures", "").await, rows);
    let entry = app
        .scalar_i64(&format!(
            "SELECT COUNT(*) FROM audit_entries WHERE action = 'disclosure.segment_export' \
             AND attributes LIKE '%\"export:{id}\"%' AND attributes LIKE '%\"rows:{rows}\"%'"
        ))
        .await;
    assert_eq!(entry, 1, "one audit entry, with the {rows} rows recorded");
}
