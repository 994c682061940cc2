use sea_orm::entity::prelude::*;

/// A product of the catalogue (not personal data).
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "products")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub name: String,
    pub url: String,
    pub image_url: Option<String>,
    pub price: Option<f64>,
    pub currency: Option<String>,
    pub category: Option<String>,
    pub available: bool,
    pub updated_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
