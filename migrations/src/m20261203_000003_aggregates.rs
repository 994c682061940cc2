//! Per-subject behavioural aggregates, in columns so that segments compile to SQL.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Aggregates::Table)
                    .col(string(Aggregates::SubjectId).primary_key())
                    .col(big_integer_null(Aggregates::LastPageViewAt))
                    .col(big_integer_null(Aggregates::LastEmailOpenAt))
                    .col(big_integer_null(Aggregates::LastEmailClickAt))
                    .col(big_integer_null(Aggregates::LastPurchaseAt))
                    .col(big_integer_null(Aggregates::LastSearchAt))
                    .col(big_integer(Aggregates::PurchaseCount))
                    .col(double(Aggregates::LifetimeValue))
                    .col(double_null(Aggregates::AverageOrderValue))
                    .col(text(Aggregates::RecentlyViewed))
                    .col(text(Aggregates::Cart))
                    .col(big_integer_null(Aggregates::CartUpdatedAt))
                    .col(big_integer_null(Aggregates::CartAbandonedAt))
                    .col(big_integer(Aggregates::UpdatedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Aggregates::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Aggregates {
    Table,
    SubjectId,
    LastPageViewAt,
    LastEmailOpenAt,
    LastEmailClickAt,
    LastPurchaseAt,
    LastSearchAt,
    PurchaseCount,
    LifetimeValue,
    AverageOrderValue,
    RecentlyViewed,
    Cart,
    CartUpdatedAt,
    CartAbandonedAt,
    UpdatedAt,
}
