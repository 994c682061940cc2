//! A rule compiled to a SQL condition (sea-query expressions with bound values, for
//! SQLite and PostgreSQL), over `subjects AS s LEFT JOIN aggregates AS a`. Traits and
//! events are read by correlated sub-queries on `traits` and `events`.
//!
//! Every condition is two-valued (true or false, never NULL), so that `not` means what
//! it says: a missing value satisfies only `exists: false`, exactly as in
//! [`super::eval`], which the property test holds this to.
use sea_query::{Alias, Expr, ExprTrait, Query};

use super::rule::{Aggregate, EventRule, Literal, Op, Rule, Test, ValueKind};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A custom SQL fragment; each `{}` is replaced by the next of `args` (as the dialect's
/// placeholder, so the values stay bound).
pub fn cust(d: Dialect, template: &str, args: Vec<Expr>) -> Expr {
    let mut out = String::with_capacity(template.len() + 8);
    for (i, part) in template.split("{}").enumerate() {
        if i > 0 {
            match d {
                Dialect::Sqlite => out.push('?'),
                Dialect::Postgres => {
                    out.push('$');
                    out.push_str(&i.to_string());
                }
            }
        }
        out.push_str(part);
    }
    Expr::cust_with_exprs(out, args)
}

fn col(table: &str, column: &str) -> Expr {
    Expr::col((Alias::new(table), Alias::new(column)))
}

fn lit(l: &Literal) -> Expr {
    match l {
        Literal::Str(s) => Expr::val(s.clone()),
        Literal::Num(n) => Expr::val(*n),
        Literal::Bool(b) => Expr::val(*b),
    }
}

fn sql_op(op: Op) -> &'static str {
    match op {
        Op::Eq => "=",
        Op::Ne => "<>",
        Op::Gt => ">",
        Op::Gte => ">=",
        Op::Lt => "<",
        Op::Lte => "<=",
    }
}

/// `e`, with NULL read as false.
fn falsy(d: Dialect, e: Expr) -> Expr {
    cust(d, "COALESCE({}, FALSE)", vec![e])
}

/// A JSON value held as text: a whole column, or a top-level property of one.
#[derive(Clone)]
enum Slot {
    Column(Expr),
    Property(Expr, String),
}

impl Slot {
    /// SQLite: `json_type(..)`; PostgreSQL: `jsonb_typeof(..)`.
    fn kind(&self, d: Dialect) -> Expr {
        match (self, d) {
            (Slot::Column(c), Dialect::Sqlite) => cust(d, "json_type({})", vec![c.clone()]),
            (Slot::Property(c, k), Dialect::Sqlite) => cust(
                d,
                "json_type({}, {})",
                vec![c.clone(), Expr::val(format!("$.\"{k}\""))],
            ),
            (_, Dialect::Postgres) => cust(d, "jsonb_typeof({})", vec![self.jsonb(d)]),
        }
    }

    /// SQLite: the scalar (`json_extract`); PostgreSQL: the `jsonb` value.
    fn value(&self, d: Dialect) -> Expr {
        match (self, d) {
            (Slot::Column(c), Dialect::Sqlite) => cust(d, "json_extract({}, '$')", vec![c.clone()]),
            (Slot::Property(c, k), Dialect::Sqlite) => cust(
                d,
                "json_extract({}, {})",
                vec![c.clone(), Expr::val(format!("$.\"{k}\""))],
            ),
            (_, Dialect::Postgres) => self.jsonb(d),
        }
    }

    fn jsonb(&self, d: Dialect) -> Expr {
        match self {
            Slot::Column(c) => cust(d, "(({})::jsonb)", vec![c.clone()]),
            Slot::Property(c, k) => cust(
                d,
                "(({})::jsonb -> {})",
                vec![c.clone(), Expr::val(k.clone())],
            ),
        }
    }

    /// The elements of an array value, as a table `json_each` (SQLite only).
    fn each(&self, d: Dialect) -> Expr {
        match self {
            Slot::Column(c) => cust(d, "json_each({})", vec![c.clone()]),
            Slot::Property(c, k) => cust(
                d,
                "json_each({}, {})",
                vec![c.clone(), Expr::val(format!("$.\"{k}\""))],
            ),
        }
    }
}

/// Whether the value in `slot` equals `l` (NULL when there is no value).
fn json_eq(d: Dialect, slot: &Slot, l: &Literal) -> Expr {
    json_cmp(d, slot, Op::Eq, l)
}

fn json_cmp(d: Dialect, slot: &Slot, op: Op, l: &Literal) -> Expr {
    let o = sql_op(op);
    match (d, l) {
        (Dialect::Sqlite, Literal::Num(_)) => cust(
            d,
            &format!("({{}} IN ('integer', 'real') AND {{}} {o} {{}})"),
            vec![slot.kind(d), slot.value(d), lit(l)],
        ),
        (Dialect::Sqlite, Literal::Str(_)) => cust(
            d,
            &format!("({{}} = 'text' AND {{}} {o} {{}})"),
            vec![slot.kind(d), slot.value(d), lit(l)],
        ),
        (Dialect::Sqlite, Literal::Bool(b)) => {
            cust(d, &format!("({{}} {o} '{b}')"), vec![slot.kind(d)])
        }
        (Dialect::Postgres, Literal::Num(_)) => cust(
            d,
            &format!("({{}} = 'number' AND {{}} {o} to_jsonb(({{}})::float8))"),
            vec![slot.kind(d), slot.value(d), lit(l)],
        ),
        (Dialect::Postgres, Literal::Str(_)) => cust(
            d,
            &format!(
                "({{}} = 'string' AND ({{}} #>> ARRAY[]::text[]) COLLATE \"C\" {o} ({{}})::text)"
            ),
            vec![slot.kind(d), slot.value(d), lit(l)],
        ),
        (Dialect::Postgres, Literal::Bool(_)) => cust(
            d,
            &format!("({{}} = 'boolean' AND {{}} {o} to_jsonb(({{}})::boolean))"),
            vec![slot.kind(d), slot.value(d), lit(l)],
        ),
    }
}

fn json_contains(d: Dialect, slot: &Slot, l: &Literal) -> Expr {
    match (d, l) {
        (Dialect::Sqlite, Literal::Str(_)) => cust(
            d,
            "(({} = 'text' AND instr({}, {}) > 0) OR ({} = 'array' AND EXISTS (SELECT 1 FROM {} AS j WHERE j.type = 'text' AND j.value = {})))",
            vec![
                slot.kind(d),
                slot.value(d),
                lit(l),
                slot.kind(d),
                slot.each(d),
                lit(l),
            ],
        ),
        (Dialect::Sqlite, _) => cust(
            d,
            "({} = 'array' AND EXISTS (SELECT 1 FROM {} AS j WHERE j.type IN ('integer', 'real') AND j.value = {}))",
            vec![slot.kind(d), slot.each(d), lit(l)],
        ),
        (Dialect::Postgres, Literal::Str(_)) => cust(
            d,
            "(({} = 'string' AND strpos({} #>> ARRAY[]::text[], ({})::text) > 0) OR ({} = 'array' AND {} @> jsonb_build_array(({})::text)))",
            vec![
                slot.kind(d),
                slot.value(d),
                lit(l),
                slot.kind(d),
                slot.value(d),
                lit(l),
            ],
        ),
        (Dialect::Postgres, _) => cust(
            d,
            "({} = 'array' AND {} @> jsonb_build_array(({})::float8))",
            vec![slot.kind(d), slot.value(d), lit(l)],
        ),
    }
}

/// A test on a JSON value known to be present: true or false (never NULL).
fn json_test(d: Dialect, slot: &Slot, test: &Test) -> Expr {
    match test {
        Test::Cmp(Op::Ne, l) => falsy(d, json_eq(d, slot, l)).not(),
        Test::Cmp(op, l) => falsy(d, json_cmp(d, slot, *op, l)),
        Test::In(items) => {
            let mut any: Option<Expr> = None;
            for l in items {
                let e = falsy(d, json_eq(d, slot, l));
                any = Some(match any {
                    Some(a) => a.or(e),
                    None => e,
                });
            }
            any.unwrap_or_else(|| Expr::val(false))
        }
        Test::Contains(l) => falsy(d, json_contains(d, slot, l)),
        // Presence is decided by the caller; windows do not apply to these values.
        Test::Exists(b) => Expr::val(*b),
        Test::Within(_) | Test::OlderThan(_) => Expr::val(false),
    }
}

fn attribute(d: Dialect, name: &str, test: &Test) -> Expr {
    let mut q = sea_query::Query::select();
    q.expr(Expr::val(1))
        .from_as(Alias::new("traits"), Alias::new("t"))
        .and_where(col("t", "subject_id").equals((Alias::new("s"), Alias::new("id"))))
        // A trait matches whatever spelling it was sent with (`firstName`, `first_name`),
        // as the taxonomy classifies names.
        .and_where(
            cust(
                d,
                "LOWER(REPLACE(REPLACE(REPLACE(REPLACE({}, '_', ''), '-', ''), ' ', ''), '.', ''))",
                vec![col("t", "name")],
            )
            .eq(crate::policy::taxonomy_squash(name)),
        );
    match test {
        Test::Exists(false) => return Expr::exists(q).not(),
        Test::Exists(true) => {}
        other => {
            q.and_where(json_test(d, &Slot::Column(col("t", "value")), other));
        }
    }
    Expr::exists(q)
}

fn property(d: Dialect, key: &str, test: &Test) -> Expr {
    let slot = Slot::Property(col("e", "properties"), key.to_owned());
    let present = match d {
        Dialect::Sqlite => slot.kind(d).is_not_null(),
        Dialect::Postgres => slot.jsonb(d).is_not_null(),
    };
    match test {
        Test::Exists(true) => present,
        Test::Exists(false) => match d {
            Dialect::Sqlite => slot.kind(d).is_null(),
            Dialect::Postgres => slot.jsonb(d).is_null(),
        },
        other => present.and(json_test(d, &slot, other)),
    }
}

fn event(d: Dialect, e: &EventRule, now_us: i64) -> Expr {
    // "At least one" and "none" are EXISTS and NOT EXISTS, which stop at the first event.
    let presence = match e.count {
        (Op::Gte, 1) | (Op::Gt, 0) | (Op::Ne, 0) => Some(true),
        (Op::Eq, 0) | (Op::Lt, 1) | (Op::Lte, 0) => Some(false),
        _ => None,
    };
    let mut q = sea_query::Query::select();
    if presence.is_some() {
        q.expr(Expr::val(1));
    } else {
        q.expr(Expr::cust("COUNT(*)"));
    }
    q.from_as(Alias::new("events"), Alias::new("e"))
        .and_where(col("e", "subject_id").equals((Alias::new("s"), Alias::new("id"))))
        .and_where(col("e", "kind").eq(e.kind.clone()));
    if let Some(name) = &e.name {
        q.and_where(col("e", "name").eq(name.clone()));
    }
    if let Some(w) = e.within {
        q.and_where(col("e", "occurred_at").gte(now_us - w * 1_000_000));
    }
    if let Some(w) = e.older_than {
        q.and_where(col("e", "occurred_at").lt(now_us - w * 1_000_000));
    }
    for (key, test) in &e.properties {
        q.and_where(property(d, key, test));
    }
    match presence {
        Some(true) => return Expr::exists(q),
        Some(false) => return Expr::exists(q).not(),
        None => {}
    }
    let n = i64::try_from(e.count.1).unwrap_or(i64::MAX);
    let count = Expr::SubQuery(
        None,
        Box::new(sea_query::SubQueryStatement::SelectStatement(q)),
    );
    match e.count.0 {
        Op::Eq => count.eq(n),
        Op::Ne => count.ne(n),
        Op::Gt => count.gt(n),
        Op::Gte => count.gte(n),
        Op::Lt => count.lt(n),
        Op::Lte => count.lte(n),
    }
}

fn number(c: Expr, op: Op, l: &Literal) -> Expr {
    let v = lit(l);
    match op {
        Op::Eq => c.eq(v),
        Op::Ne => c.ne(v),
        Op::Gt => c.gt(v),
        Op::Gte => c.gte(v),
        Op::Lt => c.lt(v),
        Op::Lte => c.lte(v),
    }
}

fn aggregate(d: Dialect, a: Aggregate, test: &Test, now_us: i64) -> Expr {
    let column = col("a", a.name());
    let present = column.clone().is_not_null();
    match (a.kind(), test) {
        (ValueKind::Time, Test::Within(w)) => present.and(column.gte(now_us - w * 1_000_000)),
        (ValueKind::Time, Test::OlderThan(w)) => present.and(column.lt(now_us - w * 1_000_000)),
        (ValueKind::Time, Test::Exists(b)) => {
            if *b {
                present
            } else {
                column.is_null()
            }
        }
        (ValueKind::Number, test) => {
            // Counts and sums are 0 for someone with no aggregates yet; the average has
            // no value until there is an order.
            let value = if a == Aggregate::AverageOrderValue {
                column
            } else {
                cust(d, "COALESCE({}, 0)", vec![column])
            };
            let test = match test {
                Test::Cmp(op, l) => number(value.clone(), *op, l),
                Test::In(items) => value.clone().is_in(items.iter().map(lit)),
                Test::Exists(b) => {
                    return if *b {
                        value.is_not_null()
                    } else {
                        value.is_null()
                    };
                }
                _ => Expr::val(false),
            };
            falsy(d, test)
        }
        (ValueKind::List, Test::Exists(b)) => {
            let n = match d {
                Dialect::Sqlite => cust(d, "COALESCE(json_array_length({}), 0)", vec![column]),
                Dialect::Postgres => cust(
                    d,
                    "COALESCE(jsonb_array_length(({})::jsonb), 0)",
                    vec![column],
                ),
            };
            if *b { n.gt(0) } else { n.eq(0) }
        }
        (ValueKind::List, Test::Contains(l)) => {
            let slot = Slot::Column(column);
            falsy(d, json_contains(d, &slot, l))
        }
        _ => Expr::val(false),
    }
}

/// The rule as a condition on `s` (subjects) and `a` (aggregates), times relative to
/// `now_us` (microseconds since the epoch).
pub fn condition(rule: &Rule, d: Dialect, now_us: i64) -> Expr {
    match rule {
        Rule::All(rs) => rs
            .iter()
            .map(|r| condition(r, d, now_us))
            .reduce(|a, b| a.and(b))
            .unwrap_or_else(|| Expr::val(true)),
        Rule::Any(rs) => rs
            .iter()
            .map(|r| condition(r, d, now_us))
            .reduce(|a, b| a.or(b))
            .unwrap_or_else(|| Expr::val(false)),
        Rule::Not(r) => condition(r, d, now_us).not(),
        Rule::Attribute { name, test } => attribute(d, name, test),
        Rule::Aggregate { name, test } => aggregate(d, *name, test, now_us),
        Rule::Event(e) => event(d, e, now_us),
        Rule::Score { name, test } => score(d, name, test),
    }
}

/// A score: `(SELECT value FROM scores WHERE subject_id = s.id AND name = ?)`, missing
/// when the subject has none.
fn score(d: Dialect, name: &str, test: &Test) -> Expr {
    let mut q = Query::select();
    q.expr(col("sc", "value"))
        .from_as(Alias::new("scores"), Alias::new("sc"))
        .and_where(col("sc", "subject_id").equals((Alias::new("s"), Alias::new("id"))))
        .and_where(col("sc", "name").eq(name.to_owned()));
    let value = Expr::SubQuery(
        None,
        Box::new(sea_query::SubQueryStatement::SelectStatement(q.clone())),
    );
    let test = match test {
        Test::Exists(b) => {
            return if *b {
                Expr::exists(q)
            } else {
                Expr::exists(q).not()
            };
        }
        Test::Cmp(op, l) => number(value, *op, l),
        Test::In(items) => value.is_in(items.iter().map(lit)),
        _ => Expr::val(false),
    };
    falsy(d, test)
}

impl Rule {
    /// Whether the rule reads an aggregate (the query joins `aggregates` only then).
    pub fn reads_aggregates(&self) -> bool {
        match self {
            Rule::All(rs) | Rule::Any(rs) => rs.iter().any(Rule::reads_aggregates),
            Rule::Not(r) => r.reads_aggregates(),
            Rule::Aggregate { .. } => true,
            Rule::Attribute { .. } | Rule::Event(_) | Rule::Score { .. } => false,
        }
    }
}
