//! Rendering: Handlebars templates (the syntax of SendGrid and Iterable), compiled and
//! checked against the purpose they serve when saved, rendered from minimised views only.
//! This module sees only `MinimisedProfile` and `PurposeGrant` (SPEC §4).
pub mod check;
pub mod experiments;
pub mod links;
pub mod recommend;
pub mod render;
pub mod results;
pub mod stats;

pub use check::{Checked, Offence, TemplateError, check, check_with, compile};
pub use recommend::{Reason, Recommendation, Strategy};
pub use render::{Rendered, Renderer, data_of};
