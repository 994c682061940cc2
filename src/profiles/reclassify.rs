//! Bringing stored traits in line with the taxonomy in force: a trait stored before its
//! name was classified gets its category, and is sealed under its subject's data key if
//! that category holds direct identifiers. Runs at start and after a policy reload, in
//! one transaction with its audit entry.
//!
//! A trait that was sealed and whose new category is not stays sealed: opening data up
//! is left to the next time the source sends it.
use crate::audit::{AuditLog, NewEntry, Outcome};
use crate::crypto::{MasterKey, SubjectKey};
use crate::domain::Actor;
use crate::policy::{Taxonomy, UNCLASSIFIED};
use crate::store::profiles as repo;
use crate::store::{Db, StoreError};

use super::ingest::IngestError;

/// A trait name the taxonomy does not classify, with how many subjects hold it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unclassified {
    pub name: String,
    pub subjects: u64,
}

/// The stored traits `taxonomy` leaves unclassified.
pub async fn unclassified(db: &Db, taxonomy: &Taxonomy) -> Result<Vec<Unclassified>, StoreError> {
    let mut out: Vec<Unclassified> = Vec::new();
    for (name, _, subjects) in repo::trait_categories(db.conn()).await? {
        if taxonomy.classify(&name).category != UNCLASSIFIED {
            continue;
        }
        match out.iter_mut().find(|u| u.name == name) {
            Some(u) => u.subjects += subjects,
            None => out.push(Unclassified { name, subjects }),
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Re-categorises (and seals where needed) every stored trait whose category differs from
/// the taxonomy's. Returns how many trait values changed.
pub async fn reclassify(
    db: &Db,
    master: &MasterKey,
    taxonomy: &Taxonomy,
    audit: &AuditLog,
) -> Result<u64, IngestError> {
    let stale: Vec<(String, String)> = repo::trait_categories(db.conn())
        .await?
        .into_iter()
        .filter(|(name, category, _)| taxonomy.classify(name).category != category)
        .map(|(name, category, _)| (name, category))
        .collect();
    if stale.is_empty() {
        return Ok(0);
    }
    let txn = db.begin_write().await?;
    let mut changed = 0;
    let mut attributes = Vec::new();
    for (name, old) in &stale {
        let class = taxonomy.classify(name);
        if class.sealed {
            let aad = format!("trait:{name}");
            for (subject, value) in repo::clear_traits_named(&txn, name).await? {
                let wrapped =
                    repo::subject_key(&txn, &subject)
                        .await?
                        .ok_or(StoreError::Corrupt {
                            table: "subject_keys",
                            reason: "a trait's subject has no data key".into(),
                        })?;
                let key = SubjectKey::unwrap(master, &subject, &wrapped)?;
                repo::seal_trait(&txn, &subject, name, key.seal(&aad, value.as_bytes())?).await?;
            }
        }
        changed += repo::recategorise(&txn, name, old, class.category).await?;
        attributes.push(format!("trait:{name}"));
    }
    let entry =
        NewEntry::new(Actor::system(), "traits.reclassify", Outcome::Ok).attributes(attributes);
    audit.append(&txn, entry).await?;
    txn.commit().await.map_err(StoreError::from)?;
    Ok(changed)
}
