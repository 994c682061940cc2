use sea_orm::entity::prelude::*;

/// One audience export of a segment to its recipient.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "exports")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub segment_id: String,
    pub recipient_id: String,
    pub purpose: String,
    pub format: String,
    pub since_id: Option<String>,
    pub status: String,
    pub rows: i64,
    pub members: i64,
    pub commitment: Option<String>,
    pub members_kept: bool,
    pub created_by: String,
    pub started_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
