//! Disclosures to recipients: each view handed out commits with its audit entry and its
//! disclosure record, or is not handed out.
use std::collections::BTreeMap;

use sea_orm::{ConnectionTrait, DatabaseTransaction};
use serde::Deserialize;
use utoipa::ToSchema;

use super::grant::PurposeGrant;
use super::load::{LoadError, load_record};
use super::view::{Denial, MinimisedProfile, minimise};
use crate::audit::{AuditError, AuditLog, NewEntry, Outcome};
use crate::crypto::{Keyring, KeyringError, MasterKey};
use crate::domain::{Actor, Pseudonym, Timestamp};
use crate::policy::Policies;
use crate::profiles::lookup::{LookupError, SubjectQuery};
use crate::store::disclosures::{self, DisclosureRow};
use crate::store::{Db, StoreError, profiles, recipients};

#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("pseudonym: {0}")]
    InvalidPseudonym(String),
    #[error(
        "pseudonym: version {0} of this recipient's pseudonyms has been retired; get current ones from POST /v1/recipients/{{rid}}/pseudonyms"
    )]
    Retired(i32),
    /// No such subject, or one that may not be disclosed: the same answer for both.
    #[error("no profile for that subject and purpose")]
    NotFound,
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Keyring(#[from] KeyringError),
}

impl From<LoadError> for GateError {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::Store(s) => Self::Store(s),
            LoadError::Keyring(k) => Self::Keyring(k),
        }
    }
}

/// `POST /v1/recipients/{rid}/pseudonyms`: the purpose and one identifier the recipient
/// already holds, e.g. `{"purpose": "marketing.communications.email", "email": "ann@example.com"}`.
#[derive(Clone, Deserialize, ToSchema)]
pub struct PseudonymRequest {
    pub purpose: String,
    /// Exactly one identifier: `email`, `phone`, `user_id` or an external id kind.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub identifier: BTreeMap<String, String>,
}

impl std::fmt::Debug for PseudonymRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PseudonymRequest")
            .field("purpose", &self.purpose)
            .finish_non_exhaustive()
    }
}

pub struct Gate<'a> {
    pub db: &'a Db,
    pub master: &'a MasterKey,
    pub keyring: &'a Keyring,
    pub audit: &'a AuditLog,
    pub actor: Actor,
    pub request_id: Option<String>,
    pub now: Timestamp,
}

impl Gate<'_> {
    /// The minimised view of the subject a recipient knows by `pseudonym`.
    pub async fn profile(
        &self,
        grant: &PurposeGrant,
        pseudonym: &str,
    ) -> Result<MinimisedProfile, GateError> {
        let (subject, view) = self.admit(grant, pseudonym, "disclosure.profile").await?;
        self.recorded(grant, &subject, view.disclosed(), "disclosure.profile")
            .await?;
        Ok(view)
    }

    /// The subject a recipient knows by `pseudonym`, and its view, when it may be
    /// disclosed; a refusal is audited (as `action`) and answered like an unknown
    /// pseudonym. Nothing is recorded as disclosed yet: the caller records what it sends
    /// with [`Gate::recorded`] before sending it.
    pub(crate) async fn admit(
        &self,
        grant: &PurposeGrant,
        pseudonym: &str,
        action: &str,
    ) -> Result<(String, MinimisedProfile), GateError> {
        let pseudonym = Pseudonym::parse(pseudonym).map_err(GateError::InvalidPseudonym)?;
        match self
            .keyring
            .recipient_version(grant.recipient(), pseudonym.version())
        {
            None => return Err(GateError::NotFound),
            Some(v) if v.retired => return Err(GateError::Retired(v.version)),
            Some(_) => {}
        }
        // Reads outside the write transaction: the write lock is held only for the
        // disclosure record and its audit entry.
        let conn = self.db.conn();
        let Some(subject) =
            recipients::resolve_pseudonym(conn, grant.recipient(), pseudonym.as_ref()).await?
        else {
            return Err(GateError::NotFound);
        };
        match self.decide(conn, grant, &subject, pseudonym).await? {
            Ok(view) => Ok((subject, view)),
            Err(None) => Err(GateError::NotFound),
            Err(Some(d)) => {
                let txn = self.db.begin_write().await?;
                self.refused(&txn, grant, &subject, d, action).await?;
                txn.commit().await.map_err(StoreError::from)?;
                Err(GateError::NotFound)
            }
        }
    }

    /// Records that `attributes` of a subject [`Gate::admit`] let through go to the
    /// grant's recipient: the disclosure record and its audit entry, committed together.
    pub(crate) async fn recorded(
        &self,
        grant: &PurposeGrant,
        subject: &str,
        attributes: Vec<String>,
        action: &str,
    ) -> Result<(), GateError> {
        let txn = self.db.begin_write().await?;
        self.record(&txn, grant, subject, attributes, action)
            .await?;
        txn.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    /// The recipient's current pseudonym for the person it knows by an identifier, when
    /// that person's view may be disclosed for the grant's purpose.
    pub async fn pseudonym_for(
        &self,
        grant: &PurposeGrant,
        policies: &Policies,
        identifier: &BTreeMap<String, String>,
    ) -> Result<Pseudonym, GateError> {
        let (kind, value) = SubjectQuery(identifier.clone())
            .identifier(policies)
            .map_err(|e| match e {
                LookupError::Invalid(m) => GateError::Invalid(m),
                LookupError::Store(s) => GateError::Store(s),
                LookupError::Audit(a) => GateError::Audit(a),
            })?;
        let conn = self.db.conn();
        let Some(found) =
            profiles::subject_for(conn, &kind, &self.keyring.blind_indexes(&kind, &value)).await?
        else {
            return Err(GateError::NotFound);
        };
        let subject = found.subject_id;
        let pseudonym = self.keyring.pseudonym(grant.recipient(), &subject)?;
        let decision = self
            .decide(conn, grant, &subject, pseudonym.clone())
            .await?;
        let txn = self.db.begin_write().await?;
        let result = match decision {
            Ok(_) => {
                recipients::remember_pseudonym(
                    &txn,
                    grant.recipient(),
                    pseudonym.as_ref(),
                    pseudonym.version(),
                    &subject,
                    self.now.unix_micros(),
                )
                .await?;
                self.record(
                    &txn,
                    grant,
                    &subject,
                    vec!["pseudonym".into()],
                    "disclosure.pseudonym",
                )
                .await?;
                Ok(pseudonym)
            }
            Err(denial) => {
                if let Some(d) = denial {
                    self.refused(&txn, grant, &subject, d, "disclosure.pseudonym")
                        .await?;
                }
                Err(GateError::NotFound)
            }
        };
        txn.commit().await.map_err(StoreError::from)?;
        result
    }

    /// Loads and minimises. `Err(None)`: no such active subject; `Err(Some(d))`: refused.
    async fn decide<C: ConnectionTrait>(
        &self,
        c: &C,
        grant: &PurposeGrant,
        subject: &str,
        pseudonym: Pseudonym,
    ) -> Result<Result<MinimisedProfile, Option<Denial>>, GateError> {
        let Some(record) =
            load_record(c, self.master, self.keyring, grant, subject, pseudonym).await?
        else {
            return Ok(Err(None));
        };
        Ok(minimise(&record, grant, self.now).map_err(Some))
    }

    async fn refused(
        &self,
        txn: &DatabaseTransaction,
        grant: &PurposeGrant,
        subject: &str,
        denial: Denial,
        action: &str,
    ) -> Result<(), GateError> {
        let entry = NewEntry {
            subject_ref: Some(self.audit.subject_ref(subject)?),
            purpose: Some(grant.purpose().name.clone()),
            ..NewEntry::new(self.actor.clone(), action, Outcome::Denied)
                .request_id(self.request_id.clone())
                .attributes(vec![
                    format!("recipient:{}", grant.recipient()),
                    format!("purpose:{}", grant.purpose().name),
                    format!("reason:{}", denial.as_str()),
                ])
        };
        self.audit.append(txn, entry).await?;
        Ok(())
    }

    /// The disclosure record and its audit entry.
    async fn record(
        &self,
        txn: &DatabaseTransaction,
        grant: &PurposeGrant,
        subject: &str,
        attributes: Vec<String>,
        action: &str,
    ) -> Result<(), GateError> {
        let mut audited = vec![
            format!("recipient:{}", grant.recipient()),
            format!("purpose:{}", grant.purpose().name),
        ];
        audited.extend(attributes.iter().map(|a| format!("disclosed:{a}")));
        disclosures::insert(
            txn,
            &disclosure(grant, subject, attributes, self.now.unix_micros()),
        )
        .await?;
        let entry = NewEntry {
            subject_ref: Some(self.audit.subject_ref(subject)?),
            purpose: Some(grant.purpose().name.clone()),
            ..NewEntry::new(self.actor.clone(), action, Outcome::Ok)
                .request_id(self.request_id.clone())
                .attributes(audited)
        };
        self.audit.append(txn, entry).await?;
        Ok(())
    }
}

/// The record that `attributes` of `subject` went to the grant's recipient at `at`.
pub(super) fn disclosure(
    grant: &PurposeGrant,
    subject: &str,
    attributes: Vec<String>,
    at: i64,
) -> DisclosureRow {
    DisclosureRow {
        id: uuid::Uuid::now_v7().simple().to_string(),
        recipient_id: grant.recipient().to_owned(),
        subject_id: subject.to_owned(),
        purpose: grant.purpose().name.clone(),
        attributes,
        disclosed_at: at,
        key_id: grant.key_id.clone(),
    }
}
