//! Reading one policy file: YAML into typed structures, and the line a key sits on so a
//! later check can say `file:line: message`.
use std::fmt;
use std::path::Path;

use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, MapAccess, Visitor};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyError {
    pub file: String,
    /// 1-based; 0 when the problem is the file as a whole.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

/// Every problem found in a policy set, one per line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl PolicyErrors {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn push(&mut self, file: &str, line: usize, message: impl Into<String>) {
        self.0.push(PolicyError {
            file: file.to_owned(),
            line,
            message: message.into(),
        });
    }
}

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}

pub struct File {
    pub name: String,
    text: String,
}

impl File {
    pub fn read(dir: &Path, name: &str, errors: &mut PolicyErrors) -> Option<Self> {
        match std::fs::read_to_string(dir.join(name)) {
            Ok(text) => Some(Self {
                name: name.to_owned(),
                text,
            }),
            Err(e) => {
                errors.push(
                    name,
                    0,
                    format!("cannot read {}: {e}", dir.join(name).display()),
                );
                None
            }
        }
    }

    /// The file's text, as read.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// A file given as text rather than read from disk.
    pub fn from_text(name: &str, text: &str) -> Self {
        Self {
            name: name.to_owned(),
            text: text.to_owned(),
        }
    }

    pub fn parse<T: DeserializeOwned>(&self, errors: &mut PolicyErrors) -> Option<T> {
        match yaml_serde::from_str(&self.text) {
            Ok(v) => Some(v),
            Err(e) => {
                let mut line = e.location().map_or(0, |l| l.line());
                // The message repeats the position; keep only what to fix.
                let text = e.to_string();
                let message = text.split(" at line ").next().unwrap_or(&text).to_owned();
                // The parser places a repeated key at its mapping; point at the repeat.
                if let Some(key) = message
                    .strip_suffix("` is given twice")
                    .and_then(|m| m.rsplit_once('`'))
                    .map(|(_, k)| k)
                {
                    line = self.repeat_line(key).unwrap_or(line);
                }
                errors.push(&self.name, line, message);
                None
            }
        }
    }

    /// The line where `key:` appears for the second time.
    fn repeat_line(&self, key: &str) -> Option<usize> {
        let prefix = format!("{key}:");
        self.text
            .lines()
            .enumerate()
            .filter(|(_, l)| l.trim_start().starts_with(&prefix))
            .nth(1)
            .map(|(i, _)| i + 1)
    }

    /// The line of `key` inside the top-level mapping `section` (0 if not found).
    pub fn line_of(&self, section: &str, key: &str) -> usize {
        let mut in_section = false;
        for (i, line) in self.text.lines().enumerate() {
            let indented = line.starts_with(' ') || line.starts_with('\t');
            if !indented && !line.trim().is_empty() && !line.starts_with('#') {
                in_section = line.trim_end().trim_end_matches(':') == section
                    || line.starts_with(&format!("{section}:"));
                continue;
            }
            let t = line.trim_start();
            if in_section
                && [
                    format!("{key}:"),
                    format!("\"{key}\":"),
                    format!("'{key}':"),
                ]
                .iter()
                .any(|p| t.starts_with(p.as_str()))
            {
                return i + 1;
            }
        }
        0
    }
}

/// A YAML mapping read in file order; a key given twice is an error (YAML parsers keep
/// the last silently, which would hide a policy).
pub struct Entries<V>(pub Vec<(String, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Entries<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct EntriesVisitor<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for EntriesVisitor<V> {
            type Value = Entries<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let mut out: Vec<(String, V)> = Vec::new();
                while let Some(k) = m.next_key::<String>()? {
                    if out.iter().any(|(e, _)| *e == k) {
                        return Err(serde::de::Error::custom(format!("`{k}` is given twice")));
                    }
                    let v = m.next_value()?;
                    out.push((k, v));
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(EntriesVisitor(PhantomData))
    }
}
