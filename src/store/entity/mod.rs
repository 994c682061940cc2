//! sea-orm entities. They stay inside `store`; repositories convert them to domain types.
pub mod aggregate;
pub mod api_key;
pub mod audit_checkpoint;
pub mod audit_entry;
pub mod audit_head;
pub mod consent;
pub mod event;
pub mod identifier;
pub mod identity_conflict;
pub mod keyring_key;
pub mod subject;
pub mod subject_key;
pub mod subject_trait;
pub mod suppression;
