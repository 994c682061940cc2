//! Database faults: a private PostgreSQL cluster (initdb in a temp directory, a free high
//! port; never the machine's shared server) stopped under load, with `pg_ctl stop -m
//! immediate` and then `-m fast`, and started again. While it is down every request is
//! answered 503 `database_unavailable` within a bound and `/readyz` says 503; once it is
//! back the same gateway process serves again by itself, and every event it acknowledged
//! is stored exactly once. Skipped, saying why, where no PostgreSQL binaries are installed.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::crash::{Client, audit_verifies, start_with};
use crate::crash_loss::{Rng, Sender, calls, reconcile};

/// `database_acquire_timeout_secs` of the gateway under test (the default is 5).
const ACQUIRE_SECS: u64 = 2;
/// The longest a request may take while the database is down: the acquire timeout and a
/// margin for a loaded machine.
const DOWN_BOUND: Duration = Duration::from_secs(ACQUIRE_SECS + 3);
/// How long each outage lasts.
const OUTAGE: Duration = Duration::from_secs(4);

/// The newest `initdb` under /usr/lib/postgresql/*/bin, or on the PATH.
fn postgres_bin() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return Some(bin);
    }
    let out = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    path.parent()
        .filter(|_| out.status.success())
        .map(Path::to_path_buf)
}

/// A PostgreSQL cluster of our own, stopped (immediately) when dropped.
struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// Run the server's commands as `postgres`: initdb refuses to run as root.
    as_postgres: bool,
}

impl Cluster {
    fn command(&self, program: &str) -> Command {
        let exe = self.bin.join(program);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let out = self
            .command(program)
            .args(args)
            .output()
            .map_err(|e| format!("{program}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{program} {args:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn init(bin: PathBuf) -> Result<Self, String> {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        if root {
            let out = Command::new("chown")
                .args(["postgres:", &dir.path().display().to_string()])
                .output()
                .map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err(format!(
                    "running as root and there is no postgres user to run initdb as: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
        let port = loop {
            let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
            let port = l.local_addr().map_err(|e| e.to_string())?.port();
            if port > 10_000 {
                break port;
            }
        };
        let cluster = Self {
            dir,
            bin,
            port,
            as_postgres: root,
        };
        let data = cluster.data();
        cluster.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )?;
        cluster.start()?;
        Ok(cluster)
    }

    fn start(&self) -> Result<(), String> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=on",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-w",
                "-t",
                "60",
                "-o",
                &options,
                "start",
            ],
        )
    }

    fn stop(&self, mode: &str) -> Result<(), String> {
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-w", "-t", "60", "-m", mode, "stop"],
        )
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.stop("immediate");
    }
}

/// One answer: when its request was sent and answered (since the test began), what it was.
#[derive(Clone, Debug)]
struct Answer {
    what: &'static str,
    sent: Duration,
    answered: Duration,
    status: u16,
    code: String,
}

fn code(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

type Answers = Arc<Mutex<Vec<Answer>>>;

fn record(
    answers: &Answers,
    t0: Instant,
    what: &'static str,
    status: u16,
    body: &str,
    took: Duration,
) {
    let answered = t0.elapsed();
    answers.lock().expect("answers").push(Answer {
        what,
        sent: answered.saturating_sub(took),
        answered,
        status,
        code: code(body),
    });
}

/// GETs `path` every 100 ms until `stop`, recording each answer.
async fn poll(
    what: &'static str,
    url: String,
    token: Option<String>,
    answers: Answers,
    t0: Instant,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    while !stop.load(Ordering::SeqCst) {
        let mut req = http.get(&url);
        if let Some(t) = &token {
            req = req.bearer_auth(t);
        }
        let began = Instant::now();
        let (status, body) = match req.send().await {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(_) => (0, String::new()),
        };
        record(&answers, t0, what, status, &body, began.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// When one outage's commands ran, since the test began.
struct Outage {
    mode: &'static str,
    stopped: Duration,
    starting: Duration,
    started: Duration,
}

#[tokio::test]
async fn postgres_stopped_under_load_gets_503_and_the_gateway_recovers_without_a_restart() {
    let Some(bin) = postgres_bin() else {
        println!("db_faults: skipped: no initdb under /usr/lib/postgresql/*/bin or on the PATH");
        return;
    };
    let cluster = match Cluster::init(bin) {
        Ok(c) => c,
        Err(e) => {
            println!("db_faults: skipped: cannot start a private PostgreSQL cluster: {e}");
            return;
        }
    };
    let (mut rng, seed) = Rng::from_env();
    let events = crate::crash_loss::setting("CONSENTRY_CRASH_EVENTS", 3_000);
    let home = tempfile::tempdir().expect("temp dir");
    let url = cluster.url();
    let log = home.path().join("serve.log");
    let gateway = start_with(
        home.path(),
        &url,
        &log,
        &[
            ("RUST_LOG", "warn".into()),
            (
                "CONSENTRY_DATABASE_ACQUIRE_TIMEOUT_SECS",
                ACQUIRE_SECS.to_string(),
            ),
        ],
    )
    .await;
    let c = Client {
        http: reqwest::Client::new(),
        address: gateway.address.clone(),
    };
    let admin = std::fs::read_to_string(home.path().join("admin.token"))
        .expect("admin token")
        .trim()
        .to_owned();
    let ingest = c.key(&admin, "ingest").await;
    // Never used before the outage: not in the key cache, so checking it needs the database.
    let unseen = c.key(&admin, "ingest").await;
    let sender = Sender::new(calls(&mut rng, events, "fault"), ingest);
    let answers: Answers = Arc::default();
    let t0 = Instant::now();
    let (_tx, rx) = tokio::sync::watch::channel(gateway.address.clone());
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let answers = answers.clone();
            tokio::spawn(sender.clone().work(rx.clone(), move |status, body, took| {
                record(&answers, t0, "ingest", status, body, took)
            }))
        })
        .collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pollers = [
        ("readyz", "/readyz", None),
        ("keys", "/v1/keys", Some(admin.clone())),
    ]
    .map(|(what, path, token)| {
        tokio::spawn(poll(
            what,
            format!("{}{path}", gateway.address),
            token,
            answers.clone(),
            t0,
            stop.clone(),
        ))
    });
    let mut outages = Vec::new();
    let mut unseen_answers = Vec::new();
    for (n, mode) in ["immediate", "fast"].into_iter().enumerate() {
        let target = events * (n + 1) / 4;
        while sender.acked_events.load(Ordering::SeqCst) < target {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        cluster.stop(mode).expect("pg_ctl stop");
        let stopped = t0.elapsed();
        tokio::time::sleep(OUTAGE / 2).await;
        let began = Instant::now();
        let r = c
            .track(
                "/v1/track",
                &unseen,
                &serde_json::json!({"userId": "u", "event": "E"}),
            )
            .await;
        let took = began.elapsed();
        let status = r.status().as_u16();
        unseen_answers.push((status, code(&r.text().await.unwrap_or_default()), took));
        tokio::time::sleep(OUTAGE / 2).await;
        let starting = t0.elapsed();
        cluster.start().expect("pg_ctl start");
        outages.push(Outage {
            mode,
            stopped,
            starting,
            started: t0.elapsed(),
        });
    }
    for w in workers {
        w.await.expect("worker");
    }
    stop.store(true, Ordering::SeqCst);
    for p in pollers {
        p.await.expect("poller");
    }
    let answers = answers.lock().expect("answers").clone();
    drop(gateway);

    let mut report = Vec::new();
    for (n, o) in outages.iter().enumerate() {
        // Until the next outage began (or 10 s for the last).
        let settled = outages
            .get(n + 1)
            .map_or(o.started + Duration::from_secs(10), |next| next.stopped);
        // Sent and answered while the database was down.
        let down: Vec<&Answer> = answers
            .iter()
            .filter(|a| a.sent >= o.stopped && a.answered <= o.starting)
            .collect();
        for what in ["ingest", "keys", "readyz"] {
            let of: Vec<&&Answer> = down.iter().filter(|a| a.what == what).collect();
            assert!(!of.is_empty(), "no {what} request while down ({})", o.mode);
            let expected = if what == "readyz" {
                "not_ready"
            } else {
                "database_unavailable"
            };
            for a in &of {
                assert!(
                    a.status == 503 && a.code == expected,
                    "{what} while PostgreSQL was down ({}): {a:?}",
                    o.mode
                );
                assert!(
                    a.answered - a.sent <= DOWN_BOUND,
                    "{what} took {:?} while down",
                    a.answered - a.sent
                );
            }
        }
        let slowest = down
            .iter()
            .map(|a| a.answered - a.sent)
            .max()
            .unwrap_or_default();
        // Recovery: the first request of each kind sent after the restart and answered 200.
        let first_ok = |what: &str| {
            answers
                .iter()
                .filter(|a| a.what == what && a.sent >= o.started && a.status == 200)
                .map(|a| a.answered.saturating_sub(o.started))
                .min()
                .expect("served again after the restart")
        };
        let (ready, ingest) = (first_ok("readyz"), first_ok("ingest"));
        // Answers other than 200 to requests sent once PostgreSQL was back (and answered
        // before the next outage).
        let after: Vec<&Answer> = answers
            .iter()
            .filter(|a| a.sent >= o.started && a.status != 200 && a.what != "readyz")
            .filter(|a| a.answered < settled)
            .collect();
        assert!(ready < Duration::from_secs(15) && ingest < Duration::from_secs(15));
        // At most one failure for each connection the pool held when the server went.
        assert!(
            after.len() <= 8,
            "{} failures after the restart: {after:?}",
            after.len()
        );
        report.push(format!(
            "{}: down_s={:.1} answers_while_down={} all_503=true slowest_ms={} \
             readyz_ok_after_ms={} ingest_ok_after_ms={} failed_after_restart={}",
            o.mode,
            (o.starting - o.stopped).as_secs_f64(),
            down.len(),
            slowest.as_millis(),
            ready.as_millis(),
            ingest.as_millis(),
            after.len()
        ));
    }
    for (status, code, took) in &unseen_answers {
        assert!(
            *status == 503 && code == "database_unavailable" && *took <= DOWN_BOUND,
            "a key not in the cache, while down: {status} {code} {took:?}"
        );
    }
    let cut = answers.iter().filter(|a| a.status == 0).count();
    assert_eq!(
        cut, 0,
        "the gateway closed connections or stopped answering"
    );
    let (stored, duplicates, lost) = reconcile(&url, &sender).await;
    let ledger = sender.ledger.lock().expect("ledger");
    println!(
        "db_faults [private postgresql, port {}]: events={events} acknowledged={} stored={stored} \
         duplicates={duplicates} lost={lost} retries={} statuses={:?} | {} | seed={seed}",
        cluster.port,
        ledger.acknowledged.len(),
        ledger.retries,
        ledger.statuses,
        report.join(" | ")
    );
    assert_eq!((lost, duplicates), (0, 0));
    assert_eq!(stored, events);
    audit_verifies(home.path(), &url);
}

/// A transaction PostgreSQL gives up to break a deadlock is told apart from a wrong
/// statement: ingest runs it again (two requests about one person, or ingest and an
/// erasure, lock its rows in different orders). PostgreSQL only: SQLite has one writer.
#[tokio::test]
async fn a_postgresql_deadlock_is_a_conflict_to_run_again() {
    use sea_orm::ConnectionTrait;
    if std::env::var("CONSENTRY_TEST_DATABASE_URL").is_err() {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let url = crate::helpers::fresh_database_url(dir.path()).await;
    let db = crate::helpers::connect(&url, 4).await;
    db.conn()
        .execute_unprepared("CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1), (2)")
        .await
        .expect("table");
    let a = db.begin_write().await.expect("a");
    let b = db.begin_write().await.expect("b");
    a.execute_unprepared("UPDATE t SET id = id WHERE id = 1")
        .await
        .expect("a locks 1");
    b.execute_unprepared("UPDATE t SET id = id WHERE id = 2")
        .await
        .expect("b locks 2");
    let (ra, rb) = tokio::join!(
        a.execute_unprepared("UPDATE t SET id = id WHERE id = 2"),
        b.execute_unprepared("UPDATE t SET id = id WHERE id = 1"),
    );
    let errors: Vec<consentry::store::StoreError> = [ra.err(), rb.err()]
        .into_iter()
        .flatten()
        .map(Into::into)
        .collect();
    assert_eq!(errors.len(), 1, "PostgreSQL aborts one of the two");
    assert!(errors[0].is_transaction_conflict(), "{}", errors[0]);
    drop((a, b));
    let duplicate = db
        .conn()
        .execute_unprepared("INSERT INTO t VALUES (1)")
        .await
        .expect_err("a duplicate key");
    assert!(!consentry::store::StoreError::from(duplicate).is_transaction_conflict());
}
