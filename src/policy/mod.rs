//! The policies in `policies/`, loaded once and compiled into plain structures so that a
//! decision is a map look-up. Guarantees:
//! - a set either loads whole or not at all: every problem is reported as
//!   `file:line: message`, and nothing of a bad set is used;
//! - classification is fail-closed: a name the taxonomy does not know is `unclassified`,
//!   which no purpose may read.
//!
//! [`gate`] is the one way profile data leaves: `authorize` makes a `PurposeGrant`,
//! `minimise` a `MinimisedProfile`, and nothing else can make either.
pub mod campaigns;
pub mod catalog;
pub mod experiments;
pub mod gate;
mod identifiers;
mod purposes;
pub mod recipients;
pub mod recommendations;
pub mod reload;
pub mod ropa;
pub mod segments;
mod source;
mod taxonomy;
pub mod templates;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

pub use identifiers::{BUILT_IN_IDENTIFIERS, ExternalId, IdSource};
pub use purposes::{ConsentPurpose, LegalBasis, Purpose, PurposeSet, RecipientKind};
pub use source::{PolicyError, PolicyErrors};
pub use taxonomy::{Category, Classification, Taxonomy, UNCLASSIFIED, squash as taxonomy_squash};

/// A loaded, checked policy set.
#[derive(Clone, Debug)]
pub struct Policies {
    pub dir: PathBuf,
    pub taxonomy: Taxonomy,
    pub external_ids: Vec<ExternalId>,
    pub purposes: PurposeSet,
    /// The texts the set was compiled from, as published to the other nodes.
    pub texts: PolicyTexts,
}

/// The three files of a policy set, as text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyTexts {
    pub taxonomy: String,
    pub identifiers: String,
    pub purposes: String,
}

impl PolicyTexts {
    /// SHA-256 over the three texts, each length-prefixed, in hex: equal digests, equal sets.
    pub fn digest(&self) -> String {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for text in [&self.taxonomy, &self.identifiers, &self.purposes] {
            ctx.update(&(text.len() as u64).to_be_bytes());
            ctx.update(text.as_bytes());
        }
        hex::encode(ctx.finish())
    }
}

impl Policies {
    /// Reads and checks every file of the set in `dir`.
    pub fn load(dir: &Path) -> Result<Self, PolicyErrors> {
        Self::compile(dir, |name, errors| source::File::read(dir, name, errors))
    }

    /// Checks a set given as the texts of `taxonomy.yaml`, `identifiers.yaml` and
    /// `purposes.yaml`, exactly as [`Policies::load`] checks the files (the fuzz targets
    /// feed it untrusted text); `dir` is only recorded.
    pub fn from_texts(
        dir: &Path,
        taxonomy: &str,
        identifiers: &str,
        purposes: &str,
    ) -> Result<Self, PolicyErrors> {
        Self::compile(dir, |name, _| {
            let text = match name {
                "taxonomy.yaml" => taxonomy,
                "identifiers.yaml" => identifiers,
                _ => purposes,
            };
            Some(source::File::from_text(name, text))
        })
    }

    fn compile(
        dir: &Path,
        mut read: impl FnMut(&str, &mut PolicyErrors) -> Option<source::File>,
    ) -> Result<Self, PolicyErrors> {
        let mut errors = PolicyErrors::default();
        let mut texts = PolicyTexts::default();
        let mut read = |name: &str, text: &mut String, errors: &mut PolicyErrors| {
            let file = read(name, errors);
            if let Some(f) = &file {
                f.text().clone_into(text);
            }
            file
        };
        let taxonomy = read("taxonomy.yaml", &mut texts.taxonomy, &mut errors)
            .and_then(|f| Taxonomy::compile(&f, &mut errors));
        let identifiers_file = read("identifiers.yaml", &mut texts.identifiers, &mut errors);
        let external_ids = match (&taxonomy, identifiers_file) {
            (Some(t), Some(f)) => identifiers::compile(&f, t, &mut errors),
            _ => None,
        };
        let purposes_file = read("purposes.yaml", &mut texts.purposes, &mut errors);
        let purposes = match (&taxonomy, purposes_file) {
            (Some(t), Some(f)) => purposes::compile(&f, t, &mut errors),
            _ => None,
        };
        match (taxonomy, external_ids, purposes) {
            (Some(taxonomy), Some(external_ids), Some(purposes)) if errors.is_empty() => Ok(Self {
                dir: dir.to_path_buf(),
                taxonomy,
                external_ids,
                purposes,
                texts,
            }),
            _ => Err(errors),
        }
    }

    /// Whether `kind` names an identifier (built in or external).
    pub fn is_identifier_kind(&self, kind: &str) -> bool {
        BUILT_IN_IDENTIFIERS.contains(&kind) || self.external_id(kind).is_some()
    }

    pub fn purpose(&self, name: &str) -> Option<&Purpose> {
        self.purposes.purposes.iter().find(|p| p.name == name)
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
        let p = &self.purposes;
        format!(
            "{} categories ({} sealed), {} classified attribute names, {} external identifiers ({}), {} purposes ({}), {} consents, {} recipient kinds",
            self.taxonomy.categories().count(),
            sealed,
            self.taxonomy.attribute_count(),
            self.external_ids.len(),
            self.external_ids
                .iter()
                .map(|e| e.kind.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            p.purposes.len(),
            p.purposes
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            p.consents.len(),
            p.recipients.len()
        )
    }
}

/// The policy set in force, replaced whole on reload; readers keep the set they started with.
/// It also remembers which published generation (`policy_sets`) it is, 0 for none yet.
#[derive(Clone, Debug)]
pub struct SharedPolicies(Arc<RwLock<Arc<Policies>>>, Arc<AtomicI64>);

impl SharedPolicies {
    pub fn new(policies: Policies) -> Self {
        Self(
            Arc::new(RwLock::new(Arc::new(policies))),
            Arc::new(AtomicI64::new(0)),
        )
    }

    /// The published generation this node has in force (or has seen and refused).
    pub fn generation(&self) -> i64 {
        self.1.load(Ordering::Acquire)
    }

    pub fn set_generation(&self, generation: i64) {
        self.1.fetch_max(generation, Ordering::AcqRel);
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
    fn policies_given_as_text_check_as_the_files_do() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let read = |n: &str| std::fs::read_to_string(dir.join(n)).unwrap();
        let (t, i, p) = (
            read("taxonomy.yaml"),
            read("identifiers.yaml"),
            read("purposes.yaml"),
        );
        let loaded = Policies::load(&dir).unwrap();
        let given = Policies::from_texts(&dir, &t, &i, &p).unwrap();
        assert_eq!(given.summary(), loaded.summary());
        let bad = Policies::from_texts(&dir, &t, "identifiers: [", &p).unwrap_err();
        assert!(bad.0.iter().all(|e| e.file == "identifiers.yaml"), "{bad}");
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
        let email = p.purpose("marketing.communications.email").unwrap();
        assert_eq!(email.legal_basis, LegalBasis::Consent);
        assert!(email.may_read("user.contact.email"));
        assert!(!email.may_read("user.contact.phone_number"));
        assert!(p.purpose("marketing.advertising").unwrap().sale_or_share);
        assert!(
            p.purposes
                .consents
                .iter()
                .any(|c| c.name == "email_marketing" && c.double_opt_in)
        );
    }

    #[test]
    fn purposes_are_checked_against_the_taxonomy_consents_and_recipients() {
        let dir = tempfile::tempdir().unwrap();
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        for f in ["taxonomy.yaml", "identifiers.yaml"] {
            std::fs::copy(shipped.join(f), dir.path().join(f)).unwrap();
        }
        write(
            dir.path(),
            "purposes.yaml",
            "consents:\n  news:\n    description: x\n  unused:\n    description: y\nsegment_categories:\n  Marketing: newz\nrecipients:\n  esp: {}\n  nobody: {}\npurposes:\n  mail:\n    legal_basis: consent\n    consent: news\n    reads: [user.contact.email, unclassified, user.shoe]\n    retention: forever\n    recipients: [esp, printer]\n  stats:\n    legal_basis: legitimate_interest\n    consent: news\n    reads: [user.behavior]\n    retention: 30d\n  ads:\n    legal_basis: consent\n    reads: [user]\n    retention: 1y\n    minimum_age: 99\n",
        );
        let errors = Policies::load(dir.path()).unwrap_err().to_string();
        for expected in [
            "purposes.yaml:7: segment category `Marketing`: undefined consent `newz`",
            "purposes.yaml:12: purpose `mail`: may not read `unclassified`",
            "purposes.yaml:12: purpose `mail`: unknown category `user.shoe`",
            "purposes.yaml:12: purpose `mail`: retention `forever` is not like",
            "purposes.yaml:12: purpose `mail`: undefined recipient `printer`",
            "purposes.yaml:18: purpose `stats`: `consent` is only for legal_basis consent",
            "purposes.yaml:23: purpose `ads`: a consent-based purpose must name its `consent`",
            "purposes.yaml:23: purpose `ads`: minimum_age must be 13 to 21",
            "purposes.yaml:10: recipient `nobody`: unreachable",
            "purposes.yaml:4: consent `unused`: no purpose uses it",
        ] {
            assert!(errors.contains(expected), "{expected}\n---\n{errors}");
        }
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
