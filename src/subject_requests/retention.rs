//! Retention (GDPR Art. 5(1)(e)): data is kept only as long as some purpose may keep it.
//! Guarantees:
//! - a category is kept for the longest `retention` of the purposes that read it (dates
//!   of birth and age bands also by purposes with a minimum age, which check them);
//!   data of a category no purpose reads is not kept at all;
//! - events are measured from when they happened, traits from when they were last set;
//! - `unclassified` traits are left alone: they wait for `policy check` and a category;
//! - one sweep is one transaction with its audit entry; a dry run counts and deletes
//!   nothing.
use serde::Serialize;
use utoipa::ToSchema;

use crate::audit::{AuditError, AuditLog, NewEntry, Outcome};
use crate::domain::{Actor, Timestamp};
use crate::policy::{Policies, UNCLASSIFIED};
use crate::store::retention::{self as repo, EventFilter};
use crate::store::{Db, StoreError, profiles};

const DAY_US: i64 = 86_400_000_000;

use crate::domain::events::{BROWSING, EMAIL, PURCHASE};

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

/// The event groups and the category each belongs to (Segment's e-commerce and email
/// event names; other track events count as behaviour in general).
fn event_groups() -> Vec<(&'static str, &'static str, EventFilter)> {
    let known: Vec<String> = [BROWSING, PURCHASE, EMAIL]
        .concat()
        .into_iter()
        .map(str::to_owned)
        .collect();
    vec![
        (
            "page and screen views",
            "user.behavior.browsing_history",
            EventFilter {
                kinds: strings(&["page", "screen"]),
                names: None,
                exclude: Vec::new(),
            },
        ),
        (
            "browsing events",
            "user.behavior.browsing_history",
            EventFilter {
                kinds: strings(&["track"]),
                names: Some(strings(BROWSING)),
                exclude: Vec::new(),
            },
        ),
        (
            "purchase events",
            "user.behavior.purchase_history",
            EventFilter {
                kinds: strings(&["track"]),
                names: Some(strings(PURCHASE)),
                exclude: Vec::new(),
            },
        ),
        (
            "email events",
            "user.behavior.email_engagement",
            EventFilter {
                kinds: strings(&["track"]),
                names: Some(strings(EMAIL)),
                exclude: Vec::new(),
            },
        ),
        (
            "other track events",
            "user.behavior",
            EventFilter {
                kinds: strings(&["track"]),
                names: None,
                exclude: known,
            },
        ),
        (
            "identify, group and alias calls",
            "user.account",
            EventFilter {
                kinds: strings(&["identify", "group", "alias"]),
                names: None,
                exclude: Vec::new(),
            },
        ),
    ]
}

/// How many days `category` may be kept: the longest retention of a purpose that reads
/// it (for the general `user.behavior`, of a purpose reading anything under it); `None`
/// when no purpose does.
pub fn keep_days(policies: &Policies, category: &str) -> Option<u32> {
    let age_check = matches!(
        category,
        "user.demographic.date_of_birth" | "user.demographic.age_range"
    );
    policies
        .purposes
        .purposes
        .iter()
        .filter(|p| {
            p.may_read(category)
                || (age_check && p.minimum_age.is_some())
                || (category == "user.behavior"
                    && p.reads.iter().any(|r| r.starts_with("user.behavior")))
        })
        .map(|p| p.retention_days)
        .max()
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SweepLine {
    /// What is swept: an event group, or `traits: <category>`.
    pub what: String,
    pub category: String,
    /// `None`: no purpose reads the category, so none of it is kept.
    pub keep_days: Option<u32>,
    /// Older than this goes (RFC 3339).
    pub cutoff: String,
    pub rows: u64,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SweepReport {
    pub dry_run: bool,
    pub at: String,
    pub lines: Vec<SweepLine>,
    pub events: u64,
    pub traits: u64,
}

pub struct Sweeper<'a> {
    pub db: &'a Db,
    pub audit: &'a AuditLog,
    pub policies: &'a Policies,
    pub actor: Actor,
    pub now: Timestamp,
}

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

impl Sweeper<'_> {
    fn cutoff(&self, keep: Option<u32>) -> i64 {
        let now = self.now.unix_micros();
        keep.map_or(now, |d| now - i64::from(d) * DAY_US)
    }

    /// Deletes (or, dry, counts) every event and trait past its category's retention.
    pub async fn sweep(&self, dry_run: bool) -> Result<SweepReport, SweepError> {
        let txn = self.db.begin_write().await?;
        let mut lines = Vec::new();
        let (mut events, mut traits) = (0, 0);
        for (what, category, filter) in event_groups() {
            let keep = keep_days(self.policies, category);
            let cutoff = self.cutoff(keep);
            let rows = if dry_run {
                repo::count_events(&txn, &filter, cutoff).await?
            } else {
                repo::delete_events(&txn, &filter, cutoff).await?
            };
            events += rows;
            lines.push(SweepLine {
                what: what.to_owned(),
                category: category.to_owned(),
                keep_days: keep,
                cutoff: Timestamp::from_unix_micros(cutoff).to_rfc3339(),
                rows,
            });
        }
        let mut categories: Vec<String> = profiles::trait_categories(&txn)
            .await?
            .into_iter()
            .map(|(_, c, _)| c)
            .filter(|c| c != UNCLASSIFIED)
            .collect();
        categories.sort();
        categories.dedup();
        for category in categories {
            let keep = keep_days(self.policies, &category);
            let cutoff = self.cutoff(keep);
            let rows = if dry_run {
                repo::count_traits(&txn, &category, cutoff).await?
            } else {
                repo::delete_traits(&txn, &category, cutoff).await?
            };
            traits += rows;
            lines.push(SweepLine {
                what: format!("traits: {category}"),
                category,
                keep_days: keep,
                cutoff: Timestamp::from_unix_micros(cutoff).to_rfc3339(),
                rows,
            });
        }
        if !dry_run {
            let entry = NewEntry::new(self.actor.clone(), "retention.sweep", Outcome::Ok)
                .attributes(vec![format!("events:{events}"), format!("traits:{traits}")]);
            self.audit.append(&txn, entry).await?;
            txn.commit().await.map_err(StoreError::from)?;
        }
        Ok(SweepReport {
            dry_run,
            at: self.now.to_rfc3339(),
            lines,
            events,
            traits,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_category_is_kept_as_long_as_its_longest_purpose() {
        let p = Policies::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"))
            .unwrap();
        // Purchases serve the contract (2190 days); browsing analytics (395) at most.
        assert_eq!(keep_days(&p, "user.behavior.purchase_history"), Some(2190));
        assert_eq!(keep_days(&p, "user.behavior.browsing_history"), Some(395));
        assert_eq!(keep_days(&p, "user.behavior"), Some(2190));
        // Dates of birth are kept for the age checks of purposes with a minimum age.
        assert_eq!(keep_days(&p, "user.demographic.date_of_birth"), Some(730));
        // Nobody reads gender in the shipped set: it is not kept.
        assert_eq!(keep_days(&p, "user.demographic.gender"), None);
    }
}
