//! `consentry demo`: a realistic, deterministic synthetic population sent through the
//! same ingestion code as the tracking API. Everyone is fictional: addresses are on the
//! reserved `example.*` domains. The generator is SplitMix64, so one seed gives the same
//! population on every machine and every release.
use serde_json::{Map, Value, json};

use super::ingest::{Ingest, IngestError};
use super::segment::{Kind, Message};
use crate::domain::Timestamp;

const FIRST: [&str; 16] = [
    "Ada", "Ben", "Chloe", "Dev", "Elif", "Femi", "Greta", "Hugo", "Ines", "Jonas", "Kaia", "Luca",
    "Maya", "Noah", "Omar", "Priya",
];
const LAST: [&str; 12] = [
    "Adams", "Berg", "Costa", "Dubois", "Evans", "Fischer", "Garcia", "Haddad", "Ito", "Jensen",
    "Kowalski", "Larsen",
];
const COUNTRIES: [&str; 8] = ["GB", "DE", "FR", "ES", "IT", "NL", "SE", "US"];

/// A valid mobile number in `country`'s plan, distinct for each person index `i`.
fn mobile(country: &str, i: u64) -> String {
    let n = i % 10_000_000;
    match country {
        "GB" => format!("+4477{:08}", 10_000_000 + n % 90_000_000),
        "DE" => format!("+49151{:08}", n),
        "FR" => format!("+336{:08}", n),
        "ES" => format!("+346{:08}", n),
        "IT" => format!("+393{:09}", 100_000_000 + n),
        "NL" => format!("+3161{:07}", n % 10_000_000),
        "SE" => format!("+4670{:07}", n),
        _ => format!("+1212{:07}", 2_000_000 + n % 8_000_000),
    }
}
const DOMAINS: [&str; 3] = ["example.com", "example.org", "example.net"];
const PRODUCTS: u64 = 200;
const DAY_US: i64 = 86_400_000_000;

/// SplitMix64: tiny, fast and fully specified, so a seed means the same data forever.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

fn message(kind: Kind, user: Option<&str>, anon: Option<&str>, at: i64, id: String) -> Message {
    let mut m = Message::new(kind, id, Timestamp::from_unix_micros(at));
    m.user_id = user.map(str::to_owned);
    m.anonymous_id = anon.map(str::to_owned);
    m
}

fn props(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

/// The messages of one person: anonymous browsing, sign-up, shopping, email engagement.
fn person(rng: &mut Rng, i: u64, now: i64) -> Vec<Message> {
    let user = format!("demo-u{i}");
    let anon = format!("demo-a{i}");
    let mut at = now - (rng.below(90) as i64 + 1) * DAY_US;
    let mut n = 0;
    let mut out = Vec::new();
    let mut push = |out: &mut Vec<Message>, mut m: Message, at: i64| {
        m.timestamp = Timestamp::from_unix_micros(at.min(now));
        n += 1;
        m.message_id = format!("demo-{i}-{n}");
        out.push(m);
    };
    let step = |rng: &mut Rng, at: &mut i64| *at += (rng.below(3600) as i64 + 60) * 1_000_000;
    // Browsing before signing up.
    for _ in 0..rng.below(6) + 1 {
        let mut p = message(Kind::Page, None, Some(&anon), at, String::new());
        p.name = Some(
            rng.pick(&["Home", "Shoes", "Bags", "Sale", "New In"])
                .to_owned(),
        );
        push(&mut out, p, at);
        step(rng, &mut at);
        let mut v = message(Kind::Track, None, Some(&anon), at, String::new());
        v.event = Some("Product Viewed".into());
        v.properties =
            props(json!({"product_id": format!("p{}", rng.below(PRODUCTS)), "price": 19.99}));
        push(&mut out, v, at);
        step(rng, &mut at);
    }
    // Most visitors identify themselves.
    if !rng.chance(85) {
        return out;
    }
    let (first, last) = (rng.pick(&FIRST), rng.pick(&LAST));
    let country = rng.pick(&COUNTRIES);
    let mut id = message(Kind::Identify, Some(&user), Some(&anon), at, String::new());
    id.traits = props(json!({
        "email": format!("{}.{}{i}@{}", first.to_lowercase(), last.to_lowercase(), rng.pick(&DOMAINS)),
        "firstName": first, "lastName": last,
        "country": country,
        "plan": rng.pick(&["free", "plus", "gold"]),
    }));
    // Half give a date of birth (a few are too young for marketing).
    if rng.chance(50) {
        let year = 1950 + rng.below(63);
        id.traits.insert(
            "birthday".into(),
            Value::String(format!(
                "{year}-{:02}-{:02}",
                rng.below(12) + 1,
                rng.below(28) + 1
            )),
        );
    }
    // What their consent banner said, and the newsletter: most confirmed the double
    // opt-in, some declined, the rest never answered.
    id.context = props(json!({"consent": {"categoryPreferences": {
        "Personalization": rng.chance(70), "Analytics": rng.chance(80),
        "Advertising": rng.chance(25)}}}));
    if rng.chance(65) {
        id.consents
            .push(("email_marketing".into(), "granted", "double_opt_in"));
    } else if rng.chance(50) {
        id.consents
            .push(("email_marketing".into(), "denied", "web_form"));
    }
    // Six in ten give a mobile number, unique per person.
    if rng.chance(60) {
        id.traits
            .insert("phone".into(), Value::String(mobile(country, i)));
    }
    push(&mut out, id, at);
    for _ in 0..rng.below(10) {
        step(rng, &mut at);
        let product = format!("p{}", rng.below(PRODUCTS));
        let mut v = message(Kind::Track, Some(&user), None, at, String::new());
        v.event = Some("Product Viewed".into());
        v.properties = props(json!({"product_id": product, "price": 19.99}));
        push(&mut out, v, at);
        if rng.chance(40) {
            step(rng, &mut at);
            let mut a = message(Kind::Track, Some(&user), None, at, String::new());
            a.event = Some("Product Added".into());
            a.properties = props(json!({"product_id": product, "price": 19.99}));
            push(&mut out, a, at);
            if rng.chance(60) {
                step(rng, &mut at);
                let mut o = message(Kind::Track, Some(&user), None, at, String::new());
                o.event = Some("Order Completed".into());
                let total = (rng.below(20_000) + 500) as f64 / 100.0;
                o.properties = props(
                    json!({"order_id": format!("o{i}-{}", out.len()), "total": total, "currency": "EUR",
                    "products": [{"product_id": product}]}),
                );
                push(&mut out, o, at);
            }
        }
    }
    for _ in 0..rng.below(8) {
        at += DAY_US;
        if rng.chance(50) {
            let mut e = message(Kind::Track, Some(&user), None, at, String::new());
            e.event = Some("Email Opened".into());
            push(&mut out, e, at);
            if rng.chance(30) {
                let mut c = message(
                    Kind::Track,
                    Some(&user),
                    None,
                    at + 60_000_000,
                    String::new(),
                );
                c.event = Some("Email Link Clicked".into());
                push(&mut out, c, at + 60_000_000);
            }
        }
    }
    out
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DemoReport {
    pub profiles: u64,
    pub events: u64,
}

/// Generates `profiles` people from `seed` and ingests them, 500 messages a transaction.
/// `progress(done, total)` is called after each transaction.
pub async fn run(
    ingest: &Ingest<'_>,
    profiles: u64,
    seed: u64,
    mut progress: impl FnMut(u64, u64),
) -> Result<DemoReport, IngestError> {
    let mut rng = Rng(seed);
    let now = ingest.received_at.unix_micros();
    let mut batch = Vec::with_capacity(600);
    let mut report = DemoReport::default();
    for i in 0..profiles {
        batch.extend(person(&mut rng, i, now));
        if batch.len() >= 500 || i + 1 == profiles {
            report.events += ingest.run(&batch, true).await?.accepted as u64;
            batch.clear();
            progress(i + 1, profiles);
        }
    }
    report.profiles = profiles;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_always_gives_the_same_people() {
        let a: Vec<Message> = (0..50)
            .flat_map(|i| person(&mut Rng(i), i, 1_796_000_000_000_000))
            .collect();
        let b: Vec<Message> = (0..50)
            .flat_map(|i| person(&mut Rng(i), i, 1_796_000_000_000_000))
            .collect();
        assert_eq!(a, b);
        assert!(
            a.iter()
                .any(|m| m.event.as_deref() == Some("Order Completed"))
        );
        assert!(a.iter().any(|m| m.kind == Kind::Identify));
        assert!(a.iter().any(|m| m.traits.contains_key("phone")));
        assert!(
            a.iter()
                .all(|m| m.timestamp.unix_micros() <= 1_796_000_000_000_000)
        );
    }

    #[test]
    fn generated_mobiles_are_valid_e164_numbers() {
        for country in COUNTRIES {
            for i in [0, 1, 999_999, 9_999_999, 12_345_678] {
                let m = mobile(country, i);
                let parsed = crate::domain::Phone::parse(&m, None)
                    .unwrap_or_else(|e| panic!("{country} {m}: {e}"));
                assert_eq!(parsed.as_ref(), m);
            }
        }
    }
}
