use sea_orm::entity::prelude::*;

/// One disclosure: which attributes of whom went to which recipient, for what, when.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "disclosures")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub recipient_id: String,
    pub subject_id: String,
    pub purpose: String,
    /// JSON list of attribute names (never values).
    pub attributes: String,
    pub disclosed_at: i64,
    pub key_id: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
