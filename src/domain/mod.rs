//! Parse-don't-validate types shared by every module. No I/O here.
pub mod aggregates;
mod contact;
pub mod events;
mod ids;
mod role;
mod time;

pub use contact::{Email, Phone};
pub use ids::{Pseudonym, PurposeId, RecipientId};
pub use role::{Role, RoleParseError};
pub use time::{Clock, SystemClock, Timestamp};

/// The identity that performed an action, as recorded in the audit log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    /// The API key id, or `cli` / `system` / `anonymous` for non-key actors.
    pub key_id: String,
    /// The role name; `none` for unauthenticated callers.
    pub role: String,
}

impl Actor {
    pub fn cli() -> Self {
        Self {
            key_id: "cli".into(),
            role: Role::Admin.as_str().into(),
        }
    }

    pub fn system() -> Self {
        Self {
            key_id: "system".into(),
            role: "system".into(),
        }
    }

    pub fn anonymous() -> Self {
        Self {
            key_id: "anonymous".into(),
            role: "none".into(),
        }
    }
}
