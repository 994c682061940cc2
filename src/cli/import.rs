//! `consentry import FILE --source NAME --mapping MAPPING.toml [--dry-run]`.
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Settings;
use crate::domain::{Actor, SystemClock};
use crate::profiles::import::mapping::{Format, Mapping};
use crate::profiles::import::{self, Importer};
use crate::profiles::ingest::{Ingest, Scope};
use crate::startup::Core;

pub struct ImportArgs<'a> {
    pub file: &'a Path,
    pub source: &'a str,
    pub mapping: &'a Path,
    pub dry_run: bool,
    pub json: bool,
}

pub async fn run(settings: Settings, args: ImportArgs<'_>) -> anyhow::Result<ExitCode> {
    import::check_source(args.source)?;
    let text = std::fs::read_to_string(args.mapping)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", args.mapping.display()))?;
    let file = std::fs::File::open(args.file)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", args.file.display()))?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let core = Core::open(settings.for_import(), Arc::new(SystemClock)).await?;
    let policies = core.policies.get();
    let mapping = Mapping::parse(&text, &policies)?;
    let format = mapping
        .format
        .or_else(|| Format::from_file_name(&args.file.to_string_lossy()))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "say `format = \"csv\"` or `\"ndjson\"` in the mapping: the file name does not tell"
            )
        })?;
    let keyring = core.keyring.get();
    let importer = Importer {
        ingest: Ingest {
            db: &core.db,
            master: &core.master,
            keyring: &keyring,
            audit: &core.audit,
            policies: &policies,
            source: Actor::cli(),
            scope: Scope::Import {
                source: args.source.to_owned(),
            },
            gpc: false,
            request_id: None,
            received_at: core.clock.now(),
        },
        mapping: &mapping,
        dry_run: args.dry_run,
        max_listed_errors: if args.json { 10_000 } else { 0 },
    };
    let start = Instant::now();
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(total);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {msg}, {eta} left",
        ) {
            bar.set_style(style);
        }
        bar
    });
    let mut last_line = Instant::now();
    let print_errors = !args.json;
    let result = importer
        .run(
            std::io::BufReader::with_capacity(256 * 1024, file),
            format,
            |e| {
                if print_errors {
                    println!("{e}");
                }
            },
            |rows, bytes| {
                let rate = rows as f64 / start.elapsed().as_secs_f64().max(0.001);
                if let Some(bar) = &bar {
                    bar.set_position(bytes);
                    bar.set_message(format!("{rows} rows, {rate:.0} rows/s"));
                } else if last_line.elapsed() >= Duration::from_secs(5) {
                    last_line = Instant::now();
                    let left = total.saturating_sub(bytes) as f64
                        / (bytes as f64 / start.elapsed().as_secs_f64().max(0.001)).max(1.0);
                    eprintln!("import: {rows} rows ({bytes}/{total} bytes), {rate:.0} rows/s, {left:.0} s left");
                }
            },
        )
        .await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let report = result?;
    let secs = start.elapsed().as_secs_f64();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    eprintln!(
        "import{}: {} rows read, {} {}, {} duplicates, {} subjects created, {} merged, {} conflicts, {} skipped as suppressed, {} rejected in {secs:.1} s ({:.0} rows/s)",
        if report.dry_run { " (dry run)" } else { "" },
        report.rows_read,
        report.imported,
        if report.dry_run {
            "would be imported"
        } else {
            "imported"
        },
        report.duplicates,
        report.subjects_created,
        report.merged,
        report.conflicts,
        report.skipped_suppressed,
        report.rejected,
        report.rows_read as f64 / secs.max(0.001)
    );
    core.close().await?;
    Ok(if report.rejected > 0 && report.dry_run {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
