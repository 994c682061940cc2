//! The `consentry` command line. Secrets a command creates go alone to standard output;
//! everything else goes to standard error. Failures print one line and exit non-zero.
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use crate::admin::{self, Context, NewKey};
use crate::audit;
use crate::config::{Overrides, Settings};
use crate::crypto::{KeyKind, MasterKeySource};
use crate::domain::{Actor, Role, SystemClock};
use crate::startup::{Application, Core};

mod dsar;
mod import;
mod policy;

#[derive(Parser, Debug)]
#[command(
    name = "consentry",
    version,
    about = "Privacy-first consent and compliance gateway"
)]
pub struct Cli {
    /// A TOML config file (default: ./consentry.toml when present).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory holding the SQLite file and local keys [env: CONSENTRY_DATA_DIR].
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Policies directory [env: CONSENTRY_POLICIES].
    #[arg(long, global = true, value_name = "DIR")]
    policies: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum ScoresCommand {
    /// Train the purchase-propensity model on the population's history (features as
    /// they stood HORIZON days ago, labelled by orders since), report its held-out AUC,
    /// store it and score everyone with it.
    Train {
        /// The prediction window in days.
        #[arg(long, default_value_t = 30)]
        horizon_days: u32,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Compute RFM scores (quintiles over the population that may be profiled).
    Rfm {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum RecommendationsCommand {
    /// Train every behavioural purpose's model now (products bought by the same people,
    /// bestsellers), from the subjects each purpose may process.
    Train {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the gateway.
    Serve {
        /// host:port to listen on [env: CONSENTRY_LISTEN; default 127.0.0.1:8080].
        #[arg(long, value_name = "HOST:PORT")]
        listen: Option<String>,
    },
    /// Apply pending database migrations, and bring stored traits in line with the taxonomy.
    Migrate,
    /// Manage API keys and the keyring.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Inspect the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Import a CSV or NDJSON file from a CRM, POS or loyalty system.
    Import {
        /// The file (.csv, .ndjson or .jsonl; or say `format` in the mapping).
        file: PathBuf,
        /// The system the file comes from; row keys are unique within it.
        #[arg(long)]
        source: String,
        /// The TOML mapping of columns to identifiers, traits and purchases.
        #[arg(long, value_name = "MAPPING.toml")]
        mapping: PathBuf,
        /// Check every row and report bad ones; write nothing (exit 2 if any is bad).
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON on standard output (bad rows included, up to 10,000).
        #[arg(long)]
        json: bool,
    },
    /// Delete every event and trait past the retention of the purposes that read it.
    Retention {
        /// Count what would go; delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Scores: RFM and purchase propensity.
    #[command(subcommand)]
    Scores(ScoresCommand),
    /// Load the product catalogue from an NDJSON file (one product per line) or a CSV file
    /// with a header (id, name, url, image_url, price, currency, category, available);
    /// all or nothing: bad lines are listed and nothing is loaded (exit 2).
    Catalog {
        /// The file (.csv, or NDJSON).
        file: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Recommendation models.
    #[command(subcommand)]
    Recommendations(RecommendationsCommand),
    /// Data-subject requests: the queue, verification, deadlines.
    #[command(subcommand)]
    Dsar(dsar::DsarCommand),
    /// Print the record of processing activities (GDPR Art. 30) from the policies.
    Ropa {
        /// markdown or json.
        #[arg(long, default_value = "markdown")]
        format: String,
    },
    /// Check policy files.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Fill the database with a synthetic, deterministic population through the ingest path.
    Demo {
        /// How many people to generate.
        #[arg(long, default_value_t = 1000)]
        profiles: u64,
        /// The same seed gives the same population.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Create an API key; prints the token alone on standard output.
    Create(CreateArgs),
    /// List API keys (never their secrets).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke an API key; running gateways stop accepting it within the token cache lifetime.
    Revoke {
        /// The key id (see `consentry keys list`).
        id: String,
    },
    /// Add a new version of a keyring key, or of one recipient's pseudonym key; older
    /// versions keep working until retired.
    #[command(group(clap::ArgGroup::new("target").required(true).args(["kind", "recipient"])))]
    Rotate {
        /// blind_index, pseudonym, token_signing, checkpoint_signing, audit_subject or suppression.
        #[arg(long)]
        kind: Option<String>,
        /// A recipient id: start a new version of its pseudonym key.
        #[arg(long)]
        recipient: Option<String>,
        /// With --recipient: retire this version (`v1` or `1`) instead of adding one; the
        /// pseudonyms made with it stop resolving.
        #[arg(long, requires = "recipient", value_name = "vN")]
        retire: Option<String>,
    },
    /// Retire a keyring key version, or a version of a recipient's pseudonym key.
    #[command(group(clap::ArgGroup::new("target").required(true).args(["kind", "recipient"])))]
    Retire {
        #[arg(long)]
        kind: Option<String>,
        /// A recipient id.
        #[arg(long)]
        recipient: Option<String>,
        #[arg(long)]
        version: i32,
    },
}

#[derive(Args, Debug)]
struct CreateArgs {
    /// admin, dpo, auditor, esp or ingest.
    #[arg(long)]
    role: String,
    /// A label for people.
    #[arg(long)]
    name: String,
    /// For esp keys: the recipient the key acts for.
    #[arg(long)]
    recipient: Option<String>,
    /// For esp keys: comma-separated purposes.
    #[arg(long, value_delimiter = ',')]
    purposes: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum PolicyCommand {
    /// Validate a policy set (`file:line: message` per problem, non-zero exit if any), print
    /// a summary, and list stored traits it leaves unclassified.
    Check {
        /// The policies directory [default: the configured one].
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Recompute every leaf and the tree, check every checkpoint signature.
    Verify,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            let msg = format!("{e:#}");
            eprintln!(
                "error: {}",
                msg.split_whitespace().collect::<Vec<_>>().join(" ")
            );
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let listen = match &cli.command {
        Command::Serve { listen } => listen.clone(),
        _ => None,
    };
    let settings = Settings::load(&Overrides {
        config_file: cli.config.clone(),
        listen,
        data_dir: cli.data_dir.clone(),
        policies: cli.policies.clone(),
    })?;
    match cli.command {
        Command::Serve { .. } => serve(settings).await,
        Command::Migrate => {
            crate::telemetry::init(settings.log_format, "warn");
            let core = Core::open(settings, Arc::new(SystemClock)).await?;
            eprintln!("migrations are current");
            let n = core.reclassify().await?;
            if n > 0 {
                eprintln!("{n} stored trait value(s) reclassified by the taxonomy in force");
            }
            core.close().await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys(cmd) => keys(settings, cmd).await,
        Command::Audit(AuditCommand::Verify) => verify(settings).await,
        Command::Import {
            file,
            source,
            mapping,
            dry_run,
            json,
        } => {
            crate::telemetry::init(settings.log_format, "warn");
            let args = import::ImportArgs {
                file: &file,
                source: &source,
                mapping: &mapping,
                dry_run,
                json,
            };
            import::run(settings, args).await
        }
        Command::Ropa { format } => {
            crate::telemetry::init(settings.log_format, "warn");
            policy::ropa(settings, &format).await
        }
        Command::Policy(PolicyCommand::Check { dir }) => {
            crate::telemetry::init(settings.log_format, "warn");
            policy::check(settings, dir).await
        }
        Command::Demo { profiles, seed } => demo(settings, profiles, seed).await,
        Command::Dsar(cmd) => dsar::run(settings, cmd).await,
        Command::Retention { dry_run, json } => retention(settings, dry_run, json).await,
        Command::Scores(cmd) => scores(settings, cmd).await,
        Command::Catalog { file, json } => catalog(settings, &file, json).await,
        Command::Recommendations(RecommendationsCommand::Train { json }) => {
            train_recommendations(settings, json).await
        }
    }
}

async fn catalog(
    settings: Settings,
    file: &std::path::Path,
    json: bool,
) -> anyhow::Result<ExitCode> {
    use crate::policy::catalog::{CatalogError, CatalogLoad};
    use std::io::BufRead;
    crate::telemetry::init(settings.log_format, "warn");
    let core = Core::open(settings, Arc::new(SystemClock)).await?;
    let mut load = CatalogLoad::new(core.clock.now());
    let csv_file = file
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let opened =
        std::fs::File::open(file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    if csv_file {
        let mut reader = csv::Reader::from_reader(opened);
        let header = reader.headers()?.clone();
        for (i, record) in reader.records().enumerate() {
            let line = i as u64 + 2;
            let record = record.map_err(|e| anyhow::anyhow!("line {line}: {e}"))?;
            let object: serde_json::Map<String, serde_json::Value> = header
                .iter()
                .zip(record.iter())
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k.to_owned(), serde_json::Value::from(v)))
                .collect();
            load.object(line, &object);
        }
    } else {
        for (i, text) in std::io::BufReader::new(opened).lines().enumerate() {
            let text = text.map_err(|e| anyhow::anyhow!("line {}: {e}", i + 1))?;
            load.json_line(i as u64 + 1, &text);
        }
    }
    let code = match load.finish(&core.db, &core.audit, Actor::cli(), None).await {
        Ok(r) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            }
            eprintln!(
                "catalog: {} read, {} created, {} updated, {} deleted; {} products",
                r.read, r.created, r.updated, r.deleted, r.products
            );
            ExitCode::SUCCESS
        }
        Err(e @ (CatalogError::Rejected { .. } | CatalogError::Invalid(_))) => {
            eprintln!("catalog: {e}");
            ExitCode::from(2)
        }
        Err(e) => return Err(e.into()),
    };
    core.close().await?;
    Ok(code)
}

async fn train_recommendations(settings: Settings, json: bool) -> anyhow::Result<ExitCode> {
    crate::telemetry::init(settings.log_format, "warn");
    let core = Core::open(settings, Arc::new(SystemClock)).await?;
    let policies = core.policies.get();
    let report = crate::policy::recommendations::train_all(
        &core.db,
        &core.audit,
        &policies,
        Actor::cli(),
        core.clock.now(),
    )
    .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    for m in &report {
        eprintln!(
            "recommendations {}: {} subjects, {} products, {} pairs",
            m.purpose, m.subjects, m.products, m.pairs
        );
    }
    core.close().await?;
    Ok(ExitCode::SUCCESS)
}

async fn scores(settings: Settings, cmd: ScoresCommand) -> anyhow::Result<ExitCode> {
    crate::telemetry::init(settings.log_format, "warn");
    let core = Core::open(settings, Arc::new(SystemClock)).await?;
    let policies = core.policies.get();
    let now = core.clock.now();
    let code = match cmd {
        ScoresCommand::Train { horizon_days, json } => {
            match crate::scores::propensity::train(
                &core.db,
                &core.audit,
                &policies,
                Actor::cli(),
                now,
                horizon_days,
            )
            .await
            {
                Ok(r) => {
                    if json {
                        println!("{}", serde_json::to_string_pretty(&r)?);
                    } else {
                        println!("model     {}", r.model_version);
                        println!(
                            "auc       {:.4} (held out: {} subjects)",
                            r.auc, r.held_out_rows
                        );
                        println!(
                            "trained   {} subjects, {:.1}% ordered",
                            r.training_rows,
                            r.base_rate * 100.0
                        );
                        for (f, w) in r.features.iter().zip(&r.coefficients) {
                            println!("  {w:>+9.4}  {f}");
                        }
                    }
                    eprintln!(
                        "scores train: {} subjects scored with {}",
                        r.scored, r.model_version
                    );
                    ExitCode::SUCCESS
                }
                Err(crate::scores::ScoreError::NotEnoughData(why)) => {
                    eprintln!("scores train: not enough history: {why}");
                    ExitCode::from(2)
                }
                Err(e) => return Err(e.into()),
            }
        }
        ScoresCommand::Rfm { json } => {
            let r =
                crate::scores::rfm::compute(&core.db, &core.audit, &policies, Actor::cli(), now)
                    .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            }
            eprintln!(
                "scores rfm: {} buyers scored, {} stale scores dropped",
                r.scored, r.dropped
            );
            ExitCode::SUCCESS
        }
    };
    core.close().await?;
    Ok(code)
}

async fn retention(settings: Settings, dry_run: bool, json: bool) -> anyhow::Result<ExitCode> {
    crate::telemetry::init(settings.log_format, "warn");
    let core = Core::open(settings, Arc::new(SystemClock)).await?;
    let policies = core.policies.get();
    let report = crate::subject_requests::retention::Sweeper {
        db: &core.db,
        audit: &core.audit,
        policies: &policies,
        actor: Actor::cli(),
        now: core.clock.now(),
    }
    .sweep(dry_run)
    .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for l in &report.lines {
            let keep = l.keep_days.map_or("no purpose reads it".to_owned(), |d| {
                format!("kept {d} days")
            });
            println!(
                "{:>8}  {}  ({}, {keep}, before {})",
                l.rows, l.what, l.category, l.cutoff
            );
        }
    }
    let verb = if dry_run { "would delete" } else { "deleted" };
    eprintln!(
        "retention: {verb} {} events and {} traits",
        report.events, report.traits
    );
    core.close().await?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(settings: Settings) -> anyhow::Result<ExitCode> {
    crate::telemetry::init(settings.log_format, "info");
    let app = Application::build(settings).await?;
    if let MasterKeySource::Generated(path) = app.master_key_source() {
        eprintln!(
            "\n!!! WARNING: no master key was configured. A development master key was generated at\n!!!   {}\n!!! Everything in this database is encrypted under it: back it up, and set\n!!! CONSENTRY_MASTER_KEY (or master_key_file) in production.\n",
            path.display()
        );
    }
    if let Some(token) = app.bootstrap_token() {
        let state = app.state();
        eprintln!(
            "\nBootstrap admin token (shown once; also saved to {}):\n{token}\n",
            state.settings.data_dir.join("admin.token").display()
        );
    }
    eprintln!("consentry listening on http://127.0.0.1:{}", app.port());
    app.run_until_stopped().await?;
    Ok(ExitCode::SUCCESS)
}

fn context<'a>(core: &'a Core) -> Context<'a> {
    Context {
        db: &core.db,
        audit: &core.audit,
        actor: Actor::cli(),
        request_id: None,
        now: core.clock.now(),
    }
}

fn registry<'a>(
    core: &'a Core,
    policies: &'a crate::policy::Policies,
) -> crate::policy::recipients::Registry<'a> {
    crate::policy::recipients::Registry {
        db: &core.db,
        master: &core.master,
        audit: &core.audit,
        policies,
        actor: Actor::cli(),
        request_id: None,
        now: core.clock.now(),
    }
}

async fn keys(settings: Settings, cmd: KeysCommand) -> anyhow::Result<ExitCode> {
    crate::telemetry::init(settings.log_format, "warn");
    let core = Core::open(settings, Arc::new(SystemClock)).await?;
    let policies = core.policies.get();
    match cmd {
        KeysCommand::Create(a) => {
            let role: Role = a.role.parse()?;
            let new = NewKey::parse(&a.name, role, a.recipient.as_deref(), &a.purposes)?;
            let (info, token) = admin::create_key(&context(&core), new).await?;
            eprintln!("created {} key {} ({})", info.role, info.id, info.name);
            println!("{token}");
        }
        KeysCommand::List { json } => {
            let keys = admin::list_keys(&core.db).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&keys)?);
            } else {
                println!(
                    "{:<16}  {:<8}  {:<27}  {:<27}  {:<8}  NAME",
                    "ID", "ROLE", "CREATED", "LAST USED", "STATUS"
                );
                for k in keys {
                    println!(
                        "{:<16}  {:<8}  {:<27}  {:<27}  {:<8}  {}",
                        k.id,
                        k.role,
                        k.created_at,
                        k.last_used_at.as_deref().unwrap_or("never"),
                        if k.revoked_at.is_some() {
                            "revoked"
                        } else {
                            "active"
                        },
                        k.name
                    );
                }
            }
        }
        KeysCommand::Revoke { id } => {
            admin::revoke_key(&context(&core), &id).await?;
            eprintln!(
                "revoked {id}; running gateways refuse it within {} s",
                core.settings.token_cache_ttl_secs
            );
        }
        KeysCommand::Rotate {
            kind,
            recipient,
            retire,
        } => match (kind, recipient, retire) {
            (_, Some(r), Some(v)) => {
                let version: i32 = v
                    .trim_start_matches('v')
                    .parse()
                    .map_err(|_| anyhow::anyhow!("--retire: a version such as v1"))?;
                registry(&core, &policies).retire(&r, version).await?;
                eprintln!(
                    "{r}'s pseudonym key version {version} retired; its pseudonyms answer 410 within 60 s on running gateways"
                );
            }
            (_, Some(r), None) => {
                let v = registry(&core, &policies).rotate(&r).await?;
                eprintln!(
                    "{r}'s pseudonym key is now at version {v}; older pseudonyms keep resolving until retired"
                );
            }
            (Some(kind), None, _) => {
                let kind: KeyKind = kind.parse().map_err(anyhow::Error::msg)?;
                let v = admin::rotate(&context(&core), &core.master, kind).await?;
                eprintln!("{kind} is now at version {v}; running gateways pick it up within 60 s");
            }
            (None, None, _) => anyhow::bail!("give --kind or --recipient"),
        },
        KeysCommand::Retire {
            kind,
            recipient,
            version,
        } => match (kind, recipient) {
            (_, Some(r)) => {
                registry(&core, &policies).retire(&r, version).await?;
                eprintln!("{r}'s pseudonym key version {version} retired");
            }
            (Some(kind), None) => {
                let kind: KeyKind = kind.parse().map_err(anyhow::Error::msg)?;
                admin::retire(&context(&core), kind, version).await?;
                eprintln!("{kind} version {version} retired");
            }
            (None, None) => anyhow::bail!("give --kind or --recipient"),
        },
    }
    core.close().await?;
    Ok(ExitCode::SUCCESS)
}

async fn verify(settings: Settings) -> anyhow::Result<ExitCode> {
    crate::telemetry::init(settings.log_format, "warn");
    let core = Core::open(settings, Arc::new(SystemClock)).await?;
    let keyring = core.keyring.get();
    // Committed entries still waiting for their place are placed first, so the log
    // verified is everything the database holds.
    core.audit.settle(&core.db).await?;
    let result = audit::verify(&core.db, &keyring).await;
    core.close().await?;
    match result {
        Ok(report) => {
            println!(
                "ok: {} entries, root {}",
                report.entries,
                hex::encode(report.root)
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(audit::VerifyError::Broken(f)) => {
            println!("broken at seq {}: {}", f.seq, f.reason);
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e.into()),
    }
}

async fn demo(settings: Settings, profiles: u64, seed: u64) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal;
    use std::time::{Duration, Instant};

    crate::telemetry::init(settings.log_format, "warn");
    let core = Core::open(settings, Arc::new(SystemClock)).await?;
    let keyring = core.keyring.get();
    let policies = core.policies.get();
    let ingest = crate::profiles::ingest::Ingest {
        db: &core.db,
        master: &core.master,
        keyring: &keyring,
        audit: &core.audit,
        policies: &policies,
        scope: crate::profiles::ingest::Scope::Tracking,
        gpc: false,
        source: Actor {
            key_id: "demo".into(),
            role: Role::Ingest.as_str().into(),
        },
        request_id: None,
        received_at: core.clock.now(),
    };
    let start = Instant::now();
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(profiles);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} profiles, {per_sec}, {eta} left",
        ) {
            bar.set_style(style);
        }
        bar
    });
    let mut last_line = Instant::now();
    let report = crate::profiles::demo::run(&ingest, profiles, seed, |done, total| {
        if let Some(bar) = &bar {
            bar.set_position(done);
        } else if last_line.elapsed() >= Duration::from_secs(5) || done == total {
            last_line = Instant::now();
            let rate = done as f64 / start.elapsed().as_secs_f64().max(0.001);
            let left = (total - done) as f64 / rate.max(0.001);
            eprintln!("demo: {done}/{total} profiles, {rate:.0}/s, {left:.0} s left");
        }
    })
    .await?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "demo: {} profiles, {} events in {secs:.1} s ({:.0} events/s), seed {seed}",
        report.profiles,
        report.events,
        report.events as f64 / secs.max(0.001)
    );
    core.close().await?;
    Ok(ExitCode::SUCCESS)
}
