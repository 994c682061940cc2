//! The policies in `policies/`, loaded once and compiled into plain structures so that a
//! decision is a map look-up. Guarantees:
//! - a set either loads whole or not at all: every problem is reported as
//!   `file:line: message`, and nothing of a bad set is used;
//! - classification is fail-closed: a name the taxonomy does not know is `unclassified`,
//!   which no purpose may read.
//!
//! This issue loads the taxonomy and the external identifiers; purposes (issue 4) build on
//! the same loader.
mod identifiers;
mod source;
mod taxonomy;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

pub use identifiers::{BUILT_IN_IDENTIFIERS, ExternalId, IdSource};
pub use source::{PolicyError, PolicyErrors};
pub use taxonomy::{Category, Classification, Taxonomy, UNCLASSIFIED};

/// A loaded, checked policy set.
#[derive(Clone, Debug)]
pub struct Policies {
    pub dir: PathBuf,
    pub taxonomy: Taxonomy,
    pub external_ids: Vec<ExternalId>,
}

impl Policies {
    /// Reads and checks every file of the set in `dir`.
    pub fn load(dir: &Path) -> Result<Self, PolicyErrors> {
        let mut errors = PolicyErrors::default();
        let taxonomy = source::File::read(dir, "taxonomy.yaml", &mut errors)
            .and_then(|f| Taxonomy::compile(&f, &mut errors));
        let external_ids = match (
            &taxonomy,
            source::File::read(dir, "identifiers.yaml", &mut errors),
        ) {
            (Some(t), Some(f)) => identifiers::compile(&f, t, &mut errors),
            _ => None,
        };
        match (taxonomy, external_ids) {
            (Some(taxonomy), Some(external_ids)) if errors.is_empty() => Ok(Self {
                dir: dir.to_path_buf(),
                taxonomy,
                external_ids,
            }),
            _ => Err(errors),
        }
    }

    /// Whether `kind` names an identifier (built in or external).
    pub fn is_identifier_kind(&self, kind: &str) -> bool {
        BUILT_IN_IDENTIFIERS.contains(&kind) || self.external_id(kind).is_some()
    }

    pub fn external_id(&self, kind: &str) -> Option<&ExternalId> {
        self.external_ids.iter().find(|e| e.kind == kind)
    }

    /// Every identifier kind, built-in first, for messages that list them.
    pub fn identifier_kinds(&self) -> Vec<&str> {
        BUILT_IN_IDENTIFIERS
            .iter()
            .copied()
            .chain(self.external_ids.iter().map(|e| e.kind.as_str()))
            .collect()
    }

    /// A one-paragraph description of the set, for `policy check` and the start log.
    pub fn summary(&self) -> String {
        let sealed = self.taxonomy.categories().filter(|(_, c)| c.sealed).count();
        format!(
            "{} categories ({} sealed), {} classified attribute names, {} external identifiers ({})",
            self.taxonomy.categories().count(),
            sealed,
            self.taxonomy.attribute_count(),
            self.external_ids.len(),
            self.external_ids
                .iter()
                .map(|e| e.kind.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// The policy set in force, replaced whole on reload; readers keep the set they started with.
#[derive(Clone, Debug)]
pub struct SharedPolicies(Arc<RwLock<Arc<Policies>>>);

impl SharedPolicies {
    pub fn new(policies: Policies) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(policies))))
    }

    pub fn get(&self) -> Arc<Policies> {
        match self.0.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    pub fn replace(&self, policies: Policies) {
        let new = Arc::new(policies);
        match self.0.write() {
            Ok(mut guard) => *guard = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn the_shipped_policies_load() {
        let p = Policies::load(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("policies")
                .as_path(),
        )
        .unwrap();
        assert_eq!(p.taxonomy.classify("firstName").category, "user.name.first");
        assert!(p.taxonomy.classify("E-mail").sealed);
        assert!(!p.taxonomy.classify("country").sealed);
        assert_eq!(p.taxonomy.classify("shoe_size").category, UNCLASSIFIED);
        assert!(p.is_identifier_kind("loyalty_id"));
        assert!(p.is_identifier_kind("email"));
        assert!(!p.is_identifier_kind("plan"));
    }

    #[test]
    fn every_problem_is_reported_with_its_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "taxonomy.yaml",
            "categories:\n  user:\n    description: x\n  user.contact.email:\n    sealed: true\nattributes:\n  email:\n    category: user.contact.mail\n  plan:\n    category: unclassified\n",
        );
        write(
            dir.path(),
            "identifiers.yaml",
            "external_ids:\n  email:\n    category: user\n    from: [traits.email]\n",
        );
        let errors = Policies::load(dir.path()).unwrap_err().to_string();
        assert!(errors.contains("taxonomy.yaml:4: category `user.contact.email`: its parent `user.contact` is not defined"), "{errors}");
        assert!(
            errors.contains(
                "taxonomy.yaml:7: attribute `email`: unknown category `user.contact.mail`"
            ),
            "{errors}"
        );
        assert!(
            errors.contains("taxonomy.yaml:9: attribute `plan`: `unclassified` is reserved"),
            "{errors}"
        );
    }

    #[test]
    fn external_ids_must_be_new_kinds_with_known_categories_and_real_paths() {
        let dir = tempfile::tempdir().unwrap();
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/taxonomy.yaml");
        std::fs::copy(shipped, dir.path().join("taxonomy.yaml")).unwrap();
        write(
            dir.path(),
            "identifiers.yaml",
            "external_ids:\n  email:\n    category: user\n    from: [traits.email]\n  card:\n    category: user.card\n    from: [body.card]\n  card:\n    category: user\n    from: []\n",
        );
        let errors = Policies::load(dir.path()).unwrap_err().to_string();
        assert!(
            errors.contains("identifiers.yaml:8: external_ids: `card` is given twice"),
            "{errors}"
        );
        write(
            dir.path(),
            "identifiers.yaml",
            "external_ids:\n  email:\n    category: user\n    from: [traits.email]\n  card:\n    category: user.card\n    from: [body.card]\n",
        );
        let errors = Policies::load(dir.path()).unwrap_err().to_string();
        assert!(
            errors.contains("identifiers.yaml:2: external id `email`: is built in"),
            "{errors}"
        );
        assert!(
            errors.contains("identifiers.yaml:5: external id `card`: unknown category `user.card`"),
            "{errors}"
        );
        assert!(
            errors.contains("identifiers.yaml:5: external id `card`: `body.card` is not"),
            "{errors}"
        );
    }

    #[test]
    fn yaml_errors_and_unknown_fields_carry_their_line() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "taxonomy.yaml",
            "categories:\n  user:\n    descripton: x\nattributes: {}\n",
        );
        write(dir.path(), "identifiers.yaml", "external_ids: {}\n");
        let errors = Policies::load(dir.path()).unwrap_err().to_string();
        assert!(errors.starts_with("taxonomy.yaml:3: "), "{errors}");
        assert!(errors.contains("descripton"), "{errors}");
        let missing = tempfile::tempdir().unwrap();
        let errors = Policies::load(missing.path()).unwrap_err().to_string();
        assert!(errors.contains("taxonomy.yaml:0: cannot read"), "{errors}");
    }

    #[test]
    fn two_attributes_that_normalise_to_one_name_are_a_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "taxonomy.yaml",
            "categories:\n  user:\n    description: x\nattributes:\n  first_name:\n    category: user\n  firstName:\n    category: user\n",
        );
        write(dir.path(), "identifiers.yaml", "external_ids: {}\n");
        let errors = Policies::load(dir.path()).unwrap_err().to_string();
        assert!(
            errors
                .contains("taxonomy.yaml:7: attribute `firstName`: the same name as `first_name`"),
            "{errors}"
        );
    }
}
