//! The data-category taxonomy: categories (fideslang names), which are sealed, and which
//! profile attribute names belong to which.
use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

use super::source::{Entries, File, PolicyErrors};

/// The category of every name the taxonomy does not know; no purpose may read it.
pub const UNCLASSIFIED: &str = "unclassified";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TaxonomyFile {
    categories: Entries<CategoryDef>,
    attributes: Entries<AttributeDef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CategoryDef {
    #[serde(default)]
    description: String,
    sealed: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AttributeDef {
    category: String,
    #[serde(default)]
    aliases: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Category {
    pub description: String,
    /// Values are direct identifiers: stored only under the subject's data key.
    pub sealed: bool,
}

/// Where a name belongs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Classification<'a> {
    pub category: &'a str,
    pub sealed: bool,
}

#[derive(Clone, Debug)]
pub struct Taxonomy {
    categories: BTreeMap<String, Category>,
    /// Squashed attribute name or alias → category.
    names: HashMap<String, String>,
    /// The attributes as the file lists them: (name, category).
    listed: Vec<(String, String)>,
    /// Squashed attribute name or alias → its index in `listed`.
    canonical: HashMap<String, usize>,
}

/// Names compare without case, `_`, `-`, `.` or spaces: `first_name` = `firstName`.
pub fn squash(name: &str) -> String {
    name.chars()
        .filter(|c| !matches!(c, '_' | '-' | ' ' | '.'))
        .flat_map(char::to_lowercase)
        .collect()
}

fn valid_category_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
}

impl Taxonomy {
    pub(super) fn compile(file: &File, errors: &mut PolicyErrors) -> Option<Self> {
        let raw: TaxonomyFile = file.parse(errors)?;
        let before = errors.0.len();
        let declared: BTreeMap<&str, &CategoryDef> = raw
            .categories
            .0
            .iter()
            .map(|(k, v)| (k.as_str(), v))
            .collect();
        let mut categories = BTreeMap::new();
        // Sorted by name, every parent comes before its children.
        for (name, def) in declared.iter().map(|(k, v)| ((*k).to_owned(), *v)) {
            let name = &name;
            let line = file.line_of("categories", name);
            if name == UNCLASSIFIED {
                errors.push(&file.name, line, format!("category `{name}`: is reserved"));
                continue;
            }
            if !valid_category_name(name) {
                errors.push(
                    &file.name,
                    line,
                    format!(
                        "category `{name}`: use lower-case dotted names, e.g. user.contact.email"
                    ),
                );
                continue;
            }
            let parent = name.rsplit_once('.').map(|(p, _)| p);
            let inherited = match parent {
                None => false,
                Some(p) => match categories.get(p) {
                    Some(Category { sealed, .. }) => *sealed,
                    None => {
                        errors.push(
                            &file.name,
                            line,
                            format!("category `{name}`: its parent `{p}` is not defined"),
                        );
                        continue;
                    }
                },
            };
            categories.insert(
                name.clone(),
                Category {
                    description: def.description.clone(),
                    sealed: def.sealed.unwrap_or(inherited),
                },
            );
        }
        let mut names: HashMap<String, String> = HashMap::new();
        let mut listed = Vec::new();
        let mut canonical = HashMap::new();
        let mut first_spelling: HashMap<String, String> = HashMap::new();
        for (name, def) in &raw.attributes.0 {
            let line = file.line_of("attributes", name);
            let what = format!("attribute `{name}`");
            if def.category == UNCLASSIFIED {
                errors.push(
                    &file.name,
                    line,
                    format!("{what}: `{UNCLASSIFIED}` is reserved for names not listed here; remove the entry instead"),
                );
                continue;
            }
            if !categories.contains_key(&def.category)
                && !declared.contains_key(def.category.as_str())
            {
                errors.push(
                    &file.name,
                    line,
                    format!("{what}: unknown category `{}`", def.category),
                );
                continue;
            }
            let index = listed.len();
            listed.push((name.clone(), def.category.clone()));
            for spelling in std::iter::once(name).chain(&def.aliases) {
                let key = squash(spelling);
                if key.is_empty() {
                    errors.push(&file.name, line, format!("{what}: an empty name or alias"));
                } else if let Some(earlier) = first_spelling.get(&key) {
                    errors.push(
                        &file.name,
                        line,
                        format!("{what}: the same name as `{earlier}` (names compare without case, `_`, `-`, `.` or spaces)"),
                    );
                } else {
                    first_spelling.insert(key.clone(), spelling.clone());
                    canonical.insert(key.clone(), index);
                    names.insert(key, def.category.clone());
                }
            }
        }
        (errors.0.len() == before).then_some(Self {
            categories,
            names,
            listed,
            canonical,
        })
    }

    /// The category `name` belongs to, `unclassified` if none.
    pub fn classify(&self, name: &str) -> Classification<'_> {
        self.names
            .get(&squash(name))
            .and_then(|c| self.categories.get_key_value(c))
            .map_or(
                Classification {
                    category: UNCLASSIFIED,
                    sealed: false,
                },
                |(name, c)| Classification {
                    category: name,
                    sealed: c.sealed,
                },
            )
    }

    pub fn category(&self, name: &str) -> Option<&Category> {
        self.categories.get(name)
    }

    pub fn categories(&self) -> impl Iterator<Item = (&str, &Category)> {
        self.categories.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn attribute_count(&self) -> usize {
        self.listed.len()
    }

    /// The attributes as the file lists them: (name, category).
    pub fn attributes(&self) -> impl Iterator<Item = (&str, &str)> {
        self.listed.iter().map(|(n, c)| (n.as_str(), c.as_str()))
    }

    /// The listed name `name` is a spelling of (`firstName` → `first_name`).
    pub fn canonical(&self, name: &str) -> Option<&str> {
        self.canonical
            .get(&squash(name))
            .and_then(|&i| self.listed.get(i))
            .map(|(n, _)| n.as_str())
    }

    /// Removes, at any depth of event properties, every key naming a sealed category.
    /// A bare `name` stays: in Segment's e-commerce spec it is the product's or page's.
    pub fn strip_identifiers(&self, v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                map.retain(|k, _| squash(k) == "name" || !self.classify(k).sealed);
                for child in map.values_mut() {
                    self.strip_identifiers(child);
                }
            }
            serde_json::Value::Array(items) => {
                items.iter_mut().for_each(|i| self.strip_identifiers(i))
            }
            _ => {}
        }
    }
}
