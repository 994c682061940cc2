use sea_orm::entity::prelude::*;

/// A trait: in clear (`value`, JSON) when it identifies no one, sealed otherwise.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "traits")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub subject_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub name: String,
    pub value: Option<String>,
    pub sealed: Option<Vec<u8>>,
    pub category: String,
    pub updated_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
