//! Who may have a view for which purpose.
use std::sync::Arc;

use crate::auth::Caller;
use crate::domain::Role;
use crate::policy::{Policies, Purpose};
use crate::store::recipients::{self, RecipientRow};
use crate::store::{Db, StoreError};

/// Permission to build views for one purpose, for one recipient. Only [`authorize`]
/// makes one.
#[derive(Clone, Debug)]
pub struct PurposeGrant {
    pub(super) purpose: Purpose,
    pub(super) purpose_name: Arc<str>,
    pub(super) recipient: Arc<str>,
    pub(super) key_id: String,
    /// The policy set the grant was made under; records loaded for it use its category ids.
    pub(super) policies: Arc<Policies>,
    /// Indexed by category id in `policies.taxonomy`.
    pub(super) readable: Vec<bool>,
    pub(super) email: bool,
    pub(super) phone: bool,
}

impl PurposeGrant {
    pub fn purpose(&self) -> &Purpose {
        &self.purpose
    }

    pub fn recipient(&self) -> &str {
        &self.recipient
    }

    pub fn policies(&self) -> &Arc<Policies> {
        &self.policies
    }

    /// Whether the grant's purpose may read `category` (used by static checks).
    pub fn may_read(&self, category: &str) -> bool {
        self.purpose.may_read(category)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthorizeError {
    #[error("purpose: `{0}` is not a purpose in the policies")]
    UnknownPurpose(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("no recipient has that id")]
    UnknownRecipient,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Looks the recipient up and authorizes. An `esp` key is refused another recipient's
/// routes before anything is looked up, so it learns nothing about other recipients.
pub async fn grant_for(
    db: &Db,
    caller: &Caller,
    recipient: &str,
    purpose: &str,
    policies: Arc<Policies>,
) -> Result<PurposeGrant, AuthorizeError> {
    if caller.role == Role::Esp && caller.recipient.as_deref() != Some(recipient) {
        return Err(AuthorizeError::Forbidden(
            "this key acts for another recipient".into(),
        ));
    }
    let row = recipients::get(db.conn(), recipient)
        .await?
        .ok_or(AuthorizeError::UnknownRecipient)?;
    authorize(caller, &row, purpose, policies)
}

/// The grant for `caller` to receive data for `purpose` as `recipient`, if everything
/// allows it: an `esp` key only for its own recipient and its own purposes; an `admin`
/// key for any registered recipient (previews); no other role.
pub fn authorize(
    caller: &Caller,
    recipient: &RecipientRow,
    purpose: &str,
    policies: Arc<Policies>,
) -> Result<PurposeGrant, AuthorizeError> {
    let forbidden = |m: String| Err(AuthorizeError::Forbidden(m));
    let Some(def) = policies.purpose(purpose) else {
        return Err(AuthorizeError::UnknownPurpose(
            purpose.chars().take(64).collect(),
        ));
    };
    match caller.role {
        Role::Esp if caller.recipient.as_deref() != Some(recipient.id.as_str()) => {
            return forbidden("this key acts for another recipient".into());
        }
        Role::Esp if !caller.purposes.iter().any(|p| p == purpose) => {
            return forbidden(format!("this key may not request purpose `{purpose}`"));
        }
        Role::Esp | Role::Admin => {}
        other => return forbidden(format!("{other} keys receive no profile data")),
    }
    if !recipient.purposes.iter().any(|p| p == purpose) {
        return forbidden(format!(
            "recipient `{}` is not registered for purpose `{purpose}`",
            recipient.id
        ));
    }
    if !def.recipients.contains(&recipient.kind) {
        return forbidden(format!(
            "purpose `{purpose}` no longer allows recipients of kind `{}`",
            recipient.kind
        ));
    }
    let purpose = def.clone();
    let readable = policies
        .taxonomy
        .categories()
        .map(|(name, _)| purpose.may_read(name))
        .collect();
    Ok(PurposeGrant {
        email: purpose.may_read("user.contact.email"),
        phone: purpose.may_read("user.contact.phone_number"),
        purpose_name: Arc::from(purpose.name.as_str()),
        purpose,
        recipient: Arc::from(recipient.id.as_str()),
        key_id: caller.key_id.clone(),
        policies,
        readable,
    })
}

#[cfg(test)]
impl PurposeGrant {
    /// A grant without a caller, for unit and property tests only.
    pub fn for_tests(policies: Arc<Policies>, purpose: Purpose, recipient: &str) -> Self {
        let readable = policies
            .taxonomy
            .categories()
            .map(|(name, _)| purpose.may_read(name))
            .collect();
        Self {
            email: purpose.may_read("user.contact.email"),
            phone: purpose.may_read("user.contact.phone_number"),
            purpose_name: Arc::from(purpose.name.as_str()),
            purpose,
            recipient: Arc::from(recipient),
            key_id: "test".into(),
            policies,
            readable,
        }
    }
}
