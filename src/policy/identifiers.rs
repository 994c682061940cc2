//! External identifiers (customer number, loyalty card, device id) that identity
//! resolution uses besides the built-in ones.

use serde::Deserialize;

use super::source::{Entries, File, PolicyErrors};
use super::taxonomy::Taxonomy;

/// Identifier kinds the gateway always knows, strongest first.
pub const BUILT_IN_IDENTIFIERS: &[&str] = &["user_id", "email", "phone", "anonymous_id"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentifiersFile {
    external_ids: Entries<ExternalIdDef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExternalIdDef {
    category: String,
    from: Vec<String>,
}

/// Where a tracking message carries an external id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdSource {
    Traits(String),
    ContextTraits(String),
    /// A path under `context`, e.g. `device.id`.
    Context(Vec<String>),
    Properties(String),
}

impl IdSource {
    fn parse(path: &str) -> Option<Self> {
        let parts: Vec<&str> = path.split('.').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return None;
        }
        Some(match parts.as_slice() {
            ["traits", k] => Self::Traits((*k).to_owned()),
            ["context", "traits", k] => Self::ContextTraits((*k).to_owned()),
            ["context", rest @ ..] if !rest.is_empty() => {
                Self::Context(rest.iter().map(|s| (*s).to_owned()).collect())
            }
            ["properties", k] => Self::Properties((*k).to_owned()),
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalId {
    pub kind: String,
    pub category: String,
    pub from: Vec<IdSource>,
}

fn valid_kind(kind: &str) -> bool {
    !kind.is_empty()
        && kind.len() <= 40
        && kind
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

pub(super) fn compile(
    file: &File,
    taxonomy: &Taxonomy,
    errors: &mut PolicyErrors,
) -> Option<Vec<ExternalId>> {
    let raw: IdentifiersFile = file.parse(errors)?;
    let before = errors.0.len();
    let mut out = Vec::new();
    for (kind, def) in raw.external_ids.0 {
        let line = file.line_of("external_ids", &kind);
        let what = format!("external id `{kind}`");
        if BUILT_IN_IDENTIFIERS.contains(&kind.as_str()) {
            errors.push(&file.name, line, format!("{what}: is built in; remove it"));
            continue;
        }
        if !valid_kind(&kind) {
            errors.push(
                &file.name,
                line,
                format!("{what}: use lower-case letters, digits and `_` (at most 40)"),
            );
            continue;
        }
        if taxonomy.category(&def.category).is_none() {
            errors.push(
                &file.name,
                line,
                format!("{what}: unknown category `{}`", def.category),
            );
        }
        if def.from.is_empty() {
            errors.push(&file.name, line, format!("{what}: `from` names no field"));
        }
        let mut from = Vec::new();
        for path in &def.from {
            match IdSource::parse(path) {
                Some(s) => from.push(s),
                None => errors.push(
                    &file.name,
                    line,
                    format!("{what}: `{path}` is not traits.X, context.traits.X, context.X.Y or properties.X"),
                ),
            }
        }
        out.push(ExternalId {
            kind,
            category: def.category,
            from,
        });
    }
    (errors.0.len() == before).then_some(out)
}
