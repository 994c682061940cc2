//! Subjects, their encrypted identifiers and data keys, traits and events.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Subjects::Table)
                    .col(string(Subjects::Id).primary_key())
                    .col(string(Subjects::Status))
                    .col(string_null(Subjects::MergedInto))
                    .col(big_integer(Subjects::CreatedAt))
                    .col(big_integer(Subjects::FirstSeenAt))
                    .col(big_integer(Subjects::LastSeenAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(SubjectKeys::Table)
                    .col(string(SubjectKeys::SubjectId).primary_key())
                    .col(blob(SubjectKeys::Wrapped))
                    .col(big_integer(SubjectKeys::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Identifiers::Table)
                    .col(string(Identifiers::Kind))
                    .col(string(Identifiers::BlindIndex))
                    .col(string(Identifiers::SubjectId))
                    .col(blob(Identifiers::Sealed))
                    .col(big_integer(Identifiers::CreatedAt))
                    .primary_key(
                        Index::create()
                            .col(Identifiers::Kind)
                            .col(Identifiers::BlindIndex),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("identifiers_by_subject")
                    .table(Identifiers::Table)
                    .col(Identifiers::SubjectId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Traits::Table)
                    .col(string(Traits::SubjectId))
                    .col(string(Traits::Name))
                    .col(text_null(Traits::Value))
                    .col(blob_null(Traits::Sealed))
                    .col(string(Traits::Category))
                    .col(big_integer(Traits::UpdatedAt))
                    .primary_key(Index::create().col(Traits::SubjectId).col(Traits::Name))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Events::Table)
                    .col(string(Events::Id).primary_key())
                    .col(string(Events::SubjectId))
                    .col(string(Events::SourceKeyId))
                    .col(string(Events::MessageId))
                    .col(string(Events::Kind))
                    .col(string_null(Events::Name))
                    .col(text(Events::Properties))
                    .col(big_integer(Events::OccurredAt))
                    .col(big_integer(Events::ReceivedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("events_once_per_message")
                    .table(Events::Table)
                    .col(Events::SourceKeyId)
                    .col(Events::MessageId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("events_by_subject_time")
                    .table(Events::Table)
                    .col(Events::SubjectId)
                    .col(Events::OccurredAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(IdentityConflicts::Table)
                    .col(string(IdentityConflicts::Id).primary_key())
                    .col(string(IdentityConflicts::SubjectA))
                    .col(string(IdentityConflicts::SubjectB))
                    .col(string(IdentityConflicts::Reason))
                    .col(big_integer(IdentityConflicts::CreatedAt))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            IdentityConflicts::Table.into_iden(),
            Events::Table.into_iden(),
            Traits::Table.into_iden(),
            Identifiers::Table.into_iden(),
            SubjectKeys::Table.into_iden(),
            Subjects::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Subjects {
    Table,
    Id,
    Status,
    MergedInto,
    CreatedAt,
    FirstSeenAt,
    LastSeenAt,
}

#[derive(DeriveIden)]
enum SubjectKeys {
    Table,
    SubjectId,
    Wrapped,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Identifiers {
    Table,
    Kind,
    BlindIndex,
    SubjectId,
    Sealed,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Traits {
    Table,
    SubjectId,
    Name,
    Value,
    Sealed,
    Category,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Events {
    Table,
    Id,
    SubjectId,
    SourceKeyId,
    MessageId,
    Kind,
    Name,
    Properties,
    OccurredAt,
    ReceivedAt,
}

#[derive(DeriveIden)]
enum IdentityConflicts {
    Table,
    Id,
    SubjectA,
    SubjectB,
    Reason,
    CreatedAt,
}
