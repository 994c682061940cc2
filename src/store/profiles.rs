//! Subjects, identifiers, traits and events. Identifier values and identifying traits
//! arrive here already sealed; this file never sees them in clear.
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder,
};

use super::StoreError;
use super::entity::event::{self, Entity as Event};
use super::entity::identifier::{self, Entity as Identifier};
use super::entity::identity_conflict::{self, Entity as Conflict};
use super::entity::subject::{self, Entity as Subject};
use super::entity::subject_key::{self, Entity as SubjectKey};
use super::entity::subject_trait::{self, Entity as Trait};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentifierRow {
    pub kind: String,
    pub blind_index: String,
    pub subject_id: String,
    pub sealed: Vec<u8>,
    pub created_at: i64,
}

impl From<identifier::Model> for IdentifierRow {
    fn from(m: identifier::Model) -> Self {
        Self {
            kind: m.kind,
            blind_index: m.blind_index,
            subject_id: m.subject_id,
            sealed: m.sealed,
            created_at: m.created_at,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRow {
    pub id: String,
    pub subject_id: String,
    pub source_key_id: String,
    pub message_id: String,
    pub kind: String,
    pub name: Option<String>,
    pub properties: String,
    pub occurred_at: i64,
    pub received_at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraitRow {
    pub subject_id: String,
    pub name: String,
    pub value: Option<String>,
    pub sealed: Option<Vec<u8>>,
    pub category: String,
    pub updated_at: i64,
}

/// The subject holding any of `indexes` (the blind indexes of one value under each key
/// version) for `kind`.
pub async fn subject_for<C: ConnectionTrait>(
    c: &C,
    kind: &str,
    indexes: &[String],
) -> Result<Option<IdentifierRow>, StoreError> {
    Ok(Identifier::find()
        .filter(identifier::Column::Kind.eq(kind))
        .filter(identifier::Column::BlindIndex.is_in(indexes.iter().cloned()))
        .one(c)
        .await?
        .map(IdentifierRow::from))
}

pub async fn identifiers_of<C: ConnectionTrait>(
    c: &C,
    subject_id: &str,
) -> Result<Vec<IdentifierRow>, StoreError> {
    identifiers_in(c, &[subject_id.to_owned()]).await
}

/// The identifiers of every subject in `ids` (one query; callers keep `ids` to a page).
pub async fn identifiers_in<C: ConnectionTrait>(
    c: &C,
    ids: &[String],
) -> Result<Vec<IdentifierRow>, StoreError> {
    Ok(Identifier::find()
        .filter(identifier::Column::SubjectId.is_in(ids.iter().cloned()))
        .all(c)
        .await?
        .into_iter()
        .map(IdentifierRow::from)
        .collect())
}

/// A subject to create, with its wrapped data key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewSubject {
    pub id: String,
    pub wrapped_key: Vec<u8>,
    pub created_at: i64,
    pub first_seen_at: i64,
    pub last_seen_at: i64,
}

/// Rows per multi-row statement: well under both databases' parameter limits.
const CHUNK: usize = 500;

pub async fn insert_subjects<C: ConnectionTrait>(
    c: &C,
    rows: &[NewSubject],
) -> Result<(), StoreError> {
    for chunk in rows.chunks(CHUNK) {
        Subject::insert_many(chunk.iter().map(|s| subject::ActiveModel {
            id: Set(s.id.clone()),
            status: Set("active".into()),
            merged_into: Set(None),
            created_at: Set(s.created_at),
            first_seen_at: Set(s.first_seen_at),
            last_seen_at: Set(s.last_seen_at),
        }))
        .exec_without_returning(c)
        .await?;
        SubjectKey::insert_many(chunk.iter().map(|s| subject_key::ActiveModel {
            subject_id: Set(s.id.clone()),
            wrapped: Set(s.wrapped_key.clone()),
            created_at: Set(s.created_at),
        }))
        .exec_without_returning(c)
        .await?;
    }
    Ok(())
}

/// The subjects holding any of `indexes` for `kind`: (blind index, subject id).
pub async fn subjects_for<C: ConnectionTrait>(
    c: &C,
    kind: &str,
    indexes: &[String],
) -> Result<Vec<(String, String)>, StoreError> {
    use sea_orm::QuerySelect;
    let mut out = Vec::new();
    for chunk in indexes.chunks(CHUNK) {
        let rows: Vec<(String, String)> = Identifier::find()
            .select_only()
            .column(identifier::Column::BlindIndex)
            .column(identifier::Column::SubjectId)
            .filter(identifier::Column::Kind.eq(kind))
            .filter(identifier::Column::BlindIndex.is_in(chunk.iter().cloned()))
            .into_tuple()
            .all(c)
            .await?;
        out.extend(rows);
    }
    Ok(out)
}

/// Inserts identifiers, skipping any (kind, blind index) already taken. Returns how many
/// were inserted.
pub async fn insert_identifiers<C: ConnectionTrait>(
    c: &C,
    rows: &[IdentifierRow],
) -> Result<u64, StoreError> {
    let mut inserted = 0;
    for chunk in rows.chunks(CHUNK) {
        inserted += Identifier::insert_many(chunk.iter().map(|row| identifier::ActiveModel {
            kind: Set(row.kind.clone()),
            blind_index: Set(row.blind_index.clone()),
            subject_id: Set(row.subject_id.clone()),
            sealed: Set(row.sealed.clone()),
            created_at: Set(row.created_at),
        }))
        .on_conflict(
            OnConflict::columns([identifier::Column::Kind, identifier::Column::BlindIndex])
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(c)
        .await?;
    }
    Ok(inserted)
}

/// Inserts or replaces traits; at most one row per (subject, name).
pub async fn upsert_traits<C: ConnectionTrait>(c: &C, rows: &[TraitRow]) -> Result<(), StoreError> {
    for chunk in rows.chunks(CHUNK) {
        Trait::insert_many(chunk.iter().map(|t| subject_trait::ActiveModel {
            subject_id: Set(t.subject_id.clone()),
            name: Set(t.name.clone()),
            value: Set(t.value.clone()),
            sealed: Set(t.sealed.clone()),
            category: Set(t.category.clone()),
            updated_at: Set(t.updated_at),
        }))
        .on_conflict(
            OnConflict::columns([
                subject_trait::Column::SubjectId,
                subject_trait::Column::Name,
            ])
            .update_columns([
                subject_trait::Column::Value,
                subject_trait::Column::Sealed,
                subject_trait::Column::Category,
                subject_trait::Column::UpdatedAt,
            ])
            .to_owned(),
        )
        .exec_without_returning(c)
        .await?;
    }
    Ok(())
}

pub async fn subject_key<C: ConnectionTrait>(
    c: &C,
    subject_id: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(SubjectKey::find_by_id(subject_id.to_owned())
        .one(c)
        .await?
        .map(|m| m.wrapped))
}

/// The wrapped data keys of the subjects in `ids`, by subject (one query per 500).
pub async fn subject_keys_in<C: ConnectionTrait>(
    c: &C,
    ids: &[String],
) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        out.extend(
            SubjectKey::find()
                .filter(subject_key::Column::SubjectId.is_in(chunk.iter().cloned()))
                .all(c)
                .await?
                .into_iter()
                .map(|m| (m.subject_id, m.wrapped)),
        );
    }
    Ok(out)
}

/// Locks the rows of the subjects in `ids` until the transaction ends, so that two
/// requests about one person on PostgreSQL read and update its aggregates one after the
/// other instead of each overwriting the other's counts. The rows are locked in id order
/// (`ids` sorted), so two such requests cannot deadlock on each other. Nothing to do on
/// SQLite, where a write transaction already holds the whole database.
pub async fn lock_subjects<C: ConnectionTrait>(c: &C, ids: &[String]) -> Result<(), StoreError> {
    if c.get_database_backend() != sea_orm::DbBackend::Postgres {
        return Ok(());
    }
    use sea_orm::QuerySelect;
    debug_assert!(ids.is_sorted());
    for chunk in ids.chunks(500) {
        Subject::find()
            .select_only()
            .column(subject::Column::Id)
            .filter(subject::Column::Id.is_in(chunk.iter().cloned()))
            .order_by_asc(subject::Column::Id)
            .lock_exclusive()
            .into_tuple::<String>()
            .all(c)
            .await?;
    }
    Ok(())
}

/// Widens each subject's first/last seen to include `first..=last`: one statement per
/// 300 subjects.
pub async fn seen_many<C: ConnectionTrait>(
    c: &C,
    rows: &[(String, i64, i64)],
) -> Result<(), StoreError> {
    let backend = c.get_database_backend();
    for chunk in rows.chunks(300) {
        let mut values = Vec::with_capacity(chunk.len() * 3);
        let mut tuples = Vec::with_capacity(chunk.len());
        for (id, first, last) in chunk {
            let n = values.len();
            tuples.push(match backend {
                sea_orm::DbBackend::Postgres => {
                    format!("(${}, ${}::bigint, ${}::bigint)", n + 1, n + 2, n + 3)
                }
                _ => "(?, ?, ?)".to_owned(),
            });
            values.push(id.clone().into());
            values.push((*first).into());
            values.push((*last).into());
        }
        // Only placeholders are formatted into the text; every value is bound.
        let sql = format!(
            "WITH v (id, first_seen, last_seen) AS (VALUES {}) \
             UPDATE subjects SET \
             first_seen_at = CASE WHEN v.first_seen < subjects.first_seen_at \
             THEN v.first_seen ELSE subjects.first_seen_at END, \
             last_seen_at = CASE WHEN v.last_seen > subjects.last_seen_at \
             THEN v.last_seen ELSE subjects.last_seen_at END \
             FROM v WHERE subjects.id = v.id",
            tuples.join(", ")
        );
        c.execute_raw(sea_orm::Statement::from_sql_and_values(
            backend, sql, values,
        ))
        .await?;
    }
    Ok(())
}

/// Moves an identifier to another subject with its value sealed under that subject's key.
pub async fn move_identifier<C: ConnectionTrait>(
    c: &C,
    row: &IdentifierRow,
) -> Result<(), StoreError> {
    Identifier::update_many()
        .col_expr(
            identifier::Column::SubjectId,
            Expr::value(row.subject_id.clone()),
        )
        .col_expr(identifier::Column::Sealed, Expr::value(row.sealed.clone()))
        .filter(identifier::Column::Kind.eq(row.kind.clone()))
        .filter(identifier::Column::BlindIndex.eq(row.blind_index.clone()))
        .exec(c)
        .await?;
    Ok(())
}

pub async fn upsert_trait<C: ConnectionTrait>(c: &C, t: &TraitRow) -> Result<(), StoreError> {
    upsert_traits(c, std::slice::from_ref(t)).await
}

pub async fn traits_of<C: ConnectionTrait>(
    c: &C,
    subject_id: &str,
) -> Result<Vec<TraitRow>, StoreError> {
    traits_in(c, &[subject_id.to_owned()]).await
}

/// The traits of every subject in `ids` (one query).
pub async fn traits_in<C: ConnectionTrait>(
    c: &C,
    ids: &[String],
) -> Result<Vec<TraitRow>, StoreError> {
    traits_in_categories(c, ids, None).await
}

/// [`traits_in`], only those of `categories` when given.
pub async fn traits_in_categories<C: ConnectionTrait>(
    c: &C,
    ids: &[String],
    categories: Option<&[String]>,
) -> Result<Vec<TraitRow>, StoreError> {
    let mut q = Trait::find().filter(subject_trait::Column::SubjectId.is_in(ids.iter().cloned()));
    if let Some(cats) = categories {
        q = q.filter(subject_trait::Column::Category.is_in(cats.iter().cloned()));
    }
    Ok(q.all(c)
        .await?
        .into_iter()
        .map(|m| TraitRow {
            subject_id: m.subject_id,
            name: m.name,
            value: m.value,
            sealed: m.sealed,
            category: m.category,
            updated_at: m.updated_at,
        })
        .collect())
}

pub async fn delete_trait<C: ConnectionTrait>(
    c: &C,
    subject_id: &str,
    name: &str,
) -> Result<(), StoreError> {
    Trait::delete_many()
        .filter(subject_trait::Column::SubjectId.eq(subject_id))
        .filter(subject_trait::Column::Name.eq(name))
        .exec(c)
        .await?;
    Ok(())
}

/// Re-points the events of `from` to `into`, marks `from` merged and drops its data key
/// (its identifiers and traits must already have been moved).
pub async fn finish_merge<C: ConnectionTrait>(
    c: &C,
    from: &str,
    into: &str,
) -> Result<(), StoreError> {
    Event::update_many()
        .col_expr(event::Column::SubjectId, Expr::value(into.to_owned()))
        .filter(event::Column::SubjectId.eq(from))
        .exec(c)
        .await?;
    let first: Option<subject::Model> = Subject::find_by_id(from.to_owned()).one(c).await?;
    if let Some(old) = first {
        seen_many(c, &[(into.to_owned(), old.first_seen_at, old.last_seen_at)]).await?;
    }
    Subject::update_many()
        .col_expr(subject::Column::Status, Expr::value("merged"))
        .col_expr(subject::Column::MergedInto, Expr::value(into.to_owned()))
        .filter(subject::Column::Id.eq(from))
        .exec(c)
        .await?;
    SubjectKey::delete_by_id(from.to_owned()).exec(c).await?;
    // Scores were computed from one half of the history; the next run scores the whole.
    super::scores::drop_of(c, from).await?;
    Ok(())
}

pub async fn insert_conflict<C: ConnectionTrait>(
    c: &C,
    id: &str,
    a: &str,
    b: &str,
    reason: &str,
    at: i64,
) -> Result<(), StoreError> {
    Conflict::insert(identity_conflict::ActiveModel {
        id: Set(id.to_owned()),
        subject_a: Set(a.to_owned()),
        subject_b: Set(b.to_owned()),
        reason: Set(reason.to_owned()),
        created_at: Set(at),
    })
    .exec_without_returning(c)
    .await?;
    Ok(())
}

pub async fn event_count<C: ConnectionTrait>(c: &C, subject_id: &str) -> Result<u64, StoreError> {
    Ok(Event::find()
        .filter(event::Column::SubjectId.eq(subject_id))
        .count(c)
        .await?)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubjectRow {
    pub id: String,
    pub status: String,
    pub first_seen_at: i64,
    pub last_seen_at: i64,
}

impl From<subject::Model> for SubjectRow {
    fn from(m: subject::Model) -> Self {
        Self {
            id: m.id,
            status: m.status,
            first_seen_at: m.first_seen_at,
            last_seen_at: m.last_seen_at,
        }
    }
}

pub async fn subject<C: ConnectionTrait>(
    c: &C,
    id: &str,
) -> Result<Option<SubjectRow>, StoreError> {
    Ok(Subject::find_by_id(id.to_owned())
        .one(c)
        .await?
        .map(SubjectRow::from))
}

/// The subjects in `ids` that exist (one query).
pub async fn subjects_in<C: ConnectionTrait>(
    c: &C,
    ids: &[String],
) -> Result<Vec<SubjectRow>, StoreError> {
    Ok(Subject::find()
        .filter(subject::Column::Id.is_in(ids.iter().cloned()))
        .all(c)
        .await?
        .into_iter()
        .map(SubjectRow::from)
        .collect())
}

/// Inserts events, skipping any (source, message id) already stored. Returns how many
/// were inserted.
pub async fn insert_events<C: ConnectionTrait>(
    c: &C,
    rows: &[EventRow],
) -> Result<u64, StoreError> {
    let mut inserted = 0;
    for chunk in rows.chunks(500) {
        let models = chunk.iter().map(|e| event::ActiveModel {
            id: Set(e.id.clone()),
            subject_id: Set(e.subject_id.clone()),
            source_key_id: Set(e.source_key_id.clone()),
            message_id: Set(e.message_id.clone()),
            kind: Set(e.kind.clone()),
            name: Set(e.name.clone()),
            properties: Set(e.properties.clone()),
            occurred_at: Set(e.occurred_at),
            received_at: Set(e.received_at),
        });
        inserted += Event::insert_many(models)
            .on_conflict(
                OnConflict::columns([event::Column::MessageId, event::Column::SourceKeyId])
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(c)
            .await?;
    }
    Ok(inserted)
}

/// Which of `message_ids` this source has already sent.
pub async fn existing_message_ids<C: ConnectionTrait>(
    c: &C,
    source_key_id: &str,
    message_ids: &[String],
) -> Result<std::collections::HashSet<String>, StoreError> {
    use sea_orm::QuerySelect;
    let mut found = std::collections::HashSet::new();
    for chunk in message_ids.chunks(500) {
        let ids: Vec<String> = Event::find()
            .select_only()
            .column(event::Column::MessageId)
            .filter(event::Column::SourceKeyId.eq(source_key_id))
            .filter(event::Column::MessageId.is_in(chunk.iter().cloned()))
            .into_tuple()
            .all(c)
            .await?;
        found.extend(ids);
    }
    Ok(found)
}

/// Each distinct (trait name, stored category) with how many subjects hold it.
pub async fn trait_categories<C: ConnectionTrait>(
    c: &C,
) -> Result<Vec<(String, String, u64)>, StoreError> {
    use sea_orm::QuerySelect;
    let rows: Vec<(String, String, i64)> = Trait::find()
        .select_only()
        .column(subject_trait::Column::Name)
        .column(subject_trait::Column::Category)
        .column_as(subject_trait::Column::SubjectId.count(), "n")
        .group_by(subject_trait::Column::Name)
        .group_by(subject_trait::Column::Category)
        .into_tuple()
        .all(c)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(n, cat, k)| (n, cat, u64::try_from(k).unwrap_or(0)))
        .collect())
}

/// Sets the category of every `name` trait stored under `from`.
pub async fn recategorise<C: ConnectionTrait>(
    c: &C,
    name: &str,
    from: &str,
    to: &str,
) -> Result<u64, StoreError> {
    Ok(Trait::update_many()
        .col_expr(subject_trait::Column::Category, Expr::value(to.to_owned()))
        .filter(subject_trait::Column::Name.eq(name))
        .filter(subject_trait::Column::Category.eq(from))
        .exec(c)
        .await?
        .rows_affected)
}

/// The `name` traits still stored in clear: (subject id, JSON value).
pub async fn clear_traits_named<C: ConnectionTrait>(
    c: &C,
    name: &str,
) -> Result<Vec<(String, String)>, StoreError> {
    Ok(Trait::find()
        .filter(subject_trait::Column::Name.eq(name))
        .filter(subject_trait::Column::Value.is_not_null())
        .all(c)
        .await?
        .into_iter()
        .filter_map(|m| m.value.map(|v| (m.subject_id, v)))
        .collect())
}

/// Replaces a clear trait value by its sealed form.
pub async fn seal_trait<C: ConnectionTrait>(
    c: &C,
    subject_id: &str,
    name: &str,
    sealed: Vec<u8>,
) -> Result<(), StoreError> {
    Trait::update_many()
        .col_expr(subject_trait::Column::Sealed, Expr::value(sealed))
        .col_expr(
            subject_trait::Column::Value,
            Expr::value(Option::<String>::None),
        )
        .filter(subject_trait::Column::SubjectId.eq(subject_id))
        .filter(subject_trait::Column::Name.eq(name))
        .exec(c)
        .await?;
    Ok(())
}

/// A subject's events, oldest first: (kind, name, properties, occurred at, received at).
pub async fn events_of<C: ConnectionTrait>(
    c: &C,
    subject_id: &str,
) -> Result<Vec<(String, Option<String>, String, i64, i64)>, StoreError> {
    use sea_orm::QuerySelect;
    // Sorted here rather than by the database: PostgreSQL would sort the text ids under
    // its collation, which costs more than reading the rows.
    let mut rows: Vec<(String, String, Option<String>, String, i64, i64)> = Event::find()
        .select_only()
        .column(event::Column::Id)
        .column(event::Column::Kind)
        .column(event::Column::Name)
        .column(event::Column::Properties)
        .column(event::Column::OccurredAt)
        .column(event::Column::ReceivedAt)
        .filter(event::Column::SubjectId.eq(subject_id))
        .into_tuple()
        .all(c)
        .await?;
    rows.sort_unstable_by(|a, b| (a.4, &a.0).cmp(&(b.4, &b.0)));
    Ok(rows
        .into_iter()
        .map(|(_, kind, name, properties, occurred, received)| {
            (kind, name, properties, occurred, received)
        })
        .collect())
}

/// The `track` events named one of `names` of each of `subject_ids`: (subject, name,
/// properties, occurred at), in no particular order.
pub async fn named_events_of_many<C: ConnectionTrait>(
    c: &C,
    subject_ids: &[String],
    names: &[&str],
) -> Result<Vec<(String, String, String, i64)>, StoreError> {
    use sea_orm::QuerySelect;
    let mut out = Vec::new();
    if names.is_empty() {
        return Ok(out);
    }
    for chunk in subject_ids.chunks(CHUNK) {
        let rows: Vec<(String, String, String, i64)> = Event::find()
            .select_only()
            .column(event::Column::SubjectId)
            .column(event::Column::Name)
            .column(event::Column::Properties)
            .column(event::Column::OccurredAt)
            .filter(event::Column::SubjectId.is_in(chunk.iter().cloned()))
            .filter(event::Column::Kind.eq("track"))
            .filter(event::Column::Name.is_in(names.iter().map(|n| (*n).to_owned())))
            .into_tuple()
            .all(c)
            .await?;
        out.extend(rows);
    }
    Ok(out)
}

/// Deletes a subject's identifiers of one kind (every key version); returns how many.
pub async fn delete_identifiers_of_kind<C: ConnectionTrait>(
    c: &C,
    subject_id: &str,
    kind: &str,
) -> Result<u64, StoreError> {
    Ok(Identifier::delete_many()
        .filter(identifier::Column::SubjectId.eq(subject_id))
        .filter(identifier::Column::Kind.eq(kind))
        .exec(c)
        .await?
        .rows_affected)
}
