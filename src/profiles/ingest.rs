//! Ingesting checked Segment messages: deterministic identity resolution, sealed
//! identifiers, traits and events. Guarantees:
//! - a request is one transaction with its audit entry: acknowledged means stored;
//! - a repeated `messageId` from the same write key changes nothing;
//! - identifier values and identifying traits are stored only sealed under the subject's
//!   data key, found by blind index; event properties lose their direct identifiers;
//! - messages linking two subjects merge them in the same transaction, unless each holds
//!   a different `userId`: that is recorded as a conflict for review, never merged.
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use sea_orm::ConnectionTrait;
use serde_json::Value;

use super::normalise_identifier;
use super::segment::{Kind, Message, MessageError};
use crate::audit::{AuditError, AuditLog, NewEntry, Outcome};
use crate::crypto::{Keyring, KeyringError, MasterKey, SubjectKey};
use crate::domain::aggregates::Aggregates;
use crate::domain::{Actor, Timestamp};
use crate::policy::{IdSource, Policies};
use crate::store::profiles::{self as repo, EventRow, IdentifierRow, NewSubject, TraitRow};
use crate::store::{Db, StoreError, aggregates};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Invalid(#[from] MessageError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// A concurrent request stored one of this request's new identifiers or messages
    /// first; the request was rolled back (and is retried by [`Ingest::run`]).
    #[error("a concurrent request stored the same new identifier or message")]
    Contended,
}

impl IngestError {
    /// Rolled back because of a concurrent request: a new identifier or message stored
    /// first, or (PostgreSQL) a deadlock with another transaction on the same person, e.g.
    /// an erasure, which deletes the aggregates before the subject while ingest locks the
    /// subject before its aggregates. Running the request again can succeed.
    fn is_contended(&self) -> bool {
        match self {
            IngestError::Contended => true,
            IngestError::Store(e) | IngestError::Audit(AuditError::Store(e)) => {
                e.is_transaction_conflict()
            }
            _ => false,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IngestReport {
    pub accepted: usize,
    pub duplicates: usize,
    pub subjects_created: usize,
    pub merged: usize,
    pub conflicts: usize,
    /// The ids of the messages counted in `duplicates`.
    pub duplicate_ids: Vec<String>,
    /// Messages naming an erased person (an identifier on the suppression list): dropped.
    pub suppressed: usize,
}

/// Where messages come from: what a repeated `messageId` is unique within, and how the
/// request is named in the audit log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The tracking API: message ids are unique per write key.
    Tracking,
    /// An offline import: row keys are unique per named source.
    Import { source: String },
}

pub struct Ingest<'a> {
    pub db: &'a Db,
    pub master: &'a MasterKey,
    pub keyring: &'a Keyring,
    pub audit: &'a AuditLog,
    pub policies: &'a Policies,
    pub source: Actor,
    pub scope: Scope,
    /// The request carried `Sec-GPC: 1`: its people opt out of every sale/share purpose.
    pub gpc: bool,
    pub request_id: Option<String>,
    pub received_at: Timestamp,
}

/// An alias's `previousId`: a user id or an anonymous id, kept as an anonymous id if new.
const PREVIOUS_ID: &str = "previous_id";

/// The identifiers a message names, normalised.
struct Ids<'p> {
    /// (kind, normalised value), strongest first: user_id, email, phone, the external
    /// ids in policy order, anonymous_id.
    all: Vec<(&'p str, String)>,
}

fn field(batched: bool, i: usize, name: &str) -> String {
    if batched {
        format!("batch[{i}].{name}")
    } else {
        name.to_owned()
    }
}

fn invalid(batched: bool, i: usize, name: &str, reason: String) -> MessageError {
    MessageError {
        index: batched.then_some(i),
        field: field(batched, i, name),
        reason,
    }
}

/// The first value of an external id in a message, with the field it came from.
fn external_value<'m>(m: &'m Message, from: &[IdSource]) -> Option<(String, &'m Value)> {
    from.iter().find_map(|source| {
        let (name, v) = match source {
            IdSource::Traits(k) => (format!("traits.{k}"), m.traits.get(k)),
            IdSource::ContextTraits(k) => (
                format!("context.traits.{k}"),
                m.context
                    .get("traits")
                    .and_then(Value::as_object)
                    .and_then(|t| t.get(k)),
            ),
            IdSource::Context(path) => {
                let mut v = m.context.get(&path[0]);
                for p in &path[1..] {
                    v = v.and_then(|v| v.get(p));
                }
                (format!("context.{}", path.join(".")), v)
            }
            IdSource::Properties(k) => (format!("properties.{k}"), m.properties.get(k)),
        };
        v.filter(|v| !v.is_null()).map(|v| (name, v))
    })
}

/// The kinds an identifier is looked up under: a `previousId` may be either.
fn lookup_kinds(kind: &str) -> Vec<&str> {
    if kind == PREVIOUS_ID {
        vec!["user_id", "anonymous_id"]
    } else {
        vec![kind]
    }
}

/// Where an identifier kind ranks: the subject found by the strongest keeps its id.
fn rank(policies: &Policies, kind: &str) -> usize {
    match kind {
        "user_id" => 0,
        PREVIOUS_ID => 1,
        "email" => 2,
        "phone" => 3,
        "anonymous_id" => usize::MAX,
        other => {
            4 + policies
                .external_ids
                .iter()
                .position(|e| e.kind == other)
                .unwrap_or(usize::MAX - 5)
        }
    }
}

fn identifiers<'p>(
    m: &'p Message,
    policies: &'p Policies,
    batched: bool,
    i: usize,
) -> Result<Ids<'p>, MessageError> {
    let mut all = Vec::new();
    if let Some(u) = &m.user_id {
        all.push(("user_id", u.clone()));
    }
    if m.kind == Kind::Alias
        && let Some(p) = &m.previous_id
    {
        // The previous id may have been either kind: `resolve` looks both up.
        all.push((PREVIOUS_ID, p.clone()));
    }
    let context_traits = m.context.get("traits").and_then(Value::as_object);
    let email = m
        .traits
        .get("email")
        .map(|v| ("traits.email", v))
        .or_else(|| {
            context_traits
                .and_then(|t| t.get("email"))
                .map(|v| ("context.traits.email", v))
        });
    if let Some((name, v)) = email.filter(|(_, v)| !v.is_null()) {
        let s = v
            .as_str()
            .ok_or_else(|| invalid(batched, i, name, "must be a string".into()))?;
        let e = normalise_identifier("email", s, None).map_err(|r| invalid(batched, i, name, r))?;
        all.push(("email", e));
    }
    if let Some(v) = m.traits.get("phone").filter(|v| !v.is_null()) {
        let s = v
            .as_str()
            .ok_or_else(|| invalid(batched, i, "traits.phone", "must be a string".into()))?;
        let p = normalise_identifier("phone", s, None)
            .map_err(|r| invalid(batched, i, "traits.phone", r))?;
        all.push(("phone", p));
    }
    for ext in &policies.external_ids {
        if let Some((name, v)) = external_value(m, &ext.from) {
            let raw = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => {
                    return Err(invalid(
                        batched,
                        i,
                        &name,
                        "must be a string or a number".into(),
                    ));
                }
            };
            let value = normalise_identifier(&ext.kind, &raw, None)
                .map_err(|r| invalid(batched, i, &name, r))?;
            all.push((ext.kind.as_str(), value));
        }
    }
    if let Some(a) = &m.anonymous_id {
        all.push(("anonymous_id", a.clone()));
    }
    for (kind, value) in &m.identifiers {
        all.push((kind.as_str(), value.clone()));
    }
    all.sort_by(|a, b| {
        rank(policies, a.0)
            .cmp(&rank(policies, b.0))
            .then_with(|| a.cmp(b))
    });
    all.dedup();
    Ok(Ids { all })
}

/// What a request has decided but not yet written, written together in multi-row
/// statements at the end (or before a merge, which reads the tables).
#[derive(Default)]
struct Pending {
    subjects: Vec<NewSubject>,
    /// Subjects created by this request: nothing of theirs is in the database yet.
    new: HashSet<String>,
    identifiers: Vec<IdentifierRow>,
    traits: BTreeMap<(String, String), TraitRow>,
    events: Vec<EventRow>,
    aggregates: BTreeMap<String, Aggregates>,
    seen: BTreeMap<String, (i64, i64)>,
    /// The stored aggregates of the subjects the request found, read once up front; a
    /// subject's entry is taken when its first message is applied. Emptied by a merge,
    /// which changes what is stored.
    loaded: HashMap<String, Aggregates>,
    /// Consent signals: (subject, consent) → (status, method, captured at); the last one
    /// of a request wins, and it is recorded only if it changes the person's state.
    consents: BTreeMap<(String, String), (&'static str, &'static str, i64)>,
}

/// What the request knows of identifiers: (kind, blind index) → subject, from one
/// look-up of every identifier in the request, kept current as it adds and merges.
type Known = HashMap<(String, String), String>;

impl Ingest<'_> {
    /// Checks every message's identifiers, then stores them all in one transaction.
    pub async fn run(
        &self,
        messages: &[Message],
        batched: bool,
    ) -> Result<IngestReport, IngestError> {
        // Two requests naming the same new person at once (PostgreSQL: writers do not
        // queue as on SQLite): the later one rolls back and starts again, now finding
        // the subject the first one created.
        let mut attempts = 0;
        loop {
            match self.run_once(messages, batched).await {
                Err(e) if attempts < 4 && e.is_contended() => attempts += 1,
                other => return other,
            }
        }
    }

    async fn run_once(
        &self,
        messages: &[Message],
        batched: bool,
    ) -> Result<IngestReport, IngestError> {
        let ids: Vec<Ids> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| identifiers(m, self.policies, batched, i))
            .collect::<Result<_, _>>()?;
        let mut report = IngestReport::default();
        let mut subjects = BTreeSet::new();
        let mut attributes = BTreeSet::new();
        let txn = self.db.begin_write().await?;
        let message_ids: Vec<String> = messages.iter().map(|m| m.message_id.clone()).collect();
        let scope = self.dedupe_scope();
        let mut already = repo::existing_message_ids(&txn, &scope, &message_ids).await?;
        let suppressed = self.suppressed(&txn, &ids).await?;
        let mut known = self.look_up(&txn, &ids).await?;
        let mut resolved: HashMap<&[(&str, String)], String> = HashMap::new();
        let mut pending = Pending::default();
        // The people the request already knows of, read once: their rows locked (on
        // PostgreSQL; see `lock_subjects`), their data keys and their aggregates, rather
        // than a read of each per person.
        let people: Vec<String> = known
            .values()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        repo::lock_subjects(&txn, &people).await?;
        let mut keys: HashMap<String, SubjectKey> = HashMap::new();
        for (id, wrapped) in repo::subject_keys_in(&txn, &people).await? {
            let key = SubjectKey::unwrap(self.master, &id, &wrapped)?;
            keys.insert(id, key);
        }
        pending.loaded = aggregates::load_in(&txn, &people)
            .await?
            .into_iter()
            .collect();
        for id in people {
            pending.loaded.entry(id).or_default();
        }
        for (i, (m, ids)) in messages.iter().zip(&ids).enumerate() {
            if suppressed.contains(&i) {
                report.suppressed += 1;
                continue;
            }
            if !already.insert(m.message_id.clone()) {
                report.duplicates += 1;
                report.duplicate_ids.push(m.message_id.clone());
                continue;
            }
            let subject = match resolved.get(ids.all.as_slice()) {
                Some(s) => s.clone(),
                None => {
                    let merged_before = report.merged;
                    let subject = self
                        .resolve(&txn, ids, &mut report, &mut pending, &mut known, &mut keys)
                        .await?;
                    if report.merged > merged_before {
                        // Subjects went away: earlier resolutions may point at them.
                        resolved.clear();
                    }
                    resolved.insert(ids.all.as_slice(), subject.clone());
                    subject
                }
            };
            let key = match keys.remove(&subject) {
                Some(k) => k,
                None => self.subject_key(&txn, &subject).await?,
            };
            self.store_message(&txn, m, &subject, &key, &mut attributes, &mut pending)
                .await?;
            keys.insert(subject.clone(), key);
            subjects.insert(subject);
            report.accepted += 1;
        }
        self.flush(&txn, &mut pending).await?;
        let action = if let Scope::Import { .. } = self.scope {
            "import.rows".to_owned()
        } else if batched {
            "ingest.batch".to_owned()
        } else {
            format!(
                "ingest.{}",
                messages.first().map_or("batch", |m| m.kind.as_str())
            )
        };
        let mut entry = NewEntry::new(self.source.clone(), &action, Outcome::Ok)
            .request_id(self.request_id.clone())
            .attributes(attributes.into_iter().collect());
        if subjects.len() == 1
            && let Some(s) = subjects.first()
        {
            entry.subject_ref = Some(self.audit.subject_ref(s)?);
        }
        self.audit.append(&txn, entry).await?;
        txn.commit().await.map_err(StoreError::from)?;
        Ok(report)
    }

    /// What message ids are unique within (stored as the event's source).
    fn dedupe_scope(&self) -> String {
        match &self.scope {
            Scope::Tracking => self.source.key_id.clone(),
            Scope::Import { source } => format!("import:{source}"),
        }
    }

    async fn flush<C: ConnectionTrait>(
        &self,
        c: &C,
        pending: &mut Pending,
    ) -> Result<(), IngestError> {
        let mut subjects = std::mem::take(&mut pending.subjects);
        for s in &mut subjects {
            if let Some((first, last)) = pending.seen.remove(&s.id) {
                s.first_seen_at = s.first_seen_at.min(first);
                s.last_seen_at = s.last_seen_at.max(last);
            }
        }
        repo::insert_subjects(c, &subjects).await?;
        pending.new.clear();
        let identifiers = std::mem::take(&mut pending.identifiers);
        if repo::insert_identifiers(c, &identifiers).await? < identifiers.len() as u64 {
            return Err(IngestError::Contended);
        }
        let traits: Vec<TraitRow> = std::mem::take(&mut pending.traits).into_values().collect();
        repo::upsert_traits(c, &traits).await?;
        // A message another request (on this node or another) stored since this one
        // looked: roll back and retry, so its aggregates are not counted twice.
        let events = std::mem::take(&mut pending.events);
        if repo::insert_events(c, &events).await? < events.len() as u64 {
            return Err(IngestError::Contended);
        }
        let aggregates = std::mem::take(&mut pending.aggregates);
        let rows: Vec<(&str, &Aggregates)> =
            aggregates.iter().map(|(s, a)| (s.as_str(), a)).collect();
        aggregates::save_many(c, &rows, self.received_at.unix_micros()).await?;
        let seen: Vec<(String, i64, i64)> = std::mem::take(&mut pending.seen)
            .into_iter()
            .map(|(s, (first, last))| (s, first, last))
            .collect();
        repo::seen_many(c, &seen).await?;
        for ((subject, consent), (status, method, at)) in std::mem::take(&mut pending.consents) {
            let latest = crate::store::consents::latest(c, &subject, &consent).await?;
            // Nothing new; and a CMP's "yes" never undoes a confirmed double opt-in.
            if latest.is_some_and(|r| {
                r.status == status || (status == "pending" && r.status == "granted")
            }) {
                continue;
            }
            let row = crate::store::consents::ConsentRow {
                id: uuid::Uuid::now_v7().simple().to_string(),
                subject_id: subject,
                consent,
                status: status.to_owned(),
                method: method.to_owned(),
                source: format!("segment:{}", self.source.key_id),
                notice_version: None,
                captured_at: at,
                recorded_at: self.received_at.unix_micros(),
                recorded_by: self.source.key_id.clone(),
                proof: None,
            };
            crate::store::consents::insert(c, &row).await?;
        }
        Ok(())
    }

    /// The consent signals of one message: Segment's consent categories (method `cmp`)
    /// and, when the request carried `Sec-GPC: 1`, a denial of every sale/share purpose's
    /// consent (method `gpc`, which wins over the CMP for those).
    fn consent_signals(
        &self,
        m: &Message,
        subject: &str,
        at: i64,
        pending: &mut Pending,
    ) -> Result<(), IngestError> {
        let set = &self.policies.purposes;
        let prefs = m
            .context
            .get("consent")
            .and_then(|c| c.get("categoryPreferences"))
            .and_then(Value::as_object);
        for (category, v) in prefs.into_iter().flatten() {
            let Some(consent) = set.segment_categories.get(category) else {
                continue;
            };
            let granted = v.as_bool().ok_or_else(|| MessageError {
                index: None,
                field: format!("context.consent.categoryPreferences.{category}"),
                reason: "must be true or false".into(),
            })?;
            let double = set
                .consents
                .iter()
                .any(|c| c.name == *consent && c.double_opt_in);
            let status = match (granted, double) {
                (true, true) => "pending",
                (true, false) => "granted",
                (false, _) => "denied",
            };
            pending
                .consents
                .insert((subject.to_owned(), consent.clone()), (status, "cmp", at));
        }
        for (consent, status, method) in &m.consents {
            pending
                .consents
                .insert((subject.to_owned(), consent.clone()), (status, method, at));
        }
        if self.gpc {
            // A consent-based purpose loses its consent; any other sale/share purpose
            // gets an objection under its own name.
            for p in set.purposes.iter().filter(|p| p.sale_or_share) {
                let name = p.consent.as_ref().unwrap_or(&p.name);
                pending
                    .consents
                    .insert((subject.to_owned(), name.clone()), ("denied", "gpc", at));
            }
        }
        Ok(())
    }

    /// The indexes of messages naming an identifier on the suppression list (an erased
    /// person), in one query.
    async fn suppressed<C: ConnectionTrait>(
        &self,
        c: &C,
        ids: &[Ids<'_>],
    ) -> Result<std::collections::HashSet<usize>, IngestError> {
        let hashes: Vec<Vec<String>> = ids
            .iter()
            .map(|i| {
                i.all
                    .iter()
                    .flat_map(|(k, v)| self.keyring.suppression_hashes(k, v))
                    .collect()
            })
            .collect();
        let all: Vec<String> = hashes.iter().flatten().cloned().collect();
        if all.is_empty() {
            return Ok(Default::default());
        }
        let present = crate::store::suppressions::present(c, &all).await?;
        Ok(hashes
            .iter()
            .enumerate()
            .filter(|(_, hs)| hs.iter().any(|h| present.contains(h)))
            .map(|(i, _)| i)
            .collect())
    }

    /// Every subject the request's identifiers already point at, in one query per kind.
    async fn look_up<C: ConnectionTrait>(
        &self,
        c: &C,
        ids: &[Ids<'_>],
    ) -> Result<Known, IngestError> {
        let mut by_kind: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
        for (kind, value) in ids.iter().flat_map(|i| i.all.iter()) {
            for k in lookup_kinds(kind) {
                by_kind
                    .entry(k)
                    .or_default()
                    .extend(self.keyring.blind_indexes(k, value));
            }
        }
        let mut known = Known::new();
        for (kind, indexes) in by_kind {
            let indexes: Vec<String> = indexes.into_iter().collect();
            for (bi, subject) in repo::subjects_for(c, kind, &indexes).await? {
                known.insert((kind.to_owned(), bi), subject);
            }
        }
        Ok(known)
    }

    /// Finds or creates the one subject these identifiers belong to, merging subjects
    /// they link unless that would join two different user ids. The subject's data key
    /// is left in `keys`.
    async fn resolve<C: ConnectionTrait>(
        &self,
        c: &C,
        ids: &Ids<'_>,
        report: &mut IngestReport,
        pending: &mut Pending,
        known: &mut Known,
        keys: &mut HashMap<String, SubjectKey>,
    ) -> Result<String, IngestError> {
        let mut found: Vec<String> = Vec::new();
        let mut missing: Vec<(&str, &str)> = Vec::new();
        for (kind, value) in &ids.all {
            let hit = lookup_kinds(kind).iter().find_map(|k| {
                self.keyring
                    .blind_indexes(k, value)
                    .into_iter()
                    .find_map(|bi| known.get(&((*k).to_owned(), bi)).cloned())
            });
            let new_kind = if *kind == PREVIOUS_ID {
                "anonymous_id"
            } else {
                kind
            };
            match hit {
                Some(subject) if !found.contains(&subject) => found.push(subject),
                Some(_) => {}
                None => missing.push((new_kind, value)),
            }
        }
        let target = match found.first() {
            None => {
                // Time-ordered ids: a subject's rows (key, traits, aggregates, events)
                // are appended at the end of their indexes instead of all over them.
                let id = uuid::Uuid::now_v7().simple().to_string();
                let (key, wrapped) = SubjectKey::generate(self.master, &id)?;
                let at = self.received_at.unix_micros();
                pending.subjects.push(NewSubject {
                    id: id.clone(),
                    wrapped_key: wrapped,
                    created_at: at,
                    first_seen_at: at,
                    last_seen_at: at,
                });
                pending.new.insert(id.clone());
                keys.insert(id.clone(), key);
                report.subjects_created += 1;
                id
            }
            Some(first) => {
                // The strongest identifier (the userId, when known) comes first.
                let target = first.clone();
                if found.len() > 1 {
                    // Merging reads the tables: they must hold everything decided so far.
                    self.flush(c, pending).await?;
                    self.link(c, &target, &found[1..], report, known, keys)
                        .await?;
                    pending.loaded.clear();
                }
                if !keys.contains_key(&target) {
                    let key = self.subject_key(c, &target).await?;
                    keys.insert(target.clone(), key);
                }
                target
            }
        };
        let key = keys.get(&target).ok_or(StoreError::Corrupt {
            table: "subject_keys",
            reason: "a resolved subject has no data key".into(),
        })?;
        for (kind, value) in missing {
            let blind_index = self.keyring.blind_index(kind, value)?;
            known.insert((kind.to_owned(), blind_index.clone()), target.clone());
            pending.identifiers.push(IdentifierRow {
                kind: kind.to_owned(),
                blind_index,
                subject_id: target.clone(),
                sealed: key.seal(kind, value.as_bytes())?,
                created_at: self.received_at.unix_micros(),
            });
        }
        Ok(target)
    }

    /// Merges each of `others` into `target`, unless both hold a userId: that is recorded
    /// as a conflict.
    async fn link<C: ConnectionTrait>(
        &self,
        c: &C,
        target: &str,
        others: &[String],
        report: &mut IngestReport,
        known: &mut Known,
        keys: &mut HashMap<String, SubjectKey>,
    ) -> Result<(), IngestError> {
        let key = match keys.remove(target) {
            Some(k) => k,
            None => self.subject_key(c, target).await?,
        };
        let mut target_user = self.user_id_index(c, target).await?;
        for other in others {
            let other_user = self.user_id_index(c, other).await?;
            if target_user.is_some() && other_user.is_some() {
                let id = uuid::Uuid::new_v4().simple().to_string();
                repo::insert_conflict(
                    c,
                    &id,
                    target,
                    other,
                    "two different userIds",
                    self.received_at.unix_micros(),
                )
                .await?;
                report.conflicts += 1;
                continue;
            }
            self.merge(c, other, target, &key).await?;
            report.merged += 1;
            keys.remove(other);
            for owner in known.values_mut().filter(|s| *s == other) {
                *owner = target.to_owned();
            }
            // A userId merged in now counts against the next subject's.
            target_user = target_user.or(other_user);
        }
        keys.insert(target.to_owned(), key);
        Ok(())
    }

    async fn subject_key<C: ConnectionTrait>(
        &self,
        c: &C,
        id: &str,
    ) -> Result<SubjectKey, IngestError> {
        let wrapped = repo::subject_key(c, id).await?.ok_or(StoreError::Corrupt {
            table: "subject_keys",
            reason: "an active subject has no data key".into(),
        })?;
        Ok(SubjectKey::unwrap(self.master, id, &wrapped)?)
    }

    async fn user_id_index<C: ConnectionTrait>(
        &self,
        c: &C,
        subject: &str,
    ) -> Result<Option<String>, IngestError> {
        Ok(repo::identifiers_of(c, subject)
            .await?
            .into_iter()
            .find(|r| r.kind == "user_id")
            .map(|r| r.blind_index))
    }

    /// Moves everything of `from` to `into` (identifiers and sealed traits re-sealed under
    /// `into`'s key), re-points its events, marks it merged and audits the merge.
    async fn merge<C: ConnectionTrait>(
        &self,
        c: &C,
        from: &str,
        into: &str,
        into_key: &SubjectKey,
    ) -> Result<(), IngestError> {
        let from_key = self.subject_key(c, from).await?;
        for mut row in repo::identifiers_of(c, from).await? {
            let value = from_key.open(&row.kind, &row.sealed)?;
            row.sealed = into_key.seal(&row.kind, &value)?;
            row.subject_id = into.to_owned();
            repo::move_identifier(c, &row).await?;
        }
        let kept: Vec<TraitRow> = repo::traits_of(c, into).await?;
        for mut t in repo::traits_of(c, from).await? {
            repo::delete_trait(c, from, &t.name).await?;
            if kept
                .iter()
                .any(|k| k.name == t.name && k.updated_at >= t.updated_at)
            {
                continue;
            }
            if let Some(sealed) = &t.sealed {
                let aad = format!("trait:{}", t.name);
                t.sealed = Some(into_key.seal(&aad, &from_key.open(&aad, sealed)?)?);
            }
            t.subject_id = into.to_owned();
            repo::upsert_trait(c, &t).await?;
        }
        if let Some(theirs) = aggregates::load(c, from).await? {
            let mut ours = aggregates::load(c, into).await?.unwrap_or_default();
            ours.absorb(&theirs);
            aggregates::save(c, into, &ours, self.received_at.unix_micros()).await?;
            aggregates::delete(c, from).await?;
        }
        crate::store::consents::repoint(c, from, into).await?;
        crate::store::recipients::repoint_pseudonyms(c, from, into).await?;
        crate::store::disclosures::repoint(c, from, into).await?;
        crate::store::subject_flags::repoint(c, from, into).await?;
        crate::store::experiments::repoint(c, from, into).await?;
        repo::finish_merge(c, from, into).await?;
        let entry = NewEntry {
            subject_ref: Some(self.audit.subject_ref(into)?),
            ..NewEntry::new(self.source.clone(), "subject.merge", Outcome::Ok)
                .request_id(self.request_id.clone())
                .attributes(vec![format!("merged:{}", self.audit.subject_ref(from)?)])
        };
        self.audit.append(c, entry).await?;
        Ok(())
    }

    async fn store_message<C: ConnectionTrait>(
        &self,
        c: &C,
        m: &Message,
        subject: &str,
        key: &SubjectKey,
        attributes: &mut BTreeSet<String>,
        pending: &mut Pending,
    ) -> Result<(), IngestError> {
        let at = m.timestamp.unix_micros();
        if m.kind == Kind::Identify {
            for (name, value) in &m.traits {
                let class = self.policies.taxonomy.classify(name);
                let (value, sealed) = if class.sealed {
                    let aad = format!("trait:{name}");
                    (None, Some(key.seal(&aad, value.to_string().as_bytes())?))
                } else {
                    (Some(value.to_string()), None)
                };
                let category = class.category;
                pending.traits.insert(
                    (subject.to_owned(), name.clone()),
                    TraitRow {
                        subject_id: subject.to_owned(),
                        name: name.clone(),
                        value,
                        sealed,
                        category: category.to_owned(),
                        updated_at: at,
                    },
                );
                attributes.insert(format!("trait:{name}"));
            }
        }
        let mut properties = Value::Object(m.properties.clone());
        keep_campaign(&mut properties, &m.context);
        self.policies.taxonomy.strip_identifiers(&mut properties);
        pending.events.push(EventRow {
            id: uuid::Uuid::now_v7().simple().to_string(),
            subject_id: subject.to_owned(),
            source_key_id: self.dedupe_scope(),
            message_id: m.message_id.clone(),
            kind: m.kind.as_str().to_owned(),
            name: m.event.clone().or_else(|| m.name.clone()),
            properties: properties.to_string(),
            occurred_at: at,
            received_at: self.received_at.unix_micros(),
        });
        let seen = pending.seen.entry(subject.to_owned()).or_insert((at, at));
        *seen = (seen.0.min(at), seen.1.max(at));
        if !pending.aggregates.contains_key(subject) {
            let stored = if pending.new.contains(subject) {
                Aggregates::default()
            } else if let Some(a) = pending.loaded.remove(subject) {
                a
            } else {
                aggregates::load(c, subject).await?.unwrap_or_default()
            };
            pending.aggregates.insert(subject.to_owned(), stored);
        }
        if let Some(agg) = pending.aggregates.get_mut(subject) {
            agg.apply(
                m.kind.as_str(),
                m.event.as_deref().or(m.name.as_deref()),
                &m.properties,
                at,
            );
        }
        attributes.insert(format!("event:{}", m.kind.as_str()));
        self.consent_signals(m, subject, at, pending)?;
        Ok(())
    }
}

/// Keeps Segment's `context.campaign` (the UTM parameters of the visit: `name`, `source`,
/// `medium`, `term`, `content`) with the event, as `properties.context_campaign`, so that
/// an order placed after a click on a campaign's link can be attributed to the campaign
/// and the experiment variant (`utm_campaign`, `utm_content`). The rest of `context` is
/// not kept. Text values only; a `context_campaign` the sender set itself wins.
fn keep_campaign(properties: &mut Value, context: &serde_json::Map<String, Value>) {
    let Some(campaign) = context.get("campaign").and_then(Value::as_object) else {
        return;
    };
    let kept: serde_json::Map<String, Value> = ["name", "source", "medium", "term", "content"]
        .iter()
        .filter_map(|k| {
            let v = campaign.get(*k)?.as_str()?;
            Some(((*k).to_owned(), Value::from(v)))
        })
        .collect();
    if let Some(p) = properties.as_object_mut()
        && !kept.is_empty()
        && !p.contains_key("context_campaign")
    {
        p.insert("context_campaign".into(), Value::Object(kept));
    }
}

/// Marks abandoned every cart left untouched for `quiet_secs`, in one transaction with
/// its audit entry. Returns how many carts were marked.
pub async fn sweep_abandoned_carts(
    db: &Db,
    audit: &AuditLog,
    now: Timestamp,
    quiet_secs: i64,
) -> Result<u64, IngestError> {
    let txn = db.begin_write().await?;
    let cutoff = now.plus_seconds(-quiet_secs).unix_micros();
    let n = aggregates::mark_abandoned(&txn, cutoff, now.unix_micros()).await?;
    if n > 0 {
        let entry = NewEntry::new(Actor::system(), "aggregates.cart_abandoned", Outcome::Ok)
            .attributes(vec![format!("carts:{n}")]);
        audit.append(&txn, entry).await?;
    }
    txn.commit().await.map_err(StoreError::from)?;
    Ok(n)
}
