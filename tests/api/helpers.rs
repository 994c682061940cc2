//! Spawns the real application on port 0 against its own fresh database: a new SQLite
//! file, or a new PostgreSQL database when `CONSENTRY_TEST_DATABASE_URL` is set.
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use base64::Engine;
use consentry::config::Settings;
use consentry::crypto::SharedKeyring;
use consentry::domain::{Clock, Timestamp};
use consentry::startup::Application;
use consentry::store::Db;
use sea_orm::{ConnectionTrait, DbBackend};
use secrecy::SecretString;
use serde_json::{Value, json};

/// A clock the test moves by hand.
#[derive(Debug)]
pub struct TestClock(AtomicI64);

impl TestClock {
    pub fn advance_secs(&self, secs: i64) {
        self.0.fetch_add(secs * 1_000_000, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_unix_micros(self.0.load(Ordering::SeqCst))
    }
}

pub struct TestApp {
    pub address: String,
    pub admin_token: String,
    pub client: reqwest::Client,
    pub db: Db,
    pub keyring: SharedKeyring,
    pub clock: Arc<TestClock>,
    pub state: actix_web::web::Data<consentry::startup::AppState>,
    pub data_dir: tempfile::TempDir,
}

/// Options a test may change before the app starts.
pub struct Options {
    pub checkpoint_every: u64,
    pub token_cache_ttl_secs: u64,
    pub auth_failures_per_minute: u32,
    pub body_limit_bytes: usize,
    /// The policies directory; the shipped set when `None`.
    pub policies: Option<std::path::PathBuf>,
    /// The SMTP relay for verification codes.
    pub smtp_url: Option<String>,
    /// Any other settings, changed last.
    pub tweak: fn(&mut Settings),
}

impl Default for Options {
    fn default() -> Self {
        Self {
            checkpoint_every: 1000,
            token_cache_ttl_secs: 30,
            auth_failures_per_minute: 100_000,
            body_limit_bytes: 1024 * 1024,
            policies: None,
            smtp_url: None,
            tweak: |_| {},
        }
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

/// A handle on the database at `url` with at most `max_connections`, for a test's own reads.
pub async fn connect(url: &str, max_connections: u32) -> Db {
    Db::connect(
        url,
        &consentry::store::DbOptions {
            max_connections,
            sqlite_synchronous: consentry::store::SqliteSync::Normal,
            sqlite_mmap_bytes: consentry::config::DEFAULT_SQLITE_MMAP_MIB * 1024 * 1024,
        },
    )
    .await
    .unwrap_or_else(|e| panic!("connect to the test database: {e}"))
}

pub async fn fresh_database_url(data_dir: &std::path::Path) -> String {
    let Ok(base) = std::env::var("CONSENTRY_TEST_DATABASE_URL") else {
        return format!("sqlite://{}", data_dir.join("consentry.db").display());
    };
    let name = format!("consentry_test_{}", uuid::Uuid::new_v4().simple());
    let admin = connect(&base, 1).await;
    admin
        .conn()
        .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
        .await
        .expect("create test database");
    admin.close().await.ok();
    let mut url = url::Url::parse(&base).expect("CONSENTRY_TEST_DATABASE_URL parses");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

pub async fn spawn_app_with(opts: Options) -> TestApp {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let url = fresh_database_url(data_dir.path()).await;
    let master = test_master_key();
    let mut settings = Settings {
        listen: "127.0.0.1:0".into(),
        data_dir: data_dir.path().to_path_buf(),
        database_url: Some(SecretString::from(url)),
        database_max_connections: 4,
        master_key: Some(SecretString::from(master)),
        checkpoint_every_entries: opts.checkpoint_every,
        checkpoint_interval_secs: 3600,
        token_cache_ttl_secs: opts.token_cache_ttl_secs,
        auth_failures_per_minute: opts.auth_failures_per_minute,
        body_limit_bytes: opts.body_limit_bytes,
        policies: opts.policies.unwrap_or_else(shipped_policies),
        smtp_url: opts.smtp_url.map(SecretString::from),
        ..Settings::default()
    };
    (opts.tweak)(&mut settings);
    let clock = Arc::new(TestClock(AtomicI64::new(
        Timestamp::parse_rfc3339("2026-12-01T10:00:00Z")
            .expect("time")
            .unix_micros(),
    )));
    let app = Application::build_with_clock(settings, clock.clone())
        .await
        .expect("application builds");
    let port = app.port();
    let admin_token = app.bootstrap_token().expect("bootstrap token").to_owned();
    let state = app.state();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        admin_token,
        // Idle connections are dropped before the server's keep-alive (5 s) closes them,
        // so a request never goes out on a socket the server is closing (a reset).
        client: reqwest::Client::builder()
            .pool_idle_timeout(std::time::Duration::from_secs(2))
            .build()
            .expect("client"),
        db: state.db.clone(),
        keyring: state.keyring.clone(),
        clock,
        state,
        data_dir,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut req = self.client.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.expect("request")
    }

    pub async fn get_json(&self, path: &str, token: Option<&str>) -> Value {
        self.get(path, token).await.json().await.expect("json body")
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut req = self.client.delete(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.expect("request")
    }

    /// `POST /oauth/token` with the key id and token as HTTP Basic credentials.
    pub async fn token_request(&self, id: &str, secret: &str) -> reqwest::Response {
        self.client
            .post(self.url("/oauth/token"))
            .basic_auth(id, Some(secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .expect("request")
    }

    /// An access token for the key, which must be accepted.
    pub async fn access_token(&self, id: &str, secret: &str) -> String {
        let resp = self.token_request(id, secret).await;
        assert_eq!(resp.status(), 200, "token for {id}");
        let v: Value = resp.json().await.expect("json");
        v["access_token"].as_str().expect("access_token").to_owned()
    }

    pub async fn post_json(
        &self,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> reqwest::Response {
        let mut req = self.client.post(self.url(path)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.expect("request")
    }

    /// Creates a key through the API and returns (id, token).
    pub async fn create_key(&self, role: &str) -> (String, String) {
        let mut body = json!({"name": format!("{role} key"), "role": role});
        if role == "esp" {
            self.ensure_recipient("acme-esp", "esp", &["marketing.communications.email"])
                .await;
            body["recipient"] = json!("acme-esp");
            body["purposes"] = json!(["marketing.communications.email"]);
        }
        let resp = self
            .post_json("/v1/keys", Some(&self.admin_token), &body)
            .await;
        assert_eq!(resp.status(), 201, "create {role} key");
        let v: Value = resp.json().await.expect("json");
        (
            v["key"]["id"].as_str().expect("id").to_owned(),
            v["token"].as_str().expect("token").to_owned(),
        )
    }

    /// Registers a recipient unless one with that id exists.
    pub async fn ensure_recipient(&self, id: &str, kind: &str, purposes: &[&str]) {
        let url = format!("/v1/recipients/{id}");
        if self.get(&url, Some(&self.admin_token)).await.status() == 200 {
            return;
        }
        let resp = self
            .post_json(
                "/v1/recipients",
                Some(&self.admin_token),
                &json!({"id": id, "name": format!("{id} (test)"), "kind": kind, "purposes": purposes}),
            )
            .await;
        assert!(
            resp.status() == 201 || resp.status() == 409,
            "create recipient {id}: {}",
            resp.status()
        );
    }

    /// An esp key for `recipient` (registered first if needed) and `purposes`.
    pub async fn esp_key(&self, recipient: &str, purposes: &[&str]) -> String {
        self.ensure_recipient(recipient, "esp", purposes).await;
        let resp = self
            .post_json(
                "/v1/keys",
                Some(&self.admin_token),
                &json!({"name": format!("{recipient} esp"), "role": "esp", "recipient": recipient, "purposes": purposes}),
            )
            .await;
        assert_eq!(resp.status(), 201, "create esp key for {recipient}");
        let v: Value = resp.json().await.expect("json");
        v["token"].as_str().expect("token").to_owned()
    }

    /// Sends a tracking call the way Segment's clients do: write key as Basic user name.
    pub async fn track(&self, key: &str, route: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(route))
            .basic_auth(key, Some(""))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// `POST /v1/imports?{query}` with a mapping and a file as multipart parts.
    pub async fn import(
        &self,
        token: &str,
        query: &str,
        mapping: &str,
        file_name: &str,
        file: &str,
    ) -> reqwest::Response {
        let form = reqwest::multipart::Form::new()
            .text("mapping", mapping.to_owned())
            .part(
                "file",
                reqwest::multipart::Part::bytes(file.as_bytes().to_vec())
                    .file_name(file_name.to_owned()),
            );
        self.client
            .post(self.url(&format!("/v1/imports?{query}")))
            .bearer_auth(token)
            .multipart(form)
            .send()
            .await
            .unwrap()
    }

    pub async fn count(&self, table: &str, filter: &str) -> i64 {
        self.scalar_i64(&format!("SELECT COUNT(*) FROM {table} {filter}"))
            .await
    }

    pub async fn active_subjects(&self) -> i64 {
        self.count("subjects", "WHERE status = 'active'").await
    }

    pub fn backend(&self) -> DbBackend {
        self.db.backend()
    }

    pub async fn exec(&self, sql: &str) {
        self.db
            .conn()
            .execute_unprepared(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Places every committed audit entry still pending (as the gateway's sequencer does
    /// within moments), so that a test reading the log's tables sees what was appended.
    pub async fn settle_audit(&self) {
        self.state
            .audit
            .settle(&self.db)
            .await
            .expect("settle the audit log");
    }

    /// A query's one integer; the audit log is settled first when the query reads it.
    pub async fn scalar_i64(&self, sql: &str) -> i64 {
        if sql.contains("audit_") {
            self.settle_audit().await;
        }
        let row = self
            .db
            .conn()
            .query_one_raw(sea_orm::Statement::from_string(
                self.backend(),
                sql.to_owned(),
            ))
            .await
            .expect("query")
            .expect("row");
        row.try_get_by_index::<i64>(0).expect("i64")
    }

    /// A blob literal in this database's SQL dialect.
    pub fn blob(&self, bytes: &[u8]) -> String {
        match self.backend() {
            DbBackend::Postgres => format!("'\\x{}'::bytea", hex::encode(bytes)),
            _ => format!("X'{}'", hex::encode(bytes)),
        }
    }

    pub async fn verify(
        &self,
    ) -> Result<consentry::audit::VerifyReport, consentry::audit::VerifyError> {
        self.settle_audit().await;
        consentry::audit::verify(&self.db, &self.keyring.get()).await
    }
}

/// The master key every test app uses.
/// The policy set shipped in `policies/`.
pub fn shipped_policies() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")
}

pub fn test_master_key() -> String {
    base64::engine::general_purpose::STANDARD.encode([42u8; 32])
}

/// `bytes` gzip-compressed, as clients send `Content-Encoding: gzip` bodies.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).expect("gzip");
    enc.finish().expect("gzip")
}

/// An SQL condition true when any column of the row contains `needle`, as text or bytes.
pub fn contains(app: &TestApp, columns: &[(String, bool)], needle: &str) -> String {
    let conds: Vec<String> = columns
        .iter()
        .map(|(c, is_blob)| match (app.backend(), is_blob) {
            (sea_orm::DbBackend::Postgres, true) => {
                format!("position(convert_to('{needle}', 'UTF8') in {c}) > 0")
            }
            (sea_orm::DbBackend::Postgres, false) => {
                format!("position('{needle}' in CAST({c} AS TEXT)) > 0")
            }
            _ => format!("instr(CAST({c} AS BLOB), CAST('{needle}' AS BLOB)) > 0"),
        })
        .collect();
    format!("({})", conds.join(" OR "))
}

/// Every column of a table, and whether it holds bytes.
pub async fn columns_of(app: &TestApp, table: &str) -> Vec<(String, bool)> {
    let sql = match app.backend() {
        sea_orm::DbBackend::Postgres => format!(
            "SELECT column_name, data_type = 'bytea' FROM information_schema.columns WHERE table_name = '{table}'"
        ),
        _ => format!("SELECT name, type = 'blob' FROM pragma_table_info('{table}')"),
    };
    app.db
        .conn()
        .query_all_raw(sea_orm::Statement::from_string(app.backend(), sql))
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.try_get_by_index::<String>(0).unwrap(),
                r.try_get_by_index::<bool>(1).unwrap(),
            )
        })
        .collect()
}

/// Every table of the schema (read from the database, not listed by hand), but the
/// migrations' own bookkeeping.
pub async fn tables(app: &TestApp) -> Vec<String> {
    let sql = match app.backend() {
        DbBackend::Postgres => {
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
        }
        _ => "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
    };
    app.db
        .conn()
        .query_all_raw(sea_orm::Statement::from_string(
            app.backend(),
            sql.to_owned(),
        ))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.try_get_by_index::<String>(0).unwrap())
        .filter(|t| t != "seaql_migrations")
        .collect()
}

/// A canary as it may appear when leaked: raw, lower-case, base64 and URL-encoded.
pub fn forms(canary: &str) -> Vec<String> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(canary);
    let url = url::form_urlencoded::byte_serialize(canary.as_bytes()).collect::<String>();
    vec![
        canary.to_owned(),
        canary.to_lowercase(),
        b64.trim_end_matches('=').to_owned(),
        url,
    ]
}
