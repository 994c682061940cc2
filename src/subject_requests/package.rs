//! The access (Art. 15) and portability (Art. 20) package: everything held about one
//! person, built when it is downloaded, as JSON, a readable HTML page, or a ZIP of JSON
//! and CSV files. Sealed values are opened with the person's own data key.
use std::io::Write;

use sea_orm::ConnectionTrait;
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::consent::receipt::{self, SignedReceipt};
use crate::crypto::{Keyring, KeyringError, MasterKey, SubjectKey};
use crate::domain::Timestamp;
use crate::policy::Policies;
use crate::store::{
    StoreError, aggregates, consents, disclosures, profiles, recipients, subject_flags,
};

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    #[error("cannot write the package: {0}")]
    Write(String),
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct IdentifierEntry {
    pub kind: String,
    pub value: String,
    pub since: String,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct TraitEntry {
    pub name: String,
    pub category: String,
    #[schema(value_type = Object)]
    pub value: Value,
    pub updated_at: String,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct EventEntry {
    /// The Segment call: `track`, `page`, `identify` ...
    #[serde(rename = "type")]
    pub kind: String,
    pub event: Option<String>,
    /// As stored (already JSON): passed through without being parsed again.
    #[schema(value_type = Object)]
    pub properties: Box<serde_json::value::RawValue>,
    pub occurred_at: String,
    pub received_at: String,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ConsentEntry {
    pub consent: String,
    pub status: String,
    pub method: String,
    pub source: String,
    pub notice_version: Option<String>,
    pub captured_at: String,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct PurposeEntry {
    pub purpose: String,
    pub description: String,
    pub legal_basis: String,
    pub lawful_under: String,
    pub consent: Option<String>,
    pub categories: Vec<String>,
    pub retention_days: u32,
    pub profiling: bool,
    pub recipient_kinds: Vec<String>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DisclosureEntry {
    pub recipient: String,
    pub recipient_name: String,
    pub purpose: String,
    pub attributes: Vec<String>,
    pub disclosed_at: String,
}

/// An experiment the person was part of: the variant of a campaign's message they were
/// sent, or `holdout` (sent nothing, to compare against).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ExperimentEntry {
    pub experiment: String,
    pub variant: String,
    pub campaign: String,
    pub exposed_at: String,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct AccessPackage {
    pub request_id: String,
    /// `access` or `portability`.
    pub kind: String,
    pub controller: String,
    pub generated_at: String,
    pub identifiers: Vec<IdentifierEntry>,
    pub traits: Vec<TraitEntry>,
    /// Behavioural aggregates (times RFC 3339).
    #[schema(value_type = Object)]
    pub aggregates: Value,
    pub events: Vec<EventEntry>,
    /// Every consent decision, oldest first.
    pub consents: Vec<ConsentEntry>,
    /// The signed receipt of each decision.
    pub consent_receipts: Vec<SignedReceipt>,
    /// The purposes the controller processes data for, with their legal bases.
    pub purposes: Vec<PurposeEntry>,
    /// Who received which data, for what, when (Art. 15(1)(c)).
    pub disclosures: Vec<DisclosureEntry>,
    pub restricted_since: Option<String>,
    /// The saved segments the person is in now (the rule, and the gate's conditions for
    /// its purpose), with the rule itself: the logic of the profiling (Art. 15(1)(h)).
    pub segments: Vec<SegmentMembership>,
    /// The scores held about the person (RFM, purchase propensity, posted ones), with the
    /// model that made each: profiling under Art. 22.
    pub scores: Vec<ScoreEntry>,
    /// The experiments (A/B tests) the person was part of, and which variant they got.
    pub experiments: Vec<ExperimentEntry>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ScoreEntry {
    pub name: String,
    pub value: f64,
    pub model_version: String,
    /// `rfm`, `propensity`, or `external:<key id>` for one an external system posted.
    pub source: String,
    pub computed_at: String,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SegmentMembership {
    pub segment: String,
    pub name: String,
    pub purpose: String,
    pub recipient: String,
    #[schema(value_type = Object)]
    pub rule: Value,
}

fn empty_object() -> Box<serde_json::value::RawValue> {
    serde_json::value::to_raw_value(&Map::new()).unwrap_or_default()
}

fn ts(us: i64) -> String {
    Timestamp::from_unix_micros(us).to_rfc3339()
}

/// Aggregate times are stored as µs; a person reads RFC 3339.
fn readable_aggregates(a: &crate::domain::aggregates::Aggregates) -> Value {
    let mut v = serde_json::to_value(a).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut v {
        for (k, val) in map.iter_mut() {
            if k.ends_with("_at")
                && let Some(us) = val.as_i64()
            {
                *val = Value::String(ts(us));
            }
        }
        if let Some(aov) = a.average_order_value() {
            map.insert("average_order_value".into(), Value::from(aov));
        }
    }
    v
}

pub struct Builder<'a> {
    pub master: &'a MasterKey,
    pub keyring: &'a Keyring,
    pub policies: &'a Policies,
    pub controller: &'a str,
    pub now: Timestamp,
}

impl Builder<'_> {
    pub async fn build<C: ConnectionTrait>(
        &self,
        c: &C,
        request_id: &str,
        kind: &str,
        subject_id: &str,
        subject_ref: &str,
    ) -> Result<AccessPackage, PackageError> {
        let key = match profiles::subject_key(c, subject_id).await? {
            Some(w) => Some(SubjectKey::unwrap(self.master, subject_id, &w)?),
            None => None,
        };
        let open = |context: &str, sealed: &[u8]| -> Result<Option<String>, PackageError> {
            let Some(k) = &key else { return Ok(None) };
            Ok(String::from_utf8(k.open(context, sealed)?).ok())
        };
        let mut identifiers = Vec::new();
        for id in profiles::identifiers_of(c, subject_id).await? {
            if id.kind.starts_with("import_row:") {
                continue; // a keyed row reference, not something the person gave
            }
            if let Some(value) = open(&id.kind, &id.sealed)? {
                identifiers.push(IdentifierEntry {
                    kind: id.kind,
                    value,
                    since: ts(id.created_at),
                });
            }
        }
        let mut traits = Vec::new();
        for t in profiles::traits_of(c, subject_id).await? {
            let text = match (&t.value, &t.sealed) {
                (Some(v), _) => Some(v.clone()),
                (None, Some(s)) => open(&format!("trait:{}", t.name), s)?,
                _ => None,
            };
            traits.push(TraitEntry {
                value: text
                    .and_then(|s| serde_json::from_str(&s).ok())
                    .unwrap_or(Value::Null),
                name: t.name,
                category: t.category,
                updated_at: ts(t.updated_at),
            });
        }
        let events = profiles::events_of(c, subject_id)
            .await?
            .into_iter()
            .map(
                |(kind, event, properties, occurred_at, received_at)| EventEntry {
                    kind,
                    event,
                    properties: serde_json::value::RawValue::from_string(properties)
                        .unwrap_or_else(|_| empty_object()),
                    occurred_at: ts(occurred_at),
                    received_at: ts(received_at),
                },
            )
            .collect();
        let records = consents::history(c, subject_id).await?;
        let mut consent_receipts = Vec::new();
        for r in &records {
            consent_receipts.push(receipt::build(
                r,
                subject_ref,
                self.policies,
                self.controller,
                self.keyring,
            )?);
        }
        let names: std::collections::BTreeMap<String, String> = recipients::all(c)
            .await?
            .into_iter()
            .map(|r| (r.id, r.name))
            .collect();
        Ok(AccessPackage {
            request_id: request_id.to_owned(),
            kind: kind.to_owned(),
            controller: self.controller.to_owned(),
            generated_at: self.now.to_rfc3339(),
            identifiers,
            traits,
            aggregates: aggregates::load(c, subject_id)
                .await?
                .map_or(Value::Null, |a| readable_aggregates(&a)),
            events,
            consents: records
                .into_iter()
                .map(|r| ConsentEntry {
                    consent: r.consent,
                    status: r.status,
                    method: r.method,
                    source: r.source,
                    notice_version: r.notice_version,
                    captured_at: ts(r.captured_at),
                })
                .collect(),
            consent_receipts,
            purposes: self
                .policies
                .purposes
                .purposes
                .iter()
                .map(|p| PurposeEntry {
                    purpose: p.name.clone(),
                    description: p.description.clone(),
                    legal_basis: p.legal_basis.as_str().to_owned(),
                    lawful_under: p.legal_basis.article().to_owned(),
                    consent: p.consent.clone(),
                    categories: p.reads.clone(),
                    retention_days: p.retention_days,
                    profiling: p.profiling,
                    recipient_kinds: p.recipients.clone(),
                })
                .collect(),
            disclosures: disclosures::of_subject(c, subject_id)
                .await?
                .into_iter()
                .map(|d| DisclosureEntry {
                    recipient_name: names.get(&d.recipient_id).cloned().unwrap_or_default(),
                    recipient: d.recipient_id,
                    purpose: d.purpose,
                    attributes: d.attributes,
                    disclosed_at: ts(d.disclosed_at),
                })
                .collect(),
            restricted_since: subject_flags::get(c, subject_id, subject_flags::RESTRICTED)
                .await?
                .map(|r| ts(r.set_at)),
            segments: self.memberships(c, subject_id).await?,
            scores: crate::store::scores::of_subjects(c, &[subject_id.to_owned()])
                .await?
                .into_iter()
                .map(|r| ScoreEntry {
                    name: r.name,
                    value: r.value,
                    model_version: r.model_version,
                    source: r.source,
                    computed_at: ts(r.computed_at),
                })
                .collect(),
            experiments: crate::store::experiments::of_subject(c, subject_id)
                .await?
                .into_iter()
                .map(|x| ExperimentEntry {
                    experiment: x.experiment_id,
                    variant: x.variant,
                    campaign: x.campaign_id,
                    exposed_at: ts(x.exposed_at),
                })
                .collect(),
        })
    }
}

impl Builder<'_> {
    /// The saved segments `subject_id` is in now. A segment whose rule or purpose no
    /// longer holds under the policies in force is left out (it selects nobody).
    async fn memberships<C: ConnectionTrait>(
        &self,
        c: &C,
        subject_id: &str,
    ) -> Result<Vec<SegmentMembership>, PackageError> {
        use crate::policy::gate::audience::{self, Condition};
        let system = crate::auth::Caller {
            key_id: "system".into(),
            name: "data-subject request".into(),
            role: crate::domain::Role::Admin,
            recipient: None,
            purposes: Vec::new(),
            via: crate::auth::Credential::ApiKey,
        };
        let policies = std::sync::Arc::new(self.policies.clone());
        let mut out = Vec::new();
        for seg in crate::store::segments::list(c, None).await? {
            let Ok(value) = serde_json::from_str::<Value>(&seg.rule) else {
                continue;
            };
            let Ok(rule) = crate::segmentation::Rule::parse(&value) else {
                continue;
            };
            let Some(row) = crate::store::recipients::get(c, &seg.recipient_id).await? else {
                continue;
            };
            let Ok(grant) = crate::policy::gate::authorize(
                &system,
                &row,
                &seg.purpose,
                std::sync::Arc::clone(&policies),
            ) else {
                continue;
            };
            if !crate::segmentation::check(&rule, &grant).is_empty() {
                continue;
            }
            let now = self.now.unix_micros();
            let cond = Condition {
                expr: crate::segmentation::sql::condition(
                    &rule,
                    audience::dialect(c.get_database_backend()),
                    now,
                ),
                aggregates: rule.reads_aggregates(),
            };
            if audience::is_member(c, &grant, cond, subject_id, now).await? {
                out.push(SegmentMembership {
                    segment: seg.id,
                    name: seg.name,
                    purpose: seg.purpose,
                    recipient: seg.recipient_id,
                    rule: value,
                });
            }
        }
        Ok(out)
    }
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn table(out: &mut String, title: &str, head: &[&str], rows: Vec<Vec<String>>) {
    out.push_str(&format!("<h2>{}</h2>\n", esc(title)));
    if rows.is_empty() {
        out.push_str("<p>None.</p>\n");
        return;
    }
    out.push_str("<table><tr>");
    for h in head {
        out.push_str(&format!("<th>{}</th>", esc(h)));
    }
    out.push_str("</tr>\n");
    for r in rows {
        out.push_str("<tr>");
        for cell in r {
            out.push_str(&format!("<td>{}</td>", esc(&cell)));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
}

/// One table of the package: a section of the HTML page and, when it has a file name,
/// a CSV file of the portability archive.
struct Section {
    title: &'static str,
    file: Option<&'static str>,
    head: &'static [&'static str],
    rows: Vec<Vec<String>>,
}

impl AccessPackage {
    fn sections(&self) -> Vec<Section> {
        let aggregates = match &self.aggregates {
            Value::Object(m) => m.iter().map(|(k, v)| vec![k.clone(), text(v)]).collect(),
            _ => Vec::new(),
        };
        vec![
            Section {
                title: "Identifiers",
                file: Some("identifiers.csv"),
                head: &["kind", "value", "since"],
                rows: self
                    .identifiers
                    .iter()
                    .map(|i| vec![i.kind.clone(), i.value.clone(), i.since.clone()])
                    .collect(),
            },
            Section {
                title: "Attributes",
                file: Some("traits.csv"),
                head: &["name", "category", "value", "updated_at"],
                rows: self
                    .traits
                    .iter()
                    .map(|t| {
                        vec![
                            t.name.clone(),
                            t.category.clone(),
                            text(&t.value),
                            t.updated_at.clone(),
                        ]
                    })
                    .collect(),
            },
            Section {
                title: "What we derived from your activity",
                file: None,
                head: &["measure", "value"],
                rows: aggregates,
            },
            Section {
                title: "Scores (profiling)",
                file: Some("scores.csv"),
                head: &["score", "value", "model", "source", "computed_at"],
                rows: self
                    .scores
                    .iter()
                    .map(|s| {
                        vec![
                            s.name.clone(),
                            s.value.to_string(),
                            s.model_version.clone(),
                            s.source.clone(),
                            s.computed_at.clone(),
                        ]
                    })
                    .collect(),
            },
            Section {
                title: "Consent decisions",
                file: Some("consents.csv"),
                head: &[
                    "consent",
                    "status",
                    "method",
                    "source",
                    "notice_version",
                    "captured_at",
                ],
                rows: self
                    .consents
                    .iter()
                    .map(|c| {
                        vec![
                            c.consent.clone(),
                            c.status.clone(),
                            c.method.clone(),
                            c.source.clone(),
                            c.notice_version.clone().unwrap_or_default(),
                            c.captured_at.clone(),
                        ]
                    })
                    .collect(),
            },
            Section {
                title: "Why we process data (purposes and legal bases)",
                file: None,
                head: &["purpose", "description", "legal basis", "retention (days)"],
                rows: self
                    .purposes
                    .iter()
                    .map(|p| {
                        vec![
                            p.purpose.clone(),
                            p.description.clone(),
                            format!("{} ({})", p.legal_basis, p.lawful_under),
                            p.retention_days.to_string(),
                        ]
                    })
                    .collect(),
            },
            Section {
                title: "Segments you are in (and the rule that places you there)",
                file: Some("segments.csv"),
                head: &["segment", "name", "purpose", "recipient", "rule"],
                rows: self
                    .segments
                    .iter()
                    .map(|m| {
                        vec![
                            m.segment.clone(),
                            m.name.clone(),
                            m.purpose.clone(),
                            m.recipient.clone(),
                            m.rule.to_string(),
                        ]
                    })
                    .collect(),
            },
            Section {
                title: "Who received your data",
                file: Some("disclosures.csv"),
                head: &[
                    "recipient",
                    "recipient_name",
                    "purpose",
                    "attributes",
                    "disclosed_at",
                ],
                rows: self
                    .disclosures
                    .iter()
                    .map(|d| {
                        vec![
                            d.recipient.clone(),
                            d.recipient_name.clone(),
                            d.purpose.clone(),
                            d.attributes.join(" "),
                            d.disclosed_at.clone(),
                        ]
                    })
                    .collect(),
            },
            Section {
                title: "Experiments you were part of",
                file: Some("experiments.csv"),
                head: &["experiment", "variant", "campaign", "exposed_at"],
                rows: self
                    .experiments
                    .iter()
                    .map(|x| {
                        vec![
                            x.experiment.clone(),
                            x.variant.clone(),
                            x.campaign.clone(),
                            x.exposed_at.clone(),
                        ]
                    })
                    .collect(),
            },
            Section {
                title: "Activity",
                file: Some("events.csv"),
                head: &["occurred_at", "type", "event", "properties", "received_at"],
                rows: self
                    .events
                    .iter()
                    .map(|e| {
                        vec![
                            e.occurred_at.clone(),
                            e.kind.clone(),
                            e.event.clone().unwrap_or_default(),
                            e.properties.get().to_owned(),
                            e.received_at.clone(),
                        ]
                    })
                    .collect(),
            },
        ]
    }

    /// A self-contained page a person can read (every value HTML-escaped).
    pub fn to_html(&self) -> String {
        let mut out = format!(
            "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>Your data</title>\
             <style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}}</style>\n\
             <h1>The data {} holds about you</h1>\n<p>Request {} &middot; generated {}</p>\n",
            esc(&self.controller),
            esc(&self.request_id),
            esc(&self.generated_at)
        );
        for s in self.sections() {
            table(&mut out, s.title, s.head, s.rows);
        }
        out.push_str("</html>\n");
        out
    }

    /// Portability (Art. 20): `profile.json` with everything, and a CSV per table.
    pub fn to_zip(&self) -> Result<Vec<u8>, PackageError> {
        let werr = |e: &dyn std::fmt::Display| PackageError::Write(e.to_string());
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        let mut add = |name: &str, bytes: &[u8]| -> Result<(), PackageError> {
            zip.start_file(name, options).map_err(|e| werr(&e))?;
            zip.write_all(bytes).map_err(|e| werr(&e))
        };
        add(
            "profile.json",
            &serde_json::to_vec_pretty(self).map_err(|e| werr(&e))?,
        )?;
        for s in self.sections() {
            let Some(file) = s.file else { continue };
            let mut w = csv::Writer::from_writer(Vec::new());
            w.write_record(s.head).map_err(|e| werr(&e))?;
            for r in s.rows {
                w.write_record(&r).map_err(|e| werr(&e))?;
            }
            add(file, &w.into_inner().map_err(|e| werr(&e))?)?;
        }
        let cursor = zip.finish().map_err(|e| werr(&e))?;
        Ok(cursor.into_inner())
    }
}
