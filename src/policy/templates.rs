//! Saved email templates: Handlebars subject, HTML and text bodies compiled and checked
//! against the purpose they serve (every token one the purpose may read), rendered for
//! one person through the gate.
//!
//! Guarantees:
//! - a template is saved only if all three parts compile and every token, helper and
//!   fallback passes the check (checked again under the policies in force at every use);
//! - an `esp` key sees and makes only its own recipient's templates, for its purposes;
//! - a render is a disclosure of the person's view, recorded and audited by the gate; a
//!   person who may not be disclosed gets the gate's 404.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::audit::{AuditError, AuditLog, NewEntry, Outcome};
use crate::auth::Caller;
use crate::crypto::{Keyring, MasterKey};
use crate::domain::{Actor, Timestamp};
use crate::policy::Policies;
use crate::policy::gate::{AuthorizeError, Gate, GateError, PurposeGrant, grant_for};
use crate::policy::recommendations::{self, Recommender};
use crate::rendering::{self, Offence, Rendered, Renderer, Strategy, TemplateError};

/// Products in a template's `recommendations` block.
pub const BLOCK_SIZE: usize = 6;
use crate::store::templates::{self as repo, TemplateRow};
use crate::store::{Db, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum TemplatesError {
    #[error("{}", list(.0))]
    Compile(Vec<TemplateError>),
    #[error("{}", list(.0))]
    Purpose(Vec<Offence>),
    #[error("{0}")]
    Invalid(String),
    #[error("no template has that id")]
    NotFound,
    #[error("the template could not be rendered: {0}")]
    Render(String),
    #[error(transparent)]
    Authorize(#[from] AuthorizeError),
    #[error(transparent)]
    Gate(#[from] GateError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

fn list<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTemplate {
    #[schema(example = "Weekly picks")]
    pub name: String,
    /// The purpose the template serves; every token must be one it may read.
    #[schema(example = "personalize")]
    pub purpose: String,
    /// The recipient it is rendered for (an `esp` key: its own, the default).
    pub recipient: Option<String>,
    /// The subject line (Handlebars; not HTML-escaped).
    #[schema(example = "{{default first_name \"Hello\"}}, picked for you")]
    pub subject: String,
    /// The HTML body (Handlebars; `{{x}}` is HTML-escaped, `{{{x}}}` is not).
    #[schema(
        example = "<div>Hello, {{customer_name}}!</div>{{#each recommendations}}<img src=\"{{this.image_url}}\" alt=\"{{this.product_name}}\">{{else}}<p>See what is new.</p>{{/each}}"
    )]
    pub html: String,
    /// The plain-text body (Handlebars; not escaped).
    pub text: String,
    /// A value per top-level token for when the person has none, e.g.
    /// `{"first_name": "there"}`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub fallbacks: Map<String, Value>,
    /// Partials the parts may use as `{{> name}}` or `{{> name context}}`: name to
    /// Handlebars source, e.g. `{"card": "<a href=\"{{url}}\">{{name}}</a>"}`; each token
    /// is checked where the partial is used.
    #[serde(default)]
    pub partials: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct TemplateView {
    pub id: String,
    pub name: String,
    pub purpose: String,
    pub recipient: String,
    pub subject: String,
    pub html: String,
    pub text: String,
    #[schema(value_type = Object)]
    pub fallbacks: Value,
    pub partials: BTreeMap<String, String>,
    pub created_by: String,
    pub created_at: String,
}

impl From<TemplateRow> for TemplateView {
    fn from(r: TemplateRow) -> Self {
        Self {
            fallbacks: serde_json::from_str(&r.fallbacks).unwrap_or(Value::Null),
            partials: serde_json::from_str(&r.partials).unwrap_or_default(),
            id: r.id,
            name: r.name,
            purpose: r.purpose,
            recipient: r.recipient_id,
            subject: r.subject,
            html: r.html,
            text: r.text,
            created_by: r.created_by,
            created_at: Timestamp::from_unix_micros(r.created_at).to_rfc3339(),
        }
    }
}

pub struct Templates<'a> {
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

/// A template compiled and checked, with its grant.
pub struct Checked {
    pub row: TemplateRow,
    pub grant: PurposeGrant,
    pub renderer: Renderer,
    pub fallbacks: Map<String, Value>,
    /// The top-level names the template reads.
    pub names: BTreeSet<String>,
}

/// At most this many partials per template.
const MAX_PARTIALS: usize = 20;

fn partial_name_ok(n: &str) -> bool {
    let mut chars = n.chars();
    n.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !rendering::render::RESERVED.contains(&n)
}

/// Compiles the three parts and the partials, and checks them and the fallbacks against
/// `grant`.
fn checked(
    subject: &str,
    html: &str,
    text: &str,
    fallbacks: &Map<String, Value>,
    partial_sources: &BTreeMap<String, String>,
    grant: &PurposeGrant,
) -> Result<(Renderer, BTreeSet<String>), TemplatesError> {
    if partial_sources.len() > MAX_PARTIALS {
        return Err(TemplatesError::Invalid(format!(
            "partials: at most {MAX_PARTIALS}"
        )));
    }
    let mut errors = Vec::new();
    let mut partials = BTreeMap::new();
    for (name, source) in partial_sources {
        if !partial_name_ok(name) {
            return Err(TemplatesError::Invalid(
                "partials: a name is a letter, then up to 63 letters, digits, `_` or `-`, and not subject, html or text".into(),
            ));
        }
        if source.len() > 256 * 1024 {
            return Err(TemplatesError::Invalid(format!(
                "partials.{name}: at most 262144 bytes"
            )));
        }
        match rendering::compile(&format!("partials.{name}"), source) {
            Ok(t) => {
                partials.insert(name.clone(), t);
            }
            Err(e) => errors.push(e),
        }
    }
    let mut compiled = Vec::new();
    for (part, source) in [("subject", subject), ("html", html), ("text", text)] {
        match rendering::compile(part, source) {
            Ok(t) => compiled.push(t),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(TemplatesError::Compile(errors));
    }
    let mut offences = Vec::new();
    let mut names = BTreeSet::new();
    for (part, t) in ["subject", "html", "text"].iter().zip(&compiled) {
        let c = rendering::check_with(part, t, grant, &partials);
        offences.extend(c.offences);
        names.extend(c.names);
    }
    for (k, v) in fallbacks {
        if !(v.is_string() || v.is_number()) {
            return Err(TemplatesError::Invalid(format!(
                "fallbacks.{k}: a text or a number"
            )));
        }
        let probe = rendering::compile("fallbacks", &format!("{{{{{k}}}}}"))
            .map_err(|_| TemplatesError::Invalid(format!("fallbacks.{k}: not a token name")))?;
        offences.extend(rendering::check("fallbacks", &probe, grant).offences);
    }
    if !offences.is_empty() {
        return Err(TemplatesError::Purpose(offences));
    }
    let mut parts = compiled.into_iter();
    match (parts.next(), parts.next(), parts.next()) {
        (Some(s), Some(h), Some(t)) => Ok((
            Renderer::with_partials(s, h, t, partials.into_iter().collect()),
            names,
        )),
        _ => Err(TemplatesError::Invalid("a template has three parts".into())),
    }
}

impl Checked {
    /// The same template with another subject line (an experiment variant's), named
    /// `part` in errors, compiled and checked against the purpose as template subjects are.
    pub fn with_subject(&self, part: &str, subject: &str) -> Result<Checked, TemplatesError> {
        let (renderer, names) = subject_line(part, subject, &self.grant)?;
        let html = rendering::compile("html", &self.row.html)
            .map_err(|e| TemplatesError::Compile(vec![e]))?;
        let text = rendering::compile("text", &self.row.text)
            .map_err(|e| TemplatesError::Compile(vec![e]))?;
        let mut all = self.names.clone();
        all.extend(names);
        Ok(Checked {
            row: self.row.clone(),
            grant: self.grant.clone(),
            renderer: Renderer::new(renderer, html, text),
            fallbacks: self.fallbacks.clone(),
            names: all,
        })
    }
}

/// A subject line on its own (named `part`), compiled and checked against `grant`.
pub fn subject_line(
    part: &str,
    subject: &str,
    grant: &PurposeGrant,
) -> Result<(handlebars::template::Template, BTreeSet<String>), TemplatesError> {
    if subject.trim().is_empty() || subject.len() > 2_000 {
        return Err(TemplatesError::Invalid(format!(
            "{part}: a subject line of at most 2000 bytes"
        )));
    }
    let t = rendering::compile(part, subject).map_err(|e| TemplatesError::Compile(vec![e]))?;
    let c = rendering::check(part, &t, grant);
    if !c.offences.is_empty() {
        return Err(TemplatesError::Purpose(c.offences));
    }
    Ok((t, c.names))
}

impl Templates<'_> {
    async fn grant(&self, recipient: &str, purpose: &str) -> Result<PurposeGrant, TemplatesError> {
        Ok(grant_for(
            self.db,
            self.caller,
            recipient,
            purpose,
            Arc::clone(&self.policies),
        )
        .await?)
    }

    async fn audited(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        action: &str,
        row: &TemplateRow,
    ) -> Result<(), TemplatesError> {
        let entry = NewEntry {
            purpose: Some(row.purpose.clone()),
            ..NewEntry::new(self.actor.clone(), action, Outcome::Ok)
                .request_id(self.request_id.clone())
                .attributes(vec![
                    format!("template:{}", row.id),
                    format!("recipient:{}", row.recipient_id),
                ])
        };
        self.audit.append(txn, entry).await?;
        Ok(())
    }

    pub async fn create(&self, new: &NewTemplate) -> Result<TemplateView, TemplatesError> {
        let name = new.name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err(TemplatesError::Invalid("name: 1 to 200 characters".into()));
        }
        for (part, s, max) in [
            ("subject", &new.subject, 2_000),
            ("html", &new.html, 512 * 1024),
            ("text", &new.text, 256 * 1024),
        ] {
            if s.len() > max {
                return Err(TemplatesError::Invalid(format!(
                    "{part}: at most {max} bytes"
                )));
            }
        }
        if new.subject.trim().is_empty() {
            return Err(TemplatesError::Invalid("subject: a subject line".into()));
        }
        let Some(recipient) = self.caller.recipient_or_own(new.recipient.as_deref()) else {
            return Err(TemplatesError::Invalid(
                "recipient: the recipient the template is rendered for".into(),
            ));
        };
        let grant = self.grant(&recipient, &new.purpose).await?;
        checked(
            &new.subject,
            &new.html,
            &new.text,
            &new.fallbacks,
            &new.partials,
            &grant,
        )?;
        let row = TemplateRow {
            id: uuid::Uuid::now_v7().simple().to_string(),
            name: name.to_owned(),
            purpose: new.purpose.clone(),
            recipient_id: recipient,
            subject: new.subject.clone(),
            html: new.html.clone(),
            text: new.text.clone(),
            fallbacks: Value::Object(new.fallbacks.clone()).to_string(),
            partials: serde_json::to_string(&new.partials).unwrap_or_else(|_| "{}".into()),
            created_by: self.actor.key_id.clone(),
            created_at: self.now.unix_micros(),
        };
        let txn = self.db.begin_write().await?;
        repo::insert(&txn, &row).await?;
        self.audited(&txn, "template.create", &row).await?;
        txn.commit().await.map_err(StoreError::from)?;
        Ok(row.into())
    }

    pub async fn list(&self) -> Result<Vec<TemplateView>, TemplatesError> {
        let Some(scope) = self.caller.listing() else {
            return Ok(Vec::new());
        };
        Ok(repo::list(self.db.conn(), scope)
            .await?
            .into_iter()
            .map(TemplateView::from)
            .collect())
    }

    async fn row(&self, id: &str) -> Result<TemplateRow, TemplatesError> {
        match repo::get(self.db.conn(), id).await? {
            Some(r) if self.caller.sees(&r.recipient_id) => Ok(r),
            _ => Err(TemplatesError::NotFound),
        }
    }

    pub async fn get(&self, id: &str) -> Result<TemplateView, TemplatesError> {
        Ok(self.row(id).await?.into())
    }

    pub async fn delete(&self, id: &str) -> Result<(), TemplatesError> {
        let row = self.row(id).await?;
        let txn = self.db.begin_write().await?;
        repo::delete(&txn, id).await?;
        self.audited(&txn, "template.delete", &row).await?;
        txn.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    /// The template compiled and checked again under the policies in force.
    pub async fn checked(&self, id: &str) -> Result<Checked, TemplatesError> {
        let row = self.row(id).await?;
        let grant = self.grant(&row.recipient_id, &row.purpose).await?;
        let fallbacks = match serde_json::from_str(&row.fallbacks) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        let partials: BTreeMap<String, String> =
            serde_json::from_str(&row.partials).unwrap_or_default();
        let (renderer, names) = checked(
            &row.subject,
            &row.html,
            &row.text,
            &fallbacks,
            &partials,
            &grant,
        )?;
        Ok(Checked {
            row,
            grant,
            renderer,
            fallbacks,
            names,
        })
    }

    /// The message for the person the template's recipient knows by `pseudonym`: a
    /// disclosure of their view, recorded by the gate.
    pub async fn render(&self, id: &str, pseudonym: &str) -> Result<Rendered, TemplatesError> {
        let c = self.checked(id).await?;
        let gate = Gate {
            db: self.db,
            master: self.master,
            keyring: self.keyring,
            audit: self.audit,
            actor: self.actor.clone(),
            request_id: self.request_id.clone(),
            now: self.now,
        };
        let action = "disclosure.profile";
        let (subject, view) = gate.admit(&c.grant, pseudonym, action).await?;
        let mut extra = Map::new();
        let mut disclosed = view.disclosed();
        if c.names.contains("recommendations") {
            let mut blocks = Recommender::new(self.db, &c.grant)
                .await?
                .for_members(&[(subject.as_str(), &view)], Strategy::Default, BLOCK_SIZE)
                .await?;
            let block = blocks.remove(&subject).unwrap_or_default();
            extra.insert(
                "recommendations".into(),
                serde_json::to_value(block).unwrap_or_default(),
            );
            disclosed.push(recommendations::DISCLOSED.to_owned());
        }
        let data = rendering::data_of(&view, &c.grant, &c.names, &c.fallbacks, extra);
        let rendered = c
            .renderer
            .render(&data)
            .map_err(|e| TemplatesError::Render(e.to_string()))?;
        gate.recorded(&c.grant, &subject, disclosed, action).await?;
        Ok(rendered)
    }
}
