use sea_orm::entity::prelude::*;

/// A data-subject request. No identifier values: only the kinds the requester gave.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "dsar_requests")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub kind: String,
    pub status: String,
    pub subject_id: Option<String>,
    /// JSON list of identifier kinds.
    pub identifier_kinds: String,
    pub channel: String,
    pub received_at: i64,
    pub due_at: i64,
    pub extended_months: i32,
    pub extension_reason: Option<String>,
    pub verification_method: Option<String>,
    pub verification_note: Option<String>,
    pub duplicate_of: Option<String>,
    pub reject_reason: Option<String>,
    pub created_by: String,
    pub updated_at: i64,
    pub completed_at: Option<i64>,
    /// Until when the access/portability package can be downloaded.
    pub package_expires_at: Option<i64>,
    /// HMAC of the emailed verification code; cleared once used.
    pub code_hash: Option<String>,
    pub code_expires_at: Option<i64>,
    pub code_attempts: i32,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
