use sea_orm::entity::prelude::*;

/// One consent record; never updated, deleted only by erasure.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "consents")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub subject_id: String,
    pub consent: String,
    pub status: String,
    pub method: String,
    pub source: String,
    pub notice_version: Option<String>,
    pub captured_at: i64,
    pub recorded_at: i64,
    pub recorded_by: String,
    /// JSON: user agent, form id, truncated IP.
    pub proof: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
