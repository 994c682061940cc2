//! A rule evaluated in memory over what the gate lets out: a subject's minimised view and
//! minimised events. Rendering uses it, and the property test holds the SQL compilation
//! to the same answers.
use std::cmp::Ordering;

use serde_json::Value;

use super::rule::{Aggregate, EventRule, Literal, Op, Rule, Test, ValueKind};
use crate::domain::Timestamp;
use crate::policy::gate::{MinimisedEvent, MinimisedProfile};

/// What a rule is evaluated over.
pub struct Facts<'a> {
    pub profile: &'a MinimisedProfile,
    pub events: &'a [MinimisedEvent],
}

fn cmp_literal(v: &Value, l: &Literal) -> Option<Ordering> {
    match (v, l) {
        (Value::Number(n), Literal::Num(x)) => n.as_f64()?.partial_cmp(x),
        (Value::String(s), Literal::Str(x)) => Some(s.as_str().cmp(x.as_str())),
        (Value::Bool(b), Literal::Bool(x)) => Some(b.cmp(x)),
        _ => None,
    }
}

fn equal(v: &Value, l: &Literal) -> bool {
    cmp_literal(v, l) == Some(Ordering::Equal)
}

/// A test on a JSON value; `None` when there is no value.
fn json_test(v: Option<&Value>, test: &Test) -> bool {
    let Some(v) = v else {
        return matches!(test, Test::Exists(false));
    };
    match test {
        Test::Exists(b) => *b,
        Test::Cmp(Op::Ne, l) => !equal(v, l),
        Test::Cmp(op, l) => cmp_literal(v, l).is_some_and(|o| op.holds(o)),
        Test::In(items) => items.iter().any(|l| equal(v, l)),
        Test::Contains(l) => match (v, l) {
            (Value::String(s), Literal::Str(x)) => s.contains(x.as_str()),
            (Value::Array(items), l) => items.iter().any(|i| equal(i, l)),
            _ => false,
        },
        Test::Within(_) | Test::OlderThan(_) => false,
    }
}

fn time(v: Option<&Value>) -> Option<i64> {
    Timestamp::parse_rfc3339(v?.as_str()?).map(Timestamp::unix_micros)
}

fn aggregate(p: &MinimisedProfile, a: Aggregate, test: &Test, now: i64) -> bool {
    let v = p.aggregate(a.name()).filter(|v| !v.is_null());
    match (a.kind(), test) {
        (ValueKind::Time, Test::Within(w)) => time(v).is_some_and(|t| t >= now - w * 1_000_000),
        (ValueKind::Time, Test::OlderThan(w)) => time(v).is_some_and(|t| t < now - w * 1_000_000),
        (ValueKind::Time, Test::Exists(b)) => time(v).is_some() == *b,
        (ValueKind::Number, test) => {
            let n = match v.and_then(Value::as_f64) {
                Some(n) => Some(n),
                None if a != Aggregate::AverageOrderValue => Some(0.0),
                None => None,
            };
            let Some(n) = n else {
                return matches!(test, Test::Exists(false));
            };
            match test {
                Test::Exists(b) => *b,
                Test::Cmp(op, Literal::Num(x)) => n.partial_cmp(x).is_some_and(|o| op.holds(o)),
                Test::In(items) => items
                    .iter()
                    .any(|l| matches!(l, Literal::Num(x) if n == *x)),
                _ => false,
            }
        }
        (ValueKind::List, Test::Exists(b)) => {
            v.and_then(Value::as_array).is_some_and(|l| !l.is_empty()) == *b
        }
        (ValueKind::List, Test::Contains(l)) => v
            .and_then(Value::as_array)
            .is_some_and(|items| items.iter().any(|i| equal(i, l))),
        _ => false,
    }
}

fn event(events: &[MinimisedEvent], e: &EventRule, now: i64) -> bool {
    let n = events
        .iter()
        .filter(|ev| ev.kind() == e.kind)
        .filter(|ev| e.name.as_deref().is_none_or(|n| ev.name() == Some(n)))
        .filter(|ev| {
            e.within
                .is_none_or(|w| ev.occurred_at() >= now - w * 1_000_000)
        })
        .filter(|ev| {
            e.older_than
                .is_none_or(|w| ev.occurred_at() < now - w * 1_000_000)
        })
        .filter(|ev| {
            e.properties
                .iter()
                .all(|(k, t)| json_test(ev.properties().get(k), t))
        })
        .count();
    let n = u64::try_from(n).unwrap_or(u64::MAX);
    e.count.0.holds(n.cmp(&e.count.1))
}

/// Whether the subject these facts describe is in the segment at `now`.
pub fn matches(rule: &Rule, facts: &Facts<'_>, now: Timestamp) -> bool {
    let at = now.unix_micros();
    match rule {
        Rule::All(rs) => rs.iter().all(|r| matches(r, facts, now)),
        Rule::Any(rs) => rs.iter().any(|r| matches(r, facts, now)),
        Rule::Not(r) => !matches(r, facts, now),
        Rule::Attribute { name, test } => {
            // Any trait of that name, whatever its spelling (as the SQL asks).
            let name = crate::policy::taxonomy_squash(name);
            let mut values = facts
                .profile
                .traits()
                .filter(|(k, _)| crate::policy::taxonomy_squash(k) == name)
                .map(|(_, v)| v);
            match test {
                Test::Exists(false) => values.next().is_none(),
                _ => values.any(|v| json_test(Some(v), test)),
            }
        }
        Rule::Aggregate { name, test } => aggregate(facts.profile, *name, test, at),
        Rule::Event(e) => event(facts.events, e, at),
        Rule::Score { name, test } => {
            let Some(n) = facts.profile.score(name) else {
                return matches!(test, Test::Exists(false));
            };
            match test {
                Test::Exists(b) => *b,
                Test::Cmp(op, Literal::Num(x)) => n.partial_cmp(x).is_some_and(|o| op.holds(o)),
                Test::In(items) => items
                    .iter()
                    .any(|l| matches!(l, Literal::Num(x) if n == *x)),
                _ => false,
            }
        }
    }
}
