//! Segment rules: `Rule::parse` on any JSON, then the parsed rule compiled to SQL for
//! SQLite and PostgreSQL and built into a statement.
#![no_main]
mod common;

use consentry::segmentation::rule::Rule;
use consentry::segmentation::sql::{self, Dialect};
use libfuzzer_sys::fuzz_target;
use sea_query::{Alias, Expr, PostgresQueryBuilder, Query, SqliteQueryBuilder};

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let Ok(rule) = Rule::parse(&v) else {
        return;
    };
    assert!(!rule.leaves().is_empty() || matches!(rule, Rule::All(_) | Rule::Any(_)));
    let now = common::now().unix_micros();
    for d in [Dialect::Sqlite, Dialect::Postgres] {
        let mut q = Query::select();
        q.expr(Expr::val(1))
            .from_as(Alias::new("subjects"), Alias::new("s"))
            .and_where(sql::condition(&rule, d, now));
        let (text, _values) = match d {
            Dialect::Sqlite => q.build(SqliteQueryBuilder),
            Dialect::Postgres => q.build(PostgresQueryBuilder),
        };
        assert!(text.starts_with("SELECT"));
    }
});
