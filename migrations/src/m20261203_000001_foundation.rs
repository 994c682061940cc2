//! Keyring, API keys and the append-only audit log.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(KeyringKeys::Table)
                    .col(string(KeyringKeys::Kind))
                    .col(integer(KeyringKeys::Version))
                    .col(blob(KeyringKeys::Wrapped))
                    .col(blob_null(KeyringKeys::PublicKey))
                    .col(big_integer(KeyringKeys::CreatedAt))
                    .col(big_integer_null(KeyringKeys::RetiredAt))
                    .primary_key(
                        Index::create()
                            .col(KeyringKeys::Kind)
                            .col(KeyringKeys::Version),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ApiKeys::Table)
                    .col(string(ApiKeys::Id).primary_key())
                    .col(string(ApiKeys::Name))
                    .col(string(ApiKeys::Role))
                    .col(string_null(ApiKeys::Recipient))
                    .col(string(ApiKeys::Purposes))
                    .col(string(ApiKeys::SecretHash))
                    .col(big_integer(ApiKeys::CreatedAt))
                    .col(big_integer_null(ApiKeys::LastUsedAt))
                    .col(big_integer_null(ApiKeys::RevokedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(AuditEntries::Table)
                    .col(big_integer(AuditEntries::Seq).primary_key())
                    .col(big_integer(AuditEntries::AtUs))
                    .col(string(AuditEntries::ActorKeyId))
                    .col(string(AuditEntries::ActorRole))
                    .col(string(AuditEntries::Action))
                    .col(string_null(AuditEntries::Purpose))
                    .col(string_null(AuditEntries::SubjectRef))
                    .col(string(AuditEntries::Attributes))
                    .col(string(AuditEntries::Outcome))
                    .col(string_null(AuditEntries::RequestId))
                    .col(blob(AuditEntries::LeafHash))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(AuditHead::Table)
                    .col(integer(AuditHead::Id).primary_key())
                    .col(big_integer(AuditHead::Size))
                    .to_owned(),
            )
            .await?;
        manager
            .exec_stmt(
                Query::insert()
                    .into_table(AuditHead::Table)
                    .columns([AuditHead::Id, AuditHead::Size])
                    .values_panic([1.into(), 0i64.into()])
                    .to_owned(),
            )
            .await?;

        // Each inserted entry advances the head inside the database, so an append is one
        // statement from the gateway's side.
        let db = manager.get_connection();
        match manager.get_database_backend() {
            sea_orm_migration::sea_orm::DatabaseBackend::Postgres => {
                db.execute_unprepared(
                    "CREATE FUNCTION consentry_audit_advance_head() RETURNS trigger AS $$ \
                     BEGIN UPDATE audit_head SET size = size + 1 WHERE id = 1; RETURN NULL; END \
                     $$ LANGUAGE plpgsql",
                )
                .await?;
                db.execute_unprepared(
                    "CREATE TRIGGER audit_entries_advance_head AFTER INSERT ON audit_entries \
                     FOR EACH ROW EXECUTE FUNCTION consentry_audit_advance_head()",
                )
                .await?;
            }
            _ => {
                db.execute_unprepared(
                    "CREATE TRIGGER audit_entries_advance_head AFTER INSERT ON audit_entries \
                     BEGIN UPDATE audit_head SET size = size + 1 WHERE id = 1; END",
                )
                .await?;
            }
        }

        manager
            .create_table(
                Table::create()
                    .table(AuditCheckpoints::Table)
                    .col(big_integer(AuditCheckpoints::Size).primary_key())
                    .col(blob(AuditCheckpoints::Root))
                    .col(blob(AuditCheckpoints::Frontier))
                    .col(integer(AuditCheckpoints::KeyVersion))
                    .col(text(AuditCheckpoints::Note))
                    .col(big_integer(AuditCheckpoints::CreatedAt))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            AuditCheckpoints::Table.into_iden(),
            AuditHead::Table.into_iden(),
            AuditEntries::Table.into_iden(),
            ApiKeys::Table.into_iden(),
            KeyringKeys::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        if manager.get_database_backend() == sea_orm_migration::sea_orm::DatabaseBackend::Postgres {
            manager
                .get_connection()
                .execute_unprepared("DROP FUNCTION IF EXISTS consentry_audit_advance_head()")
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum KeyringKeys {
    Table,
    Kind,
    Version,
    Wrapped,
    PublicKey,
    CreatedAt,
    RetiredAt,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    Name,
    Role,
    Recipient,
    Purposes,
    SecretHash,
    CreatedAt,
    LastUsedAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum AuditEntries {
    Table,
    Seq,
    AtUs,
    ActorKeyId,
    ActorRole,
    Action,
    Purpose,
    SubjectRef,
    Attributes,
    Outcome,
    RequestId,
    LeafHash,
}

#[derive(DeriveIden)]
enum AuditHead {
    Table,
    Id,
    Size,
}

#[derive(DeriveIden)]
enum AuditCheckpoints {
    Table,
    Size,
    Root,
    Frontier,
    KeyVersion,
    Note,
    CreatedAt,
}
