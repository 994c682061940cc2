//! Experiments (A/B and multivariate): their variants and weights, who was exposed to
//! which variant (once per experiment and subject), and the experiment a campaign runs.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Experiments::Table)
                    .col(string(Experiments::Id).primary_key())
                    .col(string(Experiments::Name))
                    .col(string(Experiments::Purpose))
                    .col(string(Experiments::RecipientId))
                    .col(text(Experiments::Variants))
                    .col(integer(Experiments::Holdout))
                    .col(string(Experiments::Control))
                    .col(integer(Experiments::KeyVersion))
                    .col(string(Experiments::CreatedBy))
                    .col(big_integer(Experiments::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ExperimentExposures::Table)
                    .col(string(ExperimentExposures::ExperimentId))
                    .col(string(ExperimentExposures::SubjectId))
                    .col(string(ExperimentExposures::Variant))
                    .col(string(ExperimentExposures::CampaignId))
                    .col(big_integer(ExperimentExposures::ExposedAt))
                    .primary_key(
                        Index::create()
                            .col(ExperimentExposures::ExperimentId)
                            .col(ExperimentExposures::SubjectId),
                    )
                    .to_owned(),
            )
            .await?;
        // Erasure and access requests find a subject's exposures by subject.
        manager
            .create_index(
                Index::create()
                    .name("experiment_exposures_subject")
                    .table(ExperimentExposures::Table)
                    .col(ExperimentExposures::SubjectId)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Campaigns::Table)
                    .add_column(string_null(Campaigns::ExperimentId))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Campaigns::Table)
                    .drop_column(Campaigns::ExperimentId)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(ExperimentExposures::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Experiments::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Experiments {
    Table,
    Id,
    Name,
    Purpose,
    RecipientId,
    /// JSON array of `{name, weight, template?, subject?, recommendations}`.
    Variants,
    /// Whole percent of the audience that receives nothing.
    Holdout,
    Control,
    /// The token-signing key version the assignment key is derived from.
    KeyVersion,
    CreatedBy,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ExperimentExposures {
    Table,
    ExperimentId,
    SubjectId,
    /// A variant's name, or `holdout`.
    Variant,
    CampaignId,
    ExposedAt,
}

#[derive(DeriveIden)]
enum Campaigns {
    Table,
    ExperimentId,
}
