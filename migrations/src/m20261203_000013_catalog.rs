//! The product catalogue and the recommendation models trained from consented purchase
//! and browsing history: per purpose, which products are bought by the same people
//! (pairs) and which are bought (or viewed) by most (popularity). Counts only: no row
//! names a subject.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Products::Table)
                    .col(string(Products::Id).primary_key())
                    .col(string(Products::Name))
                    .col(string(Products::Url))
                    .col(string_null(Products::ImageUrl))
                    .col(double_null(Products::Price))
                    .col(string_null(Products::Currency))
                    .col(string_null(Products::Category))
                    .col(boolean(Products::Available))
                    .col(big_integer(Products::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ProductPairs::Table)
                    .col(string(ProductPairs::Purpose))
                    .col(string(ProductPairs::ProductId))
                    .col(string(ProductPairs::OtherId))
                    .col(big_integer(ProductPairs::Weight))
                    .primary_key(
                        Index::create()
                            .col(ProductPairs::Purpose)
                            .col(ProductPairs::ProductId)
                            .col(ProductPairs::OtherId),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ProductPopularity::Table)
                    .col(string(ProductPopularity::Purpose))
                    .col(string(ProductPopularity::ProductId))
                    .col(big_integer(ProductPopularity::People))
                    .primary_key(
                        Index::create()
                            .col(ProductPopularity::Purpose)
                            .col(ProductPopularity::ProductId),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("product_popularity_by_rank")
                    .table(ProductPopularity::Table)
                    .col(ProductPopularity::Purpose)
                    .col(ProductPopularity::People)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(RecommendationModels::Table)
                    .col(string(RecommendationModels::Purpose).primary_key())
                    .col(big_integer(RecommendationModels::Subjects))
                    .col(big_integer(RecommendationModels::Products))
                    .col(big_integer(RecommendationModels::Pairs))
                    .col(big_integer(RecommendationModels::TrainedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            RecommendationModels::Table.into_iden(),
            ProductPopularity::Table.into_iden(),
            ProductPairs::Table.into_iden(),
            Products::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(t).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Products {
    Table,
    Id,
    Name,
    Url,
    ImageUrl,
    Price,
    Currency,
    Category,
    Available,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ProductPairs {
    Table,
    Purpose,
    ProductId,
    OtherId,
    Weight,
}

#[derive(DeriveIden)]
enum ProductPopularity {
    Table,
    Purpose,
    ProductId,
    People,
}

#[derive(DeriveIden)]
enum RecommendationModels {
    Table,
    Purpose,
    Subjects,
    Products,
    Pairs,
    TrainedAt,
}
