//! Campaigns.
use sea_orm::{ActiveValue::Set, ConnectionTrait, EntityTrait};

use super::StoreError;
use super::entity::campaign::{self, Entity as Campaign};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CampaignRow {
    pub id: String,
    pub name: String,
    pub template_id: String,
    pub segment_id: String,
    pub recipient_id: String,
    pub purpose: String,
    pub experiment_id: Option<String>,
    pub created_by: String,
    pub created_at: i64,
}

pub async fn insert<C: ConnectionTrait>(c: &C, r: &CampaignRow) -> Result<(), StoreError> {
    Campaign::insert(campaign::ActiveModel {
        id: Set(r.id.clone()),
        name: Set(r.name.clone()),
        template_id: Set(r.template_id.clone()),
        segment_id: Set(r.segment_id.clone()),
        recipient_id: Set(r.recipient_id.clone()),
        purpose: Set(r.purpose.clone()),
        experiment_id: Set(r.experiment_id.clone()),
        created_by: Set(r.created_by.clone()),
        created_at: Set(r.created_at),
    })
    .exec_without_returning(c)
    .await?;
    Ok(())
}

pub async fn get<C: ConnectionTrait>(c: &C, id: &str) -> Result<Option<CampaignRow>, StoreError> {
    Ok(Campaign::find_by_id(id.to_owned())
        .one(c)
        .await?
        .map(|m| CampaignRow {
            id: m.id,
            name: m.name,
            template_id: m.template_id,
            segment_id: m.segment_id,
            recipient_id: m.recipient_id,
            purpose: m.purpose,
            experiment_id: m.experiment_id,
            created_by: m.created_by,
            created_at: m.created_at,
        }))
}
