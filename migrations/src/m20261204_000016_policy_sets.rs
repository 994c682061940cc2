//! The policy sets published to every node: each reload (or a start with a changed set)
//! adds a generation holding the three texts, and every node puts the latest in force.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(PolicySets::Table)
                    .if_not_exists()
                    .col(big_integer(PolicySets::Generation).primary_key())
                    .col(string(PolicySets::Digest))
                    .col(text(PolicySets::Taxonomy))
                    .col(text(PolicySets::Identifiers))
                    .col(text(PolicySets::Purposes))
                    .col(big_integer(PolicySets::CreatedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(PolicySets::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum PolicySets {
    Table,
    Generation,
    Digest,
    Taxonomy,
    Identifiers,
    Purposes,
    CreatedAt,
}
