//! The segment rule language: JSON in, a checked tree out, every error naming the path of
//! the node at fault (`all[2].event.within`).
//!
//! ```json
//! {"all": [
//!   {"event": "Email Opened", "within": "7d"},
//!   {"event": "Order Completed", "within": "30d", "count": {"gte": 1},
//!    "where": [{"property": "total", "gt": 50}]},
//!   {"not": {"aggregate": "lifetime_value", "lt": 100}},
//!   {"attribute": "country", "in": ["DE", "AT"]}
//! ]}
//! ```
use serde_json::{Map, Value};

/// Nesting deeper than this is refused.
pub const MAX_DEPTH: usize = 12;
/// A rule with more conditions than this is refused.
pub const MAX_NODES: usize = 256;
/// The longest time window (ten years).
pub const MAX_WINDOW_SECS: i64 = 10 * 366 * 86_400;

#[derive(Clone, Debug, PartialEq)]
pub enum Rule {
    All(Vec<Rule>),
    Any(Vec<Rule>),
    Not(Box<Rule>),
    /// A trait of the profile, by its stored name.
    Attribute {
        name: String,
        test: Test,
    },
    /// One of the behavioural aggregates the gateway keeps.
    Aggregate {
        name: Aggregate,
        test: Test,
    },
    Event(EventRule),
    /// A score (`rfm.score`, `propensity.purchase`, a posted `churn.risk` ...): a number.
    Score {
        name: String,
        test: Test,
    },
}

/// A literal a value is compared with.
#[derive(Clone, Debug, PartialEq)]
pub enum Literal {
    Str(String),
    Num(f64),
    Bool(bool),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
}

impl Op {
    fn parse(key: &str) -> Option<Self> {
        Some(match key {
            "eq" => Self::Eq,
            "ne" => Self::Ne,
            "gt" => Self::Gt,
            "gte" => Self::Gte,
            "lt" => Self::Lt,
            "lte" => Self::Lte,
            _ => return None,
        })
    }

    /// Whether `ordering` (of the stored value against the literal) satisfies the test.
    pub fn holds(self, ordering: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            Self::Eq => ordering == Equal,
            Self::Ne => ordering != Equal,
            Self::Gt => ordering == Greater,
            Self::Gte => ordering != Less,
            Self::Lt => ordering == Less,
            Self::Lte => ordering != Greater,
        }
    }
}

/// What is asked of one value. A value that is missing satisfies only `exists: false`.
#[derive(Clone, Debug, PartialEq)]
pub enum Test {
    Cmp(Op, Literal),
    In(Vec<Literal>),
    /// A substring of a text, or an element of a list.
    Contains(Literal),
    Exists(bool),
    /// A time no older than this many seconds.
    Within(i64),
    /// A time older than this many seconds.
    OlderThan(i64),
}

/// The aggregates a rule can read, with their kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aggregate {
    LastPageViewAt,
    LastSearchAt,
    LastEmailOpenAt,
    LastEmailClickAt,
    LastPurchaseAt,
    CartUpdatedAt,
    CartAbandonedAt,
    PurchaseCount,
    LifetimeValue,
    AverageOrderValue,
    RecentlyViewed,
    Cart,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    Time,
    Number,
    List,
}

impl Aggregate {
    pub const ALL: [Aggregate; 12] = [
        Self::LastPageViewAt,
        Self::LastSearchAt,
        Self::LastEmailOpenAt,
        Self::LastEmailClickAt,
        Self::LastPurchaseAt,
        Self::CartUpdatedAt,
        Self::CartAbandonedAt,
        Self::PurchaseCount,
        Self::LifetimeValue,
        Self::AverageOrderValue,
        Self::RecentlyViewed,
        Self::Cart,
    ];

    /// The name in rules, in the minimised view and in the `aggregates` table.
    pub fn name(self) -> &'static str {
        match self {
            Self::LastPageViewAt => "last_page_view_at",
            Self::LastSearchAt => "last_search_at",
            Self::LastEmailOpenAt => "last_email_open_at",
            Self::LastEmailClickAt => "last_email_click_at",
            Self::LastPurchaseAt => "last_purchase_at",
            Self::CartUpdatedAt => "cart_updated_at",
            Self::CartAbandonedAt => "cart_abandoned_at",
            Self::PurchaseCount => "purchase_count",
            Self::LifetimeValue => "lifetime_value",
            Self::AverageOrderValue => "average_order_value",
            Self::RecentlyViewed => "recently_viewed",
            Self::Cart => "cart",
        }
    }

    pub fn kind(self) -> ValueKind {
        match self {
            Self::PurchaseCount | Self::LifetimeValue | Self::AverageOrderValue => {
                ValueKind::Number
            }
            Self::RecentlyViewed | Self::Cart => ValueKind::List,
            _ => ValueKind::Time,
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }
}

/// Events of one name (or of any name) in a window, counted.
#[derive(Clone, Debug, PartialEq)]
pub struct EventRule {
    /// `track` (the default), `page` or `screen`.
    pub kind: String,
    /// The event (track) or page/screen name; `None` for any (`"*"`).
    pub name: Option<String>,
    pub within: Option<i64>,
    pub older_than: Option<i64>,
    /// How many matching events there must be (default: at least one).
    pub count: (Op, u64),
    /// Tests on top-level properties; all must hold for an event to count.
    pub properties: Vec<(String, Test)>,
}

/// A rule that does not parse: where, and what to fix.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct RuleError {
    /// The path of the node at fault, e.g. `all[2].event.within`.
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for RuleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

fn err(path: &str, message: impl Into<String>) -> RuleError {
    RuleError {
        path: if path.is_empty() {
            "rule".into()
        } else {
            path.to_owned()
        },
        message: message.into(),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// A window such as `"48h"`, `"30d"`, `"2w"` or `"15m"`, in seconds.
pub fn parse_window(path: &str, v: &Value) -> Result<i64, RuleError> {
    let s = v
        .as_str()
        .ok_or_else(|| err(path, "a window is a string such as \"48h\" or \"30d\""))?;
    let (digits, unit) = s.split_at(s.len().saturating_sub(1));
    let unit_secs = match unit {
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => {
            return Err(err(
                path,
                format!(
                    "{s:?}: a window is a positive whole number of m, h, d or w (\"48h\", \"30d\")"
                ),
            ));
        }
    };
    let n: i64 = digits
        .parse()
        .ok()
        .filter(|n: &i64| *n > 0 && digits.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| {
            err(
                path,
                format!(
                    "{s:?}: a window is a positive whole number of m, h, d or w (\"48h\", \"30d\")"
                ),
            )
        })?;
    let secs = n.saturating_mul(unit_secs);
    if secs > MAX_WINDOW_SECS {
        return Err(err(path, format!("{s:?}: windows are at most ten years")));
    }
    Ok(secs)
}

fn literal(path: &str, v: &Value) -> Result<Literal, RuleError> {
    match v {
        Value::String(s) => Ok(Literal::Str(s.clone())),
        Value::Bool(b) => Ok(Literal::Bool(*b)),
        Value::Number(n) => n
            .as_f64()
            .filter(|f| f.is_finite())
            .map(Literal::Num)
            .ok_or_else(|| err(path, "a number out of range")),
        _ => Err(err(path, "a value is a string, a number or true/false")),
    }
}

const TEST_KEYS: [&str; 11] = [
    "eq",
    "ne",
    "gt",
    "gte",
    "lt",
    "lte",
    "in",
    "contains",
    "exists",
    "within",
    "older_than",
];

/// The one test of a condition object; `allowed` lists the other keys it may have.
fn test(path: &str, obj: &Map<String, Value>, allowed: &[&str]) -> Result<Test, RuleError> {
    for k in obj.keys() {
        if !allowed.contains(&k.as_str()) && !TEST_KEYS.contains(&k.as_str()) {
            return Err(err(
                &join(path, k),
                format!(
                    "unknown key; a condition has one of {}",
                    TEST_KEYS.join(", ")
                ),
            ));
        }
    }
    let tests: Vec<&str> = TEST_KEYS
        .iter()
        .copied()
        .filter(|k| obj.contains_key(*k))
        .collect();
    let key = match tests.as_slice() {
        [one] => *one,
        [] => {
            return Err(err(
                path,
                format!("no test: give one of {}", TEST_KEYS.join(", ")),
            ));
        }
        many => {
            return Err(err(
                path,
                format!(
                    "one test per condition ({} given); combine conditions with all",
                    many.join(", ")
                ),
            ));
        }
    };
    let p = join(path, key);
    let v = &obj[key];
    Ok(match key {
        "in" => {
            let items = v
                .as_array()
                .filter(|a| !a.is_empty() && a.len() <= 1000)
                .ok_or_else(|| err(&p, "a list of 1 to 1000 values"))?;
            Test::In(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, x)| literal(&format!("{p}[{i}]"), x))
                    .collect::<Result<_, _>>()?,
            )
        }
        "contains" => match literal(&p, v)? {
            Literal::Bool(_) => return Err(err(&p, "contains takes a text or a number")),
            l => Test::Contains(l),
        },
        "exists" => Test::Exists(v.as_bool().ok_or_else(|| err(&p, "true or false"))?),
        "within" => Test::Within(parse_window(&p, v)?),
        "older_than" => Test::OlderThan(parse_window(&p, v)?),
        op => {
            let op = Op::parse(op).ok_or_else(|| err(&p, "unknown test"))?;
            let l = literal(&p, v)?;
            if matches!(l, Literal::Bool(_)) && !matches!(op, Op::Eq | Op::Ne) {
                return Err(err(&p, "true and false are compared with eq or ne"));
            }
            Test::Cmp(op, l)
        }
    })
}

fn kind_error(path: &str, what: &str, test: &Test, kind: ValueKind) -> Option<RuleError> {
    let ok = match (test, kind) {
        (Test::Exists(_), _) => true,
        (Test::Within(_) | Test::OlderThan(_), ValueKind::Time) => true,
        (Test::Cmp(_, Literal::Num(_)) | Test::In(_), ValueKind::Number) => {
            !matches!(test, Test::In(v) if v.iter().any(|l| !matches!(l, Literal::Num(_))))
        }
        (Test::Contains(Literal::Str(_)), ValueKind::List) => true,
        _ => false,
    };
    (!ok).then(|| {
        let hint = match kind {
            ValueKind::Time => "a time: use within, older_than or exists",
            ValueKind::Number => {
                "a number: compare it with numbers (eq, ne, gt, gte, lt, lte, in) or use exists"
            }
            ValueKind::List => "a list of product ids: use contains with an id, or exists",
        };
        err(path, format!("{what} is {hint}"))
    })
}

struct Parser {
    nodes: usize,
}

impl Parser {
    fn rule(&mut self, path: &str, v: &Value, depth: usize) -> Result<Rule, RuleError> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(err(path, format!("more than {MAX_NODES} conditions")));
        }
        if depth > MAX_DEPTH {
            return Err(err(path, format!("nested deeper than {MAX_DEPTH} levels")));
        }
        let obj = v
            .as_object()
            .ok_or_else(|| err(path, "a condition is a JSON object"))?;
        let heads: Vec<&str> = [
            "all",
            "any",
            "not",
            "attribute",
            "aggregate",
            "event",
            "score",
        ]
        .into_iter()
        .filter(|k| obj.contains_key(*k))
        .collect();
        let head = match heads.as_slice() {
            [one] => *one,
            [] => {
                return Err(err(
                    path,
                    "a condition starts with one of all, any, not, attribute, aggregate, event, score",
                ));
            }
            many => {
                return Err(err(
                    path,
                    format!(
                        "one kind of condition per object ({} given)",
                        many.join(", ")
                    ),
                ));
            }
        };
        match head {
            "all" | "any" => {
                if obj.len() != 1 {
                    return Err(err(path, format!("{head} takes no other keys")));
                }
                let p = join(path, head);
                let items = obj[head]
                    .as_array()
                    .filter(|a| !a.is_empty())
                    .ok_or_else(|| err(&p, "a non-empty list of conditions"))?;
                let rules = items
                    .iter()
                    .enumerate()
                    .map(|(i, x)| self.rule(&format!("{p}[{i}]"), x, depth + 1))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(if head == "all" {
                    Rule::All(rules)
                } else {
                    Rule::Any(rules)
                })
            }
            "not" => {
                if obj.len() != 1 {
                    return Err(err(path, "not takes no other keys"));
                }
                Ok(Rule::Not(Box::new(self.rule(
                    &join(path, "not"),
                    &obj["not"],
                    depth + 1,
                )?)))
            }
            "attribute" => {
                let p = join(path, "attribute");
                let name = obj["attribute"]
                    .as_str()
                    .filter(|s| !s.is_empty() && s.len() <= 200)
                    .ok_or_else(|| err(&p, "the name of a trait"))?;
                let t = test(path, obj, &["attribute"])?;
                if matches!(t, Test::Within(_) | Test::OlderThan(_)) {
                    return Err(err(
                        path,
                        "within and older_than apply to times: aggregates and events",
                    ));
                }
                Ok(Rule::Attribute {
                    name: name.to_owned(),
                    test: t,
                })
            }
            "aggregate" => {
                let p = join(path, "aggregate");
                let name = obj["aggregate"]
                    .as_str()
                    .ok_or_else(|| err(&p, "the name of an aggregate"))?;
                let agg = Aggregate::parse(name).ok_or_else(|| {
                    err(
                        &p,
                        format!(
                            "unknown aggregate {name:?}; known: {}",
                            Aggregate::ALL.map(Aggregate::name).join(", ")
                        ),
                    )
                })?;
                let t = test(path, obj, &["aggregate"])?;
                if let Some(e) = kind_error(path, name, &t, agg.kind()) {
                    return Err(e);
                }
                Ok(Rule::Aggregate { name: agg, test: t })
            }
            "score" => {
                let p = join(path, "score");
                let name = obj["score"]
                    .as_str()
                    .filter(|s| {
                        !s.is_empty()
                            && s.len() <= 64
                            && s.contains('.')
                            && s.chars().all(|c| {
                                c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.'
                            })
                    })
                    .ok_or_else(|| {
                        err(
                            &p,
                            "the name of a score: rfm.recency, rfm.frequency, rfm.monetary, rfm.score, propensity.purchase, or one posted to /v1/scores",
                        )
                    })?;
                let t = test(path, obj, &["score"])?;
                if let Some(e) = kind_error(path, name, &t, ValueKind::Number) {
                    return Err(e);
                }
                Ok(Rule::Score {
                    name: name.to_owned(),
                    test: t,
                })
            }
            _ => self.event(path, obj),
        }
    }

    fn event(&mut self, path: &str, obj: &Map<String, Value>) -> Result<Rule, RuleError> {
        for k in obj.keys() {
            if !["event", "type", "within", "older_than", "count", "where"].contains(&k.as_str()) {
                return Err(err(
                    &join(path, k),
                    "unknown key; an event condition has event, type, within, older_than, count, where",
                ));
            }
        }
        let p = join(path, "event");
        let name = obj["event"]
            .as_str()
            .filter(|s| !s.is_empty() && s.len() <= 200)
            .ok_or_else(|| err(&p, "an event name, or \"*\" for any"))?;
        let kind = match obj.get("type") {
            None => "track".to_owned(),
            Some(Value::String(k)) if ["track", "page", "screen"].contains(&k.as_str()) => {
                k.clone()
            }
            Some(_) => return Err(err(&join(path, "type"), "track, page or screen")),
        };
        let window = |key: &str| {
            obj.get(key)
                .map(|v| parse_window(&join(&p, key), v))
                .transpose()
        };
        let count = match obj.get("count") {
            None => (Op::Gte, 1),
            Some(v) => {
                let cp = join(&p, "count");
                let c = v
                    .as_object()
                    .filter(|c| c.len() == 1)
                    .ok_or_else(|| err(&cp, "one comparison, e.g. {\"gte\": 1}"))?;
                let (k, n) = c.iter().next().ok_or_else(|| err(&cp, "one comparison"))?;
                let op =
                    Op::parse(k).ok_or_else(|| err(&join(&cp, k), "eq, ne, gt, gte, lt or lte"))?;
                let n = n
                    .as_u64()
                    .filter(|n| *n <= 1_000_000_000)
                    .ok_or_else(|| err(&join(&cp, k), "a whole number, 0 or more"))?;
                (op, n)
            }
        };
        let mut properties = Vec::new();
        if let Some(w) = obj.get("where") {
            let wp = join(&p, "where");
            let items = w
                .as_array()
                .filter(|a| !a.is_empty() && a.len() <= 20)
                .ok_or_else(|| err(&wp, "a list of 1 to 20 property conditions"))?;
            for (i, item) in items.iter().enumerate() {
                let ip = format!("{wp}[{i}]");
                self.nodes += 1;
                let o = item
                    .as_object()
                    .ok_or_else(|| err(&ip, "a property condition is a JSON object"))?;
                let prop = o
                    .get("property")
                    .and_then(Value::as_str)
                    .filter(|s| {
                        !s.is_empty()
                            && s.len() <= 100
                            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    })
                    .ok_or_else(|| {
                        err(
                            &join(&ip, "property"),
                            "a top-level property name (letters, digits, _)",
                        )
                    })?;
                let t = test(&ip, o, &["property"])?;
                if matches!(t, Test::Within(_) | Test::OlderThan(_)) {
                    return Err(err(&ip, "within and older_than apply to the event's time"));
                }
                properties.push((prop.to_owned(), t));
            }
        }
        Ok(Rule::Event(EventRule {
            kind,
            name: (name != "*").then(|| name.to_owned()),
            within: window("within")?,
            older_than: window("older_than")?,
            count,
            properties,
        }))
    }
}

impl Rule {
    /// Parses a rule, with the path and a fix in every error.
    pub fn parse(v: &Value) -> Result<Self, RuleError> {
        Parser { nodes: 0 }.rule("", v, 0)
    }

    /// Every condition in the rule, depth first.
    pub fn leaves(&self) -> Vec<(&Rule, String)> {
        let mut out = Vec::new();
        self.walk("", &mut out);
        out
    }

    fn walk<'a>(&'a self, path: &str, out: &mut Vec<(&'a Rule, String)>) {
        match self {
            Rule::All(rs) | Rule::Any(rs) => {
                let head = if matches!(self, Rule::All(_)) {
                    "all"
                } else {
                    "any"
                };
                for (i, r) in rs.iter().enumerate() {
                    r.walk(&format!("{}[{i}]", join(path, head)), out);
                }
            }
            Rule::Not(r) => r.walk(&join(path, "not"), out),
            leaf => out.push((
                leaf,
                if path.is_empty() {
                    "rule".into()
                } else {
                    path.to_owned()
                },
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn error(v: Value) -> RuleError {
        Rule::parse(&v).expect_err("refused")
    }

    #[test]
    fn the_seed_segments_parse() {
        for v in [
            json!({"event": "Product Viewed", "within": "48h"}),
            json!({"aggregate": "lifetime_value", "gt": 500}),
            json!({"not": {"any": [{"event": "Email Opened", "within": "30d"}, {"event": "Email Link Clicked", "within": "30d"}]}}),
            json!({"all": [{"event": "Email Opened", "within": "7d"}, {"event": "Order Completed", "within": "30d", "count": {"gte": 1}}]}),
            json!({"all": [{"not": {"aggregate": "last_email_open_at", "within": "60d"}}, {"not": {"aggregate": "last_email_click_at", "within": "60d"}}, {"aggregate": "purchase_count", "eq": 0}]}),
            json!({"aggregate": "cart_abandoned_at", "exists": true}),
            json!({"event": "*", "type": "page", "within": "2w"}),
            json!({"event": "Order Completed", "where": [{"property": "total", "gte": 100}, {"property": "product_id", "in": ["p1", "p2"]}]}),
        ] {
            Rule::parse(&v).unwrap_or_else(|e| panic!("{v}: {e}"));
        }
    }

    #[test]
    fn errors_name_the_path_and_the_fix() {
        let e = error(
            json!({"all": [{"attribute": "country", "eq": "DE"}, {"aggregate": "purchase_count", "gt": 0}, {"event": "Order Completed", "within": "-3d"}]}),
        );
        assert_eq!(e.path, "all[2].event.within");
        assert!(e.message.contains("positive whole number"), "{e}");
        assert_eq!(
            error(json!({"event": "x", "within": "48x"})).path,
            "event.within"
        );
        assert_eq!(error(json!({"any": [{"shoe": 1}]})).path, "any[0]");
        assert_eq!(
            error(json!({"aggregate": "ltv", "gt": 1})).path,
            "aggregate"
        );
        assert_eq!(
            error(json!({"aggregate": "lifetime_value", "within": "3d"})).path,
            "rule"
        );
        assert!(
            error(json!({"attribute": "a", "eq": 1, "gt": 2}))
                .message
                .contains("one test")
        );
        assert_eq!(
            error(json!({"attribute": "a", "eq": 1, "colour": 2})).path,
            "colour"
        );
        assert_eq!(
            error(json!({"event": "x", "count": {"gte": -1}})).path,
            "event.count.gte"
        );
        assert_eq!(
            error(json!({"event": "x", "where": [{"property": "a.b", "eq": 1}]})).path,
            "event.where[0].property"
        );
        assert!(error(json!({"all": []})).message.contains("non-empty"));
        assert!(
            error(json!({"attribute": "a", "in": [[1]]}))
                .path
                .ends_with("in[0]")
        );
    }

    #[test]
    fn depth_and_size_are_bounded() {
        let mut v = json!({"attribute": "a", "exists": true});
        for _ in 0..MAX_DEPTH {
            v = json!({"not": v});
        }
        assert!(Rule::parse(&v).is_ok());
        let deeper = json!({"not": v});
        assert!(error(deeper).message.contains("deeper"));
        let wide: Vec<Value> = (0..MAX_NODES)
            .map(|_| json!({"attribute": "a", "exists": true}))
            .collect();
        assert!(error(json!({"any": wide})).message.contains("more than"));
    }

    #[test]
    fn windows() {
        assert_eq!(parse_window("w", &json!("48h")), Ok(48 * 3600));
        assert_eq!(parse_window("w", &json!("2w")), Ok(14 * 86_400));
        for bad in ["-3d", "48x", "d", "0d", "1.5d", "+3d", "99999999999d", ""] {
            assert!(parse_window("w", &json!(bad)).is_err(), "{bad}");
        }
        assert!(parse_window("w", &json!(3)).is_err());
    }
}
