//! Executing a verified request. Guarantees:
//! - nothing runs before `verified`; a duplicate is never executed on its own;
//! - each kind runs in one transaction with its transitions and audit entries, so a crash
//!   leaves either the whole step or none of it, and executing again resumes;
//! - erasure deletes every row held about the person (one statement per table), destroys
//!   their data key, and puts a keyed hash of each of their identifiers on the suppression
//!   list, so that later tracking calls, imports and consents do not bring them back.
use sea_orm::DatabaseTransaction;

use super::package::{AccessPackage, Builder, PackageError};
use super::requests::{RequestError, RequestView, Requests};
use crate::audit::{NewEntry, Outcome};
use crate::crypto::{MasterKey, SubjectKey};
use crate::policy::LegalBasis;
use crate::store::consents::ConsentRow;
use crate::store::dsar::{self as repo, RequestRow};
use crate::store::subject_flags::{self, FlagRow};
use crate::store::{StoreError, consents, erasure, profiles, suppressions};

impl From<PackageError> for RequestError {
    fn from(e: PackageError) -> Self {
        match e {
            PackageError::Store(s) => Self::Store(s),
            PackageError::Keyring(k) => Self::Keyring(k),
            PackageError::Write(m) => Self::Store(StoreError::Corrupt {
                table: "dsar_requests",
                reason: m,
            }),
        }
    }
}

/// The formats a package is served in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Html,
    Zip,
}

impl Format {
    pub fn parse(s: &str) -> Result<Self, RequestError> {
        match s {
            "json" => Ok(Self::Json),
            "html" => Ok(Self::Html),
            "zip" => Ok(Self::Zip),
            _ => Err(RequestError::Invalid("format: json, html or zip".into())),
        }
    }

    /// The format asked for, else the kind's own: a ZIP for portability, JSON for access.
    pub fn for_package(asked: Option<&str>, p: &AccessPackage) -> Result<Self, RequestError> {
        match asked {
            Some(f) => Self::parse(f),
            None if p.kind == "portability" => Ok(Self::Zip),
            None => Ok(Self::Json),
        }
    }
}

pub struct Executor<'a> {
    pub requests: Requests<'a>,
    pub master: &'a MasterKey,
    pub controller: &'a str,
    /// How long a package stays downloadable after completion.
    pub package_ttl_secs: i64,
}

impl<'a> Executor<'a> {
    /// An executor with the controller name and package lifetime from the settings.
    pub fn new(
        requests: Requests<'a>,
        master: &'a MasterKey,
        settings: &'a crate::config::Settings,
    ) -> Self {
        Self {
            requests,
            master,
            controller: settings.controller(),
            package_ttl_secs: i64::try_from(settings.dsar_package_ttl_secs).unwrap_or(i64::MAX),
        }
    }
}

impl Executor<'_> {
    /// Runs a verified request (or resumes one left `in_progress`) to `completed`, in two
    /// commits: the claim (`in_progress`), then the whole of the work with its end state. A
    /// crash after the claim leaves the request for [`Executor::resume_interrupted`].
    pub async fn execute(&self, id: &str) -> Result<RequestView, RequestError> {
        self.claim(id).await?;
        self.perform(id).await
    }

    /// Requests left `in_progress` by a crash, run to their end (at start and then every
    /// minute). Returns how many were finished; one that cannot go on (a legal hold set
    /// since it was claimed) is logged and left for the DPO.
    pub async fn resume_interrupted(&self) -> Result<usize, RequestError> {
        let r = &self.requests;
        let mut done = 0;
        for row in repo::list(r.db.conn(), Some("in_progress"), None, 1000).await? {
            if row.kind == "rectification" || row.duplicate_of.is_some() {
                continue;
            }
            match self.perform(&row.id).await {
                Ok(_) => {
                    tracing::info!(request = %row.id, kind = %row.kind, "interrupted request resumed and completed");
                    done += 1;
                }
                Err(RequestError::State(why)) => {
                    tracing::warn!(request = %row.id, reason = %why, "interrupted request cannot resume");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    /// What stops a request from running; else its subject.
    async fn executable(
        &self,
        txn: &DatabaseTransaction,
        row: &RequestRow,
    ) -> Result<String, RequestError> {
        if let Some(first) = &row.duplicate_of {
            return Err(RequestError::State(format!(
                "this request is a duplicate of {first}; execute that one"
            )));
        }
        if row.kind == "rectification" {
            return Err(RequestError::State(
                "a rectification is executed with its corrected values: POST /v1/dsar/{id}/rectify"
                    .into(),
            ));
        }
        match row.status.as_str() {
            "verified" | "in_progress" => {}
            "received" | "verifying" => {
                return Err(RequestError::State(
                    "nothing is executed before the requester's identity is verified".into(),
                ));
            }
            other => {
                return Err(RequestError::State(format!(
                    "the request is {other}; there is nothing left to execute"
                )));
            }
        }
        let Some(subject) = row.subject_id.clone() else {
            return Err(RequestError::State(
                "no data is held for this request; reject it with reason no_data_held".into(),
            ));
        };
        if row.kind == "erasure"
            && let Some(hold) = subject_flags::get(txn, &subject, subject_flags::LEGAL_HOLD).await?
        {
            return Err(RequestError::State(format!(
                "the subject is under legal hold ({}); erasure is blocked until the hold is lifted",
                hold.reason
            )));
        }
        Ok(subject)
    }

    /// Step 1: `verified` → `in_progress`, committed on its own.
    async fn claim(&self, id: &str) -> Result<(), RequestError> {
        let r = &self.requests;
        let txn = r.db.begin_write().await?;
        let mut row = repo::lock(&txn, id).await?.ok_or(RequestError::NotFound)?;
        self.executable(&txn, &row).await?;
        if row.status == "verified" {
            r.move_in(&txn, &mut row, "in_progress", "execution started")
                .await?;
            txn.commit().await.map_err(StoreError::from)?;
            crate::crash_points::reach("dsar.execute.claimed");
        }
        Ok(())
    }

    /// Step 2, run again (up to four times) when PostgreSQL gave the transaction up in
    /// favour of a concurrent one (a deadlock or serialization failure): it changed
    /// nothing, so the whole of the work starts over.
    async fn perform(&self, id: &str) -> Result<RequestView, RequestError> {
        let mut attempts = 0;
        loop {
            match self.perform_once(id).await {
                Err(e) if attempts < 4 && e.is_transaction_conflict() => {
                    attempts += 1;
                    tracing::info!(request = %id, attempts, "request rolled back by a concurrent transaction; running it again");
                }
                other => return other,
            }
        }
    }

    /// The work and the end state, in one transaction. A request another run has
    /// finished meanwhile is shown as it is.
    async fn perform_once(&self, id: &str) -> Result<RequestView, RequestError> {
        let r = &self.requests;
        let txn = r.db.begin_write().await?;
        let mut row = repo::lock(&txn, id).await?.ok_or(RequestError::NotFound)?;
        if row.status != "in_progress" {
            drop(txn);
            return r.show(id).await;
        }
        let subject = self.executable(&txn, &row).await?;
        // Recipients that received the data hear of an erasure or restriction (Art. 19);
        // the outbox rows commit with the change they announce.
        let webhooks = match row.kind.as_str() {
            "erasure" | "restriction" => {
                super::notices::queue_in(&txn, &row.id, &subject, &row.kind, r.now).await?
            }
            _ => 0,
        };
        let done = match row.kind.as_str() {
            "access" | "portability" => {
                row.package_expires_at =
                    Some(r.now.plus_seconds(self.package_ttl_secs).unix_micros());
                "package ready for download".to_owned()
            }
            "erasure" => self.erase(&txn, &row, &subject).await?,
            "restriction" => {
                subject_flags::insert(
                    &txn,
                    &FlagRow {
                        subject_id: subject.clone(),
                        flag: subject_flags::RESTRICTED.into(),
                        reason: format!("request {}", row.id),
                        set_at: r.now.unix_micros(),
                        set_by: r.actor.key_id.clone(),
                    },
                )
                .await?;
                self.audited(
                    &txn,
                    &subject,
                    "subject.restrict",
                    vec![format!("dsar:{}", row.id)],
                )
                .await?;
                "processing restricted".to_owned()
            }
            "objection" => self.object(&txn, &row, &subject).await?,
            other => {
                return Err(RequestError::State(format!(
                    "requests of kind {other} cannot be executed"
                )));
            }
        };
        let end = if webhooks > 0 {
            "completed_with_pending_notices"
        } else {
            "completed"
        };
        r.move_in(&txn, &mut row, end, &done).await?;
        crate::crash_points::reach("dsar.execute.before_commit");
        txn.commit().await.map_err(StoreError::from)?;
        crate::crash_points::reach("dsar.execute.committed");
        r.show(id).await
    }

    async fn audited(
        &self,
        txn: &DatabaseTransaction,
        subject: &str,
        action: &str,
        attributes: Vec<String>,
    ) -> Result<(), RequestError> {
        let r = &self.requests;
        let entry = NewEntry {
            subject_ref: Some(r.audit.subject_ref(subject)?),
            ..NewEntry::new(r.actor.clone(), action, Outcome::Ok)
                .request_id(r.request_id.clone())
                .attributes(attributes)
        };
        r.audit.append(txn, entry).await?;
        Ok(())
    }

    /// Suppression entries first (they need the identifiers, opened with the data key),
    /// then every row, then the key itself.
    async fn erase(
        &self,
        txn: &DatabaseTransaction,
        row: &RequestRow,
        subject: &str,
    ) -> Result<String, RequestError> {
        let r = &self.requests;
        let key = match profiles::subject_key(txn, subject).await? {
            Some(w) => Some(SubjectKey::unwrap(self.master, subject, &w)?),
            None => None,
        };
        let mut entries = Vec::new();
        if let Some(key) = &key {
            for id in profiles::identifiers_of(txn, subject).await? {
                if id.kind.starts_with("import_row:") {
                    continue;
                }
                let value = key.open(&id.kind, &id.sealed)?;
                let value = String::from_utf8_lossy(&value);
                let hash = r.keyring.suppression_hash(&id.kind, &value)?;
                entries.push((id.kind, hash));
            }
        }
        entries.sort();
        entries.dedup();
        let suppressed = entries.len();
        suppressions::insert_all(txn, &entries, "erasure", r.now.unix_micros()).await?;
        let n = erasure::erase(txn, subject).await?;
        self.audited(
            txn,
            subject,
            "subject.erase",
            vec![
                format!("dsar:{}", row.id),
                format!("events:{}", n.events),
                format!("traits:{}", n.traits),
                format!("identifiers:{}", n.identifiers),
                format!("consents:{}", n.consents),
                format!("disclosures:{}", n.disclosures),
                format!("suppressed:{suppressed}"),
            ],
        )
        .await?;
        Ok(format!(
            "erased: {} events, {} traits, {} identifiers, {} consent records, {} disclosure records; data key destroyed; {suppressed} identifiers suppressed",
            n.events, n.traits, n.identifiers, n.consents, n.disclosures
        ))
    }

    /// An objection to direct marketing (Art. 21(2)-(3)) stops every marketing purpose:
    /// its consent is denied, or (legitimate interest) an objection is recorded.
    async fn object(
        &self,
        txn: &DatabaseTransaction,
        row: &RequestRow,
        subject: &str,
    ) -> Result<String, RequestError> {
        let r = &self.requests;
        let mut names: Vec<String> = r
            .policies
            .purposes
            .purposes
            .iter()
            .filter(|p| p.name.starts_with("marketing"))
            .filter_map(|p| match p.legal_basis {
                LegalBasis::Consent => p.consent.clone(),
                LegalBasis::LegitimateInterest => Some(p.name.clone()),
                _ => None,
            })
            .collect();
        names.sort();
        names.dedup();
        for name in &names {
            consents::insert(
                txn,
                &ConsentRow {
                    id: uuid::Uuid::now_v7().simple().to_string(),
                    subject_id: subject.to_owned(),
                    consent: name.clone(),
                    status: "denied".into(),
                    method: "api".into(),
                    source: format!("request {}", row.id),
                    notice_version: None,
                    captured_at: r.now.unix_micros(),
                    recorded_at: r.now.unix_micros(),
                    recorded_by: r.actor.key_id.clone(),
                    proof: None,
                },
            )
            .await?;
        }
        self.audited(
            txn,
            subject,
            "consent.object",
            std::iter::once(format!("dsar:{}", row.id))
                .chain(names.iter().map(|n| format!("consent:{n}")))
                .collect(),
        )
        .await?;
        Ok(format!("objection recorded for {}", names.join(", ")))
    }

    /// The package of a completed access or portability request, while it is available;
    /// each download is audited.
    pub async fn package(&self, id: &str) -> Result<AccessPackage, RequestError> {
        let r = &self.requests;
        let txn = r.db.begin_write().await?;
        let row = repo::get(&txn, id).await?.ok_or(RequestError::NotFound)?;
        if row.kind != "access" && row.kind != "portability" {
            return Err(RequestError::State(format!(
                "a request of kind {} has no package",
                row.kind
            )));
        }
        if row.status != "completed" {
            return Err(RequestError::State(format!(
                "the request is {}; its package is made when it is executed",
                row.status
            )));
        }
        if row
            .package_expires_at
            .is_none_or(|t| t < r.now.unix_micros())
        {
            return Err(RequestError::Expired);
        }
        let subject = row.subject_id.clone().ok_or(RequestError::NotFound)?;
        let subject_ref = r.audit.subject_ref(&subject)?;
        let package = Builder {
            master: self.master,
            keyring: r.keyring,
            policies: r.policies,
            controller: self.controller,
            now: r.now,
        }
        .build(&txn, &row.id, &row.kind, &subject, &subject_ref)
        .await?;
        self.audited(
            &txn,
            &subject,
            "dsar.package",
            vec![format!("dsar:{}", row.id)],
        )
        .await?;
        txn.commit().await.map_err(StoreError::from)?;
        Ok(package)
    }
}
