//! Email templates: Handlebars subject, HTML and text, checked against their purpose.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Templates::Table)
                    .col(string(Templates::Id).primary_key())
                    .col(string(Templates::Name))
                    .col(string(Templates::Purpose))
                    .col(string(Templates::RecipientId))
                    .col(text(Templates::Subject))
                    .col(text(Templates::Html))
                    .col(text(Templates::Body))
                    .col(text(Templates::Fallbacks))
                    .col(string(Templates::CreatedBy))
                    .col(big_integer(Templates::CreatedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Templates::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Templates {
    Table,
    Id,
    Name,
    Purpose,
    RecipientId,
    Subject,
    Html,
    /// The plain-text body.
    Body,
    Fallbacks,
    CreatedBy,
    CreatedAt,
}
