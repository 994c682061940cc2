//! The raw record the gate decides on, and the minimised view it lets out.
use std::sync::Arc;

use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::Value;
use utoipa::ToSchema;

use super::grant::PurposeGrant;
use crate::domain::{Pseudonym, Timestamp};
use crate::policy::LegalBasis;

/// Why no view was built. Never sent to a recipient (it gets a plain 404); audited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denial {
    /// A consent-based purpose and no current grant (none, pending, denied, withdrawn).
    NoConsent,
    /// A legitimate-interest purpose the person objected to (Art. 21).
    Objection,
    /// A sale/share purpose the person opted out of with Global Privacy Control.
    GpcOptOut,
    /// Processing is restricted (Art. 18).
    Restricted,
    /// On the suppression list (erased, or asked never to be contacted).
    Suppressed,
    /// Known to be younger than the purpose's minimum age.
    UnderAge,
    /// The record was loaded for another recipient (a programming error; fail closed).
    WrongRecipient,
}

impl Denial {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoConsent => "no_consent",
            Self::Objection => "objection",
            Self::GpcOptOut => "gpc_opt_out",
            Self::Restricted => "restricted",
            Self::Suppressed => "suppressed",
            Self::UnderAge => "under_age",
            Self::WrongRecipient => "wrong_recipient",
        }
    }
}

/// One stored consent-ledger decision, as the gate reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// A consent name, or (for objections) a purpose name.
    pub name: String,
    /// `granted`, `pending`, `denied` or `withdrawn`.
    pub status: String,
    pub method: String,
    pub captured_at: i64,
}

/// Where an attribute comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Trait,
    Aggregate,
    /// A score (`user.derived.score`): only for a profiling purpose on consent (Art. 22).
    Score,
}

/// One attribute of a loaded record. `value` is `None` for a sealed value the loader did
/// not open (its category is not readable for the grant it was loaded for).
#[derive(Clone, Debug, PartialEq)]
pub struct Attribute {
    pub source: Source,
    pub name: Arc<str>,
    pub category: Arc<str>,
    /// Index of `category` in the taxonomy of the policies the record was loaded under.
    pub category_id: Option<u16>,
    pub value: Option<Value>,
}

/// Everything the gate needs to decide about one subject, loaded for one grant.
/// Only the gate reads it; nothing outside `policy` can see inside.
#[derive(Clone, Debug)]
pub struct SubjectRecord {
    pub(super) recipient: String,
    pub(super) pseudonym: Pseudonym,
    pub(super) policies: Arc<crate::policy::Policies>,
    pub(super) attributes: Vec<Attribute>,
    pub(super) email: Option<String>,
    pub(super) phone: Option<String>,
    /// Oldest first.
    pub(super) decisions: Vec<Decision>,
    pub(super) restricted: bool,
    pub(super) suppressed: bool,
    /// (year, month, day) of birth, when known.
    pub(super) born: Option<(i32, u8, u8)>,
    /// A stated age (the `age` trait), when no date of birth is known.
    pub(super) stated_age: Option<u32>,
}

impl SubjectRecord {
    /// How many attributes were loaded (traits and aggregates).
    pub fn attribute_count(&self) -> usize {
        self.attributes.len()
    }
}

/// What a recipient may see of one subject for one purpose. Only [`minimise`] makes one.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct MinimisedProfile {
    /// The subject as this recipient knows it.
    #[schema(value_type = String, example = "ps1.2C5Yj0Ql8Vq3c0m0d3b9mXlq1Qb4v8c6hZJx0aKk3yE")]
    pseudonym: Pseudonym,
    #[schema(value_type = String)]
    purpose: Arc<str>,
    #[schema(value_type = String)]
    recipient: Arc<str>,
    /// Only when the purpose reads `user.contact.email`.
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<String>,
    /// Only when the purpose reads `user.contact.phone_number` (E.164).
    #[serde(skip_serializing_if = "Option::is_none")]
    phone: Option<String>,
    /// Traits of the categories the purpose reads, as last stored.
    #[serde(serialize_with = "as_map")]
    #[schema(value_type = Object)]
    traits: Vec<(Arc<str>, Value)>,
    /// Behavioural aggregates of the categories the purpose reads (times are RFC 3339).
    #[serde(serialize_with = "as_map")]
    #[schema(value_type = Object)]
    aggregates: Vec<(Arc<str>, Value)>,
    /// Scores (RFM, propensity, posted ones), only for a purpose marked profiling, on
    /// consent, that reads `user.derived.score`; absent otherwise.
    #[serde(serialize_with = "as_map", skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Object)]
    scores: Vec<(Arc<str>, Value)>,
}

fn as_map<S: serde::Serializer>(v: &[(Arc<str>, Value)], s: S) -> Result<S::Ok, S::Error> {
    let mut m = s.serialize_map(Some(v.len()))?;
    for (k, val) in v {
        m.serialize_entry(k.as_ref(), val)?;
    }
    m.end()
}

impl MinimisedProfile {
    pub fn pseudonym(&self) -> &Pseudonym {
        &self.pseudonym
    }

    pub fn purpose(&self) -> &str {
        &self.purpose
    }

    pub fn recipient(&self) -> &str {
        &self.recipient
    }

    pub fn email(&self) -> Option<&str> {
        self.email.as_deref()
    }

    pub fn phone(&self) -> Option<&str> {
        self.phone.as_deref()
    }

    pub fn trait_value(&self, name: &str) -> Option<&Value> {
        self.traits
            .iter()
            .find(|(k, _)| k.as_ref() == name)
            .map(|(_, v)| v)
    }

    pub fn aggregate(&self, name: &str) -> Option<&Value> {
        self.aggregates
            .iter()
            .find(|(k, _)| k.as_ref() == name)
            .map(|(_, v)| v)
    }

    pub fn score(&self, name: &str) -> Option<f64> {
        self.scores
            .iter()
            .find(|(k, _)| k.as_ref() == name)
            .and_then(|(_, v)| v.as_f64())
    }

    pub fn scores(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.scores.iter().map(|(k, v)| (k.as_ref(), v))
    }

    pub fn traits(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.traits.iter().map(|(k, v)| (k.as_ref(), v))
    }

    pub fn aggregates(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.aggregates.iter().map(|(k, v)| (k.as_ref(), v))
    }

    /// The names of what the view discloses (`email`, `traits.first_name`,
    /// `aggregates.lifetime_value` ...): what the disclosure record lists.
    pub fn disclosed(&self) -> Vec<String> {
        let mut out = vec!["pseudonym".to_owned()];
        if self.email.is_some() {
            out.push("email".into());
        }
        if self.phone.is_some() {
            out.push("phone".into());
        }
        out.extend(self.traits.iter().map(|(k, _)| format!("traits.{k}")));
        out.extend(
            self.aggregates
                .iter()
                .map(|(k, _)| format!("aggregates.{k}")),
        );
        out.extend(self.scores.iter().map(|(k, _)| format!("scores.{k}")));
        out
    }
}

/// The latest decision on `name` captured at or before `at`.
fn latest<'a>(decisions: &'a [Decision], name: &str, at: i64) -> Option<&'a Decision> {
    decisions
        .iter()
        .rev()
        .find(|d| d.captured_at <= at && d.name == name)
}

fn refused(d: &Decision) -> bool {
    d.status == "denied" || d.status == "withdrawn"
}

/// Whether the legal basis of the grant's purpose holds for this subject at `at`.
fn lawful(s: &SubjectRecord, g: &PurposeGrant, at: i64) -> Result<(), Denial> {
    let p = &g.purpose;
    let by_gpc = |d: &Decision| p.sale_or_share && d.method == "gpc";
    match p.legal_basis {
        LegalBasis::Consent => {
            let consent = p.consent.as_deref().unwrap_or_default();
            match latest(&s.decisions, consent, at) {
                Some(d) if d.status == "granted" => Ok(()),
                Some(d) if refused(d) && by_gpc(d) => Err(Denial::GpcOptOut),
                _ => Err(Denial::NoConsent),
            }
        }
        LegalBasis::LegitimateInterest | LegalBasis::Contract | LegalBasis::LegalObligation => {
            match latest(&s.decisions, &p.name, at) {
                Some(d) if refused(d) && by_gpc(d) => Err(Denial::GpcOptOut),
                Some(d) if refused(d) && p.legal_basis == LegalBasis::LegitimateInterest => {
                    Err(Denial::Objection)
                }
                _ => Ok(()),
            }
        }
    }
}

/// Age in whole years at `at`, from the date of birth or else the stated age.
fn age_at(s: &SubjectRecord, at: Timestamp) -> Option<u32> {
    if let Some((y, m, d)) = s.born {
        let now = at.to_datetime();
        let mut age = now.year() - y;
        if (u8::from(now.month()), now.day()) < (m, d) {
            age -= 1;
        }
        return u32::try_from(age).ok();
    }
    s.stated_age
}

/// The view of `s` for `g` at `at`, or why there is none.
pub fn minimise(
    s: &SubjectRecord,
    g: &PurposeGrant,
    at: Timestamp,
) -> Result<MinimisedProfile, Denial> {
    if s.recipient != *g.recipient {
        return Err(Denial::WrongRecipient);
    }
    if s.restricted {
        return Err(Denial::Restricted);
    }
    if s.suppressed {
        return Err(Denial::Suppressed);
    }
    if let Some(min) = g.purpose.minimum_age
        && age_at(s, at).is_some_and(|age| age < u32::from(min))
    {
        return Err(Denial::UnderAge);
    }
    lawful(s, g, at.unix_micros())?;
    // Category ids are only comparable within one policy set; otherwise go by name.
    let same_set = Arc::ptr_eq(&s.policies, &g.policies);
    let readable = |a: &Attribute| {
        if same_set {
            a.category_id
                .and_then(|i| g.readable.get(usize::from(i)))
                .copied()
                .unwrap_or(false)
        } else {
            g.purpose.may_read(&a.category)
        }
    };
    let n_traits = s
        .attributes
        .iter()
        .filter(|a| a.source == Source::Trait)
        .count();
    let mut traits = Vec::with_capacity(n_traits);
    let mut aggregates = Vec::with_capacity(s.attributes.len() - n_traits);
    let mut scores = Vec::new();
    let profiling = g.purpose.profiling && g.purpose.legal_basis == LegalBasis::Consent;
    for a in &s.attributes {
        if let Some(v) = &a.value
            && readable(a)
        {
            let out = match a.source {
                Source::Trait => &mut traits,
                Source::Aggregate => &mut aggregates,
                Source::Score if profiling => &mut scores,
                Source::Score => continue,
            };
            out.push((Arc::clone(&a.name), v.clone()));
        }
    }
    Ok(MinimisedProfile {
        pseudonym: s.pseudonym.clone(),
        purpose: Arc::clone(&g.purpose_name),
        recipient: Arc::clone(&g.recipient),
        email: if g.email { s.email.clone() } else { None },
        phone: if g.phone { s.phone.clone() } else { None },
        traits,
        aggregates,
        scores,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use proptest::prelude::*;

    use super::*;
    use crate::policy::{Policies, Purpose};

    fn shipped() -> Arc<Policies> {
        Arc::new(
            Policies::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"))
                .expect("shipped policies load"),
        )
    }

    fn purpose(reads: Vec<String>, basis: LegalBasis, min_age: Option<u8>) -> Purpose {
        Purpose {
            name: "test.purpose".into(),
            description: String::new(),
            legal_basis: basis,
            consent: (basis == LegalBasis::Consent).then(|| "news".to_owned()),
            reads,
            profiling: false,
            sale_or_share: false,
            minimum_age: min_age,
            retention_days: 30,
            recipients: vec!["esp".into()],
        }
    }

    fn record(policies: &Arc<Policies>, attributes: Vec<Attribute>) -> SubjectRecord {
        SubjectRecord {
            recipient: "r".into(),
            pseudonym: Pseudonym::from_parts(1, &"A".repeat(43)),
            policies: Arc::clone(policies),
            attributes,
            email: Some("ann@example.com".into()),
            phone: Some("+442079460958".into()),
            decisions: vec![Decision {
                name: "news".into(),
                status: "granted".into(),
                method: "web_form".into(),
                captured_at: 0,
            }],
            restricted: false,
            suppressed: false,
            born: None,
            stated_age: None,
        }
    }

    fn attribute(policies: &Policies, i: usize, category: &str, value: i64) -> Attribute {
        Attribute {
            source: if i.is_multiple_of(3) {
                Source::Aggregate
            } else {
                Source::Trait
            },
            name: Arc::from(format!("a{i}").as_str()),
            category: Arc::from(category),
            category_id: policies
                .taxonomy
                .categories()
                .position(|(c, _)| c == category)
                .and_then(|i| u16::try_from(i).ok()),
            value: Some(Value::from(value)),
        }
    }

    fn categories(p: &Policies) -> Vec<String> {
        let mut all: Vec<String> = p.taxonomy.categories().map(|(c, _)| c.to_owned()).collect();
        all.push(crate::policy::UNCLASSIFIED.to_owned());
        all
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// A view never holds an attribute outside the purpose's categories, and holds
        /// every readable one; the same whether category ids or names are compared.
        #[test]
        fn a_view_holds_exactly_the_readable_attributes(
            reads in proptest::collection::vec(0usize..64, 1..6),
            attrs in proptest::collection::vec((0usize..64, any::<i64>()), 0..30),
        ) {
            let policies = shipped();
            let all = categories(&policies);
            let reads: Vec<String> = reads.iter().map(|i| all[i % (all.len() - 1)].clone()).collect();
            let p = purpose(reads, LegalBasis::Consent, None);
            let attributes: Vec<Attribute> = attrs
                .iter()
                .enumerate()
                .map(|(i, (c, v))| attribute(&policies, i, &all[c % all.len()], *v))
                .collect();
            let s = record(&policies, attributes.clone());
            let same = PurposeGrant::for_tests(Arc::clone(&policies), p.clone(), "r");
            // A grant under a different (reloaded) set: names are compared instead.
            let reloaded = PurposeGrant::for_tests(shipped(), p.clone(), "r");
            for g in [&same, &reloaded] {
                let view = minimise(&s, g, Timestamp::from_unix_micros(1)).unwrap();
                let shown: Vec<&str> = view.traits().chain(view.aggregates()).map(|(k, _)| k).collect();
                for a in &attributes {
                    let allowed = p.may_read(&a.category);
                    prop_assert_eq!(shown.contains(&a.name.as_ref()), allowed, "{} in {}", a.name, a.category);
                }
                prop_assert_eq!(view.email().is_some(), p.may_read("user.contact.email"));
                prop_assert_eq!(view.phone().is_some(), p.may_read("user.contact.phone_number"));
            }
        }
    }

    #[test]
    fn each_reason_to_refuse_is_its_own() {
        let policies = shipped();
        let p = purpose(vec!["user".into()], LegalBasis::Consent, Some(16));
        let g = PurposeGrant::for_tests(Arc::clone(&policies), p, "r");
        let at = Timestamp::parse_rfc3339("2026-12-01T00:00:00Z").unwrap();
        let ok = record(&policies, vec![]);
        assert!(minimise(&ok, &g, at).is_ok());
        type Change = Box<dyn Fn(&mut SubjectRecord)>;
        let cases: Vec<(Change, Denial)> = vec![
            (Box::new(|s| s.restricted = true), Denial::Restricted),
            (Box::new(|s| s.suppressed = true), Denial::Suppressed),
            (Box::new(|s| s.born = Some((2011, 6, 1))), Denial::UnderAge),
            (Box::new(|s| s.stated_age = Some(15)), Denial::UnderAge),
            (Box::new(|s| s.decisions.clear()), Denial::NoConsent),
            (
                Box::new(|s| s.decisions[0].status = "pending".into()),
                Denial::NoConsent,
            ),
            (
                Box::new(|s| s.recipient = "other".into()),
                Denial::WrongRecipient,
            ),
        ];
        for (change, expected) in cases {
            let mut s = ok.clone();
            change(&mut s);
            assert_eq!(minimise(&s, &g, at).unwrap_err(), expected);
        }
        // Sixteen on the birthday itself is old enough; a grant captured later does not
        // count for an earlier moment.
        let mut s = ok.clone();
        s.born = Some((2010, 12, 1));
        assert!(minimise(&s, &g, at).is_ok());
        let mut s = ok.clone();
        s.decisions[0].captured_at = at.unix_micros() + 1;
        assert_eq!(minimise(&s, &g, at).unwrap_err(), Denial::NoConsent);

        // Legitimate interest: fine until an objection; GPC for a sale/share purpose.
        let mut li = purpose(vec!["user".into()], LegalBasis::LegitimateInterest, None);
        li.sale_or_share = true;
        let g = PurposeGrant::for_tests(Arc::clone(&policies), li, "r");
        let mut s = ok.clone();
        s.decisions.clear();
        assert!(minimise(&s, &g, at).is_ok());
        s.decisions.push(Decision {
            name: "test.purpose".into(),
            status: "denied".into(),
            method: "api".into(),
            captured_at: 0,
        });
        assert_eq!(minimise(&s, &g, at).unwrap_err(), Denial::Objection);
        s.decisions[0].method = "gpc".into();
        assert_eq!(minimise(&s, &g, at).unwrap_err(), Denial::GpcOptOut);
    }
}
