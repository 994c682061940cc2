use sea_orm::entity::prelude::*;

/// A pseudonym handed to a recipient (`ps<version>.<base64url HMAC>`) and whom it stands for.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "pseudonyms")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub recipient_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub value: String,
    pub version: i32,
    pub subject_id: String,
    pub created_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
