//! Data-subject requests and every transition they went through. A request holds no
//! identifier in clear: only the kinds given and their blind indexes.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(DsarRequests::Table)
                    .col(string(DsarRequests::Id).primary_key())
                    .col(string(DsarRequests::Kind))
                    .col(string(DsarRequests::Status))
                    .col(string_null(DsarRequests::SubjectId))
                    .col(text(DsarRequests::IdentifierKinds))
                    .col(string(DsarRequests::Channel))
                    .col(big_integer(DsarRequests::ReceivedAt))
                    .col(big_integer(DsarRequests::DueAt))
                    .col(integer(DsarRequests::ExtendedMonths))
                    .col(string_null(DsarRequests::ExtensionReason))
                    .col(string_null(DsarRequests::VerificationMethod))
                    .col(string_null(DsarRequests::VerificationNote))
                    .col(string_null(DsarRequests::DuplicateOf))
                    .col(string_null(DsarRequests::RejectReason))
                    .col(string(DsarRequests::CreatedBy))
                    .col(big_integer(DsarRequests::UpdatedAt))
                    .col(big_integer_null(DsarRequests::CompletedAt))
                    .col(big_integer_null(DsarRequests::PackageExpiresAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("dsar_by_due")
                    .table(DsarRequests::Table)
                    .col(DsarRequests::Status)
                    .col(DsarRequests::DueAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("dsar_by_subject")
                    .table(DsarRequests::Table)
                    .col(DsarRequests::SubjectId)
                    .col(DsarRequests::Kind)
                    .to_owned(),
            )
            .await?;
        // Erasure finds the merged-away subjects that point at a person.
        manager
            .create_index(
                Index::create()
                    .name("subjects_by_merged_into")
                    .table(Subjects::Table)
                    .col(Subjects::MergedInto)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(DsarTransitions::Table)
                    .col(string(DsarTransitions::RequestId))
                    .col(integer(DsarTransitions::Step))
                    .col(string_null(DsarTransitions::FromStatus))
                    .col(string(DsarTransitions::ToStatus))
                    .col(string(DsarTransitions::Actor))
                    .col(string(DsarTransitions::Reason))
                    .col(big_integer(DsarTransitions::At))
                    .primary_key(
                        Index::create()
                            .col(DsarTransitions::RequestId)
                            .col(DsarTransitions::Step),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("subjects_by_merged_into")
                    .table(Subjects::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(DsarTransitions::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(DsarRequests::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum DsarRequests {
    Table,
    Id,
    Kind,
    Status,
    SubjectId,
    IdentifierKinds,
    Channel,
    ReceivedAt,
    DueAt,
    ExtendedMonths,
    ExtensionReason,
    VerificationMethod,
    VerificationNote,
    DuplicateOf,
    RejectReason,
    CreatedBy,
    UpdatedAt,
    CompletedAt,
    PackageExpiresAt,
}

#[derive(DeriveIden)]
enum Subjects {
    Table,
    MergedInto,
}

#[derive(DeriveIden)]
enum DsarTransitions {
    Table,
    RequestId,
    Step,
    FromStatus,
    ToStatus,
    Actor,
    Reason,
    At,
}
