//! Campaigns: a template sent to a segment's members, for the segment's recipient.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Campaigns::Table)
                    .col(string(Campaigns::Id).primary_key())
                    .col(string(Campaigns::Name))
                    .col(string(Campaigns::TemplateId))
                    .col(string(Campaigns::SegmentId))
                    .col(string(Campaigns::RecipientId))
                    .col(string(Campaigns::Purpose))
                    .col(string(Campaigns::CreatedBy))
                    .col(big_integer(Campaigns::CreatedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Campaigns::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Campaigns {
    Table,
    Id,
    Name,
    TemplateId,
    SegmentId,
    RecipientId,
    Purpose,
    CreatedBy,
    CreatedAt,
}
