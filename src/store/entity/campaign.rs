use sea_orm::entity::prelude::*;

/// A campaign: a template sent to a segment's members.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "campaigns")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub name: String,
    pub template_id: String,
    pub segment_id: String,
    pub recipient_id: String,
    pub purpose: String,
    /// The experiment the campaign runs, if any.
    pub experiment_id: Option<String>,
    pub created_by: String,
    pub created_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
