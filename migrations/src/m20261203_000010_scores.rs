//! Scores: RFM and purchase propensity computed by the gateway, and scores an external
//! ML system posts; the models the gateway trained.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Scores::Table)
                    .col(string(Scores::SubjectId))
                    .col(string(Scores::Name))
                    .col(double(Scores::Value))
                    .col(string(Scores::ModelVersion))
                    .col(string(Scores::Source))
                    .col(big_integer(Scores::ComputedAt))
                    .primary_key(Index::create().col(Scores::SubjectId).col(Scores::Name))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("scores_name_value")
                    .table(Scores::Table)
                    .col(Scores::Name)
                    .col(Scores::Value)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ScoreModels::Table)
                    .col(string(ScoreModels::Version).primary_key())
                    .col(string(ScoreModels::Kind))
                    .col(text(ScoreModels::Features))
                    .col(text(ScoreModels::Parameters))
                    .col(double_null(ScoreModels::Auc))
                    .col(big_integer(ScoreModels::TrainingRows))
                    .col(big_integer(ScoreModels::TrainedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ScoreModels::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Scores::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Scores {
    Table,
    SubjectId,
    Name,
    Value,
    ModelVersion,
    Source,
    ComputedAt,
}

#[derive(DeriveIden)]
enum ScoreModels {
    Table,
    Version,
    Kind,
    Features,
    Parameters,
    Auc,
    TrainingRows,
    TrainedAt,
}
