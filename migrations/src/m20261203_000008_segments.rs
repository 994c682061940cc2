//! Saved segments: a rule, the purpose it serves and the recipient it is built for.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Segments::Table)
                    .col(string(Segments::Id).primary_key())
                    .col(string(Segments::Name))
                    .col(string(Segments::Purpose))
                    .col(string(Segments::RecipientId))
                    .col(text(Segments::Rule))
                    .col(string(Segments::CreatedBy))
                    .col(big_integer(Segments::CreatedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Segments::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Segments {
    Table,
    Id,
    Name,
    Purpose,
    RecipientId,
    Rule,
    CreatedBy,
    CreatedAt,
}
