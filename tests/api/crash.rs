//! The gateway as a separate process: an erasure killed with SIGKILL at each of its steps
//! resumes after a restart to the same end state as an uninterrupted one, and the log
//! output of every run holds none of the personal data the gateway handled.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};

use crate::helpers::{forms, fresh_database_url, shipped_policies, test_master_key};

pub(crate) struct Gateway {
    pub(crate) child: Child,
    pub(crate) address: String,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `consentry serve` on a free port, its stdout and stderr appended to `log`;
/// `pause` names the crash point it stops at (debug builds only).
async fn start(dir: &Path, db: &str, log: &Path, pause: Option<&str>) -> Gateway {
    let pause = pause.map(|p| ("CONSENTRY_TEST_PAUSE_AT", p.to_owned()));
    start_with(dir, db, log, pause.as_slice()).await
}

/// [`start`] with more environment variables (`CONSENTRY_MODE=production` ...).
pub(crate) async fn start_with(
    dir: &Path,
    db: &str,
    log: &Path,
    extra: &[(&str, String)],
) -> Gateway {
    let out = std::fs::File::create(log).expect("log file");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_consentry"));
    for (k, _) in std::env::vars() {
        if k.starts_with("CONSENTRY_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .env("CONSENTRY_DATA_DIR", dir)
        .env("CONSENTRY_DATABASE_URL", db)
        .env("CONSENTRY_MASTER_KEY", test_master_key())
        .env("CONSENTRY_POLICIES", shipped_policies())
        .env("RUST_LOG", "info,consentry=debug")
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("log file"))
        .stderr(out);
    cmd.envs(extra.iter().map(|(k, v)| (k, v)));
    let child = cmd.spawn().expect("consentry serve starts");
    let mut gateway = Gateway {
        child,
        address: String::new(),
    };
    let line = wait_for_log(log, "consentry listening on ", Some(&mut gateway.child)).await;
    gateway.address = line
        .trim()
        .trim_start_matches("consentry listening on ")
        .to_owned();
    gateway
}

/// The first line of `log` containing `needle`, waiting up to 60 s for it (and failing
/// at once if `child` exits meanwhile).
pub(crate) async fn wait_for_log(
    log: &Path,
    needle: &str,
    mut child: Option<&mut Child>,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains(needle)) {
            return line.to_owned();
        }
        if let Some(child) = child.as_deref_mut() {
            let exited = child.try_wait().expect("child status");
            assert!(exited.is_none(), "the gateway exited ({exited:?}):\n{text}");
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the gateway's log:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) struct Client {
    pub(crate) http: reqwest::Client,
    pub(crate) address: String,
}

impl Client {
    pub(crate) async fn post(&self, path: &str, token: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.address))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    /// A tracking call, authenticated as Segment's clients do (write key as Basic user).
    pub(crate) async fn track(&self, path: &str, key: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.address))
            .basic_auth(key, Some(""))
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub(crate) async fn get(&self, path: &str, token: &str) -> Value {
        let r = self
            .http
            .get(format!("{}{path}", self.address))
            .bearer_auth(token)
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 200, "GET {path}");
        r.json().await.expect("json")
    }

    pub(crate) async fn key(&self, admin: &str, role: &str) -> String {
        let r = self
            .post("/v1/keys", admin, &json!({"name": role, "role": role}))
            .await;
        assert_eq!(r.status(), 201);
        let v: Value = r.json().await.expect("json");
        v["token"].as_str().expect("token").to_owned()
    }
}

const ERASED: [&str; 8] = [
    "erasea.canary@example.org",
    "+442079460111",
    "EraseaFirst",
    "Erasea free text note",
    "Erasea-uid",
    "Erasea-anon",
    "Erasea says hello",
    "EraseaAgent",
];
const KEPT: [&str; 4] = [
    "keepb.canary@example.org",
    "KeepbFirst",
    "Keepb free text note",
    "Keepb-uid",
];

/// Two people, one asking for erasure: returns the request id, verified.
async fn seed(c: &Client, ingest: &str, dpo: &str) -> String {
    for who in ["Erasea", "Keepb"] {
        let email = format!("{}.canary@example.org", who.to_lowercase());
        let phone = if who == "Erasea" {
            "+442079460111"
        } else {
            "+442079460222"
        };
        let r = c
            .track(
                "/v1/identify",
                ingest,
                &json!({"userId": format!("{who}-uid"),
                "anonymousId": format!("{who}-anon"),
                "traits": {"email": email, "first_name": format!("{who}First"),
                    "phone": phone, "notes": format!("{who} free text note")}}),
            )
            .await;
        assert_eq!(r.status(), 200);
        let r = c
            .track("/v1/track", ingest, &json!({"userId": format!("{who}-uid"),
                "event": "Product Reviewed", "properties": {"review": format!("{who} says hello")}}))
            .await;
        assert_eq!(r.status(), 200);
        let r = c
            .post(
                "/v1/consents",
                dpo,
                &json!({"subject": {"email": email},
                "purpose": "email_marketing", "status": "granted", "method": "web_form",
                "source": "shop", "proof": {"user_agent": format!("{who}Agent/1.0")}}),
            )
            .await;
        assert_eq!(r.status(), 201);
        // A look-up by email: the address is in the request's query string.
        let q = url::form_urlencoded::byte_serialize(email.as_bytes()).collect::<String>();
        c.get(&format!("/v1/subjects?email={q}"), dpo).await;
    }
    let r = c
        .post(
            "/v1/dsar",
            dpo,
            &json!({"kind": "erasure", "channel": "email",
            "identifiers": {"email": "erasea.canary@example.org"}}),
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
            &json!({"method": "dpo_attested", "note": "passport seen"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    id
}

/// What an erasure leaves: the request's moves and reasons, and what the database holds.
async fn end_state(c: &Client, dpo: &str, id: &str, db_url: &str) -> Value {
    let v = c.get(&format!("/v1/dsar/{id}"), dpo).await;
    let moves: Vec<Value> = v["transitions"]
        .as_array()
        .expect("transitions")
        .iter()
        .map(|t| json!([t["from"], t["to"], t["reason"]]))
        .collect();
    let db = crate::helpers::connect(db_url, 1).await;
    let mut counts = serde_json::Map::new();
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
            &format!(
                "SELECT COUNT(*) FROM {} WHERE action = 'subject.erase'",
                crate::crash_loss::COMMITTED_ENTRIES
            ),
        ),
    ] {
        let row = db
            .conn()
            .query_one_raw(Statement::from_string(
                db.conn().get_database_backend(),
                sql,
            ))
            .await
            .expect("query")
            .expect("row");
        let n: i64 = row.try_get_by_index(0).expect("count");
        counts.insert(name.into(), json!(n));
    }
    db.close().await.ok();
    json!({"status": v["status"], "moves": moves, "counts": counts})
}

/// `consentry audit verify` against the same data directory and database.
pub(crate) fn audit_verifies(dir: &Path, db: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_consentry"))
        .args(["audit", "verify"])
        .env("CONSENTRY_DATA_DIR", dir)
        .env("CONSENTRY_DATABASE_URL", db)
        .env("CONSENTRY_MASTER_KEY", test_master_key())
        .env("CONSENTRY_POLICIES", shipped_policies())
        .env_remove("CONSENTRY_TEST_DATABASE_URL")
        .output()
        .expect("consentry audit verify runs");
    assert!(
        out.status.success(),
        "audit verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One erasure, killed at `pause` (if any) and restarted; returns its end state and the
/// log files of the run.
async fn erasure(pause: Option<&'static str>) -> (Value, Vec<PathBuf>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = fresh_database_url(dir.path()).await;
    let first_log = dir.path().join("first.log");
    let gateway = start(dir.path(), &db, &first_log, pause).await;
    let admin = std::fs::read_to_string(dir.path().join("admin.token"))
        .expect("bootstrap admin token")
        .trim()
        .to_owned();
    let c = Client {
        http: reqwest::Client::new(),
        address: gateway.address.clone(),
    };
    let ingest = c.key(&admin, "ingest").await;
    let dpo = c.key(&admin, "dpo").await;
    let id = seed(&c, &ingest, &dpo).await;
    let mut logs = vec![first_log.clone()];
    let gateway = match pause {
        None => {
            let r = c
                .post(&format!("/v1/dsar/{id}/execute"), &dpo, &json!({}))
                .await;
            assert_eq!(r.status(), 200);
            gateway
        }
        Some(point) => {
            let call = tokio::spawn({
                let http = c.http.clone();
                let url = format!("{}/v1/dsar/{id}/execute", c.address);
                let dpo = dpo.clone();
                async move {
                    http.post(url)
                        .bearer_auth(dpo)
                        .json(&json!({}))
                        .send()
                        .await
                }
            });
            wait_for_log(&first_log, &format!("consentry: paused at {point}"), None).await;
            drop(gateway); // SIGKILL
            assert!(
                call.await.expect("task").is_err(),
                "the killed gateway answered"
            );
            let second_log = dir.path().join("second.log");
            let gateway = start(dir.path(), &db, &second_log, None).await;
            logs.push(second_log);
            gateway
        }
    };
    let c = Client {
        http: reqwest::Client::new(),
        address: gateway.address.clone(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = c.get(&format!("/v1/dsar/{id}"), &dpo).await;
        if v["status"] == "completed" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the request was not resumed: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The person does not come back.
    let r = c
        .track(
            "/v1/identify",
            &ingest,
            &json!({"userId": "Erasea-uid", "traits": {"email": "erasea.canary@example.org"}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let state = end_state(&c, &dpo, &id, &db).await;
    drop(gateway);
    audit_verifies(dir.path(), &db);
    (state, logs, dir)
}

fn assert_no_personal_data(logs: &[PathBuf]) {
    let first = std::fs::read_to_string(&logs[0]).expect("log");
    assert!(
        first.contains("/v1/consents"),
        "the log holds a line per request:\n{first}"
    );
    for log in logs {
        let text = std::fs::read_to_string(log).expect("log");
        for canary in ERASED.iter().chain(KEPT.iter()) {
            for form in forms(canary) {
                assert!(
                    !text.contains(&form),
                    "{form:?} is in the gateway's log {}",
                    log.display()
                );
            }
        }
    }
}

#[tokio::test]
async fn an_erasure_killed_at_each_step_resumes_to_the_same_end_state() {
    let (expected, logs, _dir) = erasure(None).await;
    assert_eq!(expected["status"], "completed");
    assert_eq!(expected["counts"]["active subjects"], 1, "{expected}");
    assert_eq!(expected["counts"]["erase entries"], 1, "{expected}");
    assert_no_personal_data(&logs);
    for point in [
        "dsar.execute.claimed",
        "dsar.execute.before_commit",
        "dsar.execute.committed",
    ] {
        let (state, logs, _dir) = erasure(Some(point)).await;
        assert_eq!(state, expected, "killed at {point}");
        assert_eq!(logs.len(), 2);
        assert_no_personal_data(&logs);
    }
}
