//! Campaigns: a template rendered for every consented member of a segment, each message
//! with its one-click unsubscribe link (RFC 8058), from minimised views only.
//!
//! Guarantees:
//! - the template and the segment serve the same purpose for the same recipient, one that
//!   reads email addresses and rests on consent or legitimate interest (an unsubscribe
//!   must be able to stop it);
//! - every page of messages is recorded (a disclosure per person, one audit entry per
//!   page) before it is sent;
//! - an unsubscribe link withdraws exactly the campaign's consent (or objects to its
//!   legitimate-interest purpose) for exactly the person it was made for; a GET never
//!   withdraws anything.
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::audit::{AuditLog, NewEntry, Outcome};
use crate::auth::Caller;
use crate::config::Settings;
use crate::consent::unsubscribe::{self, LinkError};
use crate::consent::{ConsentError, Ledger};
use crate::crypto::{Keyring, MasterKey};
use crate::domain::{Actor, Timestamp};
use crate::policy::experiments::{ExperimentError, Experiments, Running};
use crate::policy::gate::Gate;
use crate::policy::gate::PurposeGrant;
use crate::policy::gate::audience::Member;
use crate::policy::recommendations::{self, Recommender};
use crate::policy::segments::{ExportAborted, ExportSink, SegmentError, Segments, commitment};
use crate::policy::templates::{BLOCK_SIZE, Checked, Templates, TemplatesError};
use crate::policy::{LegalBasis, Policies};
use crate::rendering::links::{self, Utm};
use crate::rendering::{self, Recommendation, Strategy};
use crate::store::campaigns::{self as repo, CampaignRow};
use crate::store::experiments::{self as exposures, ExposureRow};
use crate::store::{Db, StoreError, recipients};

#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    #[error("{0}")]
    Invalid(String),
    #[error("no campaign has that id")]
    NotFound,
    #[error(
        "the unsubscribe link is not valid: it was changed, or it is not one this gateway made"
    )]
    BadLink,
    #[error(
        "the unsubscribe link has expired; use the link in a newer message, or write to the sender"
    )]
    LinkExpired,
    #[error(transparent)]
    Templates(#[from] TemplatesError),
    #[error(transparent)]
    Segments(#[from] SegmentError),
    #[error(transparent)]
    Consent(#[from] ConsentError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error(transparent)]
    Keyring(#[from] crate::crypto::KeyringError),
    #[error(transparent)]
    Experiment(#[from] ExperimentError),
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCampaign {
    #[schema(example = "December picks")]
    pub name: String,
    /// A template id.
    pub template: String,
    /// A segment id (same purpose and recipient as the template).
    pub segment: String,
    /// An experiment id (same purpose and recipient): each member gets the variant the
    /// experiment assigns them, or nothing in its holdout.
    pub experiment: Option<String>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct CampaignView {
    pub id: String,
    pub name: String,
    pub template: String,
    pub segment: String,
    pub recipient: String,
    pub purpose: String,
    pub experiment: Option<String>,
    pub created_by: String,
    pub created_at: String,
}

impl From<CampaignRow> for CampaignView {
    fn from(r: CampaignRow) -> Self {
        Self {
            id: r.id,
            name: r.name,
            template: r.template_id,
            segment: r.segment_id,
            recipient: r.recipient_id,
            purpose: r.purpose,
            experiment: r.experiment_id,
            created_by: r.created_by,
            created_at: Timestamp::from_unix_micros(r.created_at).to_rfc3339(),
        }
    }
}

/// One message, as the ESP sends it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Message {
    pub pseudonym: String,
    pub to: String,
    pub subject: String,
    pub html: String,
    pub text: String,
    /// `List-Unsubscribe` and `List-Unsubscribe-Post` (RFC 8058).
    pub headers: BTreeMap<String, String>,
    /// In an experiment, the variant sent (also the links' `utm_content`): send it back
    /// as `variant` with the `Email Opened` and `Email Link Clicked` events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

pub struct Campaigns<'a> {
    pub db: &'a Db,
    pub master: &'a MasterKey,
    pub keyring: &'a Keyring,
    pub audit: &'a AuditLog,
    pub policies: Arc<Policies>,
    pub settings: &'a Settings,
    pub caller: &'a Caller,
    pub actor: Actor,
    pub request_id: Option<String>,
    pub now: Timestamp,
}

/// What unsubscribing did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Unsubscribed {
    /// The consent withdrawn, or the purpose objected to.
    pub withdrawn: String,
    /// False when it had already been withdrawn (nothing new was recorded).
    pub recorded: bool,
}

impl Campaigns<'_> {
    fn segments(&self) -> Segments<'_> {
        Segments {
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

    fn experiments(&self) -> Experiments<'_> {
        Experiments {
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

    pub async fn create(&self, new: &NewCampaign) -> Result<CampaignView, CampaignError> {
        let name = new.name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err(CampaignError::Invalid("name: 1 to 200 characters".into()));
        }
        let t = self.templates().checked(&new.template).await?;
        let s = self.segments().compiled(&new.segment).await?;
        if t.row.recipient_id != s.row.recipient_id || t.row.purpose != s.row.purpose {
            return Err(CampaignError::Invalid(format!(
                "segment: the template is for {} and recipient {}, the segment for {} and recipient {}; a campaign needs one purpose and one recipient",
                t.row.purpose, t.row.recipient_id, s.row.purpose, s.row.recipient_id
            )));
        }
        let p = s.grant.purpose();
        if !matches!(
            p.legal_basis,
            LegalBasis::Consent | LegalBasis::LegitimateInterest
        ) {
            return Err(CampaignError::Invalid(format!(
                "template: purpose {} rests on {}; campaigns, which carry an unsubscribe link, are for purposes on consent or legitimate interest",
                p.name,
                p.legal_basis.as_str()
            )));
        }
        if !p.may_read("user.contact.email") {
            return Err(CampaignError::Invalid(format!(
                "template: purpose {} does not read email addresses, so its messages cannot be addressed",
                p.name
            )));
        }
        if let Some(e) = &new.experiment {
            let (purpose, recipient) = self.experiments().scope(e).await?;
            if purpose != s.row.purpose || recipient != s.row.recipient_id {
                return Err(CampaignError::Invalid(format!(
                    "experiment: the experiment is for {purpose} and recipient {recipient}, the campaign for {} and recipient {}; they need one purpose and one recipient",
                    s.row.purpose, s.row.recipient_id
                )));
            }
        }
        let row = CampaignRow {
            id: uuid::Uuid::now_v7().simple().to_string(),
            name: name.to_owned(),
            template_id: t.row.id.clone(),
            segment_id: s.row.id.clone(),
            recipient_id: s.row.recipient_id.clone(),
            purpose: s.row.purpose.clone(),
            experiment_id: new.experiment.clone(),
            created_by: self.actor.key_id.clone(),
            created_at: self.now.unix_micros(),
        };
        let txn = self.db.begin_write().await?;
        repo::insert(&txn, &row).await?;
        let mut attributes = vec![
            format!("campaign:{}", row.id),
            format!("template:{}", row.template_id),
            format!("segment:{}", row.segment_id),
        ];
        if let Some(e) = &row.experiment_id {
            attributes.push(format!("experiment:{e}"));
        }
        let entry = NewEntry {
            purpose: Some(row.purpose.clone()),
            ..NewEntry::new(self.actor.clone(), "campaign.create", Outcome::Ok)
                .request_id(self.request_id.clone())
                .attributes(attributes)
        };
        self.audit.append(&txn, entry).await?;
        txn.commit().await.map_err(StoreError::from)?;
        Ok(row.into())
    }

    pub async fn get(&self, id: &str) -> Result<CampaignView, CampaignError> {
        Ok(self.row(id).await?.into())
    }

    async fn row(&self, id: &str) -> Result<CampaignRow, CampaignError> {
        match repo::get(self.db.conn(), id).await? {
            Some(r) if self.caller.sees(&r.recipient_id) => Ok(r),
            _ => Err(CampaignError::NotFound),
        }
    }

    fn base_url(&self) -> String {
        self.settings
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.settings.listen))
            .trim_end_matches('/')
            .to_owned()
    }

    /// The recipient of the campaign's messages.
    pub async fn recipient(&self, id: &str) -> Result<String, CampaignError> {
        Ok(self.row(id).await?.recipient_id)
    }

    /// Checks the campaign can run now: its template and segment under the policies in
    /// force (so a refusal is an error response, not a stream cut short).
    pub async fn check(&self, id: &str) -> Result<(), CampaignError> {
        let row = self.row(id).await?;
        let t = self.templates().checked(&row.template_id).await?;
        self.segments().compiled(&row.segment_id).await?;
        if let Some(e) = &row.experiment_id {
            self.experiments().running(e, &t).await?;
        }
        Ok(())
    }

    /// Produces the campaign's messages into `sink`, a page at a time: the segment's
    /// members (the gate's conditions as each page is read), each rendered from their
    /// minimised view, the page recorded, then sent.
    pub async fn run_messages(&self, id: &str, sink: ExportSink) {
        if let Err(e) = self.produce(id, &sink).await {
            tracing::error!(error = %e, campaign = %id, "campaign messages failed");
            let _ = sink.send(Err(ExportAborted)).await;
        }
    }

    async fn produce(&self, id: &str, sink: &ExportSink) -> Result<(), CampaignError> {
        let row = self.row(id).await?;
        let t = self.templates().checked(&row.template_id).await?;
        let segments = self.segments();
        let s = segments.compiled(&row.segment_id).await?;
        let condition = segments.condition_of(&s);
        let gate = segments.gate_now(self.now);
        let base = self.base_url();
        let unsubscribe_prefix = format!("{base}/u/");
        let expires = self
            .now
            .plus_seconds(i64::try_from(self.settings.unsubscribe_ttl_secs).unwrap_or(i64::MAX));
        let experiment = match &row.experiment_id {
            Some(e) => Some(self.experiments().running(e, &t).await?),
            None => None,
        };
        // A block is made for each member when the template (or a variant's) reads one.
        let wants_block = t.names.contains("recommendations")
            || experiment.as_ref().is_some_and(|e| {
                e.variants.iter().any(|v| {
                    v.checked
                        .as_ref()
                        .is_some_and(|c| c.names.contains("recommendations"))
                })
            });
        let recommender = if wants_block {
            // The segment serves the template's purpose for the same recipient.
            Some(Recommender::new(self.db, &s.grant).await?)
        } else {
            None
        };
        let fetch = |after: Option<String>| {
            let (gate, grant, condition) = (&gate, &s.grant, condition.clone());
            async move {
                gate.members(grant, condition, after.as_deref(), 500, false)
                    .await
                    .map_err(SegmentError::from)
            }
        };
        let renderers = Arc::new(Renderers {
            template: t,
            experiment,
            grant: s.grant.clone(),
            campaign: row.id.clone(),
            unsubscribe_prefix,
            mailto: self.settings.unsubscribe_mailto.clone(),
        });
        // Three pages in flight: page N is rendered (on a blocking thread, the second
        // core) while page N-1 is recorded and page N+1 is read; a page is sent only once
        // its records are committed, and recorded only once it has been rendered.
        let mut rendered: Option<(RenderedPage, Vec<ExposureRow>)> = None;
        let mut next = fetch(None).await?;
        loop {
            let (page, last) = next;
            let Some(last) = last else { break };
            let (jobs, exposed) = self
                .prepare(&renderers, recommender.as_ref(), page, &base, expires)
                .await?;
            let r = Arc::clone(&renderers);
            let render = tokio::task::spawn_blocking(move || render_page(&r, jobs));
            let record = async {
                match &rendered {
                    Some((p, exposed)) => {
                        self.record_rendered(&gate, &s.grant, &renderers.campaign, p, exposed)
                            .await
                    }
                    None => Ok(()),
                }
            };
            let (page, recorded, fetched) = tokio::join!(render, record, fetch(Some(last)));
            recorded?;
            if let Some((p, _)) = rendered.take()
                && !p.sent.is_empty()
                && sink.send(Ok(p.body.into_bytes())).await.is_err()
            {
                return Ok(());
            }
            let page = page.map_err(|e| TemplatesError::Render(e.to_string()))??;
            rendered = Some((page, exposed));
            next = fetched?;
        }
        if let Some((p, exposed)) = rendered {
            self.record_rendered(&gate, &s.grant, &renderers.campaign, &p, &exposed)
                .await?;
            if !p.sent.is_empty() {
                let _ = sink.send(Ok(p.body.into_bytes())).await;
            }
        }
        Ok(())
    }

    /// A page's members made ready to render: who gets a message (an email address, not
    /// in the holdout), with their variant, unsubscribe link and recommendation block;
    /// and the page's experiment exposures.
    async fn prepare(
        &self,
        r: &Renderers,
        recommender: Option<&Recommender<'_>>,
        page: Vec<(String, Member)>,
        base: &str,
        expires: Timestamp,
    ) -> Result<(Vec<Job>, Vec<ExposureRow>), CampaignError> {
        let experiment = r.experiment.as_ref();
        let mut blocks = match recommender {
            Some(rec) => self.blocks(rec, experiment, &page).await?,
            None => std::collections::HashMap::new(),
        };
        let mut jobs = Vec::with_capacity(page.len());
        let mut exposed = Vec::new();
        for (subject, member) in page {
            let Some(to) = member.view.email().map(str::to_owned) else {
                continue;
            };
            let variant = match experiment {
                None => None,
                Some(e) => {
                    let arm = e.variant_index(&subject);
                    let name = arm.and_then(|i| e.variants.get(i)).map(|v| v.name.as_str());
                    exposed.push(e.exposure(&subject, name, &r.campaign, self.now.unix_micros()));
                    // The holdout receives nothing.
                    let Some(i) = arm else { continue };
                    Some(i)
                }
            };
            let pseudonym = member.view.pseudonym().as_ref().to_owned();
            let token = unsubscribe::issue(self.keyring, &r.campaign, &pseudonym, expires)?;
            let url = format!("{base}/u/{token}");
            let block = blocks.remove(&subject);
            jobs.push(Job {
                subject,
                member,
                to,
                pseudonym,
                token,
                url,
                variant,
                block,
            });
        }
        Ok((jobs, exposed))
    }

    /// Records a rendered page (its disclosures and exposures), when it has any.
    async fn record_rendered(
        &self,
        gate: &Gate<'_>,
        grant: &PurposeGrant,
        campaign: &str,
        page: &RenderedPage,
        exposed: &[ExposureRow],
    ) -> Result<(), CampaignError> {
        if page.sent.is_empty() && exposed.is_empty() {
            return Ok(());
        }
        self.record_page(gate, grant, campaign, &page.sent, exposed)
            .await
    }
}

/// What renders a campaign's messages: its template, its experiment's variants and what
/// every message carries. Shared with the blocking threads that render pages.
struct Renderers {
    template: Checked,
    experiment: Option<Running>,
    grant: PurposeGrant,
    campaign: String,
    unsubscribe_prefix: String,
    mailto: String,
}

/// One member's message, ready to render.
struct Job {
    subject: String,
    member: Member,
    to: String,
    pseudonym: String,
    token: String,
    url: String,
    /// The index of the experiment's variant shown.
    variant: Option<usize>,
    block: Option<Vec<Recommendation>>,
}

/// A page of messages: the NDJSON sent, and the members it holds (who is recorded).
struct RenderedPage {
    body: String,
    sent: Vec<(String, Member)>,
}

/// Renders a page's messages (CPU only: no database, no await).
fn render_page(r: &Renderers, jobs: Vec<Job>) -> Result<RenderedPage, TemplatesError> {
    let mut body = String::new();
    let mut sent = Vec::with_capacity(jobs.len());
    for job in jobs {
        let Job {
            subject,
            member: mut m,
            to,
            pseudonym,
            token,
            url,
            variant,
            block,
        } = job;
        let variant = variant.and_then(|i| r.experiment.as_ref()?.variants.get(i));
        let mut extra = Map::new();
        extra.insert("unsubscribe_url".into(), Value::from(url.clone()));
        extra.insert("campaign".into(), Value::from(r.campaign.clone()));
        // A variant with its own template or subject line renders with it.
        let c = variant
            .and_then(|v| v.checked.as_ref())
            .unwrap_or(&r.template);
        if let Some(v) = variant {
            extra.insert("variant".into(), Value::from(v.name.clone()));
        }
        if c.names.contains("recommendations") {
            extra.insert(
                "recommendations".into(),
                serde_json::to_value(block.unwrap_or_default()).unwrap_or_default(),
            );
            m.also_disclosed.push(recommendations::DISCLOSED.to_owned());
        }
        let data = rendering::data_of(&m.view, &r.grant, &c.names, &c.fallbacks, extra);
        let rendered = c
            .renderer
            .render(&data)
            .map_err(|e| TemplatesError::Render(e.to_string()))?;
        let utm = Utm {
            campaign: r.campaign.clone(),
            content: variant.map(|v| v.name.clone()),
        };
        let html = links::tag_links(&rendered.html, &utm, &r.unsubscribe_prefix)
            .map_err(TemplatesError::Render)?
            .into_owned();
        let mut headers = BTreeMap::new();
        headers.insert(
            "List-Unsubscribe".to_owned(),
            format!(
                "<{url}>, <mailto:{}?subject=unsubscribe%20{token}>",
                r.mailto
            ),
        );
        headers.insert(
            "List-Unsubscribe-Post".to_owned(),
            "List-Unsubscribe=One-Click".to_owned(),
        );
        let message = Message {
            pseudonym,
            to,
            subject: rendered.subject,
            html,
            text: rendered.text,
            headers,
            variant: variant.map(|v| v.name.clone()),
        };
        body.push_str(&serde_json::to_string(&message).unwrap_or_default());
        body.push('\n');
        sent.push((subject, m));
    }
    Ok(RenderedPage { body, sent })
}

impl Campaigns<'_> {
    /// The recommendation block of each member of a page who gets a message, by subject:
    /// the strategy of their variant in an experiment (the holdout gets none).
    async fn blocks(
        &self,
        r: &Recommender<'_>,
        experiment: Option<&Running>,
        page: &[(String, Member)],
    ) -> Result<std::collections::HashMap<String, Vec<Recommendation>>, CampaignError> {
        let mut groups: BTreeMap<&'static str, (Strategy, Vec<_>)> = BTreeMap::new();
        for (subject, m) in page {
            let strategy = match experiment {
                None => Strategy::Default,
                Some(e) => match e.variant(subject) {
                    None => continue,
                    Some(v) => v.strategy,
                },
            };
            groups
                .entry(strategy.as_str())
                .or_insert_with(|| (strategy, Vec::new()))
                .1
                .push((subject.as_str(), &m.view));
        }
        let mut out = std::collections::HashMap::new();
        for (strategy, members) in groups.into_values() {
            out.extend(r.for_members(&members, strategy, BLOCK_SIZE).await?);
        }
        Ok(out)
    }

    /// Records a page before it is sent: the disclosure of each member sent a message and
    /// its audit entry, and the experiment exposures of the page (holdout members
    /// included), in one transaction.
    async fn record_page(
        &self,
        gate: &Gate<'_>,
        grant: &PurposeGrant,
        campaign: &str,
        sent: &[(String, Member)],
        exposed: &[ExposureRow],
    ) -> Result<(), CampaignError> {
        let mut attributes = vec![format!("campaign:{campaign}")];
        if let Some(e) = exposed.first() {
            attributes.push(format!("experiment:{}", e.experiment_id));
            attributes.push(format!("exposures:{}", exposed.len()));
        }
        let txn = self.db.begin_write().await?;
        if sent.is_empty() {
            let entry = NewEntry {
                purpose: Some(grant.purpose().name.clone()),
                ..NewEntry::new(self.actor.clone(), "experiment.exposure", Outcome::Ok)
                    .request_id(self.request_id.clone())
                    .attributes(attributes)
            };
            self.audit.append(&txn, entry).await?;
        } else {
            attributes.insert(1, commitment(sent));
            gate.disclose_members_in(
                &txn,
                grant,
                sent,
                "disclosure.campaign_messages",
                attributes,
            )
            .await
            .map_err(SegmentError::from)?;
        }
        exposures::expose(&txn, exposed).await?;
        txn.commit().await.map_err(StoreError::from)?;
        Ok(())
    }
}

/// What an unsubscribe link (no credentials but itself) may do.
pub struct Unsubscriber<'a> {
    pub db: &'a Db,
    pub master: &'a MasterKey,
    pub keyring: &'a Keyring,
    pub audit: &'a AuditLog,
    pub policies: Arc<Policies>,
    pub now: Timestamp,
}

impl Unsubscriber<'_> {
    /// Follows an unsubscribe link (`POST /u/{token}`): withdraws the campaign's consent
    /// (or objects to its legitimate-interest purpose) for the person it names.
    pub async fn unsubscribe(&self, token: &str) -> Result<Unsubscribed, CampaignError> {
        let link = self.check_link(token)?;
        let Some(row) = repo::get(self.db.conn(), &link.campaign).await? else {
            return Err(CampaignError::BadLink);
        };
        let Some(p) = self.policies.purpose(&row.purpose) else {
            return Err(CampaignError::BadLink);
        };
        let name = match p.legal_basis {
            LegalBasis::Consent => p.consent.clone().unwrap_or_default(),
            _ => p.name.clone(),
        };
        let subject =
            recipients::resolve_pseudonym(self.db.conn(), &row.recipient_id, &link.pseudonym)
                .await?;
        let recorded = match subject {
            // Erased since: there is nobody left to unsubscribe.
            None => false,
            Some(subject) => {
                let ledger = Ledger {
                    confirm_ttl_secs: 0,
                    db: self.db,
                    master: self.master,
                    keyring: self.keyring,
                    audit: self.audit,
                    policies: &self.policies,
                    actor: Actor::anonymous(),
                    request_id: None,
                    now: self.now,
                    writer: None,
                };
                ledger
                    .withdraw_subject(
                        &subject,
                        &name,
                        "unsubscribe_link",
                        &format!("campaign:{}", row.id),
                    )
                    .await?
            }
        };
        Ok(Unsubscribed {
            withdrawn: name,
            recorded,
        })
    }

    /// Checks a link without acting on it (`GET /u/{token}`).
    pub fn check_link(&self, token: &str) -> Result<unsubscribe::Unsubscribe, CampaignError> {
        unsubscribe::verify(self.keyring, token, self.now).map_err(|e| match e {
            LinkError::Invalid => CampaignError::BadLink,
            LinkError::Expired => CampaignError::LinkExpired,
        })
    }
}
