use sea_orm::entity::prelude::*;

/// A subject's exposure to an experiment: the variant (or `holdout`) and the campaign.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "experiment_exposures")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub experiment_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub subject_id: String,
    pub variant: String,
    pub campaign_id: String,
    pub exposed_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
