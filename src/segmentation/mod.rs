//! Segments: the rule language, its static check against a purpose, its evaluation in
//! memory over minimised views and its compilation to SQL. This module sees only
//! `MinimisedProfile`, `MinimisedEvent` and `PurposeGrant` (SPEC §4).
pub mod check;
pub mod eval;
pub mod export;
pub mod rule;
pub mod sql;

pub use check::{Offence, check};
pub use rule::{Rule, RuleError};
