//! The suppression list: keyed hashes of erased people's normalised email and phone,
//! which stop them from being imported or exported again.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Suppressions::Table)
                    .col(string(Suppressions::Kind))
                    .col(string(Suppressions::Hash))
                    .col(string(Suppressions::Reason))
                    .col(big_integer(Suppressions::CreatedAt))
                    .primary_key(
                        Index::create()
                            .col(Suppressions::Kind)
                            .col(Suppressions::Hash),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Suppressions::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Suppressions {
    Table,
    Kind,
    Hash,
    Reason,
    CreatedAt,
}
