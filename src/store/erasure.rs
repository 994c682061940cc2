//! Erasing a subject: one statement per table (on PostgreSQL one statement in all),
//! never one per row, in the caller's transaction. The audit log is not touched: it holds only keyed references.
use sea_orm::sea_query::{Alias, Condition, Expr, ExprTrait, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QuerySelect, Statement,
};

use super::StoreError;
use super::entity::subject;

/// Rows removed, by table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Erased {
    pub events: u64,
    pub traits: u64,
    pub identifiers: u64,
    pub consents: u64,
    pub disclosures: u64,
    pub pseudonyms: u64,
    pub subjects: u64,
}

/// Every table that holds rows about a subject, with the columns that name it, in the
/// order the rows go (the data key and then the subject row last). Both branches of
/// [`erase`] read this one list.
const HOLDERS: &[(&str, &[&str])] = &[
    ("events", &["subject_id"]),
    ("traits", &["subject_id"]),
    ("identifiers", &["subject_id"]),
    ("consents", &["subject_id"]),
    ("disclosures", &["subject_id"]),
    ("pseudonyms", &["subject_id"]),
    ("aggregates", &["subject_id"]),
    ("scores", &["subject_id"]),
    ("subject_flags", &["subject_id"]),
    ("experiment_exposures", &["subject_id"]),
    ("identity_conflicts", &["subject_a", "subject_b"]),
    // Crypto-shredding: without the data key, sealed copies anywhere (backups) are noise.
    ("subject_keys", &["subject_id"]),
    ("subjects", &["id"]),
];

/// On PostgreSQL the whole erasure is one statement (data-modifying CTEs: one round trip
/// instead of one per table), with one bound parameter per id; it returns the rows
/// removed from each table of [`HOLDERS`], in order.
fn erase_pg(ids: usize) -> String {
    let list = (1..=ids)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut ctes = Vec::new();
    let mut counts = Vec::new();
    for (i, (table, columns)) in HOLDERS.iter().enumerate() {
        let cond = columns
            .iter()
            .map(|c| format!("{c} IN ({list})"))
            .collect::<Vec<_>>()
            .join(" OR ");
        ctes.push(format!(
            "d{i} AS (DELETE FROM {table} WHERE {cond} RETURNING 1)"
        ));
        counts.push(format!("(SELECT COUNT(*) FROM d{i})"));
    }
    format!("WITH {} SELECT {}", ctes.join(", "), counts.join(", "))
}

/// Deletes everything held about `subject_id` (and the merged-away subjects that point
/// at it), its data key included.
pub async fn erase<C: ConnectionTrait>(c: &C, subject_id: &str) -> Result<Erased, StoreError> {
    let mut ids: Vec<String> = subject::Entity::find()
        .select_only()
        .column(subject::Column::Id)
        .filter(subject::Column::MergedInto.eq(subject_id))
        .into_tuple()
        .all(c)
        .await?;
    ids.push(subject_id.to_owned());
    ids.sort();
    // Ingest locks a person's subject rows before it writes their events and aggregates;
    // taking them first here, in the same order, means the two queue instead of
    // deadlocking on one person (PostgreSQL; SQLite has one writer at a time).
    super::profiles::lock_subjects(c, &ids).await?;
    let backend = c.get_database_backend();
    let mut removed = Vec::with_capacity(HOLDERS.len());
    if backend == DbBackend::Postgres && ids.len() <= 1000 {
        let row = c
            .query_one_raw(Statement::from_sql_and_values(
                backend,
                erase_pg(ids.len()),
                ids.iter().map(|id| sea_orm::Value::from(id.as_str())),
            ))
            .await?
            .ok_or(StoreError::Corrupt {
                table: "subjects",
                reason: "the erasure returned no counts".into(),
            })?;
        for i in 0..HOLDERS.len() {
            let n: i64 = row.try_get_by_index(i)?;
            removed.push(u64::try_from(n).unwrap_or(0));
        }
    } else {
        for (table, columns) in HOLDERS {
            let mut cond = Condition::any();
            for col in *columns {
                cond = cond.add(Expr::col(Alias::new(*col)).is_in(ids.clone()));
            }
            let q = Query::delete()
                .from_table(Alias::new(*table))
                .cond_where(cond)
                .to_owned();
            removed.push(c.execute(&q).await?.rows_affected());
        }
    }
    let n = |table: &str| {
        HOLDERS
            .iter()
            .position(|(t, _)| *t == table)
            .and_then(|i| removed.get(i).copied())
            .unwrap_or(0)
    };
    Ok(Erased {
        events: n("events"),
        traits: n("traits"),
        identifiers: n("identifiers"),
        consents: n("consents"),
        disclosures: n("disclosures"),
        pseudonyms: n("pseudonyms"),
        subjects: n("subjects"),
    })
}
