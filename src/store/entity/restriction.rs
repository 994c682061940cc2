use sea_orm::entity::prelude::*;

/// A subject whose processing is restricted (GDPR Art. 18): nothing is disclosed.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "restrictions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub subject_id: String,
    pub reason: String,
    pub restricted_at: i64,
    pub recorded_by: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
