//! Database schema for Consentry. Every migration runs on SQLite and PostgreSQL.
pub use sea_orm_migration::prelude::*;

mod m20261203_000001_foundation;
mod m20261203_000002_profiles;
mod m20261203_000003_aggregates;
mod m20261203_000004_suppressions;
mod m20261203_000005_consents;
mod m20261203_000006_recipients;
mod m20261203_000007_dsar;
mod m20261203_000008_segments;
mod m20261203_000009_exports;
mod m20261203_000010_scores;
mod m20261203_000011_templates;
mod m20261203_000012_campaigns;
mod m20261203_000013_catalog;
mod m20261203_000014_experiments;
mod m20261203_000015_template_partials;
mod m20261204_000016_policy_sets;
mod m20261204_000017_events_by_message_first;
mod m20261204_000018_audit_pending;
mod m20261204_000019_consents_need_their_subject;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261203_000001_foundation::Migration),
            Box::new(m20261203_000002_profiles::Migration),
            Box::new(m20261203_000003_aggregates::Migration),
            Box::new(m20261203_000004_suppressions::Migration),
            Box::new(m20261203_000005_consents::Migration),
            Box::new(m20261203_000006_recipients::Migration),
            Box::new(m20261203_000007_dsar::Migration),
            Box::new(m20261203_000008_segments::Migration),
            Box::new(m20261203_000009_exports::Migration),
            Box::new(m20261203_000010_scores::Migration),
            Box::new(m20261203_000011_templates::Migration),
            Box::new(m20261203_000012_campaigns::Migration),
            Box::new(m20261203_000013_catalog::Migration),
            Box::new(m20261203_000014_experiments::Migration),
            Box::new(m20261203_000015_template_partials::Migration),
            Box::new(m20261204_000016_policy_sets::Migration),
            Box::new(m20261204_000017_events_by_message_first::Migration),
            Box::new(m20261204_000018_audit_pending::Migration),
            Box::new(m20261204_000019_consents_need_their_subject::Migration),
        ]
    }
}
