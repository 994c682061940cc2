//! Loading the record the gate decides on. Sealed values are opened only when the grant's
//! purpose may read them (or, for the date of birth, when an age check needs it).
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sea_orm::ConnectionTrait;
use serde_json::Value;

use super::grant::PurposeGrant;
use super::view::{Attribute, Decision, Source, SubjectRecord};
use crate::crypto::{Keyring, KeyringError, MasterKey, SubjectKey};
use crate::domain::aggregates::Aggregates;
use crate::domain::{Pseudonym, Timestamp};
use crate::store::{StoreError, pages, profiles, subject_flags, suppressions};

/// The category of every score (RFM, propensity, posted ones): profiling (Art. 22).
pub const SCORE_CATEGORY: &str = "user.derived.score";

/// The category each behavioural aggregate belongs to. Segments and templates that read
/// an aggregate are checked against these.
pub const AGGREGATE_CATEGORIES: &[(&str, &str)] = &[
    ("last_page_view_at", "user.behavior.browsing_history"),
    ("last_search_at", "user.behavior.browsing_history"),
    ("recently_viewed", "user.behavior.browsing_history"),
    ("last_email_open_at", "user.behavior.email_engagement"),
    ("last_email_click_at", "user.behavior.email_engagement"),
    ("last_purchase_at", "user.behavior.purchase_history"),
    ("purchase_count", "user.behavior.purchase_history"),
    ("lifetime_value", "user.behavior.purchase_history"),
    ("average_order_value", "user.behavior.purchase_history"),
    ("cart", "user.behavior.purchase_history"),
    ("cart_updated_at", "user.behavior.purchase_history"),
    ("cart_abandoned_at", "user.behavior.purchase_history"),
];

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Keyring(#[from] KeyringError),
}

fn time(us: Option<i64>) -> Value {
    us.map_or(Value::Null, |t| {
        Value::String(Timestamp::from_unix_micros(t).to_rfc3339())
    })
}

fn aggregate_values(a: &Aggregates) -> [(&'static str, Value); 12] {
    let list = |v: &[String]| Value::from(v.to_vec());
    [
        ("last_page_view_at", time(a.last_page_view_at)),
        ("last_search_at", time(a.last_search_at)),
        ("recently_viewed", list(&a.recently_viewed)),
        ("last_email_open_at", time(a.last_email_open_at)),
        ("last_email_click_at", time(a.last_email_click_at)),
        ("last_purchase_at", time(a.last_purchase_at)),
        ("purchase_count", Value::from(a.purchase_count)),
        ("lifetime_value", Value::from(a.lifetime_value)),
        (
            "average_order_value",
            a.average_order_value().map_or(Value::Null, Value::from),
        ),
        ("cart", list(&a.cart)),
        ("cart_updated_at", time(a.cart_updated_at)),
        ("cart_abandoned_at", time(a.cart_abandoned_at)),
    ]
}

/// `YYYY-MM-DD` (a longer ISO time is cut to its date).
fn date_of_birth(v: &Value) -> Option<(i32, u8, u8)> {
    let s = v.as_str()?;
    let d = s.get(..10)?;
    let date =
        time::Date::parse(d, time::macros::format_description!("[year]-[month]-[day]")).ok()?;
    Some((date.year(), u8::from(date.month()), date.day()))
}

/// A number, or the lower bound of a band such as `"18-24"` or `"65+"`.
fn stated_age(v: &Value) -> Option<u32> {
    if let Some(n) = v.as_u64() {
        return u32::try_from(n).ok();
    }
    let s = v.as_str()?.trim();
    let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The record of `subject_id` for `grant`, as the recipient knows it by `pseudonym`;
/// `None` when there is no such active subject.
pub async fn load_record<C: ConnectionTrait>(
    c: &C,
    master: &MasterKey,
    keyring: &Keyring,
    grant: &PurposeGrant,
    subject_id: &str,
    pseudonym: Pseudonym,
) -> Result<Option<SubjectRecord>, LoadError> {
    let mut out = load_records(
        c,
        master,
        keyring,
        grant,
        vec![(subject_id.to_owned(), pseudonym)],
    )
    .await?;
    Ok(out.pop().flatten())
}

/// What the tables hold about a page of subjects, grouped by subject.
#[derive(Default)]
struct Rows {
    identifiers: HashMap<String, Vec<pages::PageIdentifier>>,
    traits: HashMap<String, Vec<profiles::TraitRow>>,
    keys: HashMap<String, Vec<u8>>,
    aggregates: HashMap<String, Aggregates>,
    scores: HashMap<String, Vec<(String, f64)>>,
    decisions: HashMap<String, Vec<Decision>>,
    restricted: HashSet<String>,
}

/// What a page query reads for a grant: only what the view can hold, or what its age
/// check reads, and the decisions its legal basis turns on.
pub(crate) struct PageWants {
    categories: Vec<String>,
    consents: Vec<String>,
    scores: bool,
}

impl PageWants {
    pub(crate) fn of(grant: &PurposeGrant) -> Self {
        let categories = grant
            .policies
            .taxonomy
            .categories()
            .map(|(name, _)| name)
            .filter(|name| {
                grant.purpose.may_read(name)
                    || *name == "user.demographic.date_of_birth"
                    || *name == "user.demographic.age_range"
            })
            .map(str::to_owned)
            .collect();
        // Its consent, and objections (and GPC opt-outs) recorded under its own name.
        let mut consents = vec![grant.purpose.name.clone()];
        consents.extend(grant.purpose.consent.clone());
        Self {
            categories,
            consents,
            scores: grant.purpose.may_read(SCORE_CATEGORY),
        }
    }

    pub(crate) fn query(&self) -> pages::PageQuery<'_> {
        pages::PageQuery {
            identifier_kinds: &["email", "phone"],
            trait_categories: &self.categories,
            consents: &self.consents,
            flag: subject_flags::RESTRICTED,
            scores: self.scores,
        }
    }
}

/// The records of a page of subjects (each as its recipient knows it), in the order
/// given; `None` for those that are not active subjects. One query for the whole page
/// (one row per subject, see [`pages::load`]) and one for the suppression list, whatever
/// its size (callers keep it to a few hundred).
pub async fn load_records<C: ConnectionTrait>(
    c: &C,
    master: &MasterKey,
    keyring: &Keyring,
    grant: &PurposeGrant,
    subjects: Vec<(String, Pseudonym)>,
) -> Result<Vec<Option<SubjectRecord>>, LoadError> {
    let ids: Vec<String> = subjects.iter().map(|(id, _)| id.clone()).collect();
    let wants = PageWants::of(grant);
    let loaded = pages::load(c, &ids, &wants.query()).await?;
    records_of_rows(c, master, keyring, grant, subjects, loaded).await
}

/// [`load_records`] of rows already read by a query that [`pages::select`] made with
/// [`PageWants::of`] `grant`: a subject of `subjects` without a row is not active.
pub(crate) async fn records_of_rows<C: ConnectionTrait>(
    c: &C,
    master: &MasterKey,
    keyring: &Keyring,
    grant: &PurposeGrant,
    subjects: Vec<(String, Pseudonym)>,
    loaded: Vec<pages::PageRow>,
) -> Result<Vec<Option<SubjectRecord>>, LoadError> {
    let mut rows = Rows::default();
    let mut active = HashSet::new();
    for r in loaded {
        active.insert(r.id.clone());
        if let Some(k) = r.wrapped_key {
            rows.keys.insert(r.id.clone(), k);
        }
        if let Some(a) = r.aggregates {
            rows.aggregates.insert(r.id.clone(), a);
        }
        if r.flagged {
            rows.restricted.insert(r.id.clone());
        }
        rows.identifiers.insert(r.id.clone(), r.identifiers);
        rows.traits.insert(r.id.clone(), r.traits);
        rows.scores.insert(r.id.clone(), r.scores);
        let decisions = r
            .decisions
            .into_iter()
            .map(|d| Decision {
                name: d.consent,
                status: d.status,
                method: d.method,
                captured_at: d.captured_at,
            })
            .collect();
        rows.decisions.insert(r.id, decisions);
    }
    let mut out = Vec::with_capacity(subjects.len());
    let mut hashes_of = Vec::with_capacity(subjects.len());
    for (id, pseudonym) in subjects {
        if !active.contains(&id) {
            out.push(None);
            hashes_of.push(Vec::new());
            continue;
        }
        let (record, hashes) = assemble(&mut rows, master, keyring, grant, &id, pseudonym)?;
        out.push(Some(record));
        hashes_of.push(hashes);
    }
    let all: Vec<String> = hashes_of.iter().flatten().cloned().collect();
    let listed = suppressions::present(c, &all).await?;
    for (record, hashes) in out.iter_mut().zip(&hashes_of) {
        if let Some(r) = record {
            r.suppressed = hashes.iter().any(|h| listed.contains(h));
        }
    }
    Ok(out)
}

/// One subject's record from the page's rows, with the suppression hashes of its
/// identifiers (the caller looks those up for the whole page at once).
fn assemble(
    rows: &mut Rows,
    master: &MasterKey,
    keyring: &Keyring,
    grant: &PurposeGrant,
    subject_id: &str,
    pseudonym: Pseudonym,
) -> Result<(SubjectRecord, Vec<String>), LoadError> {
    let policies = Arc::clone(&grant.policies);
    let taxonomy = &policies.taxonomy;
    let category_id = |name: &str| {
        taxonomy
            .categories()
            .position(|(c, _)| c == name)
            .and_then(|i| u16::try_from(i).ok())
    };
    let key = rows
        .keys
        .remove(subject_id)
        .map(|w| SubjectKey::unwrap(master, subject_id, &w))
        .transpose()?;
    let open = |context: &str, sealed: &[u8]| -> Result<Option<String>, LoadError> {
        let Some(key) = &key else { return Ok(None) };
        let plain = key.open(context, sealed)?;
        Ok(String::from_utf8(plain).ok())
    };
    let age_check = grant.purpose.minimum_age.is_some();

    let mut email = None;
    let mut phone = None;
    let mut hashes = Vec::new();
    for id in rows.identifiers.remove(subject_id).unwrap_or_default() {
        if id.kind != "email" && id.kind != "phone" {
            continue;
        }
        let Some(value) = open(&id.kind, &id.sealed)? else {
            continue;
        };
        hashes.extend(keyring.suppression_hashes(&id.kind, &value));
        // The earliest identifier of a kind is the one shown (a person may have several).
        let slot = if id.kind == "email" {
            &mut email
        } else {
            &mut phone
        };
        if slot.as_ref().is_none_or(|(at, _)| id.created_at < *at) {
            *slot = Some((id.created_at, value));
        }
    }

    let mut attributes = Vec::new();
    let mut born = None;
    let mut stated = None;
    for t in rows.traits.remove(subject_id).unwrap_or_default() {
        // Contact identifiers are shown once, normalised, from the identifiers.
        if t.category == "user.contact.email" || t.category == "user.contact.phone_number" {
            continue;
        }
        let readable = grant.purpose.may_read(&t.category);
        let is_dob = t.category == "user.demographic.date_of_birth";
        let value = match (&t.value, &t.sealed) {
            (Some(v), _) => serde_json::from_str::<Value>(v).ok(),
            (None, Some(sealed)) if readable || (is_dob && age_check) => {
                open(&format!("trait:{}", t.name), sealed)?
                    .and_then(|s| serde_json::from_str::<Value>(&s).ok())
            }
            _ => None,
        };
        if let Some(v) = &value {
            if is_dob {
                born = born.or_else(|| date_of_birth(v));
            } else if t.category == "user.demographic.age_range" {
                stated = stated.or_else(|| stated_age(v));
            }
        }
        attributes.push(Attribute {
            source: Source::Trait,
            category_id: category_id(&t.category),
            name: Arc::from(t.name.as_str()),
            category: Arc::from(t.category.as_str()),
            value: if readable { value } else { None },
        });
    }
    if let Some(a) = rows.aggregates.remove(subject_id) {
        for (name, value) in aggregate_values(&a) {
            let category = AGGREGATE_CATEGORIES
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(crate::policy::UNCLASSIFIED, |(_, c)| c);
            attributes.push(Attribute {
                source: Source::Aggregate,
                name: Arc::from(name),
                category: Arc::from(category),
                category_id: category_id(category),
                value: Some(value),
            });
        }
    }
    for (name, value) in rows.scores.remove(subject_id).unwrap_or_default() {
        attributes.push(Attribute {
            source: Source::Score,
            name: Arc::from(name.as_str()),
            category: Arc::from(SCORE_CATEGORY),
            category_id: category_id(SCORE_CATEGORY),
            value: Some(Value::from(value)),
        });
    }
    let decisions = rows.decisions.remove(subject_id).unwrap_or_default();
    let record = SubjectRecord {
        recipient: grant.recipient.to_string(),
        pseudonym,
        restricted: rows.restricted.contains(subject_id),
        suppressed: false,
        attributes,
        email: email.map(|(_, v)| v),
        phone: phone.map(|(_, v)| v),
        decisions,
        born,
        stated_age: stated,
        policies,
    };
    Ok((record, hashes))
}
