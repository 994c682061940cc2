use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "aggregates")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub subject_id: String,
    pub last_page_view_at: Option<i64>,
    pub last_email_open_at: Option<i64>,
    pub last_email_click_at: Option<i64>,
    pub last_purchase_at: Option<i64>,
    pub last_search_at: Option<i64>,
    pub purchase_count: i64,
    pub lifetime_value: f64,
    pub average_order_value: Option<f64>,
    /// JSON array of product ids.
    pub recently_viewed: String,
    /// JSON array of product ids.
    pub cart: String,
    pub cart_updated_at: Option<i64>,
    pub cart_abandoned_at: Option<i64>,
    pub updated_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
