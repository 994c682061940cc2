//! A subject's events as a purpose may see them: only events of categories the grant
//! reads, loaded only for a subject the gate has let through (a [`MinimisedProfile`] is
//! the proof).
use std::collections::HashMap;

use sea_orm::ConnectionTrait;
use serde_json::{Map, Value};

use super::grant::PurposeGrant;
use super::view::MinimisedProfile;
use crate::store::{StoreError, profiles};

#[derive(Clone, Debug, PartialEq)]
pub struct MinimisedEvent {
    kind: String,
    name: Option<String>,
    properties: Map<String, Value>,
    occurred_at: i64,
}

impl MinimisedEvent {
    /// `track`, `page`, `screen` ...
    pub fn kind(&self) -> &str {
        &self.kind
    }

    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    pub fn properties(&self) -> &Map<String, Value> {
        &self.properties
    }

    /// Microseconds since the epoch.
    pub fn occurred_at(&self) -> i64 {
        self.occurred_at
    }
}

/// The events of `subject_id` the grant may read, oldest first. `_view` is the subject's
/// minimised view for the same grant: no view, no events.
pub async fn minimised_events<C: ConnectionTrait>(
    c: &C,
    grant: &PurposeGrant,
    subject_id: &str,
    view: &MinimisedProfile,
) -> Result<Vec<MinimisedEvent>, StoreError> {
    if view.purpose() != &*grant.purpose_name || view.recipient() != &*grant.recipient {
        return Ok(Vec::new());
    }
    Ok(profiles::events_of(c, subject_id)
        .await?
        .into_iter()
        .filter(|(kind, name, ..)| {
            grant
                .purpose
                .may_read(crate::domain::events::category(kind, name.as_deref()))
        })
        .map(|(kind, name, properties, occurred_at, _)| MinimisedEvent {
            kind,
            name,
            properties: serde_json::from_str(&properties).unwrap_or_default(),
            occurred_at,
        })
        .collect())
}

/// The `track` events named one of `names` of each subject of a page the gate let
/// through (each with its view for the same grant), newest first; names of categories
/// the grant does not read are left out.
pub async fn minimised_events_of<C: ConnectionTrait>(
    c: &C,
    grant: &PurposeGrant,
    members: &[(&str, &MinimisedProfile)],
    names: &[&str],
) -> Result<HashMap<String, Vec<MinimisedEvent>>, StoreError> {
    let names: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| {
            grant
                .purpose
                .may_read(crate::domain::events::category("track", Some(n)))
        })
        .collect();
    let ids: Vec<String> = members
        .iter()
        .filter(|(_, v)| v.purpose() == &*grant.purpose_name && v.recipient() == &*grant.recipient)
        .map(|(s, _)| (*s).to_owned())
        .collect();
    let mut out: HashMap<String, Vec<MinimisedEvent>> = HashMap::new();
    for (subject, name, properties, occurred_at) in
        profiles::named_events_of_many(c, &ids, &names).await?
    {
        out.entry(subject).or_default().push(MinimisedEvent {
            kind: "track".to_owned(),
            name: Some(name),
            properties: serde_json::from_str(&properties).unwrap_or_default(),
            occurred_at,
        });
    }
    for events in out.values_mut() {
        events.sort_by_key(|e| std::cmp::Reverse(e.occurred_at));
    }
    Ok(out)
}
