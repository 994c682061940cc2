use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_entries")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub seq: i64,
    pub at_us: i64,
    pub actor_key_id: String,
    pub actor_role: String,
    pub action: String,
    pub purpose: Option<String>,
    pub subject_ref: Option<String>,
    /// JSON array of attribute names.
    pub attributes: String,
    pub outcome: String,
    pub request_id: Option<String>,
    pub leaf_hash: Vec<u8>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
