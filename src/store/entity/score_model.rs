use sea_orm::entity::prelude::*;

/// A model the gateway trained: its features and fitted parameters (JSON).
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "score_models")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub version: String,
    pub kind: String,
    pub features: String,
    pub parameters: String,
    pub auc: Option<f64>,
    pub training_rows: i64,
    pub trained_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
