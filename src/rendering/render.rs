//! Rendering a checked template for one minimised view. The HTML body is escaped as
//! handlebars.js escapes it (`{{x}}` escaped, `{{{x}}}` raw); the subject line and the
//! text body are not HTML, so they are not escaped.
use std::collections::BTreeSet;

use handlebars::template::Template;
use handlebars::{Handlebars, handlebars_helper, no_escape};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::policy::gate::{MinimisedProfile, PurposeGrant};

/// One message, rendered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Rendered {
    pub subject: String,
    pub html: String,
    pub text: String,
}

// `{{default value "fallback"}}`: the fallback when the value is missing, null or empty.
handlebars_helper!(default_helper: |v: Json, fallback: Json| {
    match v {
        Value::Null => fallback.clone(),
        Value::String(s) if s.is_empty() => fallback.clone(),
        other => other.clone(),
    }
});

/// The three parts of a template, ready to render many times.
pub struct Renderer {
    html: Handlebars<'static>,
    plain: Handlebars<'static>,
}

fn registry(escape: bool) -> Handlebars<'static> {
    let mut h = Handlebars::new();
    if !escape {
        h.register_escape_fn(no_escape);
    }
    h.register_helper("default", Box::new(default_helper));
    h
}

/// Names a partial may not have (the parts themselves).
pub const RESERVED: [&str; 3] = ["subject", "html", "text"];

impl Renderer {
    pub fn new(subject: Template, html: Template, text: Template) -> Self {
        Self::with_partials(subject, html, text, Vec::new())
    }

    /// With partials (`{{> name}}`): HTML-escaped in the HTML body, not in the others.
    pub fn with_partials(
        subject: Template,
        html: Template,
        text: Template,
        partials: Vec<(String, Template)>,
    ) -> Self {
        let mut h = registry(true);
        let mut p = registry(false);
        for (name, t) in partials {
            if RESERVED.contains(&name.as_str()) {
                continue;
            }
            h.register_template(&name, t.clone());
            p.register_template(&name, t);
        }
        h.register_template("html", html);
        p.register_template("subject", subject);
        p.register_template("text", text);
        Self { html: h, plain: p }
    }

    pub fn render(&self, data: &Value) -> Result<Rendered, handlebars::RenderError> {
        Ok(Rendered {
            subject: self.plain.render("subject", data)?.trim().to_owned(),
            html: self.html.render("html", data)?,
            text: self.plain.render("text", data)?,
        })
    }
}

/// Whole numbers as integers, as JavaScript prints them (`10`, not `10.0`).
fn as_js(v: Value) -> Value {
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
            _ => Value::Number(n),
        },
        Value::Array(a) => Value::Array(a.into_iter().map(as_js).collect()),
        Value::Object(m) => Value::Object(m.into_iter().map(|(k, v)| (k, as_js(v))).collect()),
        other => other,
    }
}

fn missing(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        _ => false,
    }
}

/// What a template sees of one person: the view and nothing else, traits under the names
/// the taxonomy lists (a trait sent as `firstName` is `first_name`) and as stored
/// (`traits.firstName`), `aggregates`, `scores`, and `extra` (`recommendations`,
/// `unsubscribe_url` ...); each of the template's top-level `names` that is another
/// spelling of an attribute; then each `fallbacks` value where the data has none.
pub fn data_of(
    view: &MinimisedProfile,
    grant: &PurposeGrant,
    names: &BTreeSet<String>,
    fallbacks: &Map<String, Value>,
    extra: Map<String, Value>,
) -> Value {
    let taxonomy = &grant.policies().taxonomy;
    let mut o = Map::new();
    o.insert("pseudonym".into(), Value::from(view.pseudonym().as_ref()));
    if let Some(e) = view.email() {
        o.insert("email".into(), Value::from(e));
    }
    if let Some(p) = view.phone() {
        o.insert("phone".into(), Value::from(p));
    }
    let mut traits = Map::new();
    for (name, v) in view.traits() {
        let canonical = taxonomy.canonical(name).unwrap_or(name);
        if missing(o.get(canonical)) {
            o.insert(canonical.to_owned(), v.clone());
        }
        traits.insert(name.to_owned(), v.clone());
    }
    o.insert("traits".into(), Value::Object(traits));
    let aggregates: Map<String, Value> = view
        .aggregates()
        .map(|(k, v)| (k.to_owned(), v.clone()))
        .collect();
    o.insert("aggregates".into(), Value::Object(aggregates));
    let scores: Map<String, Value> = view
        .scores()
        .map(|(k, v)| (k.to_owned(), v.clone()))
        .collect();
    o.insert("scores".into(), Value::Object(scores));
    o.insert("recommendations".into(), Value::Array(Vec::new()));
    o.extend(extra);
    // A token spelled as an alias (`customer_name`) reads the attribute it names.
    for name in names {
        if missing(o.get(name))
            && let Some(c) = taxonomy.canonical(name)
            && let Some(v) = o.get(c).cloned()
        {
            o.insert(name.clone(), v);
        }
    }
    for (k, v) in fallbacks {
        if missing(o.get(k)) {
            o.insert(k.clone(), v.clone());
        }
    }
    as_js(Value::Object(o))
}
