use sea_orm::entity::prelude::*;

/// An experiment: variants with weights, an optional holdout.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "experiments")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub name: String,
    pub purpose: String,
    pub recipient_id: String,
    /// JSON array of variants.
    pub variants: String,
    pub holdout: i32,
    pub control: String,
    pub key_version: i32,
    pub created_by: String,
    pub created_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
