//! Saved email templates.
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
};

use super::StoreError;
use super::entity::template::{self, Entity as Template};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateRow {
    pub id: String,
    pub name: String,
    pub purpose: String,
    pub recipient_id: String,
    pub subject: String,
    pub html: String,
    pub text: String,
    /// JSON object: token → fallback value.
    pub fallbacks: String,
    pub partials: String,
    pub created_by: String,
    pub created_at: i64,
}

impl From<template::Model> for TemplateRow {
    fn from(m: template::Model) -> Self {
        Self {
            id: m.id,
            name: m.name,
            purpose: m.purpose,
            recipient_id: m.recipient_id,
            subject: m.subject,
            html: m.html,
            text: m.body,
            fallbacks: m.fallbacks,
            partials: m.partials,
            created_by: m.created_by,
            created_at: m.created_at,
        }
    }
}

pub async fn insert<C: ConnectionTrait>(c: &C, r: &TemplateRow) -> Result<(), StoreError> {
    Template::insert(template::ActiveModel {
        id: Set(r.id.clone()),
        name: Set(r.name.clone()),
        purpose: Set(r.purpose.clone()),
        recipient_id: Set(r.recipient_id.clone()),
        subject: Set(r.subject.clone()),
        html: Set(r.html.clone()),
        body: Set(r.text.clone()),
        fallbacks: Set(r.fallbacks.clone()),
        partials: Set(r.partials.clone()),
        created_by: Set(r.created_by.clone()),
        created_at: Set(r.created_at),
    })
    .exec_without_returning(c)
    .await?;
    Ok(())
}

pub async fn get<C: ConnectionTrait>(c: &C, id: &str) -> Result<Option<TemplateRow>, StoreError> {
    Ok(Template::find_by_id(id.to_owned())
        .one(c)
        .await?
        .map(TemplateRow::from))
}

/// Oldest first; only `recipient`'s when given.
pub async fn list<C: ConnectionTrait>(
    c: &C,
    recipient: Option<&str>,
) -> Result<Vec<TemplateRow>, StoreError> {
    let mut q = Template::find();
    if let Some(r) = recipient {
        q = q.filter(template::Column::RecipientId.eq(r));
    }
    Ok(q.order_by_asc(template::Column::CreatedAt)
        .order_by_asc(template::Column::Id)
        .all(c)
        .await?
        .into_iter()
        .map(TemplateRow::from)
        .collect())
}

pub async fn delete<C: ConnectionTrait>(c: &C, id: &str) -> Result<(), StoreError> {
    Template::delete_by_id(id.to_owned()).exec(c).await?;
    Ok(())
}
