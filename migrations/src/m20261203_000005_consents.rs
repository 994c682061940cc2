//! The consent ledger: append-only records of what each person granted, denied or
//! withdrew, with how and where it was captured.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Consents::Table)
                    .col(string(Consents::Id).primary_key())
                    .col(string(Consents::SubjectId))
                    .col(string(Consents::Consent))
                    .col(string(Consents::Status))
                    .col(string(Consents::Method))
                    .col(string(Consents::Source))
                    .col(string_null(Consents::NoticeVersion))
                    .col(big_integer(Consents::CapturedAt))
                    .col(big_integer(Consents::RecordedAt))
                    .col(string(Consents::RecordedBy))
                    .col(text_null(Consents::Proof))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("consents_by_subject")
                    .table(Consents::Table)
                    .col(Consents::SubjectId)
                    .col(Consents::Consent)
                    .col(Consents::CapturedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Consents::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Consents {
    Table,
    Id,
    SubjectId,
    Consent,
    Status,
    Method,
    Source,
    NoticeVersion,
    CapturedAt,
    RecordedAt,
    RecordedBy,
    Proof,
}
