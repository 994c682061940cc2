//! `consentry policy check [DIR]`: validates a policy set and lists the stored traits it
//! leaves unclassified.
use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::Settings;
use crate::policy::Policies;
use crate::profiles::reclassify;
use crate::store::{Db, DbOptions};

pub async fn check(settings: Settings, dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let dir = dir.unwrap_or_else(|| settings.policies.clone());
    let policies = match Policies::load(&dir) {
        Ok(p) => p,
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{}", e);
            }
            eprintln!(
                "policy check: {} problem(s) in {}",
                errors.0.len(),
                dir.display()
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    println!("ok: {}: {}", dir.display(), policies.summary());
    match stored_database(&settings).await {
        None => eprintln!("no database yet: no stored traits to check"),
        Some(db) => {
            match reclassify::unclassified(&db, &policies.taxonomy).await {
                Ok(list) if list.is_empty() => {
                    println!("every stored trait is classified");
                }
                Ok(list) => {
                    println!(
                        "{} stored trait name(s) are unclassified; no purpose can read them until {} classifies them:",
                        list.len(),
                        dir.join("taxonomy.yaml").display()
                    );
                    for u in list {
                        println!("  {}  ({} subjects)", u.name, u.subjects);
                    }
                }
                Err(e) => eprintln!("cannot read stored traits ({e}); is the database migrated?"),
            }
            db.close().await.ok();
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The configured database, if it exists already (a check never creates one).
async fn stored_database(settings: &Settings) -> Option<Db> {
    let url = settings.database_url();
    if crate::store::sqlite_file(&url).is_some_and(|f| !f.exists()) {
        return None;
    }
    Db::connect(
        &url,
        &DbOptions {
            max_connections: 1,
            sqlite_synchronous: settings.effective_sqlite_sync(),
            sqlite_mmap_bytes: settings.effective_sqlite_mmap_bytes(),
        },
    )
    .await
    .ok()
}

/// `consentry ropa`: the record of processing activities from the configured policies.
pub async fn ropa(settings: Settings, format: &str) -> anyhow::Result<ExitCode> {
    let policies = Policies::load(&settings.policies).map_err(|e| {
        let problems: Vec<String> = e.0.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("the policies are invalid: {}", problems.join("; "))
    })?;
    let now = crate::domain::Clock::now(&crate::domain::SystemClock).to_rfc3339();
    // The registered recipients, when the database exists already (never created here).
    let registered = match stored_database(&settings).await {
        Some(db) => {
            let rows = crate::store::recipients::all(db.conn()).await;
            db.close().await.ok();
            rows.unwrap_or_else(|e| {
                eprintln!("cannot read the registered recipients ({e}); is the database migrated? listing none");
                Vec::new()
            })
        }
        None => Vec::new(),
    };
    let record =
        crate::policy::ropa::Ropa::generate(&policies, &registered, &settings.controller_name, now);
    match format {
        "markdown" => print!("{}", record.to_markdown()),
        "json" => println!("{}", serde_json::to_string_pretty(&record)?),
        other => anyhow::bail!("--format: use markdown or json, not `{other}`"),
    }
    Ok(ExitCode::SUCCESS)
}
