//! Building the application: storage, keyring, audit log, authentication, HTTP server.
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use metrics_exporter_prometheus::PrometheusHandle;
use tracing_actix_web::TracingLogger;

use crate::admin;
use crate::audit::AuditLog;
use crate::auth::Authenticator;
use crate::config::{Mode, Settings};
use crate::crypto::{Keyring, MasterKey, MasterKeySource, SharedKeyring};
use crate::domain::{Clock, SystemClock};
use crate::http;
use crate::policy::{Policies, SharedPolicies};
use crate::store::{Db, DbOptions, SqliteSync};

/// Everything a request handler may reach.
#[derive(Debug)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub db: Db,
    pub audit: AuditLog,
    pub auth: Authenticator,
    pub keyring: SharedKeyring,
    pub master: Arc<MasterKey>,
    pub policies: SharedPolicies,
    pub clock: Arc<dyn Clock>,
    pub metrics: PrometheusHandle,
    /// The SMTP relay for verification codes, when `smtp_url` is set.
    pub mailer: Option<Arc<crate::subject_requests::codes::Mailer>>,
    /// Per-key rate limits on expensive routes and the bound on streams in flight.
    pub limits: crate::limits::Limits,
    /// The group-commit writer of consent records.
    pub consents: crate::consent::writer::Writer,
}

impl AppState {
    /// Loads the keyring again from the database and puts it in force.
    pub async fn reload_keyring(&self) -> Result<Arc<Keyring>, crate::crypto::KeyringError> {
        self.keyring
            .replace(Keyring::load(self.db.conn(), &self.master).await?);
        Ok(self.keyring.get())
    }

    /// The keyring, reloaded first when it has no key for `recipient` yet (a recipient
    /// created on another node since this one last loaded it).
    pub async fn keyring_for(
        &self,
        recipient: &str,
    ) -> Result<Arc<Keyring>, crate::crypto::KeyringError> {
        let keyring = self.keyring.get();
        if keyring.recipient_versions(recipient).is_empty() {
            return self.reload_keyring().await;
        }
        Ok(keyring)
    }
}

/// The services a command needs: storage migrated, keyring loaded, audit log ready.
pub struct Core {
    pub settings: Arc<Settings>,
    pub db: Db,
    pub master: Arc<MasterKey>,
    pub master_source: MasterKeySource,
    pub keyring: SharedKeyring,
    pub audit: AuditLog,
    pub policies: SharedPolicies,
    pub clock: Arc<dyn Clock>,
}

impl Core {
    /// Places the audit entries this process appended (and any other committed pending
    /// ones), then closes the database.
    pub async fn close(self) -> anyhow::Result<()> {
        self.audit.settle(&self.db).await?;
        self.db.close().await?;
        Ok(())
    }

    pub async fn open(settings: Settings, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let settings = Arc::new(settings);
        let policies = Policies::load(&settings.policies).map_err(|e| {
            let problems: Vec<String> = e.0.iter().map(ToString::to_string).collect();
            anyhow::anyhow!(
                "the policies in {} are invalid: {}",
                settings.policies.display(),
                problems.join("; ")
            )
        })?;
        if settings.mode == Mode::Production
            && settings.is_sqlite()
            && settings.effective_sqlite_sync() != SqliteSync::Full
        {
            anyhow::bail!("production mode requires sqlite_synchronous = \"full\"");
        }
        std::fs::create_dir_all(&settings.data_dir).map_err(|e| {
            anyhow::anyhow!(
                "cannot create data directory {}: {e}",
                settings.data_dir.display()
            )
        })?;
        let db = Db::connect_timed(
            &settings.database_url(),
            &DbOptions {
                max_connections: settings.database_max_connections,
                sqlite_synchronous: settings.effective_sqlite_sync(),
                sqlite_mmap_bytes: settings.effective_sqlite_mmap_bytes(),
            },
            Duration::from_secs(settings.database_acquire_timeout_secs),
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot open the database: {e}"))?;
        db.migrate()
            .await
            .map_err(|e| anyhow::anyhow!("cannot migrate the database: {e}"))?;
        let (master, master_source) = MasterKey::load(&settings)?;
        if settings.mode == Mode::Production
            && matches!(master_source, MasterKeySource::GeneratedEarlier(_))
        {
            anyhow::bail!(
                "production mode refuses the generated development master key: set CONSENTRY_MASTER_KEY or master_key_file"
            );
        }
        let keyring = admin::ensure_keyring(&db, &master, clock.now()).await?;
        let keyring = SharedKeyring::new(keyring);
        let audit = AuditLog::new(
            keyring.clone(),
            Arc::clone(&clock),
            settings.audit_origin.clone(),
            settings.checkpoint_every_entries,
        );
        Ok(Self {
            settings,
            db,
            master: Arc::new(master),
            master_source,
            keyring,
            audit,
            policies: SharedPolicies::new(policies),
            clock,
        })
    }
}

impl Core {
    /// Brings stored traits in line with the taxonomy in force; returns how many changed.
    pub async fn reclassify(&self) -> anyhow::Result<u64> {
        let policies = self.policies.get();
        Ok(crate::profiles::reclassify::reclassify(
            &self.db,
            &self.master,
            &policies.taxonomy,
            &self.audit,
        )
        .await?)
    }
}

pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
    bootstrap_token: Option<String>,
    master_source: MasterKeySource,
    /// This node's audit sequencer (running from the build on).
    sequencer: tokio::task::JoinHandle<()>,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    pub async fn build_with_clock(
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let addr = settings.listen_addr()?;
        let core = Core::open(settings, clock).await?;
        if !addr.ip().is_loopback() && !core.settings.tls_terminated_upstream {
            tracing::warn!(
                listen = %addr,
                "listening on a non-loopback address without TLS termination configured; put a TLS proxy in front and set tls_terminated_upstream = true"
            );
        }
        let bootstrap_token = admin::bootstrap_admin(
            &core.db,
            &core.audit,
            &core.settings.data_dir,
            core.clock.now(),
        )
        .await?;
        // Traits stored before the taxonomy in force classified them.
        let n = core.reclassify().await?;
        if n > 0 {
            tracing::info!(
                traits = n,
                "stored traits reclassified by the taxonomy in force"
            );
        }
        // The directory's set is the latest for every node (a start is a reload).
        let generation =
            crate::policy::reload::publish_at_start(&core.db, &core.policies, core.clock.now())
                .await?;
        tracing::info!(summary = %core.policies.get().summary(), generation, "policies loaded");
        // Sign what the log holds now (entries written by the CLI or before a restart), so a
        // checkpoint exists from the first request on.
        core.audit.checkpoint_if_behind(&core.db).await?;
        let sequencer = core.audit.start_sequencer(core.db.clone());
        let mailer = match &core.settings.smtp_url {
            Some(url) => Some(Arc::new(
                crate::subject_requests::codes::Mailer::new(
                    secrecy::ExposeSecret::expose_secret(url),
                    &core.settings.smtp_from,
                )
                .map_err(anyhow::Error::msg)?,
            )),
            None => None,
        };
        let auth = Authenticator::new(
            core.db.clone(),
            core.keyring.clone(),
            Arc::clone(&core.clock),
            Duration::from_secs(core.settings.token_cache_ttl_secs),
            core.settings.token_cache_capacity,
            core.settings.access_token_ttl_secs,
            core.settings.auth_failures_per_minute,
        )?;
        let consents = crate::consent::writer::Writer::start(core.db.clone(), core.audit.clone());
        let state = web::Data::new(AppState {
            settings: Arc::clone(&core.settings),
            db: core.db,
            audit: core.audit,
            auth,
            keyring: core.keyring,
            master: core.master,
            policies: core.policies,
            clock: core.clock,
            metrics: crate::telemetry::metrics_handle(),
            mailer,
            limits: crate::limits::Limits::new(&core.settings),
            consents,
        });
        let listener =
            TcpListener::bind(addr).map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
        let port = listener.local_addr()?.port();
        let server_state = state.clone();
        let settings = Arc::clone(&state.settings);
        let server = HttpServer::new(move || {
            App::new()
                .app_data(server_state.clone())
                .wrap(from_fn(http::header_limit))
                .wrap(from_fn(http::json_errors))
                .wrap(from_fn(http::metrics_middleware))
                .wrap(from_fn(http::request_id_header))
                .wrap(TracingLogger::<http::RootSpan>::new())
                .configure(http::configure)
                .default_service(web::to(http::not_found))
        })
        // Slow clients: a head not in within the request timeout gets 408 and is closed; an
        // idle keep-alive connection is closed after `keep_alive_secs`. A trickled body is
        // bounded by the extractors (`body_read_timeout_secs`).
        .client_request_timeout(Duration::from_millis(settings.client_request_timeout_ms))
        .client_disconnect_timeout(Duration::from_millis(settings.client_disconnect_timeout_ms))
        .keep_alive(match settings.keep_alive_secs {
            0 => actix_web::http::KeepAlive::Disabled,
            secs => actix_web::http::KeepAlive::Timeout(Duration::from_secs(secs)),
        })
        .listen(listener)?
        .shutdown_timeout(30)
        .run();
        Ok(Self {
            port,
            server,
            state,
            bootstrap_token,
            master_source: core.master_source,
            sequencer,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The admin token created on this start, if the database was empty.
    pub fn bootstrap_token(&self) -> Option<&str> {
        self.bootstrap_token.as_deref()
    }

    pub fn master_key_source(&self) -> &MasterKeySource {
        &self.master_source
    }

    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    /// Serves until SIGTERM/SIGINT, then finishes in-flight requests (up to 30 s).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let maintenance = tokio::spawn(maintain(self.state.clone()));
        let result = self.server.await;
        maintenance.abort();
        // What the last requests appended is placed before the process ends.
        if let Err(e) = self.state.audit.settle(&self.state.db).await {
            tracing::warn!(error = %e, "placing the last audit entries failed; the next start places them");
        }
        self.sequencer.abort();
        result
    }
}

/// Periodic work: policy reload on SIGHUP, the policy set published by another node put in
/// force, a checkpoint when entries are waiting, keyring reloads (rotations made by other
/// nodes or the CLI), the cart-abandonment sweep, metric upkeep.
async fn maintain(state: web::Data<AppState>) {
    let every = Duration::from_secs(state.settings.checkpoint_interval_secs.max(1));
    let start = tokio::time::Instant::now();
    let mut checkpoint_tick = tokio::time::interval_at(start + every, every);
    let minute = Duration::from_secs(60);
    let mut keyring_tick = tokio::time::interval_at(start + minute, minute);
    let mut upkeep_tick = tokio::time::interval(Duration::from_secs(5));
    let policy_every = Duration::from_secs(state.settings.policy_sync_interval_secs.max(1));
    let mut policy_tick = tokio::time::interval_at(start + policy_every, policy_every);
    let mut cart_tick = tokio::time::interval_at(start + minute, minute);
    let mut notice_tick = tokio::time::interval(Duration::from_secs(5));
    // At start (the first tick is immediate) and then every minute.
    let mut resume_tick = tokio::time::interval(minute);
    // A stalled export is recorded as interrupted within twice `export_stale_secs` (and
    // at most a minute late), not only at the next minute.
    let export_every = Duration::from_secs(state.settings.export_stale_secs.clamp(1, 60));
    let mut export_tick = tokio::time::interval(export_every);
    let sweep_every = Duration::from_secs(state.settings.retention_sweep_interval_secs.max(1));
    let mut sweep_tick = tokio::time::interval_at(start + sweep_every, sweep_every);
    let scores_every = Duration::from_secs(state.settings.scores_interval_secs.max(1));
    let mut scores_tick = tokio::time::interval_at(start + scores_every, scores_every);
    let webhooks = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default();
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; reload policies with POST /v1/policies/reload");
            None
        }
    };
    loop {
        tokio::select! {
            Some(()) = async {
                match hangup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                let run = crate::policy::reload::Reload {
                    db: &state.db,
                    master: &state.master,
                    audit: &state.audit,
                    shared: &state.policies,
                    actor: crate::domain::Actor::system(),
                    request_id: None,
                    now: state.clock.now(),
                };
                if let Err(e) = run.run().await {
                    tracing::error!(error = %e, "SIGHUP: the policies were not reloaded; the old set stays in force");
                }
            }
            _ = checkpoint_tick.tick() => {
                if let Err(e) = state.audit.checkpoint_if_behind(&state.db).await {
                    tracing::warn!(error = %e, "periodic checkpoint failed");
                }
            }
            _ = cart_tick.tick() => {
                let quiet = i64::try_from(state.settings.cart_abandonment_quiet_secs).unwrap_or(i64::MAX);
                if let Err(e) = crate::profiles::ingest::sweep_abandoned_carts(
                    &state.db, &state.audit, state.clock.now(), quiet).await
                {
                    tracing::warn!(error = %e, "cart abandonment sweep failed");
                }
            }
            _ = keyring_tick.tick() => {
                match Keyring::load(state.db.conn(), &state.master).await {
                    Ok(k) => state.keyring.replace(k),
                    Err(e) => tracing::warn!(error = %e, "keyring reload failed"),
                }
            }
            _ = upkeep_tick.tick() => {
                state.metrics.run_upkeep();
                state.limits.forget_idle_keys();
            }
            _ = policy_tick.tick() => {
                if let Err(e) = crate::policy::reload::sync(
                    &state.db, &state.master, &state.audit, &state.policies).await
                {
                    tracing::warn!(error = %e, "checking for a policy set published by another node failed");
                }
            }
            _ = sweep_tick.tick(), if state.settings.retention_sweep_interval_secs > 0 => {
                let policies = state.policies.get();
                let sweeper = crate::subject_requests::retention::Sweeper {
                    db: &state.db,
                    audit: &state.audit,
                    policies: &policies,
                    actor: crate::domain::Actor::system(),
                    now: state.clock.now(),
                };
                match sweeper.sweep(false).await {
                    Ok(r) => tracing::info!(events = r.events, traits = r.traits, "retention sweep"),
                    Err(e) => tracing::warn!(error = %e, "retention sweep failed"),
                }
            }
            _ = scores_tick.tick(), if state.settings.scores_interval_secs > 0 => {
                let policies = state.policies.get();
                match crate::scores::compute_all(&state.db, &state.audit, &policies,
                    crate::domain::Actor::system(), state.clock.now()).await
                {
                    Ok(r) => tracing::info!(rfm = r.rfm.scored,
                        auc = r.propensity.as_ref().map(|p| p.auc),
                        "scores recomputed"),
                    Err(e) => tracing::warn!(error = %e, "recomputing scores failed"),
                }
                match crate::policy::recommendations::train_all(&state.db, &state.audit,
                    &policies, crate::domain::Actor::system(), state.clock.now()).await
                {
                    Ok(r) => tracing::info!(models = r.len(), "recommendation models trained"),
                    Err(e) => tracing::warn!(error = %e, "training recommendation models failed"),
                }
            }
            _ = resume_tick.tick() => {
                if let Err(e) = resume_requests(&state).await {
                    tracing::warn!(error = %e, "resuming interrupted data-subject requests failed");
                }
            }
            _ = export_tick.tick() => {
                if let Err(e) = interrupt_stale_exports(&state).await {
                    tracing::warn!(error = %e, "recording stalled exports as interrupted failed");
                }
            }
            _ = notice_tick.tick() => {
                let outbox = crate::subject_requests::notices::Outbox {
                    db: &state.db,
                    master: &state.master,
                    audit: &state.audit,
                    client: &webhooks,
                    now: state.clock.now(),
                };
                if let Err(e) = outbox.deliver_due().await {
                    tracing::warn!(error = %e, "recipient notice delivery failed");
                }
            }
        }
    }
}

/// Exports whose producer died (or whose client stopped reading) for longer than
/// `export_stale_secs`, recorded as interrupted with their audit entries.
pub async fn interrupt_stale_exports(
    state: &AppState,
) -> Result<usize, crate::policy::gate::GateError> {
    let keyring = state.keyring.get();
    let now = state.clock.now();
    let gate = crate::policy::gate::Gate {
        db: &state.db,
        master: &state.master,
        keyring: &keyring,
        audit: &state.audit,
        actor: crate::domain::Actor::system(),
        request_id: None,
        now,
    };
    let stale = i64::try_from(state.settings.export_stale_secs.saturating_mul(1_000_000))
        .unwrap_or(i64::MAX);
    gate.interrupt_stale_exports(now.unix_micros().saturating_sub(stale))
        .await
}

/// Data-subject requests a crash left `in_progress`, run to their end.
async fn resume_requests(
    state: &AppState,
) -> Result<usize, crate::subject_requests::requests::RequestError> {
    let keyring = state.keyring.get();
    let policies = state.policies.get();
    let executor = crate::subject_requests::execute::Executor::new(
        crate::subject_requests::requests::Requests {
            db: &state.db,
            keyring: &keyring,
            audit: &state.audit,
            policies: &policies,
            actor: crate::domain::Actor::system(),
            request_id: None,
            now: state.clock.now(),
        },
        &state.master,
        &state.settings,
    );
    executor.resume_interrupted().await
}
