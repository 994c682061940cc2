//! On PostgreSQL a consent record must name a subject that exists (a foreign key, deleted
//! with the subject). A record is looked up on one connection and inserted in its own
//! statement on another, so an erasure committing in between used to leave the record of
//! an erased person behind; now that insert is refused and the request answers as for an
//! erased person. Records already left that way (their subject gone) are removed first:
//! they are exactly what an erasure should have taken. SQLite is unchanged: its writer
//! looks the subject up inside the transaction that inserts the record.
use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

const NAME: &str = "consents_subject_exists";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DatabaseBackend::Postgres {
            return Ok(());
        }
        let db = manager.get_connection();
        db.execute_unprepared(
            "DELETE FROM consents c WHERE NOT EXISTS \
             (SELECT 1 FROM subjects s WHERE s.id = c.subject_id)",
        )
        .await?;
        db.execute_unprepared(&format!(
            "ALTER TABLE consents DROP CONSTRAINT IF EXISTS {NAME}, \
             ADD CONSTRAINT {NAME} FOREIGN KEY (subject_id) REFERENCES subjects (id) \
             ON DELETE CASCADE"
        ))
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DatabaseBackend::Postgres {
            return Ok(());
        }
        manager
            .get_connection()
            .execute_unprepared(&format!(
                "ALTER TABLE consents DROP CONSTRAINT IF EXISTS {NAME}"
            ))
            .await?;
        Ok(())
    }
}
