//! Import of a CRM CSV through `consentry import`'s code path: rows/s and the process's
//! peak memory (VmHWM, and the highest heap and mapped-file RSS sampled every 50 ms) for a
//! file of N rows and one of N/10, to show memory does not grow with the file. The
//! baseline, in the same run, is reading the same file with the `csv` crate alone (no
//! identity resolution, no encryption, no database).
//!
//! `cargo bench --bench import`; `CONSENTRY_BENCH_IMPORT_ROWS` (default 1,000,000);
//! `CONSENTRY_BENCH_PG=postgres://...` adds PostgreSQL (at N/10 rows).
mod common;

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use consentry::domain::{Actor, SystemClock};
use consentry::profiles::import::Importer;
use consentry::profiles::import::mapping::{Format, Mapping};
use consentry::profiles::ingest::{Ingest, Scope};
use consentry::startup::Core;

const MAPPING: &str = r#"
row_key = "CustomerNo"
[identifiers]
customer_id = "CustomerNo"
email = "Email"
phone = "Mobile"
[traits]
first_name = "First"
last_name = "Last"
country = "Country"
plan = "Tier"
age = { column = "Age", type = "number" }
"#;

const FIRST: [&str; 8] = ["Ann", "Bob", "Cy", "Dee", "Eve", "Finn", "Gus", "Hana"];
const COUNTRIES: [&str; 6] = ["GB", "DE", "FR", "ES", "IT", "NL"];

fn write_csv(path: &std::path::Path, rows: u64) {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    writeln!(w, "CustomerNo,Email,Mobile,First,Last,Country,Tier,Age").expect("write");
    for i in 0..rows {
        let first = FIRST[(i % 8) as usize];
        let phone = if i % 3 == 0 {
            format!("+49151{:08}", i % 100_000_000)
        } else {
            String::new()
        };
        writeln!(
            w,
            "C{i},{}.{i}@example.com,{phone},{first},Smith{},{},{},{}",
            first.to_lowercase(),
            i % 97,
            COUNTRIES[(i % 6) as usize],
            ["free", "plus", "gold"][(i % 3) as usize],
            18 + i % 60
        )
        .expect("write");
    }
    w.flush().expect("flush");
}

/// Peak resident memory of this process since the last reset, in MiB.
fn peak_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A line of `/proc/self/status` in MiB (`RssAnon:`, `RssFile:`).
fn status_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Samples the heap (RssAnon) and the mapped files (RssFile: SQLite reads its database
/// through a memory map, whose pages are the kernel's page cache) every 50 ms until
/// `stop`; returns the highest of each.
fn sample_peaks(stop: Arc<std::sync::atomic::AtomicBool>) -> std::thread::JoinHandle<(f64, f64)> {
    std::thread::spawn(move || {
        let (mut anon, mut file) = (0f64, 0f64);
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            anon = anon.max(status_mib("RssAnon:"));
            file = file.max(status_mib("RssFile:"));
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        (anon, file)
    })
}

fn reset_peak() {
    // Writing 5 to clear_refs resets VmHWM to the current RSS (Linux).
    std::fs::write("/proc/self/clear_refs", "5").ok();
}

fn baseline(path: &std::path::Path) -> f64 {
    let t = Instant::now();
    let mut reader = csv::Reader::from_path(path).expect("open");
    let mut record = csv::ByteRecord::new();
    let mut n = 0u64;
    while reader.read_byte_record(&mut record).expect("read") {
        n += 1;
    }
    n as f64 / t.elapsed().as_secs_f64()
}

async fn import(label: &str, url: Option<String>, path: &std::path::Path, rows: u64) {
    let dir = tempfile::tempdir().expect("tmp");
    let core = Core::open(
        common::settings(dir.path(), url).for_import(),
        Arc::new(SystemClock),
    )
    .await
    .expect("core");
    let policies = core.policies.get();
    let keyring = core.keyring.get();
    let mapping = Mapping::parse(MAPPING, &policies).expect("mapping");
    let importer = Importer {
        ingest: Ingest {
            db: &core.db,
            master: &core.master,
            keyring: &keyring,
            audit: &core.audit,
            policies: &policies,
            source: Actor::cli(),
            scope: Scope::Import {
                source: "crm".into(),
            },
            gpc: false,
            request_id: None,
            received_at: core.clock.now(),
        },
        mapping: &mapping,
        dry_run: false,
        max_listed_errors: 0,
    };
    let base_rate = baseline(path);
    reset_peak();
    let before = peak_mib();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = sample_peaks(Arc::clone(&stop));
    let t = Instant::now();
    let file =
        std::io::BufReader::with_capacity(256 * 1024, std::fs::File::open(path).expect("open"));
    let report = importer
        .run(file, Format::Csv, |_| {}, |_, _| {})
        .await
        .expect("import");
    let secs = t.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (anon, file) = sampler.join().expect("sampler");
    assert_eq!(report.imported, rows, "{report:?}");
    let rate = rows as f64 / secs;
    println!(
        "{label}: {rows} rows in {secs:.1} s = {rate:.0} rows/s; csv read alone {base_rate:.0} rows/s (ratio {:.4}); peak RSS {:.0} MiB (start {before:.0} MiB): heap (RssAnon) at most {anon:.0} MiB, mapped files (RssFile) at most {file:.0} MiB",
        rate / base_rate,
        peak_mib()
    );
    core.db.close().await.ok();
}

#[tokio::main]
async fn main() {
    let rows: u64 = std::env::var("CONSENTRY_BENCH_IMPORT_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("tmp");
    let small = dir.path().join("small.csv");
    let large = dir.path().join("large.csv");
    write_csv(&small, rows / 10);
    write_csv(&large, rows);
    println!(
        "files: {} rows ({} MiB), {} rows ({} MiB)",
        rows / 10,
        std::fs::metadata(&small).map_or(0, |m| m.len()) >> 20,
        rows,
        std::fs::metadata(&large).map_or(0, |m| m.len()) >> 20
    );
    import("sqlite, N/10", None, &small, rows / 10).await;
    import("sqlite, N", None, &large, rows).await;
    if let Ok(base) = std::env::var("CONSENTRY_BENCH_PG") {
        let url = common::fresh_pg(&base).await;
        import("postgres, N/10", Some(url.clone()), &small, rows / 10).await;
        common::drop_pg(&base, &url).await;
    }
}
