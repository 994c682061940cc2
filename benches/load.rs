//! Load and soak: a realistic mix of traffic against a running `consentry serve`, driven by
//! closed-loop workers (each sends its next request as soon as the last one answers), so
//! the rate is the highest this machine sustains. Reports throughput, p50/p99/p99.9 latency
//! and every non-2xx (status and error code; 429s apart) per kind of request, and the
//! gateway's resident memory at start, during and at end.
//!
//! `cargo bench --bench load` starts the release `consentry serve` it was built with, on a
//! fresh SQLite file in a temporary directory, provisions keys, a recipient, people,
//! consents and a segment through the API, drives the mix, stops the gateway and prints a
//! Markdown table. Environment:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `CONSENTRY_LOAD_SECS` | 30 | how long to drive (the soak: 600) |
//! | `CONSENTRY_LOAD_PG` | unset | a PostgreSQL server URL: a fresh database is created there (and dropped after) |
//! | `CONSENTRY_LOAD_BIN` | this build's `consentry` | the gateway binary to start |
//! | `CONSENTRY_LOAD_PEOPLE` | 2000 | people identified before the run |
//! | `CONSENTRY_LOAD_WORKERS` | `ingest=2,esp=3,export=1,consent=1` | closed-loop workers per kind |
//! | `CONSENTRY_LOAD_KEYS` | 1 | API keys per kind, shared round-robin by its workers (raise it if per-key rate limits bite) |
//! | `CONSENTRY_LOAD_URL` | unset | drive an already running gateway (loopback only) instead; needs `CONSENTRY_LOAD_ADMIN_TOKEN`, and `CONSENTRY_LOAD_PID` for memory figures |
//! | `CONSENTRY_LOAD_MAX_REQUESTS` | 50,000,000 | a bound on the number of requests, whatever the time |
//!
//! Other `CONSENTRY_*` settings pass through to the started gateway (e.g.
//! `CONSENTRY_SQLITE_SYNCHRONOUS=full`). The run exits non-zero if any request failed.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::Mutex;

const EMAIL: &str = "marketing.communications.email";
const RECIPIENT: &str = "load-esp";
const BATCH: usize = 50;

/// The kinds of request the mix is made of, in report order.
const KINDS: [&str; 7] = [
    "ingest_batch",
    "esp_pseudonym",
    "esp_profile",
    "esp_preview",
    "esp_count",
    "export",
    "consent",
];

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace(['_', ','], "").parse().ok())
        .unwrap_or(default)
}

/// Per kind: a latency histogram (µs) and the failures by `status code`.
#[derive(Default)]
struct Tally {
    hist: BTreeMap<&'static str, Histogram<u64>>,
    failures: BTreeMap<(&'static str, String), u64>,
    limited: BTreeMap<&'static str, u64>,
}

impl Tally {
    fn record(&mut self, kind: &'static str, micros: u64) {
        let h = self
            .hist
            .entry(kind)
            .or_insert_with(|| Histogram::new_with_bounds(1, 600_000_000, 3).expect("bounds"));
        h.saturating_record(micros.max(1));
    }

    fn merge(&mut self, other: Tally) {
        for (k, h) in other.hist {
            match self.hist.get_mut(k) {
                Some(mine) => mine.add(&h).expect("same bounds"),
                None => {
                    self.hist.insert(k, h);
                }
            }
        }
        for (k, n) in other.failures {
            *self.failures.entry(k).or_default() += n;
        }
        for (k, n) in other.limited {
            *self.limited.entry(k).or_default() += n;
        }
    }
}

struct Gateway {
    child: Option<Child>,
    base: String,
    admin: String,
    pid: Option<u32>,
    dir: Option<tempfile::TempDir>,
    pg_db: Option<(String, String)>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn rss_kib(pid: Option<u32>) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// A line of the gateway's `/proc/PID/status` in KiB (`VmRSS:`, `RssAnon:` ...).
fn status_kib(pid: Option<u32>, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

async fn start_gateway() -> Gateway {
    if let Ok(base) = std::env::var("CONSENTRY_LOAD_URL") {
        let url = url::Url::parse(&base).expect("CONSENTRY_LOAD_URL parses");
        let loopback = match url.host() {
            Some(url::Host::Ipv4(a)) => a.is_loopback(),
            Some(url::Host::Ipv6(a)) => a.is_loopback(),
            Some(url::Host::Domain(d)) => d == "localhost",
            None => false,
        };
        assert!(loopback, "CONSENTRY_LOAD_URL must be a loopback address");
        return Gateway {
            child: None,
            base: base.trim_end_matches('/').to_owned(),
            admin: std::env::var("CONSENTRY_LOAD_ADMIN_TOKEN")
                .expect("CONSENTRY_LOAD_ADMIN_TOKEN with CONSENTRY_LOAD_URL"),
            pid: std::env::var("CONSENTRY_LOAD_PID")
                .ok()
                .and_then(|p| p.parse().ok()),
            dir: None,
            pg_db: None,
        };
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let (db_url, pg_db) = match std::env::var("CONSENTRY_LOAD_PG") {
        Ok(server) => {
            let name = format!("consentry_load_{}", uuid::Uuid::new_v4().simple());
            psql(&server, &format!("CREATE DATABASE \"{name}\""));
            let mut url = url::Url::parse(&server).expect("CONSENTRY_LOAD_PG parses");
            url.set_path(&format!("/{name}"));
            (url.to_string(), Some((server, name)))
        }
        Err(_) => (
            format!("sqlite://{}", dir.path().join("consentry.db").display()),
            None,
        ),
    };
    let bin = std::env::var("CONSENTRY_LOAD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_BIN_EXE_consentry")));
    let log = dir.path().join("gateway.log");
    let out = std::fs::File::create(&log).expect("log file");
    let mut cmd = Command::new(&bin);
    // The gateway refuses `CONSENTRY_*` settings it does not know: this driver's own stay here.
    for (k, _) in std::env::vars() {
        if k.starts_with("CONSENTRY_LOAD_") || k == "CONSENTRY_TEST_DATABASE_URL" {
            cmd.env_remove(k);
        }
    }
    let child = cmd
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("CONSENTRY_DATA_DIR", dir.path())
        .env("CONSENTRY_DATABASE_URL", &db_url)
        // This measures throughput, not the per-key abuse limits (tests/api/abuse.rs does):
        // the export worker alone would pass the default 30 exports a minute. A value
        // given in the environment is kept.
        .env(
            "CONSENTRY_RATE_LIMIT_EXPORTS_PER_MINUTE",
            std::env::var("CONSENTRY_RATE_LIMIT_EXPORTS_PER_MINUTE").unwrap_or_else(|_| "0".into()),
        )
        .env(
            "CONSENTRY_MASTER_KEY",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 32]),
        )
        .env(
            "CONSENTRY_POLICIES",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"),
        )
        .env(
            "RUST_LOG",
            std::env::var("CONSENTRY_LOAD_RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("log file"))
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let pid = Some(child.id());
    let mut gateway = Gateway {
        child: Some(child),
        base: String::new(),
        admin: String::new(),
        pid,
        dir: None,
        pg_db,
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("consentry listening on ")) {
            gateway.base = line
                .trim()
                .trim_start_matches("consentry listening on ")
                .to_owned();
            break;
        }
        let exited = gateway
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten());
        assert!(exited.is_none(), "the gateway exited ({exited:?}):\n{text}");
        assert!(
            Instant::now() < deadline,
            "the gateway did not start:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gateway.admin = std::fs::read_to_string(dir.path().join("admin.token"))
        .expect("bootstrap admin token")
        .trim()
        .to_owned();
    gateway.dir = Some(dir);
    gateway
}

fn psql(server: &str, sql: &str) {
    let status = Command::new("psql")
        .args(["-qAt", server, "-c", sql])
        .status()
        .expect("psql runs");
    assert!(status.success(), "psql: {sql}");
}

/// The keys, recipient, people, consents and segment the mix works on.
struct Fixture {
    ingest: Vec<String>,
    esp: Vec<String>,
    emails: Vec<String>,
    /// People who keep their consent through the run.
    stable: Vec<String>,
    pseudonyms: Vec<String>,
    segment: String,
}

async fn send(req: reqwest::RequestBuilder, want: u16, what: &str) -> Value {
    let r = req.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    assert_eq!(status, want, "{what}: {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

async fn provision(http: &reqwest::Client, g: &Gateway, keys: usize, people: usize) -> Fixture {
    let base = &g.base;
    send(
        http.post(format!("{base}/v1/recipients"))
            .bearer_auth(&g.admin)
            .json(
                &json!({"id": RECIPIENT, "name": "load test ESP", "kind": "esp",
                          "purposes": [EMAIL]}),
            ),
        201,
        "create recipient",
    )
    .await;
    let mut ingest = Vec::new();
    let mut esp = Vec::new();
    for i in 0..keys {
        let v = send(
            http.post(format!("{base}/v1/keys"))
                .bearer_auth(&g.admin)
                .json(&json!({"name": format!("load ingest {i}"), "role": "ingest"})),
            201,
            "create ingest key",
        )
        .await;
        ingest.push(v["token"].as_str().expect("token").to_owned());
        let v = send(
            http.post(format!("{base}/v1/keys"))
                .bearer_auth(&g.admin)
                .json(&json!({"name": format!("load esp {i}"), "role": "esp",
                              "recipient": RECIPIENT, "purposes": [EMAIL]})),
            201,
            "create esp key",
        )
        .await;
        esp.push(v["token"].as_str().expect("token").to_owned());
    }
    let emails: Vec<String> = (0..people)
        .map(|i| format!("person{i}@load.example"))
        .collect();
    for chunk in (0..people).collect::<Vec<_>>().chunks(100) {
        let batch: Vec<Value> = chunk
            .iter()
            .map(|&i| {
                json!({"type": "identify", "userId": format!("u{i}"),
                       "messageId": format!("seed-{i}"),
                       "traits": {"email": emails[i], "firstName": format!("P{i}"),
                                  "country": if i % 4 == 3 { "FR" } else { "DE" }}})
            })
            .collect();
        send(
            http.post(format!("{base}/v1/batch"))
                .basic_auth(&ingest[0], Some(""))
                .json(&json!({"batch": batch})),
            200,
            "seed people",
        )
        .await;
    }
    // Three in four consent to email marketing; the consent workers then flip people.
    for i in (0..people).filter(|i| i % 4 != 1) {
        send(
            http.post(format!("{base}/v1/consents"))
                .bearer_auth(&ingest[0])
                .json(&consent_body(i, true)),
            201,
            "seed consent",
        )
        .await;
    }
    // ESP reads go to the first half, who keep their consent; consent writes go to the
    // second half, so a read never meets a withdrawal it did not expect (a 404).
    let stable: Vec<String> = (0..people / 2)
        .filter(|i| i % 4 != 1)
        .map(|i| emails[i].clone())
        .collect();
    let mut pseudonyms = Vec::new();
    for email in stable.iter().take(200) {
        let v = send(
            http.post(format!("{base}/v1/recipients/{RECIPIENT}/pseudonyms"))
                .bearer_auth(&esp[0])
                .json(&json!({"purpose": EMAIL, "email": email})),
            200,
            "pseudonym",
        )
        .await;
        pseudonyms.push(v["pseudonym"].as_str().expect("pseudonym").to_owned());
    }
    let v = send(
        http.post(format!("{base}/v1/segments"))
            .bearer_auth(&esp[0])
            .json(&json!({"name": "load: Germany", "purpose": EMAIL,
                          "rule": {"attribute": "country", "eq": "DE"}})),
        201,
        "create segment",
    )
    .await;
    Fixture {
        ingest,
        esp,
        emails,
        stable,
        pseudonyms,
        segment: v["id"].as_str().expect("segment id").to_owned(),
    }
}

fn consent_body(i: usize, granted: bool) -> Value {
    let (status, method) = if granted {
        ("granted", "double_opt_in")
    } else {
        ("withdrawn", "api")
    };
    json!({"subject": {"user_id": format!("u{i}")}, "purpose": "email_marketing",
           "status": status, "method": method, "source": "load"})
}

/// A small deterministic generator, so runs are repeatable without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn ingest_batch(rng: &mut Rng, people: usize, worker: usize, n: u64) -> Value {
    let events: Vec<Value> = (0..BATCH)
        .map(|j| {
            let user = format!("u{}", rng.below(people));
            let (event, props) = if j % 10 == 9 {
                (
                    "Order Completed",
                    json!({"order_id": format!("o{worker}-{n}-{j}"),
                                          "total": 42.5, "currency": "EUR"}),
                )
            } else {
                (
                    "Product Viewed",
                    json!({"product_id": format!("p{}", rng.below(300)),
                                         "price": 9.99}),
                )
            };
            json!({"type": "track", "userId": user, "event": event, "properties": props,
                   "messageId": format!("w{worker}-{n}-{j}")})
        })
        .collect();
    json!({"batch": events})
}

/// One request of `kind`; returns the status and the error code of a non-2xx.
async fn one(
    http: &reqwest::Client,
    base: &str,
    f: &Fixture,
    kind: &'static str,
    rng: &mut Rng,
    worker: usize,
    n: u64,
) -> Result<u16, (u16, String)> {
    let esp = &f.esp[(worker + n as usize) % f.esp.len()];
    let ingest = &f.ingest[(worker + n as usize) % f.ingest.len()];
    let seg = &f.segment;
    let req = match kind {
        "ingest_batch" => http
            .post(format!("{base}/v1/batch"))
            .basic_auth(ingest, Some(""))
            .json(&ingest_batch(rng, f.emails.len(), worker, n)),
        "esp_pseudonym" => http
            .post(format!("{base}/v1/recipients/{RECIPIENT}/pseudonyms"))
            .bearer_auth(esp)
            .json(&json!({"purpose": EMAIL, "email": f.stable[rng.below(f.stable.len())]})),
        "esp_profile" => http
            .get(format!(
                "{base}/v1/recipients/{RECIPIENT}/profiles/{}?purpose={EMAIL}",
                f.pseudonyms[rng.below(f.pseudonyms.len())]
            ))
            .bearer_auth(esp),
        "esp_preview" => http
            .get(format!("{base}/v1/segments/{seg}/preview?limit=20"))
            .bearer_auth(esp),
        "esp_count" => http
            .get(format!("{base}/v1/segments/{seg}/count"))
            .bearer_auth(esp),
        "export" => http
            .get(format!(
                "{base}/v1/segments/{seg}/export?recipient={RECIPIENT}"
            ))
            .bearer_auth(esp),
        "consent" => {
            let half = f.emails.len() / 2;
            let i = half + rng.below(f.emails.len() - half);
            http.post(format!("{base}/v1/consents"))
                .bearer_auth(ingest)
                .json(&consent_body(i, n.is_multiple_of(2)))
        }
        other => unreachable!("no kind {other}"),
    };
    let r = req
        .send()
        .await
        .map_err(|e| (0, format!("transport: {e}")))?;
    let status = r.status().as_u16();
    // The whole body is read: an export's time is the time to stream it.
    let body = r
        .bytes()
        .await
        .map_err(|e| (status, format!("body: {e}")))?;
    if (200..300).contains(&status) {
        return Ok(status);
    }
    let code = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "-".into());
    Err((status, code))
}

/// The closed-loop workers: each a name and the kinds it cycles through.
fn workers_per_kind() -> Vec<(&'static str, &'static [&'static str])> {
    let spec = std::env::var("CONSENTRY_LOAD_WORKERS")
        .unwrap_or_else(|_| "ingest=2,esp=3,export=1,consent=1".into());
    let mut out = Vec::new();
    for part in spec.split(',').filter(|p| !p.is_empty()) {
        let (name, n) = part
            .split_once('=')
            .unwrap_or_else(|| panic!("CONSENTRY_LOAD_WORKERS: {part:?} is not kind=N"));
        let n: usize = n.trim().parse().expect("CONSENTRY_LOAD_WORKERS: a count");
        let worker: (&'static str, &'static [&'static str]) = match name.trim() {
            "ingest" => ("ingest", &["ingest_batch"]),
            // An ESP worker mixes the reads an ESP makes around a send.
            "esp" => (
                "esp",
                &[
                    "esp_pseudonym",
                    "esp_profile",
                    "esp_profile",
                    "esp_preview",
                    "esp_count",
                ],
            ),
            "export" => ("export", &["export"]),
            "consent" => ("consent", &["consent"]),
            other => {
                panic!("CONSENTRY_LOAD_WORKERS: no kind {other:?} (ingest, esp, export, consent)")
            }
        };
        out.extend(std::iter::repeat_n(worker, n));
    }
    out
}

#[tokio::main]
async fn main() {
    let secs = env_u64("CONSENTRY_LOAD_SECS", 30);
    let people = env_u64("CONSENTRY_LOAD_PEOPLE", 2000) as usize;
    let keys = env_u64("CONSENTRY_LOAD_KEYS", 1).max(1) as usize;
    let max_requests = env_u64("CONSENTRY_LOAD_MAX_REQUESTS", 50_000_000);
    let workers = workers_per_kind();
    let backend = if std::env::var("CONSENTRY_LOAD_PG").is_ok() {
        "PostgreSQL"
    } else if std::env::var("CONSENTRY_LOAD_URL").is_ok() {
        "given URL"
    } else {
        "SQLite"
    };

    let gateway = start_gateway().await;
    let rss_start = rss_kib(gateway.pid);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client");
    let t = Instant::now();
    let fixture = Arc::new(provision(&http, &gateway, keys, people).await);
    eprintln!(
        "provisioned {people} people, {keys} key(s) per kind in {:.1} s; driving {} workers for {secs} s",
        t.elapsed().as_secs_f64(),
        workers.len()
    );
    let rss_ready = rss_kib(gateway.pid);

    let sent = Arc::new(AtomicU64::new(0));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for (w, &(_, cycle)) in workers.iter().enumerate() {
        let (http, base, f, sent, tally) = (
            http.clone(),
            gateway.base.clone(),
            fixture.clone(),
            sent.clone(),
            tally.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut mine = Tally::default();
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (w as u64 + 1).wrapping_mul(0xBF58_476D));
            let mut n = 0u64;
            while Instant::now() < end && sent.fetch_add(1, Ordering::Relaxed) < max_requests {
                let kind = cycle[n as usize % cycle.len()];
                let t = Instant::now();
                let result = one(&http, &base, &f, kind, &mut rng, w, n).await;
                let micros = t.elapsed().as_micros() as u64;
                match result {
                    Ok(_) => mine.record(kind, micros),
                    Err((429, _)) => *mine.limited.entry(kind).or_default() += 1,
                    Err((status, code)) => {
                        *mine
                            .failures
                            .entry((kind, format!("{status} {code}")))
                            .or_default() += 1
                    }
                }
                n += 1;
            }
            tally.lock().await.merge(mine);
        }));
    }
    // Memory while it runs: sampled every 10 s.
    let mut rss_samples = Vec::new();
    let mut heap_samples = Vec::new();
    while Instant::now() < end {
        tokio::time::sleep(
            Duration::from_secs(10).min(end.saturating_duration_since(Instant::now())),
        )
        .await;
        if let Some(kib) = rss_kib(gateway.pid) {
            rss_samples.push(kib);
        }
        if let Some(kib) = status_kib(gateway.pid, "RssAnon:") {
            heap_samples.push(kib);
        }
    }
    for t in tasks {
        t.await.expect("worker");
    }
    let elapsed = start.elapsed().as_secs_f64();
    let rss_end = rss_kib(gateway.pid);
    // Heap against mapped files (SQLite maps its database): only the heap is the gateway's.
    let (anon_end, file_end) = (
        status_kib(gateway.pid, "RssAnon:"),
        status_kib(gateway.pid, "RssFile:"),
    );
    let tally = tally.lock().await;
    report(&tally, elapsed, backend, &workers, people, keys);
    let mib = |k: Option<u64>| k.map_or("n/a".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
    println!(
        "\nGateway RSS: {} at start, {} after provisioning, {} at end; during the run min {}, max {} (sampled every 10 s)",
        mib(rss_start),
        mib(rss_ready),
        mib(rss_end),
        mib(rss_samples.iter().min().copied()),
        mib(rss_samples.iter().max().copied()),
    );
    println!(
        "Gateway RSS at end: heap (RssAnon) {}, mapped files (RssFile) {}",
        mib(anon_end),
        mib(file_end)
    );
    let each_minute = |samples: &[u64]| -> Vec<String> {
        samples
            .iter()
            .skip(5)
            .step_by(6)
            .map(|k| format!("{:.0}", *k as f64 / 1024.0))
            .collect()
    };
    let minutes = each_minute(&rss_samples);
    if !minutes.is_empty() {
        println!("RSS at each minute (MiB): {}", minutes.join(", "));
        println!(
            "heap (RssAnon) at each minute (MiB): {}",
            each_minute(&heap_samples).join(", ")
        );
    }
    if rss_samples.len() > 2 {
        let third = rss_samples.len() / 3;
        let avg = |s: &[u64]| s.iter().sum::<u64>() as f64 / s.len() as f64 / 1024.0;
        println!(
            "RSS mean over the first third {:.1} MiB, the last third {:.1} MiB",
            avg(&rss_samples[..third]),
            avg(&rss_samples[rss_samples.len() - third..])
        );
    }
    let failures: u64 = tally.failures.values().sum();
    drop(tally);
    if failures > 0 {
        // The gateway's own account of each failure (codes and error chains, no personal
        // data), before its directory goes.
        if let Some(dir) = gateway.dir.as_ref() {
            let log = std::fs::read_to_string(dir.path().join("gateway.log")).unwrap_or_default();
            for line in log
                .lines()
                .filter(|l| l.contains("request failed"))
                .take(20)
            {
                eprintln!("gateway: {line}");
            }
        }
    }
    let pg_db = gateway.pg_db.clone();
    drop(gateway);
    if let Some((server, name)) = pg_db {
        psql(
            &server,
            &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
        );
    }
    if failures > 0 {
        eprintln!("{failures} request(s) failed");
        std::process::exit(1);
    }
}

fn report(
    tally: &Tally,
    elapsed: f64,
    backend: &str,
    workers: &[(&'static str, &'static [&'static str])],
    people: usize,
    keys: usize,
) {
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for (name, _) in workers {
        *count.entry(name).or_default() += 1;
    }
    println!(
        "Load: {elapsed:.0} s on {backend}, {people} people, {keys} key(s) per kind, workers: {}",
        count
            .iter()
            .map(|(k, n)| format!("{n}× {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!();
    println!(
        "| kind | requests | per second | p50 ms | p99 ms | p99.9 ms | max ms | 429 | other non-2xx |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let ms = |us: u64| format!("{:.1}", us as f64 / 1000.0);
    let mut total = 0u64;
    let mut all: Option<Histogram<u64>> = None;
    for kind in KINDS {
        let Some(h) = tally.hist.get(kind) else {
            continue;
        };
        let failed: u64 = tally
            .failures
            .iter()
            .filter(|((k, _), _)| *k == kind)
            .map(|(_, n)| n)
            .sum();
        total += h.len();
        match all.as_mut() {
            Some(a) => a.add(h).expect("same bounds"),
            None => all = Some(h.clone()),
        }
        let extra = if kind == "ingest_batch" {
            format!(" ({:.0} events/s)", h.len() as f64 * BATCH as f64 / elapsed)
        } else {
            String::new()
        };
        println!(
            "| {kind} | {} | {:.1}{extra} | {} | {} | {} | {} | {} | {failed} |",
            h.len(),
            h.len() as f64 / elapsed,
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.99)),
            ms(h.value_at_quantile(0.999)),
            ms(h.max()),
            tally.limited.get(kind).copied().unwrap_or(0),
        );
    }
    if let Some(a) = all {
        let failed: u64 = tally.failures.values().sum();
        let limited: u64 = tally.limited.values().sum();
        println!(
            "| **all** | {total} | {:.1} | {} | {} | {} | {} | {limited} | {failed} |",
            total as f64 / elapsed,
            ms(a.value_at_quantile(0.5)),
            ms(a.value_at_quantile(0.99)),
            ms(a.value_at_quantile(0.999)),
            ms(a.max()),
        );
    }
    if tally.failures.is_empty() {
        println!("\nNo request failed.");
    } else {
        println!("\nFailures (kind, status, code):");
        for ((kind, what), n) in &tally.failures {
            println!("- {kind}: {what} × {n}");
        }
    }
}
