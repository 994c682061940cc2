//! Segment tracking-spec messages (`identify`, `track`, `page`, `screen`, `group`,
//! `alias`, and `batch` of them), parsed and checked whole before anything is stored.
//!
//! What is accepted is what Segment's own HTTP API accepts from its client libraries:
//! ids as strings or numbers, unknown top-level fields (`_metadata`, `writeKey`,
//! `version`, ...) ignored, batch-level `context` and `integrations` applied to every
//! message, `timestamp` corrected for client clock skew with `sentAt`
//! (`timestamp + (receivedAt - sentAt)`). Limits as Segment documents them: 32 KB per
//! message, 500 KB per batch request.
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::domain::Timestamp;

pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;
pub const MAX_BATCH_BYTES: usize = 500 * 1024;
const MAX_ID_CHARS: usize = 512;
const MAX_NAME_CHARS: usize = 1024;
/// How far ahead of the time it was received an event may claim to have happened.
const MAX_FUTURE_SECS: i64 = 24 * 3600;
/// 2000-01-01T00:00:00Z: nothing tracked happened before.
pub(crate) const EARLIEST_US: i64 = 946_684_800_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Identify,
    Track,
    Page,
    Screen,
    Group,
    Alias,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Identify,
        Kind::Track,
        Kind::Page,
        Kind::Screen,
        Kind::Group,
        Kind::Alias,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Identify => "identify",
            Kind::Track => "track",
            Kind::Page => "page",
            Kind::Screen => "screen",
            Kind::Group => "group",
            Kind::Alias => "alias",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One checked message.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub kind: Kind,
    /// The client's `messageId`; generated (`gen-<uuid>`) when the client sent none, in
    /// which case retries cannot be recognised.
    pub message_id: String,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    /// `alias`: the id being linked to `user_id`.
    pub previous_id: Option<String>,
    /// `group`: the account or company.
    pub group_id: Option<String>,
    /// `track`: the event name, e.g. `Order Completed`.
    pub event: Option<String>,
    /// `page` / `screen`: the page name.
    pub name: Option<String>,
    pub category: Option<String>,
    pub traits: Map<String, Value>,
    pub properties: Map<String, Value>,
    pub context: Map<String, Value>,
    pub integrations: Map<String, Value>,
    /// When it happened, corrected for the client's clock skew.
    pub timestamp: Timestamp,
    pub sent_at: Option<Timestamp>,
    /// Identifiers given directly as (kind, normalised value), by imports; a tracking
    /// message carries its identifiers in the fields above and leaves this empty.
    pub identifiers: Vec<(String, String)>,
    /// Consent decisions given directly by a trusted source (the synthetic population):
    /// (consent, status, method), captured at `timestamp`. The tracking API never fills
    /// it; clients send `context.consent` instead.
    pub consents: Vec<(String, &'static str, &'static str)>,
}

impl Message {
    /// A message with nothing but its kind, id and time, for sources other than the
    /// tracking API (imports, the synthetic population) to fill in.
    pub fn new(kind: Kind, message_id: String, timestamp: Timestamp) -> Self {
        Self {
            kind,
            message_id,
            user_id: None,
            anonymous_id: None,
            previous_id: None,
            group_id: None,
            event: None,
            name: None,
            category: None,
            traits: Map::new(),
            properties: Map::new(),
            context: Map::new(),
            integrations: Map::new(),
            timestamp,
            sent_at: None,
            identifiers: Vec::new(),
            consents: Vec::new(),
        }
    }
}

/// Why a message was refused: the field (a JSON path, with the batch index) and the reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct MessageError {
    pub index: Option<usize>,
    pub field: String,
    pub reason: String,
}

fn err(field: &str, reason: impl Into<String>) -> MessageError {
    MessageError {
        index: None,
        field: field.to_owned(),
        reason: reason.into(),
    }
}

fn at_index(mut e: MessageError, i: usize) -> MessageError {
    e.index = Some(i);
    e.field = if e.field.is_empty() {
        format!("batch[{i}]")
    } else {
        format!("batch[{i}].{}", e.field)
    };
    e
}

/// Parses the body of `POST /v1/<kind>`.
pub fn parse_single(
    kind: Kind,
    body: &[u8],
    received_at: Timestamp,
) -> Result<Message, MessageError> {
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(err(
            "",
            format!("a message is limited to 32 KB ({MAX_MESSAGE_BYTES} bytes)"),
        ));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| err("", json_reason(&e)))?;
    let obj = value
        .as_object()
        .ok_or_else(|| err("", "the body must be a JSON object"))?;
    parse_object(Some(kind), obj, None, received_at)
}

#[derive(Deserialize)]
struct BatchBody<'a> {
    #[serde(borrow)]
    batch: Option<Vec<&'a RawValue>>,
    #[serde(default)]
    context: Option<Value>,
    #[serde(default)]
    integrations: Option<Value>,
    #[serde(default, rename = "sentAt")]
    sent_at: Option<Value>,
}

/// Parses the body of `POST /v1/batch`. One bad message refuses the whole batch.
pub fn parse_batch(body: &[u8], received_at: Timestamp) -> Result<Vec<Message>, MessageError> {
    if body.len() > MAX_BATCH_BYTES {
        return Err(err(
            "",
            format!("a batch request is limited to 500 KB ({MAX_BATCH_BYTES} bytes)"),
        ));
    }
    let parsed: BatchBody<'_> =
        serde_json::from_slice(body).map_err(|e| err("", json_reason(&e)))?;
    let items = parsed
        .batch
        .ok_or_else(|| err("batch", "a batch request needs a `batch` array of messages"))?;
    if items.is_empty() {
        return Err(err("batch", "the batch is empty"));
    }
    let shared_context = object_field(parsed.context.as_ref(), "context")?;
    let shared_integrations = object_field(parsed.integrations.as_ref(), "integrations")?;
    let shared = Shared {
        context: shared_context,
        integrations: shared_integrations,
        sent_at: parsed
            .sent_at
            .as_ref()
            .map(|v| time_field(v, "sentAt"))
            .transpose()?,
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, raw) in items.iter().enumerate() {
        if raw.get().len() > MAX_MESSAGE_BYTES {
            return Err(at_index(
                err(
                    "",
                    format!("a message is limited to 32 KB ({MAX_MESSAGE_BYTES} bytes)"),
                ),
                i,
            ));
        }
        let value: Value =
            serde_json::from_str(raw.get()).map_err(|e| at_index(err("", json_reason(&e)), i))?;
        let obj = value
            .as_object()
            .ok_or_else(|| at_index(err("", "each message must be a JSON object"), i))?;
        out.push(parse_object(None, obj, Some(&shared), received_at).map_err(|e| at_index(e, i))?);
    }
    Ok(out)
}

struct Shared {
    context: Map<String, Value>,
    integrations: Map<String, Value>,
    sent_at: Option<Timestamp>,
}

fn json_reason(e: &serde_json::Error) -> String {
    // serde_json's messages can quote input; keep only the category and position.
    format!(
        "not valid JSON ({:?} error at line {} column {})",
        e.classify(),
        e.line(),
        e.column()
    )
}

fn parse_object(
    route: Option<Kind>,
    obj: &Map<String, Value>,
    shared: Option<&Shared>,
    received_at: Timestamp,
) -> Result<Message, MessageError> {
    let kind = match (route, obj.get("type")) {
        (Some(k), None | Some(Value::Null)) => k,
        (route, Some(Value::String(t))) => {
            let k = Kind::parse(t).ok_or_else(|| {
                err(
                    "type",
                    "must be identify, track, page, screen, group or alias",
                )
            })?;
            if route.is_some_and(|r| r != k) {
                return Err(err(
                    "type",
                    format!(
                        "this route takes {} messages",
                        route.map_or("", Kind::as_str)
                    ),
                ));
            }
            k
        }
        (None, None | Some(Value::Null)) => {
            return Err(err("type", "each batch message needs a type"));
        }
        (_, Some(_)) => return Err(err("type", "must be a string")),
    };
    let user_id = id_field(obj, "userId")?;
    let anonymous_id = id_field(obj, "anonymousId")?;
    let previous_id = id_field(obj, "previousId")?;
    let group_id = id_field(obj, "groupId")?;
    match kind {
        Kind::Alias => {
            if user_id.is_none() {
                return Err(err("userId", "an alias call needs the new userId"));
            }
            if previous_id.is_none() {
                return Err(err(
                    "previousId",
                    "an alias call needs the previousId it links",
                ));
            }
        }
        _ if user_id.is_none() && anonymous_id.is_none() => {
            return Err(err(
                "userId",
                "every message needs a userId or an anonymousId",
            ));
        }
        Kind::Group if group_id.is_none() => {
            return Err(err("groupId", "a group call needs a groupId"));
        }
        _ => {}
    }
    let event = name_field(obj, "event")?;
    if kind == Kind::Track && event.is_none() {
        return Err(err("event", "a track call needs an event name"));
    }
    let message_id = match obj.get("messageId") {
        None | Some(Value::Null) => format!("gen-{}", uuid::Uuid::new_v4()),
        Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= 255 => s.clone(),
        Some(Value::String(_)) => return Err(err("messageId", "must be 1-255 characters")),
        Some(_) => return Err(err("messageId", "must be a string")),
    };
    let mut context = object_field(obj.get("context"), "context")?;
    let mut integrations = object_field(obj.get("integrations"), "integrations")?;
    if let Some(shared) = shared {
        for (k, v) in &shared.context {
            context.entry(k.clone()).or_insert_with(|| v.clone());
        }
        for (k, v) in &shared.integrations {
            integrations.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    let sent_at = match obj.get("sentAt") {
        None | Some(Value::Null) => shared.and_then(|s| s.sent_at),
        Some(v) => Some(time_field(v, "sentAt")?),
    };
    let stamped = match obj.get("timestamp") {
        None | Some(Value::Null) => obj
            .get("originalTimestamp")
            .filter(|v| !v.is_null())
            .map(|v| ("originalTimestamp", v)),
        Some(v) => Some(("timestamp", v)),
    };
    let timestamp = match stamped {
        None => received_at,
        Some((field, v)) => {
            let t = time_field(v, field)?;
            match sent_at {
                Some(sent) => Timestamp::from_unix_micros(
                    t.unix_micros() + (received_at.unix_micros() - sent.unix_micros()),
                ),
                None => t,
            }
        }
    };
    if timestamp > received_at.plus_seconds(MAX_FUTURE_SECS) {
        return Err(err("timestamp", "is more than 24 hours in the future"));
    }
    if timestamp.unix_micros() < EARLIEST_US {
        return Err(err("timestamp", "is before the year 2000"));
    }
    let (traits_field, properties_field) = match kind {
        Kind::Identify | Kind::Group => ("traits", None),
        _ => ("traits", Some("properties")),
    };
    Ok(Message {
        kind,
        message_id,
        user_id,
        anonymous_id,
        previous_id,
        group_id,
        event,
        name: name_field(obj, "name")?,
        category: name_field(obj, "category")?,
        traits: object_field(obj.get(traits_field), traits_field)?,
        properties: match properties_field {
            Some(f) => object_field(obj.get(f), f)?,
            None => Map::new(),
        },
        context,
        integrations,
        timestamp,
        sent_at,
        identifiers: Vec::new(),
        consents: Vec::new(),
    })
}

/// An id: a non-empty string or an integer (Segment's clients send both), as a string.
fn id_field(obj: &Map<String, Value>, field: &str) -> Result<Option<String>, MessageError> {
    let s = match obj.get(field) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s.trim().to_owned(),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
        Some(_) => return Err(err(field, "must be a string or an integer")),
    };
    if s.is_empty() {
        return Ok(None);
    }
    if s.chars().count() > MAX_ID_CHARS || s.chars().any(char::is_control) {
        return Err(err(
            field,
            format!("must be at most {MAX_ID_CHARS} printable characters"),
        ));
    }
    Ok(Some(s))
}

fn name_field(obj: &Map<String, Value>, field: &str) -> Result<Option<String>, MessageError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) if s.chars().count() <= MAX_NAME_CHARS => {
            Ok(Some(s.trim().to_owned()))
        }
        Some(Value::String(_)) => Err(err(
            field,
            format!("must be at most {MAX_NAME_CHARS} characters"),
        )),
        Some(_) => Err(err(field, "must be a string")),
    }
}

fn object_field(v: Option<&Value>, field: &str) -> Result<Map<String, Value>, MessageError> {
    match v {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(_) => Err(err(field, "must be a JSON object")),
    }
}

fn time_field(v: &Value, field: &str) -> Result<Timestamp, MessageError> {
    let s = v
        .as_str()
        .ok_or_else(|| err(field, "must be an ISO 8601 date-time string"))?;
    Timestamp::parse_rfc3339(s).ok_or_else(|| {
        err(
            field,
            "must be an ISO 8601 date-time with a time zone, e.g. 2026-12-01T10:00:00.000Z",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> Timestamp {
        Timestamp::parse_rfc3339("2026-12-01T10:00:00Z").unwrap()
    }

    fn single(kind: Kind, v: Value) -> Result<Message, MessageError> {
        parse_single(kind, v.to_string().as_bytes(), now())
    }

    #[test]
    fn a_python_client_batch_parses_with_its_extra_fields() {
        // The shape segment-analytics-python sends.
        let body = json!({
            "batch": [
                {"type": "identify", "userId": "u1", "traits": {"email": "jane@example.com"},
                 "messageId": "m1", "timestamp": "2026-12-01T09:59:59.000000+00:00",
                 "context": {"library": {"name": "analytics-python", "version": "2.3.2"}},
                 "integrations": {}, "_metadata": {}},
                {"type": "track", "anonymousId": 42, "event": "Order Completed",
                 "properties": {"revenue": 30.5}, "messageId": "m2"}
            ],
            "sentAt": "2026-12-01T09:59:59.500000+00:00",
            "writeKey": "ignored",
            "context": {"ip": "0.0.0.0"}
        });
        let msgs = parse_batch(body.to_string().as_bytes(), now()).unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].kind, Kind::Identify);
        assert_eq!(msgs[0].traits["email"], "jane@example.com");
        assert_eq!(msgs[1].anonymous_id.as_deref(), Some("42"));
        assert_eq!(msgs[1].event.as_deref(), Some("Order Completed"));
        // Batch context reaches every message; the message's own keys win.
        assert_eq!(msgs[0].context["ip"], "0.0.0.0");
        assert_eq!(msgs[0].context["library"]["name"], "analytics-python");
        // Skew correction: the client's clock is 0.5 s behind (sent at 09:59:59.5 by its
        // clock, received at 10:00:00), so its 09:59:59.0 is 09:59:59.5.
        assert_eq!(
            msgs[0].timestamp,
            Timestamp::parse_rfc3339("2026-12-01T09:59:59.500Z").unwrap()
        );
    }

    #[test]
    fn each_call_needs_its_own_fields() {
        let cases = [
            (Kind::Track, json!({"userId": "u"}), "event"),
            (Kind::Identify, json!({"traits": {}}), "userId"),
            (Kind::Alias, json!({"userId": "u"}), "previousId"),
            (Kind::Alias, json!({"previousId": "a"}), "userId"),
            (Kind::Group, json!({"userId": "u"}), "groupId"),
            (Kind::Track, json!({"userId": "u", "event": 5}), "event"),
            (
                Kind::Track,
                json!({"userId": ["u"], "event": "e"}),
                "userId",
            ),
            (
                Kind::Track,
                json!({"userId": "u", "event": "e", "properties": []}),
                "properties",
            ),
            (
                Kind::Track,
                json!({"userId": "u", "event": "e", "type": "identify"}),
                "type",
            ),
            (
                Kind::Track,
                json!({"userId": "u", "event": "e", "timestamp": "yesterday"}),
                "timestamp",
            ),
            (
                Kind::Track,
                json!({"userId": "u", "event": "e", "timestamp": "2031-01-01T00:00:00Z"}),
                "timestamp",
            ),
            (
                Kind::Track,
                json!({"userId": "u", "event": "e", "timestamp": "1999-01-01T00:00:00Z"}),
                "timestamp",
            ),
            (
                Kind::Track,
                json!({"userId": "", "anonymousId": null, "event": "e"}),
                "userId",
            ),
        ];
        for (kind, body, field) in cases {
            let e = single(kind, body.clone()).unwrap_err();
            assert_eq!(e.field, field, "{body}: {e}");
        }
        assert!(single(Kind::Page, json!({"anonymousId": "a", "name": "Home"})).is_ok());
        assert!(single(Kind::Screen, json!({"userId": 7})).is_ok());
    }

    #[test]
    fn one_bad_message_refuses_the_batch_and_names_its_index() {
        let body = json!({"batch": [
            {"type": "track", "userId": "u", "event": "ok"},
            {"type": "track", "userId": "u"},
        ]});
        let e = parse_batch(body.to_string().as_bytes(), now()).unwrap_err();
        assert_eq!(e.index, Some(1));
        assert_eq!(e.field, "batch[1].event");
        let e = parse_batch(br#"{"batch": [{"userId": "u"}]}"#, now()).unwrap_err();
        assert_eq!(e.field, "batch[0].type");
        assert!(parse_batch(br#"{"batch": []}"#, now()).is_err());
        assert!(parse_batch(br#"{"messages": []}"#, now()).is_err());
    }

    #[test]
    fn size_limits_are_segments() {
        let big = "x".repeat(MAX_MESSAGE_BYTES);
        let body = json!({"userId": "u", "event": "e", "properties": {"blob": big}});
        assert!(single(Kind::Track, body.clone()).is_err());
        let batch = json!({"batch": [{"type": "track", "userId": "u", "event": "e", "properties": {"blob": big}}]});
        let e = parse_batch(batch.to_string().as_bytes(), now()).unwrap_err();
        assert_eq!(e.index, Some(0));
        let small = json!({"type": "track", "userId": "u", "event": "e", "properties": {"blob": "x".repeat(20_000)}});
        let many: Vec<Value> = std::iter::repeat_n(small, 30).collect();
        let e = parse_batch(json!({"batch": many}).to_string().as_bytes(), now()).unwrap_err();
        assert!(e.reason.contains("500"), "{e}");
    }

    #[test]
    fn errors_never_quote_the_input() {
        let e = parse_single(
            Kind::Track,
            br#"{"userId": "jane@example.com", "event": }"#,
            now(),
        )
        .unwrap_err();
        assert!(!e.to_string().contains("jane"), "{e}");
        let e = single(
            Kind::Track,
            json!({"userId": {"email": "jane@example.com"}, "event": "e"}),
        )
        .unwrap_err();
        assert!(!e.to_string().contains("jane"), "{e}");
    }

    #[test]
    fn a_missing_message_id_is_generated_and_a_given_one_kept() {
        let m = single(Kind::Track, json!({"userId": "u", "event": "e"})).unwrap();
        assert!(m.message_id.starts_with("gen-"));
        let m = single(
            Kind::Track,
            json!({"userId": "u", "event": "e", "messageId": "abc"}),
        )
        .unwrap();
        assert_eq!(m.message_id, "abc");
    }
}
