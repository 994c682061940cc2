//! Audience exports: one row per export of a segment to its recipient, and the
//! pseudonyms it held (what a later `?since=` delta is computed against).
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Exports::Table)
                    .col(string(Exports::Id).primary_key())
                    .col(string(Exports::SegmentId))
                    .col(string(Exports::RecipientId))
                    .col(string(Exports::Purpose))
                    .col(string(Exports::Format))
                    .col(string_null(Exports::SinceId))
                    .col(string(Exports::Status))
                    .col(big_integer(Exports::Rows))
                    .col(big_integer(Exports::Members))
                    .col(string_null(Exports::Commitment))
                    .col(boolean(Exports::MembersKept))
                    .col(string(Exports::CreatedBy))
                    .col(big_integer(Exports::StartedAt))
                    .col(big_integer(Exports::UpdatedAt))
                    .col(big_integer_null(Exports::FinishedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("exports_segment")
                    .table(Exports::Table)
                    .col(Exports::SegmentId)
                    .col(Exports::RecipientId)
                    .col(Exports::StartedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("exports_status")
                    .table(Exports::Table)
                    .col(Exports::Status)
                    .col(Exports::UpdatedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ExportMembers::Table)
                    .col(string(ExportMembers::ExportId))
                    .col(string(ExportMembers::Pseudonym))
                    .primary_key(
                        Index::create()
                            .col(ExportMembers::ExportId)
                            .col(ExportMembers::Pseudonym),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ExportMembers::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Exports::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Exports {
    Table,
    Id,
    SegmentId,
    RecipientId,
    Purpose,
    Format,
    SinceId,
    Status,
    Rows,
    Members,
    Commitment,
    MembersKept,
    CreatedBy,
    StartedAt,
    UpdatedAt,
    FinishedAt,
}

#[derive(DeriveIden)]
enum ExportMembers {
    Table,
    ExportId,
    Pseudonym,
}
