//! Shared set-up for the benchmarks.
use base64::Engine;
use consentry::config::Settings;
use sea_orm::ConnectionTrait;
use secrecy::SecretString;

/// The allocator the `consentry` binary runs with (src/main.rs), so a benchmark measures
/// the gateway as shipped (and the import's peak memory is the command's).
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Settings for a benchmark gateway in `dir`: a fixed master key, no periodic checkpoint,
/// SQLite `synchronous` from `CONSENTRY_BENCH_SQLITE_SYNC` (`normal` unless `full`).
pub fn settings(dir: &std::path::Path, url: Option<String>) -> Settings {
    let sync = match std::env::var("CONSENTRY_BENCH_SQLITE_SYNC").as_deref() {
        Ok("full") => consentry::store::SqliteSync::Full,
        _ => consentry::store::SqliteSync::Normal,
    };
    Settings {
        sqlite_synchronous: Some(sync),
        listen: "127.0.0.1:0".into(),
        data_dir: dir.to_path_buf(),
        database_url: url.map(SecretString::from),
        master_key: Some(SecretString::from(
            base64::engine::general_purpose::STANDARD.encode([7u8; 32]),
        )),
        checkpoint_interval_secs: 3600,
        ..Settings::default()
    }
}

/// `n` bind placeholders numbered from `first` (`$first, ...` on PostgreSQL, `?` on
/// SQLite), comma-separated: for the baselines' hand-written inserts.
#[allow(dead_code)]
pub fn placeholders(backend: sea_orm::DbBackend, first: usize, n: usize) -> String {
    (first..first + n)
        .map(|k| match backend {
            sea_orm::DbBackend::Postgres => format!("${k}"),
            _ => "?".to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Runs one baseline statement in a write transaction of its own and commits it.
#[allow(dead_code)]
pub async fn commit_statement(db: &consentry::store::Db, sql: &str, values: Vec<sea_orm::Value>) {
    use sea_orm::ConnectionTrait;
    let txn = db.begin_write().await.expect("begin");
    txn.execute_raw(sea_orm::Statement::from_sql_and_values(
        db.backend(),
        sql,
        values,
    ))
    .await
    .expect("insert");
    txn.commit().await.expect("commit");
}

/// The PostgreSQL database `name` next to `base`, created if it is missing (kept between
/// runs); returns its URL.
#[allow(dead_code)]
pub async fn kept_pg(base: &str, name: &str) -> String {
    let db = sea_orm::Database::connect(base)
        .await
        .expect("connect to PostgreSQL");
    // Fails when it exists, which is what it is for.
    let _ = db
        .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
        .await;
    db.close().await.ok();
    let mut url = url::Url::parse(base).expect("url");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// A new, empty PostgreSQL database next to `base`; returns its URL.
#[allow(dead_code)]
pub async fn fresh_pg(base: &str) -> String {
    let name = format!("consentry_bench_{}", uuid::Uuid::new_v4().simple());
    let db = sea_orm::Database::connect(base)
        .await
        .expect("connect to PostgreSQL");
    db.execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
        .await
        .expect("create database");
    db.close().await.ok();
    let mut url = url::Url::parse(base).expect("url");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// Drops a database made by [`fresh_pg`] once its bench is done with it (`FORCE`: the
/// bench's gateway may still hold connections).
#[allow(dead_code)]
pub async fn drop_pg(base: &str, url: &str) {
    let name = url::Url::parse(url)
        .expect("url")
        .path()
        .trim_start_matches('/')
        .to_owned();
    let db = sea_orm::Database::connect(base)
        .await
        .expect("connect to PostgreSQL");
    if let Err(e) = db
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .await
    {
        eprintln!("could not drop {name}: {e}");
    }
    db.close().await.ok();
}

/// A started gateway and an `ingest` key for it. (Every bench compiles this module on its
/// own; those that drive the API directly do not use it.)
#[allow(dead_code)]
pub struct Gateway {
    pub base: String,
    pub key: String,
    pub state: actix_web::web::Data<consentry::startup::AppState>,
}

#[allow(dead_code)]
pub async fn gateway(dir: &std::path::Path, url: Option<String>) -> Gateway {
    let app = consentry::startup::Application::build(settings(dir, url))
        .await
        .expect("app");
    let base = format!("http://127.0.0.1:{}", app.port());
    let admin = app.bootstrap_token().expect("token").to_owned();
    let state = app.state();
    tokio::spawn(app.run_until_stopped());
    let key: serde_json::Value = reqwest::Client::new()
        .post(format!("{base}/v1/keys"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"name": "bench", "role": "ingest"}))
        .send()
        .await
        .expect("key")
        .json()
        .await
        .expect("json");
    let key = key["token"].as_str().expect("token").to_owned();
    Gateway { base, key, state }
}
