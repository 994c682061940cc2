//! Offline imports from CRM, POS and loyalty systems: CSV or NDJSON read row by row,
//! turned into the same messages the tracking API takes, and stored through the same
//! ingest path (identity resolution, sealed identifiers, aggregates) in batches.
//! Guarantees:
//! - memory stays bounded by the batch, whatever the file's size;
//! - a dry run writes nothing and reports every bad row;
//! - a row is stored at most once per (source, row key): re-running a file changes nothing;
//! - a row whose email or phone is on the suppression list (erased people) is skipped;
//! - a bad row is rejected alone, with its line, column and reason; good rows go in.
pub mod convert;
pub mod mapping;
pub mod rows;

use std::collections::HashSet;
use std::io::Read;

use serde::Serialize;
use utoipa::ToSchema;

use self::convert::{Converted, Converter};
use self::mapping::Mapping;
use self::rows::Rows;
use super::ingest::{Ingest, IngestError, Scope};
use crate::audit::{NewEntry, Outcome};
use crate::store::{StoreError, profiles as repo, suppressions};

/// Rows written per transaction.
pub const BATCH_ROWS: usize = 500;

/// A row that was not imported: its line in the file, the column and what to fix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct RowError {
    /// The line the row starts on (a CSV header is line 1).
    pub row: u64,
    pub column: Option<String>,
    pub reason: String,
}

impl RowError {
    pub fn new(row: u64, column: Option<&str>, reason: &str) -> Self {
        Self {
            row,
            column: column.map(str::to_owned),
            reason: reason.to_owned(),
        }
    }
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.column {
            Some(c) => write!(f, "row {}: column `{c}`: {}", self.row, self.reason),
            None => write!(f, "row {}: {}", self.row, self.reason),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct ImportReport {
    pub source: String,
    pub dry_run: bool,
    /// Data rows read (blank NDJSON lines are not rows).
    pub rows_read: u64,
    /// Rows stored by this run (in a dry run: rows that would be).
    pub imported: u64,
    /// Rows whose key this source had already imported: nothing changed.
    pub duplicates: u64,
    pub subjects_created: u64,
    pub merged: u64,
    /// Rows linking two subjects with different userIds: recorded for review, not merged.
    pub conflicts: u64,
    /// Rows naming an erased person's email or phone: not imported.
    pub skipped_suppressed: u64,
    /// Rows refused, each listed in `errors`.
    pub rejected: u64,
    pub errors: Vec<RowError>,
    /// Errors past the report's limit, counted but not listed.
    pub errors_omitted: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Mapping(#[from] mapping::MappingError),
    /// The file as a whole cannot be read (a missing column, no header).
    #[error("file: {0}")]
    File(String),
    #[error("file: cannot be read: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Ingest(#[from] IngestError),
}

impl From<StoreError> for ImportError {
    fn from(e: StoreError) -> Self {
        Self::Ingest(e.into())
    }
}

/// A source name: what row keys are unique within.
pub fn check_source(name: &str) -> Result<(), ImportError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(ImportError::Mapping(mapping::MappingError(
            "source: use 1 to 64 letters, digits, `.`, `_` or `-`".into(),
        )))
    }
}

pub struct Importer<'a> {
    /// Its scope must be [`Scope::Import`].
    pub ingest: Ingest<'a>,
    pub mapping: &'a Mapping,
    pub dry_run: bool,
    /// How many row errors the report lists (all are counted and passed to `on_error`).
    pub max_listed_errors: usize,
}

impl Importer<'_> {
    fn source(&self) -> &str {
        match &self.ingest.scope {
            Scope::Import { source } => source,
            Scope::Tracking => "",
        }
    }

    /// Reads every row of `reader`; `on_error` sees each bad row as it is found and
    /// `progress` gets (rows read, bytes read) after every batch.
    pub async fn run<R: Read>(
        &self,
        reader: R,
        format: mapping::Format,
        mut on_error: impl FnMut(&RowError),
        mut progress: impl FnMut(u64, u64),
    ) -> Result<ImportReport, ImportError> {
        let columns = self.mapping.columns();
        let mut rows = Rows::open(reader, format, self.mapping.delimiter, &columns)
            .map_err(ImportError::File)?;
        let converter = Converter::new(self.mapping, &columns, self.ingest.received_at);
        let mut report = ImportReport {
            source: self.source().to_owned(),
            dry_run: self.dry_run,
            ..ImportReport::default()
        };
        let mut batch: Vec<Converted> = Vec::with_capacity(BATCH_ROWS);
        while let Some(next) = rows.next_row() {
            report.rows_read += 1;
            match next?
                .map_err(|e| vec![e])
                .and_then(|raw| converter.convert(&raw))
            {
                Ok(c) => batch.push(c),
                Err(errors) => self.reject(&mut report, errors, &mut on_error),
            }
            if batch.len() >= BATCH_ROWS {
                self.flush(&mut batch, &mut report, &mut on_error).await?;
                progress(report.rows_read, rows.bytes_read());
            }
        }
        self.flush(&mut batch, &mut report, &mut on_error).await?;
        progress(report.rows_read, rows.bytes_read());
        self.audit_summary(&report).await?;
        Ok(report)
    }

    fn reject(
        &self,
        report: &mut ImportReport,
        errors: Vec<RowError>,
        on_error: &mut impl FnMut(&RowError),
    ) {
        report.rejected += 1;
        for e in errors {
            on_error(&e);
            if report.errors.len() < self.max_listed_errors {
                report.errors.push(e);
            } else {
                report.errors_omitted += 1;
            }
        }
    }

    /// Stores (or, in a dry run, checks) one batch of converted rows.
    async fn flush(
        &self,
        batch: &mut Vec<Converted>,
        report: &mut ImportReport,
        on_error: &mut impl FnMut(&RowError),
    ) -> Result<(), ImportError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut rows = std::mem::take(batch);
        let suppressed = self.suppressed(&rows).await?;
        let before = rows.len();
        rows.retain(|r| !suppressed.contains(&r.line));
        report.skipped_suppressed += (before - rows.len()) as u64;
        let before = rows.len();
        self.name_messages(&mut rows).await?;
        report.duplicates += (before - rows.len()) as u64;
        if self.dry_run {
            let ids: Vec<String> = rows
                .iter()
                .flat_map(|r| r.messages.iter().map(|m| m.message_id.clone()))
                .collect();
            let scope = format!("import:{}", self.source());
            let mut known = repo::existing_message_ids(self.ingest.db.conn(), &scope, &ids).await?;
            for r in &rows {
                if r.messages
                    .iter()
                    .all(|m| !known.insert(m.message_id.clone()))
                {
                    report.duplicates += 1;
                } else {
                    report.imported += 1;
                }
            }
            return Ok(());
        }
        loop {
            let messages: Vec<_> = rows
                .iter()
                .flat_map(|r| r.messages.iter().cloned())
                .collect();
            match self.ingest.run(&messages, true).await {
                Ok(r) => {
                    let dup: HashSet<&str> = r.duplicate_ids.iter().map(String::as_str).collect();
                    for row in &rows {
                        if row
                            .messages
                            .iter()
                            .all(|m| dup.contains(m.message_id.as_str()))
                        {
                            report.duplicates += 1;
                        } else {
                            report.imported += 1;
                        }
                    }
                    report.subjects_created += r.subjects_created as u64;
                    report.merged += r.merged as u64;
                    report.conflicts += r.conflicts as u64;
                    return Ok(());
                }
                // A message the row checks let through: reject its row, store the rest.
                Err(IngestError::Invalid(e)) if e.index.is_some() => {
                    let mut i = e.index.unwrap_or(0);
                    let pos = rows.iter().position(|r| {
                        let n = r.messages.len();
                        if i < n {
                            true
                        } else {
                            i -= n;
                            false
                        }
                    });
                    let Some(pos) = pos else {
                        return Err(IngestError::Invalid(e).into());
                    };
                    let row = rows.remove(pos);
                    self.reject(
                        report,
                        vec![RowError::new(row.line, None, &e.reason)],
                        on_error,
                    );
                    if rows.is_empty() {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Gives each message its id, a keyed hash of the row key under the current key
    /// version (row keys may be identifiers, so they are never stored). Rows stored under
    /// an earlier key version are dropped here: they are duplicates.
    async fn name_messages(&self, rows: &mut Vec<Converted>) -> Result<(), ImportError> {
        let keyring = self.ingest.keyring;
        let mut older: Vec<(usize, Vec<String>)> = Vec::new();
        for (i, row) in rows.iter_mut().enumerate() {
            let mut versions = keyring.row_keys(self.source(), &row.key).into_iter();
            let Some(current) = versions.next() else {
                return Err(
                    IngestError::Keyring(crate::crypto::KeyringError::NoActiveKey(
                        crate::crypto::KeyKind::BlindIndex,
                    ))
                    .into(),
                );
            };
            // Until named, a message's id is its suffix within the row ("" or "#order").
            let old: Vec<String> = versions
                .flat_map(|v| {
                    row.messages
                        .iter()
                        .map(move |m| format!("{v}{}", m.message_id))
                })
                .collect();
            for m in &mut row.messages {
                m.message_id = format!("{current}{}", m.message_id);
            }
            if !old.is_empty() {
                older.push((i, old));
            }
        }
        if older.is_empty() {
            return Ok(());
        }
        let all: Vec<String> = older
            .iter()
            .flat_map(|(_, ids)| ids.iter().cloned())
            .collect();
        let scope = format!("import:{}", self.source());
        let known = repo::existing_message_ids(self.ingest.db.conn(), &scope, &all).await?;
        let stale: HashSet<usize> = older
            .into_iter()
            .filter(|(_, ids)| ids.iter().any(|id| known.contains(id)))
            .map(|(i, _)| i)
            .collect();
        let mut i = 0;
        rows.retain(|_| {
            i += 1;
            !stale.contains(&(i - 1))
        });
        Ok(())
    }

    /// The lines of rows naming a suppressed email or phone.
    async fn suppressed(&self, rows: &[Converted]) -> Result<HashSet<u64>, ImportError> {
        let keyring = self.ingest.keyring;
        let hashed: Vec<(u64, Vec<String>)> = rows
            .iter()
            .filter(|r| !r.suppressible.is_empty())
            .map(|r| {
                let hashes = r
                    .suppressible
                    .iter()
                    .flat_map(|(k, v)| keyring.suppression_hashes(k, v))
                    .collect();
                (r.line, hashes)
            })
            .collect();
        let all: Vec<String> = hashed.iter().flat_map(|(_, h)| h.iter().cloned()).collect();
        let present = suppressions::present(self.ingest.db.conn(), &all).await?;
        Ok(hashed
            .into_iter()
            .filter(|(_, h)| h.iter().any(|x| present.contains(x)))
            .map(|(line, _)| line)
            .collect())
    }

    async fn audit_summary(&self, r: &ImportReport) -> Result<(), ImportError> {
        let ingest = &self.ingest;
        let action = if self.dry_run {
            "import.dry_run"
        } else {
            "import.finished"
        };
        let entry = NewEntry::new(ingest.source.clone(), action, Outcome::Ok)
            .request_id(ingest.request_id.clone())
            .attributes(vec![
                format!("source:{}", r.source),
                format!("rows_read:{}", r.rows_read),
                format!("imported:{}", r.imported),
                format!("duplicates:{}", r.duplicates),
                format!("skipped_suppressed:{}", r.skipped_suppressed),
                format!("rejected:{}", r.rejected),
            ]);
        let txn = ingest.db.begin_write().await?;
        ingest
            .audit
            .append(&txn, entry)
            .await
            .map_err(IngestError::from)?;
        txn.commit().await.map_err(StoreError::from)?;
        Ok(())
    }
}
