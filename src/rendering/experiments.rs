//! Experiments (A/B and multivariate): which variant a person is shown, and which of their
//! events count as an outcome of it. Pure functions: no I/O, no clock.
//!
//! Guarantees:
//! - assignment is deterministic per experiment and subject, from a keyed hash (HMAC-SHA256
//!   under a key the caller derives from the keyring): stable across renders, processes and
//!   nodes, and not computable by anyone without the key;
//! - a holdout of `h` percent takes the buckets below `h * 100` of 10,000; the rest are
//!   split between the variants by cumulative weight, so changing the holdout of a new
//!   experiment does not reshuffle who is in which variant's share more than it must.
use std::collections::{BTreeMap, BTreeSet};

use ring::hmac;
use serde_json::{Map, Value};

/// Buckets a subject can fall in.
pub const BUCKETS: u64 = 10_000;
/// The exposure recorded for a member of the holdout (no variant may be named so).
pub const HOLDOUT: &str = "holdout";

/// The events that are outcomes.
pub const OPENED: &str = "Email Opened";
pub const CLICKED: &str = "Email Link Clicked";
pub const ORDERED: &str = "Order Completed";

/// The recommendation strategy a variant asks for (the recommender's own).
pub use super::recommend::Strategy;

/// Where a subject lands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Arm {
    /// Receives nothing.
    Holdout,
    /// The variant at this index.
    Variant(usize),
}

/// HMAC-SHA256(key, experiment ‖ 0x00 ‖ subject), its first 8 bytes as a big-endian u64,
/// mod [`BUCKETS`]. (The modulo bias, 2^64 mod 10,000 out of 2^64, is nil.)
pub fn bucket(key: &hmac::Key, experiment: &str, subject: &str) -> u64 {
    let mut data = Vec::with_capacity(experiment.len() + 1 + subject.len());
    data.extend_from_slice(experiment.as_bytes());
    data.push(0);
    data.extend_from_slice(subject.as_bytes());
    let tag = hmac::sign(key, &data);
    let mut first = [0u8; 8];
    first.copy_from_slice(&tag.as_ref()[..8]);
    u64::from_be_bytes(first) % BUCKETS
}

/// The arm of `bucket`: the holdout below `holdout * 100`, else the variant whose
/// cumulative share (of the buckets left) the bucket falls in. `weights` are whole
/// percentages summing to 100.
pub fn arm_of(bucket: u64, holdout: u32, weights: &[u32]) -> Arm {
    let held = u64::from(holdout) * 100;
    if bucket < held {
        return Arm::Holdout;
    }
    let rest = BUCKETS.saturating_sub(held);
    let pos = bucket - held;
    let mut cumulative = 0u64;
    for (i, w) in weights.iter().enumerate() {
        cumulative += u64::from(*w);
        if pos * 100 < cumulative * rest {
            return Arm::Variant(i);
        }
    }
    Arm::Variant(weights.len().saturating_sub(1))
}

/// Assigns the subjects of one experiment.
pub struct Assigner {
    key: hmac::Key,
    experiment: String,
    holdout: u32,
    weights: Vec<u32>,
}

impl Assigner {
    /// `key` is the experiment assignment key (derived from the keyring by the caller).
    pub fn new(key: &[u8], experiment: &str, holdout: u32, weights: Vec<u32>) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
            experiment: experiment.to_owned(),
            holdout,
            weights,
        }
    }

    pub fn arm(&self, subject: &str) -> Arm {
        arm_of(
            bucket(&self.key, &self.experiment, subject),
            self.holdout,
            &self.weights,
        )
    }
}

fn text(v: Option<&Value>) -> Option<&str> {
    v.and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// A UTM parameter of a URL in the properties (`link_url`, `url`).
fn utm_of_url(props: &Map<String, Value>, name: &str) -> Option<String> {
    ["link_url", "url"].iter().find_map(|k| {
        let u = url::Url::parse(text(props.get(*k))?).ok()?;
        u.query_pairs()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.into_owned())
    })
}

/// The campaign and the variant an event names, from its properties: `campaign_id` (or
/// `campaign`, a text or an object with `id`), `utm_campaign`, Segment's
/// `context.campaign.name` (kept by ingest as `context_campaign`), or the `utm_campaign`
/// of the clicked `link_url`; the variant likewise from `variant`, `utm_content`,
/// `context.campaign.content`, or the link's `utm_content`.
pub fn tags_of(props: &Map<String, Value>) -> (Option<String>, Option<String>) {
    let context = props.get("context_campaign").and_then(Value::as_object);
    let campaign = text(props.get("campaign_id"))
        .or_else(|| text(props.get("campaign")))
        .or_else(|| {
            props
                .get("campaign")
                .and_then(Value::as_object)
                .and_then(|o| text(o.get("id")))
        })
        .or_else(|| text(props.get("utm_campaign")))
        .or_else(|| context.and_then(|c| text(c.get("name"))))
        .map(str::to_owned)
        .or_else(|| utm_of_url(props, "utm_campaign"));
    let variant = text(props.get("variant"))
        .or_else(|| text(props.get("utm_content")))
        .or_else(|| context.and_then(|c| text(c.get("content"))))
        .map(str::to_owned)
        .or_else(|| utm_of_url(props, "utm_content"));
    (campaign, variant)
}

/// Subjects with at least one open, click and conversion, in one group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub opens: BTreeSet<String>,
    pub clicks: BTreeSet<String>,
    pub conversions: BTreeSet<String>,
}

/// One event of an exposed subject, at or after the exposure.
pub struct Event<'a> {
    pub subject: &'a str,
    /// The variant the subject was exposed to, or [`HOLDOUT`].
    pub exposed_to: &'a str,
    pub name: &'a str,
    pub properties: &'a Map<String, Value>,
}

/// Counts the outcomes of each group (by variant name, and [`HOLDOUT`]). An open, a
/// click or an order counts for a variant when it names one of `campaigns` and either no
/// variant or the subject's own; in the holdout, which received nothing, any order
/// counts as a conversion. Each subject counts at most once per metric.
pub fn tally<'a>(
    events: impl IntoIterator<Item = Event<'a>>,
    campaigns: &BTreeSet<String>,
) -> BTreeMap<String, Tally> {
    let mut out: BTreeMap<String, Tally> = BTreeMap::new();
    for e in events {
        let group = out.entry(e.exposed_to.to_owned()).or_default();
        if e.exposed_to == HOLDOUT {
            if e.name == ORDERED {
                group.conversions.insert(e.subject.to_owned());
            }
            continue;
        }
        let (campaign, variant) = tags_of(e.properties);
        let ours = campaign.is_some_and(|c| campaigns.contains(&c))
            && variant.as_deref().is_none_or(|v| v == e.exposed_to);
        if !ours {
            continue;
        }
        let set = match e.name {
            OPENED => &mut group.opens,
            CLICKED => &mut group.clicks,
            ORDERED => &mut group.conversions,
            _ => continue,
        };
        set.insert(e.subject.to_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use statrs::distribution::{ChiSquared, ContinuousCDF};

    fn key() -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, b"a fixed test key, 32 bytes long!")
    }

    #[test]
    fn a_bucket_is_stable_and_depends_on_key_experiment_and_subject() {
        let k = key();
        let b = bucket(&k, "exp1", "subject-1");
        assert_eq!(b, bucket(&k, "exp1", "subject-1"));
        assert!(b < BUCKETS);
        let other = hmac::Key::new(hmac::HMAC_SHA256, b"another key");
        let differ = (0..50)
            .filter(|i| {
                let s = format!("s{i}");
                bucket(&k, "exp1", &s) != bucket(&other, "exp1", &s)
                    || bucket(&k, "exp1", &s) != bucket(&k, "exp2", &s)
            })
            .count();
        assert!(differ > 45, "{differ}");
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(bucket(&k, "ab", "c"), bucket(&k, "a", "bc"));
    }

    #[test]
    fn arms_follow_the_holdout_and_cumulative_weights() {
        // 10% holdout: buckets 0..1000; the remaining 9,000 split 50/30/20.
        let w = [50, 30, 20];
        assert_eq!(arm_of(0, 10, &w), Arm::Holdout);
        assert_eq!(arm_of(999, 10, &w), Arm::Holdout);
        assert_eq!(arm_of(1000, 10, &w), Arm::Variant(0));
        assert_eq!(arm_of(1000 + 4499, 10, &w), Arm::Variant(0));
        assert_eq!(arm_of(1000 + 4500, 10, &w), Arm::Variant(1));
        assert_eq!(arm_of(1000 + 7199, 10, &w), Arm::Variant(1));
        assert_eq!(arm_of(1000 + 7200, 10, &w), Arm::Variant(2));
        assert_eq!(arm_of(9999, 10, &w), Arm::Variant(2));
        // No holdout.
        assert_eq!(arm_of(0, 0, &[50, 50]), Arm::Variant(0));
        assert_eq!(arm_of(4999, 0, &[50, 50]), Arm::Variant(0));
        assert_eq!(arm_of(5000, 0, &[50, 50]), Arm::Variant(1));
        assert_eq!(arm_of(9999, 0, &[50, 50]), Arm::Variant(1));
    }

    /// Assignment over 20,000 synthetic subjects is close to the weights: Pearson's
    /// chi-square statistic against the expected counts stays below the 0.999 quantile
    /// (the hash is deterministic, so this is a fixed check, not a flaky one).
    #[test]
    fn assignment_over_many_subjects_is_close_to_the_weights() {
        for (holdout, weights) in [(10u32, vec![50u32, 30, 20]), (0, vec![25, 25, 25, 25])] {
            let a = Assigner::new(b"chi-square test key", "exp-chi", holdout, weights.clone());
            let n = 20_000u32;
            let mut observed: BTreeMap<Arm, f64> = BTreeMap::new();
            for i in 0..n {
                *observed
                    .entry(a.arm(&format!("subject-{i:05}")))
                    .or_default() += 1.0;
            }
            let mut expected = Vec::new();
            if holdout > 0 {
                expected.push((Arm::Holdout, f64::from(holdout) / 100.0));
            }
            for (i, w) in weights.iter().enumerate() {
                let share = (1.0 - f64::from(holdout) / 100.0) * f64::from(*w) / 100.0;
                expected.push((Arm::Variant(i), share));
            }
            let chi2: f64 = expected
                .iter()
                .map(|(arm, share)| {
                    let e = share * f64::from(n);
                    let o = observed.get(arm).copied().unwrap_or(0.0);
                    (o - e).powi(2) / e
                })
                .sum();
            let df = (expected.len() - 1) as f64;
            let critical = ChiSquared::new(df).unwrap().inverse_cdf(0.999);
            // 16.266 for 3 degrees of freedom (tables of the chi-square distribution).
            assert!((ChiSquared::new(3.0).unwrap().inverse_cdf(0.999) - 16.266).abs() < 1e-3);
            assert!(chi2 < critical, "chi2 {chi2} >= {critical} ({observed:?})");
        }
    }

    #[test]
    fn strategies_parse_by_name() {
        for s in Strategy::ALL {
            assert_eq!(Strategy::parse(s.as_str()), Some(s));
        }
        assert_eq!(Strategy::parse("popular"), None);
    }

    #[test]
    fn campaign_and_variant_come_from_properties_utm_or_the_clicked_link() {
        let m = |v: Value| v.as_object().unwrap().clone();
        let cases = [
            (
                json!({"campaign_id": "c1", "variant": "B"}),
                Some("c1"),
                Some("B"),
            ),
            (json!({"campaign": "c1"}), Some("c1"), None),
            (json!({"campaign": {"id": "c1"}}), Some("c1"), None),
            (
                json!({"utm_campaign": "c1", "utm_content": "A"}),
                Some("c1"),
                Some("A"),
            ),
            (
                json!({"context_campaign": {"name": "c1", "content": "B", "source": "consentry"}}),
                Some("c1"),
                Some("B"),
            ),
            (
                json!({"link_url": "https://shop.example/x?a=1&utm_campaign=c1&utm_content=B#top"}),
                Some("c1"),
                Some("B"),
            ),
            (json!({"campaign_id": ""}), None, None),
            (json!({"order_id": "o1"}), None, None),
        ];
        for (props, campaign, variant) in cases {
            let (c, v) = tags_of(&m(props.clone()));
            assert_eq!((c.as_deref(), v.as_deref()), (campaign, variant), "{props}");
        }
    }

    #[test]
    fn tally_counts_each_subject_once_per_metric_and_only_its_own_variant() {
        let campaigns: BTreeSet<String> = ["c1".to_owned()].into();
        let p = |v: Value| v.as_object().unwrap().clone();
        let ours = p(json!({"campaign_id": "c1"}));
        let ours_b = p(json!({"campaign_id": "c1", "variant": "B"}));
        let other = p(json!({"campaign_id": "c9"}));
        let plain = p(json!({"order_id": "o1"}));
        let events = [
            ("s1", "A", OPENED, &ours),
            ("s1", "A", OPENED, &ours),
            ("s1", "A", CLICKED, &ours),
            ("s2", "A", OPENED, &other),
            ("s3", "A", OPENED, &ours_b),
            ("s4", "B", OPENED, &ours_b),
            ("s4", "B", ORDERED, &ours_b),
            ("s5", "B", ORDERED, &plain),
            ("h1", HOLDOUT, ORDERED, &plain),
            ("h1", HOLDOUT, OPENED, &plain),
        ];
        let t = tally(
            events.iter().map(|(s, g, n, props)| Event {
                subject: s,
                exposed_to: g,
                name: n,
                properties: props,
            }),
            &campaigns,
        );
        let n = |g: &str| {
            let t = &t[g];
            (t.opens.len(), t.clicks.len(), t.conversions.len())
        };
        assert_eq!(n("A"), (1, 1, 0));
        assert_eq!(n("B"), (1, 0, 1));
        assert_eq!(n(HOLDOUT), (0, 0, 1));
    }
}
