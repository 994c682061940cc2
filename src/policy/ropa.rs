//! The record of processing activities (GDPR Art. 30(1)), generated from the policies in
//! force: one activity per purpose, with its legal basis, the categories of data it reads,
//! the recipients it may disclose to, retention and the safeguards that always apply.
use serde::Serialize;
use utoipa::ToSchema;

use super::Policies;
use crate::store::recipients::RecipientRow;

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Ropa {
    pub controller: String,
    pub generated_at: String,
    /// The policy set the record was generated from.
    pub policies: String,
    pub activities: Vec<Activity>,
    /// Art. 32 measures applied to every activity.
    pub safeguards: Vec<String>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Activity {
    pub purpose: String,
    pub description: String,
    pub legal_basis: String,
    /// The GDPR provision, e.g. `Art. 6(1)(a)`.
    pub lawful_under: String,
    /// The consent a consent-based purpose needs.
    pub consent: Option<String>,
    pub double_opt_in: bool,
    pub categories_of_data: Vec<DataCategory>,
    pub categories_of_subjects: Vec<String>,
    pub recipients: Vec<RecipientEntry>,
    pub retention_days: u32,
    /// Automated profiling (Art. 22).
    pub profiling: bool,
    /// A sale, share or targeted advertising; `Sec-GPC: 1` opts the person out.
    pub sale_or_share: bool,
    pub minimum_age: Option<u8>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DataCategory {
    pub category: String,
    pub description: String,
    /// Stored only encrypted under the person's own key.
    pub sealed: bool,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct RecipientEntry {
    pub kind: String,
    pub description: String,
    /// The recipients of this kind registered for this purpose (`POST /v1/recipients`).
    pub registered: Vec<RegisteredRecipient>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct RegisteredRecipient {
    pub id: String,
    pub name: String,
}

const SUBJECTS: &str = "customers, newsletter subscribers and visitors of the controller's shop";

const SAFEGUARDS: [&str; 5] = [
    "direct identifiers (contact details, names, customer and device ids) encrypted with AES-256-GCM under a per-person data key, destroyed on erasure",
    "identifiers found by keyed blind index (HMAC-SHA256), never stored in clear",
    "recipients receive keyed, per-recipient pseudonyms (HMAC-SHA256) instead of internal ids",
    "every disclosure and change recorded in a tamper-evident audit log (RFC 6962 Merkle tree, signed checkpoints)",
    "data minimised per purpose: only the categories the purpose reads are disclosed",
];

impl Ropa {
    /// From the policies and the registered recipients (`registered`; none when the
    /// database is not reachable, as for `consentry ropa` before the first start).
    pub fn generate(
        policies: &Policies,
        registered: &[RecipientRow],
        controller: &str,
        generated_at: String,
    ) -> Self {
        let set = &policies.purposes;
        let activities = set
            .purposes
            .iter()
            .map(|p| Activity {
                purpose: p.name.clone(),
                description: p.description.clone(),
                legal_basis: p.legal_basis.as_str().to_owned(),
                lawful_under: p.legal_basis.article().to_owned(),
                consent: p.consent.clone(),
                double_opt_in: p
                    .consent
                    .as_ref()
                    .and_then(|c| set.consents.iter().find(|k| k.name == *c))
                    .is_some_and(|c| c.double_opt_in),
                categories_of_data: p
                    .reads
                    .iter()
                    .map(|c| {
                        let cat = policies.taxonomy.category(c);
                        DataCategory {
                            category: c.clone(),
                            description: cat
                                .map(|c| c.description.trim_end_matches('.').to_owned())
                                .unwrap_or_default(),
                            sealed: cat.is_some_and(|c| c.sealed),
                        }
                    })
                    .collect(),
                categories_of_subjects: vec![SUBJECTS.to_owned()],
                recipients: p
                    .recipients
                    .iter()
                    .map(|r| RecipientEntry {
                        kind: r.clone(),
                        description: set
                            .recipients
                            .iter()
                            .find(|k| k.name == *r)
                            .map(|k| k.description.trim_end_matches('.').to_owned())
                            .unwrap_or_default(),
                        registered: registered
                            .iter()
                            .filter(|x| x.kind == *r && x.purposes.contains(&p.name))
                            .map(|x| RegisteredRecipient {
                                id: x.id.clone(),
                                name: x.name.clone(),
                            })
                            .collect(),
                    })
                    .collect(),
                retention_days: p.retention_days,
                profiling: p.profiling,
                sale_or_share: p.sale_or_share,
                minimum_age: p.minimum_age,
            })
            .collect();
        let controller = if controller.trim().is_empty() {
            "(not set: configure controller_name)".to_owned()
        } else {
            controller.to_owned()
        };
        Self {
            controller,
            generated_at,
            policies: policies.dir.display().to_string(),
            activities,
            safeguards: SAFEGUARDS.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    pub fn to_markdown(&self) -> String {
        let mut out = format!(
            "# Record of processing activities (GDPR Art. 30)\n\nController: {}  \nGenerated: {} from `{}`\n",
            self.controller, self.generated_at, self.policies
        );
        for a in &self.activities {
            out.push_str(&format!("\n## {}\n\n{}\n\n", a.purpose, a.description));
            out.push_str("| | |\n|---|---|\n");
            let consent = match &a.consent {
                Some(c) if a.double_opt_in => format!("`{c}` (double opt-in)"),
                Some(c) => format!("`{c}`"),
                None => "not consent-based".into(),
            };
            let rows = [
                (
                    "Legal basis",
                    format!("{} ({})", a.legal_basis, a.lawful_under),
                ),
                ("Consent", consent),
                (
                    "Categories of data",
                    a.categories_of_data
                        .iter()
                        .map(|c| {
                            let sealed = if c.sealed { ", encrypted" } else { "" };
                            format!("`{}` ({}{sealed})", c.category, c.description)
                        })
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
                (
                    "Categories of data subjects",
                    a.categories_of_subjects.join("; "),
                ),
                (
                    "Recipients",
                    a.recipients
                        .iter()
                        .map(|r| {
                            let names: Vec<String> = r
                                .registered
                                .iter()
                                .map(|x| format!("{} `{}`", x.name, x.id))
                                .collect();
                            if names.is_empty() {
                                format!("{} ({}): none registered", r.kind, r.description)
                            } else {
                                format!("{} ({}): {}", r.kind, r.description, names.join(", "))
                            }
                        })
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
                ("Retention", format!("{} days", a.retention_days)),
                ("Profiling (Art. 22)", yes_no(a.profiling)),
                ("Sale or share (GPC opt-out)", yes_no(a.sale_or_share)),
                (
                    "Minimum age",
                    a.minimum_age.map_or("none".into(), |m| m.to_string()),
                ),
            ];
            for (k, v) in rows {
                out.push_str(&format!("| {k} | {} |\n", v.replace('|', "\\|")));
            }
        }
        out.push_str("\n## Safeguards (Art. 32)\n\n");
        for s in &self.safeguards {
            out.push_str(&format!("- {s}\n"));
        }
        out
    }
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}
