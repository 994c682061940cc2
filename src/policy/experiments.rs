//! Experiments (A/B and multivariate tests) run by campaigns: variants of a template, a
//! subject line or a recommendation strategy, with weights and an optional holdout.
//!
//! Guarantees:
//! - an experiment is saved only whole and valid (weights whole percentages summing to
//!   100, 2–10 uniquely named variants, each template and subject line compiled and
//!   checked against the experiment's purpose and recipient), with its audit entry;
//! - assignment is a keyed hash of the experiment and the internal subject id under a
//!   key derived from the keyring (the token-signing key version current at creation,
//!   kept with the experiment, so rotating keys never reshuffles a running test);
//! - results are counts and rates only: no subject, pseudonym or event leaves.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::audit::{AuditError, AuditLog, NewEntry, Outcome};
use crate::auth::Caller;
use crate::crypto::{KeyKind, Keyring, KeyringError, MasterKey};
use crate::domain::{Actor, Timestamp};
use crate::policy::Policies;
use crate::policy::gate::{AuthorizeError, grant_for};
use crate::policy::templates::{Checked, Templates, TemplatesError, subject_line};
use crate::rendering::experiments::{
    Arm, Assigner, CLICKED, Event, HOLDOUT, OPENED, ORDERED, Strategy, tally,
};
use crate::rendering::results::{ExperimentResults, Group, summarise};
use crate::store::experiments::{self as repo, ExperimentRow, ExposureRow};
use crate::store::{Db, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ExperimentError {
    #[error("{0}")]
    Invalid(String),
    #[error("no experiment has that id")]
    NotFound,
    #[error(transparent)]
    Templates(#[from] TemplatesError),
    #[error(transparent)]
    Authorize(#[from] AuthorizeError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Keyring(#[from] KeyringError),
}

/// One variant as asked for.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewVariant {
    /// 1–64 characters of `A-Z a-z 0-9 _ -`; also the `utm_content` of its links.
    #[schema(example = "B")]
    pub name: String,
    /// A whole percentage; the variants' weights sum to 100.
    #[schema(example = 50)]
    pub weight: i64,
    /// A template of the same purpose and recipient to send instead of the campaign's.
    pub template: Option<String>,
    /// A subject line (Handlebars) instead of the template's, checked like one.
    #[schema(example = "{{default first_name \"Hello\"}}, our picks for you")]
    pub subject: Option<String>,
    /// `default`, `recently_viewed`, `bought_together`, `bestsellers` or `none`.
    #[schema(example = "bestsellers")]
    pub recommendations: Option<String>,
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewExperiment {
    #[schema(example = "Subject line test")]
    pub name: String,
    #[schema(example = "marketing.communications.email")]
    pub purpose: String,
    /// The recipient (an `esp` key: its own, the default).
    pub recipient: Option<String>,
    /// 2 to 10 variants.
    pub variants: Vec<NewVariant>,
    /// A whole percentage (0–50) of the audience that receives nothing: the baseline
    /// for conversions.
    #[schema(example = 10)]
    pub holdout: Option<i64>,
    /// The variant the others are tested against (default: the first).
    pub control: Option<String>,
}

/// A variant as kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Variant {
    pub name: String,
    pub weight: u32,
    pub template: Option<String>,
    pub subject: Option<String>,
    pub recommendations: Strategy,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ExperimentView {
    pub id: String,
    pub name: String,
    pub purpose: String,
    pub recipient: String,
    pub variants: Vec<Variant>,
    pub holdout: u32,
    pub control: String,
    pub created_by: String,
    pub created_at: String,
}

fn variants_of(row: &ExperimentRow) -> Result<Vec<Variant>, ExperimentError> {
    serde_json::from_str(&row.variants).map_err(|e| {
        ExperimentError::Store(StoreError::Corrupt {
            table: "experiments",
            reason: e.to_string(),
        })
    })
}

impl TryFrom<ExperimentRow> for ExperimentView {
    type Error = ExperimentError;

    fn try_from(r: ExperimentRow) -> Result<Self, ExperimentError> {
        Ok(Self {
            variants: variants_of(&r)?,
            holdout: u32::try_from(r.holdout).unwrap_or(0),
            id: r.id,
            name: r.name,
            purpose: r.purpose,
            recipient: r.recipient_id,
            control: r.control,
            created_by: r.created_by,
            created_at: Timestamp::from_unix_micros(r.created_at).to_rfc3339(),
        })
    }
}

fn invalid(m: impl Into<String>) -> ExperimentError {
    ExperimentError::Invalid(m.into())
}

fn valid_name(n: &str) -> bool {
    (1..=64).contains(&n.len())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The variants' shape: names, weights, strategies, the holdout and the control. Returns
/// the variants as kept (templates and subjects still to check), the holdout and control.
fn shape(new: &NewExperiment) -> Result<(Vec<Variant>, u32, String), ExperimentError> {
    let n = new.variants.len();
    if !(2..=10).contains(&n) {
        return Err(invalid(format!(
            "variants: 2 to 10 variants; there are {n}"
        )));
    }
    let mut names = BTreeSet::new();
    let mut out = Vec::with_capacity(n);
    for (i, v) in new.variants.iter().enumerate() {
        if !valid_name(&v.name) {
            return Err(invalid(format!(
                "variants[{i}].name: 1 to 64 characters of A-Z, a-z, 0-9, `_` and `-`"
            )));
        }
        if v.name.eq_ignore_ascii_case(HOLDOUT) {
            return Err(invalid(format!(
                "variants[{i}].name: `{HOLDOUT}` names the group that receives nothing; use the `holdout` field"
            )));
        }
        if !names.insert(v.name.to_ascii_lowercase()) {
            return Err(invalid(format!(
                "variants[{i}].name: another variant has the same name (names are compared ignoring case)"
            )));
        }
        let weight = u32::try_from(v.weight)
            .ok()
            .filter(|w| (1..=100).contains(w))
            .ok_or_else(|| {
                invalid(format!(
                    "variants[{i}].weight: a whole percentage from 1 to 100"
                ))
            })?;
        let recommendations = match v.recommendations.as_deref() {
            None => Strategy::Default,
            Some(s) => Strategy::parse(s).ok_or_else(|| {
                invalid(format!(
                    "variants[{i}].recommendations: one of {}",
                    Strategy::ALL.map(Strategy::as_str).join(", ")
                ))
            })?,
        };
        out.push(Variant {
            name: v.name.clone(),
            weight,
            template: v.template.clone(),
            subject: v.subject.clone(),
            recommendations,
        });
    }
    let sum: u32 = out.iter().map(|v| v.weight).sum();
    if sum != 100 {
        return Err(invalid(format!(
            "variants: the weights are whole percentages that sum to 100; these sum to {sum}"
        )));
    }
    let holdout = match new.holdout {
        None => 0,
        Some(h) => u32::try_from(h)
            .ok()
            .filter(|h| *h <= 50)
            .ok_or_else(|| invalid("holdout: a whole percentage from 0 to 50"))?,
    };
    let control = match &new.control {
        None => out[0].name.clone(),
        Some(c) => out
            .iter()
            .find(|v| &v.name == c)
            .map(|v| v.name.clone())
            .ok_or_else(|| invalid("control: the name of one of the variants"))?,
    };
    Ok((out, holdout, control))
}

/// The experiment assignment key: HMAC of a fixed label under a token-signing key
/// version, so it is independent of every other use of that key.
fn assignment_key(keyring: &Keyring, version: i32) -> Result<[u8; 32], ExperimentError> {
    let k = keyring
        .any(KeyKind::TokenSigning, version)
        .ok_or(KeyringError::NoSuchVersion {
            kind: KeyKind::TokenSigning,
            version,
        })?;
    Ok(crate::crypto::hmac_sha256(
        k.material(),
        b"consentry/experiment-assignment/v1",
    ))
}

/// One variant ready to render: its template (with its subject line) when it differs
/// from the campaign's.
pub struct RunningVariant {
    pub name: String,
    pub strategy: Strategy,
    pub checked: Option<Checked>,
}

/// An experiment as a campaign runs it.
pub struct Running {
    pub id: String,
    assigner: Assigner,
    pub variants: Vec<RunningVariant>,
}

impl Running {
    /// The variant `subject` is shown, `None` for the holdout.
    pub fn variant(&self, subject: &str) -> Option<&RunningVariant> {
        self.variant_index(subject)
            .and_then(|i| self.variants.get(i))
    }

    /// The index in `variants` of the variant `subject` is shown, `None` for the holdout.
    pub fn variant_index(&self, subject: &str) -> Option<usize> {
        match self.assigner.arm(subject) {
            Arm::Holdout => None,
            Arm::Variant(i) => (i < self.variants.len()).then_some(i),
        }
    }

    pub fn exposure(
        &self,
        subject: &str,
        variant: Option<&str>,
        campaign: &str,
        at: i64,
    ) -> ExposureRow {
        ExposureRow {
            experiment_id: self.id.clone(),
            subject_id: subject.to_owned(),
            variant: variant.unwrap_or(HOLDOUT).to_owned(),
            campaign_id: campaign.to_owned(),
            exposed_at: at,
        }
    }
}

pub struct Experiments<'a> {
    pub db: &'a Db,
    pub master: &'a MasterKey,
    pub keyring: &'a Keyring,
    pub audit: &'a AuditLog,
    pub policies: Arc<Policies>,
    pub caller: &'a Caller,
    pub actor: Actor,
    pub request_id: Option<String>,
    pub now: Timestamp,
}

impl Experiments<'_> {
    fn templates(&self) -> Templates<'_> {
        Templates {
            db: self.db,
            master: self.master,
            keyring: self.keyring,
            audit: self.audit,
            policies: Arc::clone(&self.policies),
            caller: self.caller,
            actor: self.actor.clone(),
            request_id: self.request_id.clone(),
            now: self.now,
        }
    }

    /// A variant's template, checked, of the experiment's purpose and recipient.
    async fn variant_template(
        &self,
        i: usize,
        id: &str,
        purpose: &str,
        recipient: &str,
    ) -> Result<Checked, ExperimentError> {
        let c = match self.templates().checked(id).await {
            Err(TemplatesError::NotFound) => {
                return Err(invalid(format!(
                    "variants[{i}].template: no template has that id"
                )));
            }
            other => other?,
        };
        if c.row.purpose != purpose || c.row.recipient_id != recipient {
            return Err(invalid(format!(
                "variants[{i}].template: the template is for purpose {} and recipient {}; the experiment is for {purpose} and {recipient}",
                c.row.purpose, c.row.recipient_id
            )));
        }
        Ok(c)
    }

    pub async fn create(&self, new: &NewExperiment) -> Result<ExperimentView, ExperimentError> {
        let name = new.name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err(invalid("name: 1 to 200 characters"));
        }
        let Some(recipient) = self.caller.recipient_or_own(new.recipient.as_deref()) else {
            return Err(invalid(
                "recipient: the recipient the experiment is run for",
            ));
        };
        let grant = grant_for(
            self.db,
            self.caller,
            &recipient,
            &new.purpose,
            Arc::clone(&self.policies),
        )
        .await?;
        let (variants, holdout, control) = shape(new)?;
        for (i, v) in variants.iter().enumerate() {
            if let Some(t) = &v.template {
                self.variant_template(i, t, &new.purpose, &recipient)
                    .await?;
            }
            if let Some(s) = &v.subject {
                subject_line(&format!("variants[{i}].subject"), s, &grant)?;
            }
        }
        let key_version = self.keyring.current(KeyKind::TokenSigning)?.version;
        let row = ExperimentRow {
            id: uuid::Uuid::now_v7().simple().to_string(),
            name: name.to_owned(),
            purpose: new.purpose.clone(),
            recipient_id: recipient,
            variants: serde_json::to_string(&variants).map_err(|e| StoreError::Corrupt {
                table: "experiments",
                reason: e.to_string(),
            })?,
            holdout: i32::try_from(holdout).unwrap_or(0),
            control,
            key_version,
            created_by: self.actor.key_id.clone(),
            created_at: self.now.unix_micros(),
        };
        let txn = self.db.begin_write().await?;
        repo::insert(&txn, &row).await?;
        let entry = NewEntry {
            purpose: Some(row.purpose.clone()),
            ..NewEntry::new(self.actor.clone(), "experiment.create", Outcome::Ok)
                .request_id(self.request_id.clone())
                .attributes(vec![
                    format!("experiment:{}", row.id),
                    format!("recipient:{}", row.recipient_id),
                    format!("variants:{}", variants.len()),
                    format!("holdout:{holdout}"),
                ])
        };
        self.audit.append(&txn, entry).await?;
        txn.commit().await.map_err(StoreError::from)?;
        row.try_into()
    }

    async fn row(&self, id: &str) -> Result<ExperimentRow, ExperimentError> {
        match repo::get(self.db.conn(), id).await? {
            Some(r) if self.caller.sees(&r.recipient_id) => Ok(r),
            _ => Err(ExperimentError::NotFound),
        }
    }

    pub async fn get(&self, id: &str) -> Result<ExperimentView, ExperimentError> {
        self.row(id).await?.try_into()
    }

    /// The experiment's purpose and recipient, for a campaign that would run it.
    pub async fn scope(&self, id: &str) -> Result<(String, String), ExperimentError> {
        let r = self.row(id).await?;
        Ok((r.purpose, r.recipient_id))
    }

    /// The experiment ready to run with `base` (the campaign's template): each variant's
    /// template and subject line compiled and checked under the policies in force.
    pub async fn running(&self, id: &str, base: &Checked) -> Result<Running, ExperimentError> {
        let row = self.row(id).await?;
        let variants = variants_of(&row)?;
        let mut out = Vec::with_capacity(variants.len());
        for (i, v) in variants.iter().enumerate() {
            let template = match &v.template {
                Some(t) => Some(
                    self.variant_template(i, t, &row.purpose, &row.recipient_id)
                        .await?,
                ),
                None => None,
            };
            let checked = match (&v.subject, template) {
                (Some(s), Some(t)) => Some(t.with_subject(&format!("variants[{i}].subject"), s)?),
                (Some(s), None) => Some(base.with_subject(&format!("variants[{i}].subject"), s)?),
                (None, t) => t,
            };
            out.push(RunningVariant {
                name: v.name.clone(),
                strategy: v.recommendations,
                checked,
            });
        }
        let key = assignment_key(self.keyring, row.key_version)?;
        let weights = variants.iter().map(|v| v.weight).collect();
        let holdout = u32::try_from(row.holdout).unwrap_or(0);
        Ok(Running {
            assigner: Assigner::new(&key, &row.id, holdout, weights),
            id: row.id,
            variants: out,
        })
    }

    /// Per variant (and the holdout): exposures, opens, clicks and conversions from the
    /// ingested events after each exposure, the rates with 95% intervals, and the tests
    /// against the control.
    pub async fn results(&self, id: &str) -> Result<ExperimentResults, ExperimentError> {
        let row = self.row(id).await?;
        let variants = variants_of(&row)?;
        let conn = self.db.conn();
        let campaigns: BTreeSet<String> = repo::campaigns_of(conn, &row.id)
            .await?
            .into_iter()
            .collect();
        let exposures: BTreeMap<String, u64> = repo::exposure_counts(conn, &row.id)
            .await?
            .into_iter()
            .map(|(v, n)| (v, u64::try_from(n).unwrap_or(0)))
            .collect();
        let outcomes = repo::outcomes(conn, &row.id, &[OPENED, CLICKED, ORDERED]).await?;
        let properties: Vec<Map<String, Value>> = outcomes
            .iter()
            .map(|o| match serde_json::from_str(&o.properties) {
                Ok(Value::Object(m)) => m,
                _ => Map::new(),
            })
            .collect();
        let tallies = tally(
            outcomes.iter().zip(&properties).map(|(o, p)| Event {
                subject: &o.subject_id,
                exposed_to: &o.variant,
                name: &o.event,
                properties: p,
            }),
            &campaigns,
        );
        let group = |name: &str| {
            let t = tallies.get(name);
            let n = |f: fn(&crate::rendering::experiments::Tally) -> usize| {
                t.map_or(0, |t| f(t) as u64)
            };
            Group {
                name: name.to_owned(),
                exposures: exposures.get(name).copied().unwrap_or(0),
                opens: n(|t| t.opens.len()),
                clicks: n(|t| t.clicks.len()),
                conversions: n(|t| t.conversions.len()),
            }
        };
        let groups: Vec<Group> = variants.iter().map(|v| group(&v.name)).collect();
        let holdout = (row.holdout > 0 || exposures.contains_key(HOLDOUT)).then(|| group(HOLDOUT));
        Ok(summarise(
            &row.id,
            &row.control,
            campaigns.into_iter().collect(),
            &groups,
            holdout.as_ref(),
        ))
    }
}
