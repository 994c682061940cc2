//! Recipients of data, the pseudonyms they were given, the record of every disclosure
//! (Art. 15(1)(c): who received which data, when, for what), and per-subject flags:
//! restriction (Art. 18) and legal hold.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Recipients::Table)
                    .col(string(Recipients::Id).primary_key())
                    .col(string(Recipients::Name))
                    .col(string(Recipients::Kind))
                    .col(text(Recipients::Purposes))
                    .col(string_null(Recipients::WebhookUrl))
                    .col(blob_null(Recipients::WebhookSecret))
                    .col(big_integer(Recipients::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Pseudonyms::Table)
                    .col(string(Pseudonyms::RecipientId))
                    .col(string(Pseudonyms::Value))
                    .col(integer(Pseudonyms::Version))
                    .col(string(Pseudonyms::SubjectId))
                    .col(big_integer(Pseudonyms::CreatedAt))
                    .primary_key(
                        Index::create()
                            .col(Pseudonyms::RecipientId)
                            .col(Pseudonyms::Value),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("pseudonyms_by_subject")
                    .table(Pseudonyms::Table)
                    .col(Pseudonyms::SubjectId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Disclosures::Table)
                    .col(string(Disclosures::Id).primary_key())
                    .col(string(Disclosures::RecipientId))
                    .col(string(Disclosures::SubjectId))
                    .col(string(Disclosures::Purpose))
                    .col(text(Disclosures::Attributes))
                    .col(big_integer(Disclosures::DisclosedAt))
                    .col(string(Disclosures::KeyId))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("disclosures_by_subject")
                    .table(Disclosures::Table)
                    .col(Disclosures::SubjectId)
                    .col(Disclosures::DisclosedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(SubjectFlags::Table)
                    .col(string(SubjectFlags::SubjectId))
                    .col(string(SubjectFlags::Flag))
                    .col(string(SubjectFlags::Reason))
                    .col(big_integer(SubjectFlags::SetAt))
                    .col(string(SubjectFlags::SetBy))
                    .primary_key(
                        Index::create()
                            .col(SubjectFlags::SubjectId)
                            .col(SubjectFlags::Flag),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            SubjectFlags::Table.into_iden(),
            Disclosures::Table.into_iden(),
            Pseudonyms::Table.into_iden(),
            Recipients::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(t).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Recipients {
    Table,
    Id,
    Name,
    Kind,
    Purposes,
    WebhookUrl,
    WebhookSecret,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Pseudonyms {
    Table,
    RecipientId,
    Value,
    Version,
    SubjectId,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Disclosures {
    Table,
    Id,
    RecipientId,
    SubjectId,
    Purpose,
    Attributes,
    DisclosedAt,
    KeyId,
}

/// Per-subject states set by a DPO: `restricted` (Art. 18), `legal_hold` (Art. 17(3)(e)).
#[derive(DeriveIden)]
enum SubjectFlags {
    Table,
    SubjectId,
    Flag,
    Reason,
    SetAt,
    SetBy,
}
