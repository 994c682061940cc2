use sea_orm::entity::prelude::*;

/// A saved email template (`body` is the plain-text part).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "templates")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub name: String,
    pub purpose: String,
    pub recipient_id: String,
    pub subject: String,
    pub html: String,
    pub body: String,
    pub fallbacks: String,
    /// A JSON object: partial name to Handlebars source.
    pub partials: String,
    pub created_by: String,
    pub created_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
