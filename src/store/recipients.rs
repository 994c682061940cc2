//! Recipients and the pseudonyms they were given.
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
};

use super::StoreError;
use super::entity::pseudonym::{self, Entity as Pseudonym};
use super::entity::recipient::{self, Entity as Recipient};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecipientRow {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub purposes: Vec<String>,
    pub webhook_url: Option<String>,
    /// Wrapped under the master key.
    pub webhook_secret: Option<Vec<u8>>,
    pub created_at: i64,
}

impl TryFrom<recipient::Model> for RecipientRow {
    type Error = StoreError;

    fn try_from(m: recipient::Model) -> Result<Self, StoreError> {
        let purposes = serde_json::from_str(&m.purposes).map_err(|e| StoreError::Corrupt {
            table: "recipients",
            reason: e.to_string(),
        })?;
        Ok(Self {
            id: m.id,
            name: m.name,
            kind: m.kind,
            purposes,
            webhook_url: m.webhook_url,
            webhook_secret: m.webhook_secret,
            created_at: m.created_at,
        })
    }
}

/// Inserts a recipient; returns false (and changes nothing) when the id is taken.
pub async fn insert<C: ConnectionTrait>(c: &C, r: &RecipientRow) -> Result<bool, StoreError> {
    let purposes = serde_json::to_string(&r.purposes).map_err(|e| StoreError::Corrupt {
        table: "recipients",
        reason: e.to_string(),
    })?;
    let n = Recipient::insert(recipient::ActiveModel {
        id: Set(r.id.clone()),
        name: Set(r.name.clone()),
        kind: Set(r.kind.clone()),
        purposes: Set(purposes),
        webhook_url: Set(r.webhook_url.clone()),
        webhook_secret: Set(r.webhook_secret.clone()),
        created_at: Set(r.created_at),
    })
    .on_conflict(
        OnConflict::column(recipient::Column::Id)
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(c)
    .await?;
    Ok(n == 1)
}

pub async fn get<C: ConnectionTrait>(c: &C, id: &str) -> Result<Option<RecipientRow>, StoreError> {
    Recipient::find_by_id(id.to_owned())
        .one(c)
        .await?
        .map(RecipientRow::try_from)
        .transpose()
}

pub async fn all<C: ConnectionTrait>(c: &C) -> Result<Vec<RecipientRow>, StoreError> {
    Recipient::find()
        .order_by_asc(recipient::Column::Id)
        .all(c)
        .await?
        .into_iter()
        .map(RecipientRow::try_from)
        .collect()
}

/// Records that `value` (of key `version`) stands for `subject_id` for this recipient.
pub async fn remember_pseudonym<C: ConnectionTrait>(
    c: &C,
    recipient_id: &str,
    value: &str,
    version: i32,
    subject_id: &str,
    at: i64,
) -> Result<(), StoreError> {
    Pseudonym::insert(pseudonym::ActiveModel {
        recipient_id: Set(recipient_id.to_owned()),
        value: Set(value.to_owned()),
        version: Set(version),
        subject_id: Set(subject_id.to_owned()),
        created_at: Set(at),
    })
    .on_conflict(
        OnConflict::columns([pseudonym::Column::RecipientId, pseudonym::Column::Value])
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(c)
    .await?;
    Ok(())
}

/// [`remember_pseudonym`] for many: (value, version, subject) of one recipient, a few
/// hundred rows per statement.
pub async fn remember_pseudonyms<C: ConnectionTrait>(
    c: &C,
    recipient_id: &str,
    rows: &[(String, i32, String)],
    at: i64,
) -> Result<(), StoreError> {
    for chunk in rows.chunks(200) {
        if chunk.is_empty() {
            continue;
        }
        Pseudonym::insert_many(chunk.iter().map(|(value, version, subject)| {
            pseudonym::ActiveModel {
                recipient_id: Set(recipient_id.to_owned()),
                value: Set(value.clone()),
                version: Set(*version),
                subject_id: Set(subject.clone()),
                created_at: Set(at),
            }
        }))
        .on_conflict(
            OnConflict::columns([pseudonym::Column::RecipientId, pseudonym::Column::Value])
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(c)
        .await?;
    }
    Ok(())
}

/// The subject a recipient's pseudonym stands for, if it was ever handed out.
pub async fn resolve_pseudonym<C: ConnectionTrait>(
    c: &C,
    recipient_id: &str,
    value: &str,
) -> Result<Option<String>, StoreError> {
    Ok(
        Pseudonym::find_by_id((recipient_id.to_owned(), value.to_owned()))
            .one(c)
            .await?
            .map(|m| m.subject_id),
    )
}

/// Pseudonyms of a merged subject stand for the subject it was merged into.
pub async fn repoint_pseudonyms<C: ConnectionTrait>(
    c: &C,
    from: &str,
    into: &str,
) -> Result<(), StoreError> {
    Pseudonym::update_many()
        .col_expr(pseudonym::Column::SubjectId, Expr::value(into.to_owned()))
        .filter(pseudonym::Column::SubjectId.eq(from))
        .exec(c)
        .await?;
    Ok(())
}
