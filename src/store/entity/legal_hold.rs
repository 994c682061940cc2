use sea_orm::entity::prelude::*;

/// A subject whose data must be kept (litigation, a legal claim): erasure is blocked.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "legal_holds")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub subject_id: String,
    pub reason: String,
    pub placed_at: i64,
    pub placed_by: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
