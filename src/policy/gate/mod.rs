//! The gate: the one way profile data leaves the gateway. Guarantees:
//! - only [`authorize`] makes a [`PurposeGrant`], and only for a caller whose role and
//!   recipient are allowed the purpose by the policies and the recipient's registration;
//! - only [`minimise`] makes a [`MinimisedProfile`]; it holds only attributes of categories
//!   the purpose may read, the recipient's pseudonym instead of any internal id, and the
//!   email address or phone number only when the purpose reads their category;
//! - no view at all (fail closed) when a consent-based purpose lacks a current grant, a
//!   legitimate-interest purpose has an objection, a sale/share purpose was opted out of
//!   by GPC, the subject is restricted (Art. 18) or suppressed, or is known to be younger
//!   than the purpose's minimum age;
//! - every disclosure commits with its audit entry and its disclosure record; every
//!   refusal is audited with its reason, and answered like an unknown pseudonym.
pub mod audience;
mod disclose;
mod events;
mod grant;
mod load;
mod view;

pub use disclose::{Gate, GateError, PseudonymRequest};
pub use events::{MinimisedEvent, minimised_events, minimised_events_of};
pub use grant::{AuthorizeError, PurposeGrant, authorize, grant_for};
pub use load::{AGGREGATE_CATEGORIES, LoadError, SCORE_CATEGORY, load_record};
pub use view::{Denial, MinimisedProfile, SubjectRecord, minimise};
