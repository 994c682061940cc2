//! Reading a CSV or NDJSON file one row at a time: only the mapped columns of the current
//! row are ever held, whatever the file's size.
use std::io::{BufRead, BufReader, Read};

use serde_json::Value;

use super::RowError;
use super::mapping::Format;

/// The longest NDJSON line read; longer lines are refused, not buffered.
const MAX_LINE_BYTES: u64 = 1024 * 1024;

/// One row's mapped columns, in the order asked for; empty cells are `None`.
pub struct RawRow {
    /// The row's line in the file (a CSV header is line 1).
    pub line: u64,
    pub values: Vec<Option<Value>>,
}

enum Inner<R: Read> {
    Csv {
        reader: csv::Reader<R>,
        indices: Vec<Option<usize>>,
        record: csv::ByteRecord,
    },
    Ndjson {
        reader: BufReader<R>,
        line: u64,
        bytes: u64,
        buf: Vec<u8>,
    },
}

pub struct Rows<R: Read> {
    inner: Inner<R>,
    columns: Vec<String>,
}

impl<R: Read> Rows<R> {
    /// Opens `reader`; for CSV, checks that the header has every mapped column.
    pub fn open(
        reader: R,
        format: Format,
        delimiter: u8,
        columns: &[&str],
    ) -> Result<Self, String> {
        let columns: Vec<String> = columns.iter().map(|c| (*c).to_owned()).collect();
        let inner = match format {
            Format::Csv => {
                let mut reader = csv::ReaderBuilder::new()
                    .delimiter(delimiter)
                    .flexible(true)
                    .trim(csv::Trim::All)
                    .from_reader(reader);
                let header = reader
                    .headers()
                    .map_err(|e| format!("cannot read the CSV header: {e}"))?
                    .clone();
                let names: Vec<&str> = header.iter().map(str::trim).collect();
                let indices: Vec<Option<usize>> = columns
                    .iter()
                    .map(|c| names.iter().position(|n| n == c))
                    .collect();
                if let Some(missing) = columns.iter().zip(&indices).find(|(_, i)| i.is_none()) {
                    return Err(format!(
                        "column `{}` named in the mapping is not in the header ({})",
                        missing.0,
                        names.join(", ")
                    ));
                }
                Inner::Csv {
                    reader,
                    indices,
                    record: csv::ByteRecord::new(),
                }
            }
            Format::Ndjson => Inner::Ndjson {
                reader: BufReader::with_capacity(64 * 1024, reader),
                line: 0,
                bytes: 0,
                buf: Vec::new(),
            },
        };
        Ok(Self { inner, columns })
    }

    /// Bytes of the file consumed so far, for progress.
    pub fn bytes_read(&self) -> u64 {
        match &self.inner {
            Inner::Csv { reader, .. } => reader.position().byte(),
            Inner::Ndjson { bytes, .. } => *bytes,
        }
    }

    /// The next row: `Ok(Ok(row))`, a row that cannot be read at all (`Ok(Err(..))`), or
    /// a failure of the file itself. `None` at the end.
    pub fn next_row(&mut self) -> Option<Result<Result<RawRow, RowError>, std::io::Error>> {
        match &mut self.inner {
            Inner::Csv {
                reader,
                indices,
                record,
            } => match reader.read_byte_record(record) {
                Ok(false) => None,
                Ok(true) => {
                    let line = record.position().map_or(0, |p| p.line());
                    let mut values = Vec::with_capacity(indices.len());
                    for (i, col) in indices.iter().zip(&self.columns) {
                        let cell = i.and_then(|i| record.get(i)).unwrap_or_default();
                        match std::str::from_utf8(cell) {
                            Ok("") => values.push(None),
                            Ok(s) => values.push(Some(Value::String(s.to_owned()))),
                            Err(_) => {
                                return Some(Ok(Err(RowError::new(
                                    line,
                                    Some(col),
                                    "is not UTF-8 text",
                                ))));
                            }
                        }
                    }
                    Some(Ok(Ok(RawRow { line, values })))
                }
                Err(e) => match e.kind() {
                    csv::ErrorKind::Io(_) => Some(Err(std::io::Error::other(e.to_string()))),
                    _ => {
                        let line = e.position().map_or(0, |p| p.line());
                        Some(Ok(Err(RowError::new(line, None, "is not valid CSV"))))
                    }
                },
            },
            Inner::Ndjson {
                reader,
                line,
                bytes,
                buf,
            } => loop {
                buf.clear();
                let n = match reader
                    .by_ref()
                    .take(MAX_LINE_BYTES + 1)
                    .read_until(b'\n', buf)
                {
                    Ok(0) => return None,
                    Ok(n) => n,
                    Err(e) => return Some(Err(e)),
                };
                *line += 1;
                *bytes += n as u64;
                if n as u64 > MAX_LINE_BYTES {
                    // Skip the rest of the line without holding it.
                    loop {
                        buf.clear();
                        match reader.by_ref().take(64 * 1024).read_until(b'\n', buf) {
                            Ok(0) => break,
                            Ok(k) => {
                                *bytes += k as u64;
                                if buf.last() == Some(&b'\n') {
                                    break;
                                }
                            }
                            Err(e) => return Some(Err(e)),
                        }
                    }
                    return Some(Ok(Err(RowError::new(*line, None, "is longer than 1 MiB"))));
                }
                if buf.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let obj = match serde_json::from_slice::<Value>(buf) {
                    Ok(Value::Object(o)) => o,
                    Ok(_) => {
                        return Some(Ok(Err(RowError::new(*line, None, "is not a JSON object"))));
                    }
                    Err(e) => {
                        return Some(Ok(Err(RowError::new(
                            *line,
                            None,
                            &format!("is not JSON ({})", e.classify_name()),
                        ))));
                    }
                };
                let values = self
                    .columns
                    .iter()
                    .map(|c| lookup(&obj, c).filter(|v| !is_empty(v)).cloned())
                    .collect();
                return Some(Ok(Ok(RawRow {
                    line: *line,
                    values,
                })));
            },
        }
    }
}

fn is_empty(v: &Value) -> bool {
    v.is_null() || v.as_str().is_some_and(|s| s.trim().is_empty())
}

/// A key, or a dotted path into nested objects (`customer.email`).
fn lookup<'a>(obj: &'a serde_json::Map<String, Value>, column: &str) -> Option<&'a Value> {
    if let Some(v) = obj.get(column) {
        return Some(v);
    }
    let mut parts = column.split('.');
    let mut v = obj.get(parts.next()?)?;
    for p in parts {
        v = v.get(p)?;
    }
    Some(v)
}

trait Classify {
    fn classify_name(&self) -> &'static str;
}

impl Classify for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Eof => "truncated",
            serde_json::error::Category::Data => "unexpected data",
            serde_json::error::Category::Io => "read error",
        }
    }
}
