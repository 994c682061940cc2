//! Settings: built-in defaults, then a TOML file (`--config FILE`, or `./consentry.toml`
//! when present), then `CONSENTRY_*` environment variables, then command-line flags.
//! Secrets are `SecretString`: they never appear in `Debug` output or logs.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::store::{Db, SqliteSync};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Development,
    Production,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub mode: Mode,
    /// `host:port` to listen on.
    pub listen: String,
    pub data_dir: PathBuf,
    pub policies: PathBuf,
    /// `sqlite://PATH` or `postgres://...`; default `sqlite://DATA_DIR/consentry.db`.
    #[serde(serialize_with = "ser_secret_opt")]
    pub database_url: Option<SecretString>,
    pub database_max_connections: u32,
    /// How long a request waits for a database connection (the database down, or every
    /// connection busy) before it is answered 503 `database_unavailable`.
    pub database_acquire_timeout_secs: u64,
    /// SQLite `synchronous`; default `normal` in development, `full` in production.
    pub sqlite_synchronous: Option<SqliteSync>,
    /// How much of the SQLite file is read through a memory map, in MiB (0: none);
    /// default 256, and 0 for `consentry import`, which mostly writes.
    pub sqlite_mmap_mib: Option<u64>,
    /// Base64 of 32 random bytes.
    #[serde(serialize_with = "ser_secret_opt")]
    pub master_key: Option<SecretString>,
    /// A file holding the base64 master key (for secrets mounted as files).
    pub master_key_file: Option<PathBuf>,
    pub log_format: LogFormat,
    pub body_limit_bytes: usize,
    /// How long a double opt-in confirmation link stays valid.
    pub double_opt_in_ttl_secs: u64,
    /// How long a completed access or portability request's package can be downloaded.
    pub dsar_package_ttl_secs: u64,
    /// How long an email verification code of a data-subject request is valid.
    pub dsar_code_ttl_secs: u64,
    /// How often the retention sweeper runs in `serve` (0: never; run `consentry
    /// retention` instead).
    pub retention_sweep_interval_secs: u64,
    /// The SMTP relay verification codes go through: `smtp://host:25`,
    /// `smtp://user:pass@host:587?tls=required` (STARTTLS) or `smtps://...:465`.
    #[serde(serialize_with = "ser_secret_opt")]
    pub smtp_url: Option<SecretString>,
    /// The sender of those messages.
    pub smtp_from: String,
    /// The controller named in the record of processing activities.
    pub controller_name: String,
    /// The largest file `POST /v1/imports` accepts (it is spooled to the data directory).
    pub import_max_bytes: u64,
    /// How long a verified API key stays cached; also the bound on revocation delay.
    pub token_cache_ttl_secs: u64,
    pub token_cache_capacity: usize,
    /// Lifetime of OAuth access tokens.
    pub access_token_ttl_secs: u64,
    /// Failed authentications allowed per client address per minute before 429.
    pub auth_failures_per_minute: u32,
    /// A signed checkpoint every this many entries ...
    pub checkpoint_every_entries: u64,
    /// ... or after this many seconds with new entries.
    pub checkpoint_interval_secs: u64,
    /// The checkpoint origin line (C2SP tlog-checkpoint), unique to this log.
    pub audit_origin: String,
    /// How often a node checks for a policy set published by another node; the bound on
    /// how long a reload takes to reach every node.
    pub policy_sync_interval_secs: u64,
    /// Set when a reverse proxy terminates TLS in front of a public listener.
    pub tls_terminated_upstream: bool,
    /// A cart untouched this long (seconds) is marked abandoned.
    pub cart_abandonment_quiet_secs: u64,
    /// An export that made no progress for this long (seconds; its process died or its
    /// client stopped reading) is marked interrupted.
    pub export_stale_secs: u64,
    /// How often `serve` recomputes RFM, retrains the propensity model and the
    /// recommendation models (seconds); 0: only on demand.
    pub scores_interval_secs: u64,
    /// The gateway's public base URL, for links in messages (one-click unsubscribe);
    /// unset: `http://` and the listen address.
    pub public_url: Option<String>,
    /// The mailbox of the `mailto:` unsubscribe link.
    pub unsubscribe_mailto: String,
    /// How long an unsubscribe link works (seconds).
    pub unsubscribe_ttl_secs: u64,
    /// Abuse limits, per key per minute (0: unlimited): audience exports and campaign
    /// message streams ...
    pub rate_limit_exports_per_minute: u32,
    /// ... template renders ...
    pub rate_limit_renders_per_minute: u32,
    /// ... access tokens issued ...
    pub rate_limit_tokens_per_minute: u32,
    /// ... and data-subject requests filed.
    pub rate_limit_dsar_per_minute: u32,
    /// Streamed responses (exports, campaign messages) in flight on this node ...
    pub max_concurrent_streams: usize,
    /// ... and per key.
    pub max_concurrent_streams_per_key: usize,
    /// How long a client may take to send a request's head (ms; 408 and closed after).
    pub client_request_timeout_ms: u64,
    /// How long a closing connection may take to shut down (ms).
    pub client_disconnect_timeout_ms: u64,
    /// How long an idle keep-alive connection stays open (seconds; 0: no keep-alive).
    pub keep_alive_secs: u64,
    /// The largest request head (names, values and separators of every header) accepted;
    /// larger gets 431 and the connection is closed.
    pub max_header_bytes: usize,
    /// How long a client may take to send a JSON or tracking body in full, and the longest
    /// pause in a catalogue or import upload (seconds; 408 and closed after).
    pub body_read_timeout_secs: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            mode: Mode::Development,
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./data"),
            policies: PathBuf::from("./policies"),
            database_url: None,
            database_max_connections: 8,
            database_acquire_timeout_secs: 5,
            sqlite_synchronous: None,
            sqlite_mmap_mib: None,
            master_key: None,
            master_key_file: None,
            log_format: LogFormat::Text,
            body_limit_bytes: 1024 * 1024,
            import_max_bytes: 1 << 30,
            controller_name: String::new(),
            double_opt_in_ttl_secs: 72 * 3600,
            dsar_package_ttl_secs: 7 * 86_400,
            dsar_code_ttl_secs: 15 * 60,
            retention_sweep_interval_secs: 86_400,
            smtp_url: None,
            smtp_from: "Privacy <privacy@localhost>".into(),
            token_cache_ttl_secs: 30,
            token_cache_capacity: 10_000,
            access_token_ttl_secs: 900,
            auth_failures_per_minute: 20,
            checkpoint_every_entries: 1000,
            checkpoint_interval_secs: 60,
            audit_origin: "consentry.local/audit".into(),
            policy_sync_interval_secs: 5,
            tls_terminated_upstream: false,
            cart_abandonment_quiet_secs: 3600,
            export_stale_secs: 600,
            scores_interval_secs: 86_400,
            public_url: None,
            unsubscribe_mailto: "unsubscribe@localhost".into(),
            unsubscribe_ttl_secs: 90 * 86_400,
            rate_limit_exports_per_minute: 30,
            rate_limit_renders_per_minute: 600,
            rate_limit_tokens_per_minute: 60,
            rate_limit_dsar_per_minute: 60,
            max_concurrent_streams: 16,
            max_concurrent_streams_per_key: 4,
            client_request_timeout_ms: 5_000,
            client_disconnect_timeout_ms: 1_000,
            keep_alive_secs: 5,
            max_header_bytes: 16 * 1024,
            body_read_timeout_secs: 30,
        }
    }
}

fn ser_secret_opt<S: serde::Serializer>(v: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(secret) => s.serialize_some(secret.expose_secret()),
        None => s.serialize_none(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Invalid(String),
}

/// `CONSENTRY_*` variables that configure the test harness, not the gateway.
const TEST_HARNESS_VARS: &[&str] = &[
    "test_database_url",
    "test_pause_at",
    "crash_events",
    "crash_kills",
    "crash_seed",
    "crash_export_members",
];

/// Command-line overrides; `None` leaves the lower layers alone.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub policies: Option<PathBuf>,
}

impl Settings {
    /// The controller's name as packages and receipts show it.
    pub fn controller(&self) -> &str {
        if self.controller_name.is_empty() {
            "(controller_name not configured)"
        } else {
            &self.controller_name
        }
    }

    /// Loads the layered settings and checks them.
    pub fn load(overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        match &overrides.config_file {
            Some(file) => {
                if !file.exists() {
                    return Err(ConfigError::Invalid(format!(
                        "config file {} does not exist",
                        file.display()
                    )));
                }
                figment = figment.merge(Toml::file_exact(file));
            }
            None if Path::new("consentry.toml").exists() => {
                figment = figment.merge(Toml::file_exact("consentry.toml"));
            }
            None => {}
        }
        figment = figment.merge(Env::prefixed("CONSENTRY_").ignore(TEST_HARNESS_VARS));
        let mut settings: Settings = figment
            .extract()
            .map_err(|e| ConfigError::Invalid(one_line(&e.to_string())))?;
        if let Some(v) = &overrides.listen {
            settings.listen = v.clone();
        }
        if let Some(v) = &overrides.data_dir {
            settings.data_dir = v.clone();
        }
        if let Some(v) = &overrides.policies {
            settings.policies = v.clone();
        }
        settings.validate()?;
        Ok(settings)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        if let Some(url) = &self.database_url {
            crate::store::check_url(url.expose_secret()).map_err(ConfigError::Invalid)?;
        }
        if self.body_limit_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "body_limit_bytes must be at least 1024".into(),
            ));
        }
        if self.checkpoint_every_entries == 0 {
            return Err(ConfigError::Invalid(
                "checkpoint_every_entries must be at least 1".into(),
            ));
        }
        if self.audit_origin.trim().is_empty() || self.audit_origin.contains('\n') {
            return Err(ConfigError::Invalid(
                "audit_origin must be one non-empty line".into(),
            ));
        }
        if self.database_acquire_timeout_secs == 0 {
            return Err(ConfigError::Invalid(
                "database_acquire_timeout_secs must be at least 1".into(),
            ));
        }
        if self.max_concurrent_streams == 0 || self.max_concurrent_streams_per_key == 0 {
            return Err(ConfigError::Invalid(
                "max_concurrent_streams and max_concurrent_streams_per_key must be at least 1"
                    .into(),
            ));
        }
        if self.max_header_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "max_header_bytes must be at least 1024".into(),
            ));
        }
        if self.client_request_timeout_ms == 0 || self.body_read_timeout_secs == 0 {
            return Err(ConfigError::Invalid(
                "client_request_timeout_ms and body_read_timeout_secs must be at least 1".into(),
            ));
        }
        if self.database_max_connections == 0 {
            return Err(ConfigError::Invalid(
                "database_max_connections must be at least 1".into(),
            ));
        }
        Ok(())
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|_| {
            ConfigError::Invalid(format!(
                "listen must be host:port with an IP host, e.g. 127.0.0.1:8080 (got `{}`)",
                self.listen.chars().take(64).collect::<String>()
            ))
        })
    }

    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.expose_secret().to_owned(),
            None => Db::default_sqlite_url(&self.data_dir),
        }
    }

    pub fn is_sqlite(&self) -> bool {
        self.database_url().starts_with("sqlite:")
    }

    pub fn effective_sqlite_sync(&self) -> SqliteSync {
        match (self.sqlite_synchronous, self.mode) {
            (Some(s), _) => s,
            (None, Mode::Production) => SqliteSync::Full,
            (None, Mode::Development) => SqliteSync::Normal,
        }
    }

    /// The SQLite memory map's size in bytes.
    pub fn effective_sqlite_mmap_bytes(&self) -> u64 {
        self.sqlite_mmap_mib
            .unwrap_or(DEFAULT_SQLITE_MMAP_MIB)
            .saturating_mul(1024 * 1024)
    }

    /// These settings as `consentry import` uses them: without a memory map unless one
    /// is configured. An import mostly writes; a map would only add the pages it reads
    /// back (identifier look-ups) to the process's RSS, up to its size.
    pub fn for_import(mut self) -> Self {
        self.sqlite_mmap_mib.get_or_insert(0);
        self
    }
}

/// The memory map SQLite reads its file through by default, in MiB.
pub const DEFAULT_SQLITE_MMAP_MIB: u64 = 256;

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_secrets() {
        let s = Settings {
            master_key: Some(SecretString::from("c2VjcmV0LW1hc3Rlci1rZXk=")),
            database_url: Some(SecretString::from("postgres://u:hunter2@db/x")),
            ..Settings::default()
        };
        let text = format!("{s:?}");
        assert!(!text.contains("c2VjcmV0"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn abuse_limits_are_read_from_the_config_file_and_bad_bounds_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("consentry.toml");
        std::fs::write(
            &file,
            "rate_limit_exports_per_minute = 0\nmax_concurrent_streams = 2\nmax_header_bytes = 8192\n",
        )
        .unwrap();
        let s = Settings::load(&Overrides {
            config_file: Some(file.clone()),
            ..Overrides::default()
        })
        .unwrap();
        assert_eq!(s.rate_limit_exports_per_minute, 0);
        assert_eq!(s.max_concurrent_streams, 2);
        assert_eq!(s.max_header_bytes, 8192);
        assert_eq!(s.rate_limit_renders_per_minute, 600, "the default");
        std::fs::write(&file, "max_concurrent_streams_per_key = 0\n").unwrap();
        let err = Settings::load(&Overrides {
            config_file: Some(file),
            ..Overrides::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("max_concurrent_streams"), "{err}");
    }

    #[test]
    fn production_defaults_sqlite_to_full_sync() {
        let s = Settings {
            mode: Mode::Production,
            ..Settings::default()
        };
        assert_eq!(s.effective_sqlite_sync(), SqliteSync::Full);
        assert_eq!(
            Settings::default().effective_sqlite_sync(),
            SqliteSync::Normal
        );
    }

    #[test]
    fn an_import_maps_no_sqlite_file_unless_told_to() {
        assert_eq!(
            Settings::default().effective_sqlite_mmap_bytes(),
            256 * 1024 * 1024
        );
        assert_eq!(
            Settings::default()
                .for_import()
                .effective_sqlite_mmap_bytes(),
            0
        );
        let told = Settings {
            sqlite_mmap_mib: Some(64),
            ..Settings::default()
        };
        assert_eq!(told.for_import().effective_sqlite_mmap_bytes(), 64 << 20);
    }
}
