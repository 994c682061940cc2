//! Recommendations for one person from their minimised events: products recently viewed
//! and not bought, then products often bought by the same people as the person's
//! purchases (co-occurrence over every subject the purpose may process), then the
//! bestsellers as the fallback. Pure: the events come through the gate, the counts from
//! a model trained over consented subjects only, the catalogue from the caller.
use std::collections::{BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::policy::gate::MinimisedEvent;

/// Events that show interest in one product (Segment's e-commerce spec).
pub const INTEREST_EVENTS: [&str; 3] = ["Product Viewed", "Product Clicked", "Product Added"];
/// The event whose `products` were bought.
pub const ORDER_EVENT: &str = "Order Completed";
/// A person's purchases counted per model at most: the most recent this many distinct
/// products (a reseller's thousand orders must not cost a million pairs).
pub const MAX_BASKET: usize = 50;
/// Neighbours kept per product.
pub const TOP_PAIRS: usize = 20;
/// A pair is kept only when at least this many people bought both, so a recommendation
/// never rests on one other person's purchases.
pub const MIN_SUPPORT: u32 = 2;
/// At most this many products in a recommendation block.
pub const MAX_LIMIT: usize = 50;

/// Which sources a block draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Recently viewed, then bought together, then bestsellers.
    #[default]
    Default,
    /// Recently viewed, then bestsellers.
    RecentlyViewed,
    /// Bought together, then bestsellers.
    BoughtTogether,
    /// Bestsellers only.
    Bestsellers,
    /// No block (the template's fallback content).
    None,
}

impl Strategy {
    pub const ALL: [Strategy; 5] = [
        Strategy::Default,
        Strategy::RecentlyViewed,
        Strategy::BoughtTogether,
        Strategy::Bestsellers,
        Strategy::None,
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::RecentlyViewed => "recently_viewed",
            Self::BoughtTogether => "bought_together",
            Self::Bestsellers => "bestsellers",
            Self::None => "none",
        }
    }

    fn viewed(self) -> bool {
        matches!(self, Self::Default | Self::RecentlyViewed)
    }

    fn together(self) -> bool {
        matches!(self, Self::Default | Self::BoughtTogether)
    }
}

/// Why a product is in the block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    RecentlyViewed,
    BoughtTogether,
    Bestseller,
}

/// One product of a block, as templates and ESPs see it.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct Recommendation {
    pub id: String,
    pub name: String,
    /// The same as `name` (the seed's templates write `product_name`).
    pub product_name: String,
    pub url: String,
    pub image_url: Option<String>,
    pub price: Option<f64>,
    pub currency: Option<String>,
    pub reason: Reason,
}

/// What a person's events say: products of interest, most recent first, and products
/// bought, most recent first (each distinct).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Signals {
    pub viewed: Vec<String>,
    pub bought: Vec<String>,
}

/// A product id as Segment's spec sends it: `product_id`, else `sku`, else `id`; a
/// number is taken as its decimal text.
pub fn product_id(p: &Map<String, Value>) -> Option<String> {
    ["product_id", "sku", "id"]
        .iter()
        .find_map(|k| match p.get(*k) {
            Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 128 => {
                Some(s.trim().to_owned())
            }
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        })
}

/// The products an `Order Completed` event's `products` list names.
pub fn ordered(p: &Map<String, Value>) -> Vec<String> {
    match p.get("products") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_object)
            .filter_map(product_id)
            .collect(),
        _ => Vec::new(),
    }
}

fn push_distinct(list: &mut Vec<String>, seen: &mut HashSet<String>, id: String) {
    if seen.insert(id.clone()) {
        list.push(id);
    }
}

/// The signals of `events`, which are newest first.
pub fn signals(events: &[MinimisedEvent]) -> Signals {
    let mut s = Signals::default();
    let (mut seen_v, mut seen_b) = (HashSet::new(), HashSet::new());
    for e in events {
        match e.name() {
            Some(ORDER_EVENT) => {
                for id in ordered(e.properties()) {
                    push_distinct(&mut s.bought, &mut seen_b, id);
                }
            }
            Some(n) if INTEREST_EVENTS.contains(&n) => {
                if let Some(id) = product_id(e.properties()) {
                    push_distinct(&mut s.viewed, &mut seen_v, id);
                }
            }
            _ => {}
        }
    }
    s.bought.truncate(MAX_BASKET);
    s
}

/// The candidates a block may draw from for `s`, in order of preference, each with its
/// reason (before the catalogue is consulted, so more than a block holds).
pub fn candidates(
    s: &Signals,
    pairs: &HashMap<String, Vec<(String, i64)>>,
    popular: &[String],
    strategy: Strategy,
) -> Vec<(String, Reason)> {
    let bought: HashSet<&str> = s.bought.iter().map(String::as_str).collect();
    let mut out = Vec::new();
    let mut taken: HashSet<String> = HashSet::new();
    if strategy == Strategy::None {
        return out;
    }
    if strategy.viewed() {
        for id in &s.viewed {
            if !bought.contains(id.as_str()) && taken.insert(id.clone()) {
                out.push((id.clone(), Reason::RecentlyViewed));
            }
        }
    }
    if strategy.together() {
        let mut score: HashMap<&str, i64> = HashMap::new();
        for b in &s.bought {
            for (other, w) in pairs.get(b).into_iter().flatten() {
                if !bought.contains(other.as_str()) {
                    *score.entry(other.as_str()).or_default() += w;
                }
            }
        }
        let mut ranked: Vec<(&str, i64)> = score.into_iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        for (id, _) in ranked {
            if taken.insert(id.to_owned()) {
                out.push((id.to_owned(), Reason::BoughtTogether));
            }
        }
    }
    for id in popular {
        if !bought.contains(id.as_str()) && taken.insert(id.clone()) {
            out.push((id.clone(), Reason::Bestseller));
        }
    }
    out
}

/// Counts, over many people, who bought what and what together.
#[derive(Default)]
pub struct CoOccurrence {
    ids: HashMap<String, u32>,
    names: Vec<String>,
    people: HashMap<u32, u32>,
    pairs: HashMap<(u32, u32), u32>,
    subjects: u64,
}

/// A trained model: pairs (product, other, people) with each product's top neighbours,
/// and popularity (product, people), most popular first.
pub struct Trained {
    pub pairs: Vec<(String, String, i64)>,
    pub popularity: Vec<(String, i64)>,
    pub subjects: u64,
}

impl CoOccurrence {
    fn id(&mut self, s: &str) -> u32 {
        if let Some(i) = self.ids.get(s) {
            return *i;
        }
        let i = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        self.ids.insert(s.to_owned(), i);
        self.names.push(s.to_owned());
        i
    }

    /// One person's products (bought, or for a purpose that reads only browsing, viewed);
    /// `pairs` false counts popularity only.
    pub fn add_person(&mut self, products: &[String], pairs: bool) {
        let set: BTreeSet<u32> = products
            .iter()
            .take(MAX_BASKET)
            .map(|p| self.id(p))
            .collect();
        if set.is_empty() {
            return;
        }
        self.subjects += 1;
        for &a in &set {
            *self.people.entry(a).or_default() += 1;
        }
        if pairs {
            for &a in &set {
                for &b in set.range(a + 1..) {
                    *self.pairs.entry((a, b)).or_default() += 1;
                }
            }
        }
    }

    pub fn finish(self) -> Trained {
        let mut neighbours: HashMap<u32, Vec<(u32, u32)>> = HashMap::new();
        for ((a, b), n) in self.pairs {
            if n >= MIN_SUPPORT {
                neighbours.entry(a).or_default().push((b, n));
                neighbours.entry(b).or_default().push((a, n));
            }
        }
        let name = |i: u32| self.names[i as usize].clone();
        let mut pairs = Vec::new();
        for (a, mut list) in neighbours {
            list.sort_by(|x, y| {
                y.1.cmp(&x.1)
                    .then(self.names[x.0 as usize].cmp(&self.names[y.0 as usize]))
            });
            list.truncate(TOP_PAIRS);
            pairs.extend(
                list.into_iter()
                    .map(|(b, n)| (name(a), name(b), i64::from(n))),
            );
        }
        pairs.sort();
        let mut popularity: Vec<(String, i64)> = self
            .people
            .into_iter()
            .map(|(i, n)| (name(i), i64::from(n)))
            .collect();
        popularity.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        Trained {
            pairs,
            popularity,
            subjects: self.subjects,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn product_ids_follow_segments_fields() {
        let m = |v: Value| v.as_object().cloned().unwrap();
        assert_eq!(
            product_id(&m(serde_json::json!({"product_id": " p1 "}))),
            Some("p1".into())
        );
        assert_eq!(
            product_id(&m(serde_json::json!({"sku": "S-1"}))),
            Some("S-1".into())
        );
        assert_eq!(
            product_id(&m(serde_json::json!({"product_id": 42}))),
            Some("42".into())
        );
        assert_eq!(product_id(&m(serde_json::json!({"product_id": ""}))), None);
        let order =
            m(serde_json::json!({"products": [{"product_id": "a"}, {"sku": "b"}, {"name": "x"}]}));
        assert_eq!(ordered(&order), ids(&["a", "b"]));
    }

    #[test]
    fn viewed_then_together_then_bestsellers_without_repeats() {
        let s = Signals {
            viewed: ids(&["v1", "b1", "v2"]),
            bought: ids(&["b1"]),
        };
        let mut pairs = HashMap::new();
        pairs.insert(
            "b1".to_owned(),
            vec![
                ("t1".to_owned(), 5),
                ("v2".to_owned(), 9),
                ("t2".to_owned(), 7),
            ],
        );
        let popular = ids(&["b1", "t1", "p1"]);
        let got = candidates(&s, &pairs, &popular, Strategy::Default);
        assert_eq!(
            got,
            vec![
                ("v1".to_owned(), Reason::RecentlyViewed),
                ("v2".to_owned(), Reason::RecentlyViewed),
                ("t2".to_owned(), Reason::BoughtTogether),
                ("t1".to_owned(), Reason::BoughtTogether),
                ("p1".to_owned(), Reason::Bestseller),
            ]
        );
        let only = candidates(&s, &pairs, &popular, Strategy::Bestsellers);
        assert_eq!(
            only,
            vec![
                ("t1".to_owned(), Reason::Bestseller),
                ("p1".to_owned(), Reason::Bestseller)
            ]
        );
        assert!(candidates(&s, &pairs, &popular, Strategy::None).is_empty());
        let together = candidates(&s, &pairs, &popular, Strategy::BoughtTogether);
        assert_eq!(together[0], ("v2".to_owned(), Reason::BoughtTogether));
    }

    #[test]
    fn pairs_need_two_people_and_popularity_counts_people() {
        let mut c = CoOccurrence::default();
        c.add_person(&ids(&["a", "b", "c"]), true);
        c.add_person(&ids(&["a", "b"]), true);
        c.add_person(&ids(&["a", "a"]), true);
        c.add_person(&[], true);
        let t = c.finish();
        assert_eq!(t.subjects, 3);
        assert_eq!(
            t.pairs,
            vec![("a".into(), "b".into(), 2), ("b".into(), "a".into(), 2)]
        );
        assert_eq!(
            t.popularity,
            vec![("a".into(), 3), ("b".into(), 2), ("c".into(), 1)]
        );
    }
}
