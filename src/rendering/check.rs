//! Compiling a template and checking every variable it reads against the purpose: a
//! top-level name is a profile attribute (by the taxonomy; `first_name`, `country` ...),
//! `email`, `phone`, `pseudonym`, `aggregates.NAME`, `scores.NAME`, `traits.NAME` (as
//! stored) or `recommendations` (each with `id`, `name`, `product_name`, `url`,
//! `image_url`, `price`, `currency`); `#each` and `#with` move into what they name, and
//! `../` back out. Helpers: `if`, `unless`, `each`, `with`, `lookup`, `log` (those of
//! handlebars.js) and `default`.
use std::collections::BTreeMap;

use handlebars::template::{
    DecoratorTemplate, HelperTemplate, Parameter, Template, TemplateElement,
};
use handlebars::{Path, PathSeg};
use serde::Serialize;
use utoipa::ToSchema;

use crate::policy::LegalBasis;
use crate::policy::gate::{AGGREGATE_CATEGORIES, PurposeGrant, SCORE_CATEGORY};

/// The helpers a template may call.
pub const HELPERS: [&str; 7] = ["if", "unless", "each", "with", "lookup", "log", "default"];
/// What a recommendation holds.
pub const RECOMMENDATION_FIELDS: [&str; 7] = [
    "id",
    "name",
    "product_name",
    "url",
    "image_url",
    "price",
    "currency",
];
/// Recommendations come from browsing and purchase events.
const BEHAVIOUR: [&str; 2] = [
    "user.behavior.browsing_history",
    "user.behavior.purchase_history",
];

/// A template that does not compile, with where.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct TemplateError {
    /// `subject`, `html` or `text`.
    pub part: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{} line {l}, column {c}: {}", self.part, self.message),
            _ => write!(f, "{}: {}", self.part, self.message),
        }
    }
}

/// Compiles one part of a template.
pub fn compile(part: &str, source: &str) -> Result<Template, TemplateError> {
    Template::compile(source).map_err(|e| {
        let (line, column) = e.pos().map_or((None, None), |(l, c)| (Some(l), Some(c)));
        TemplateError {
            part: part.to_owned(),
            line,
            column,
            message: e.reason().to_string(),
        }
    })
}

/// One token the purpose may not read (or that is not a known name).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Offence {
    pub part: String,
    /// The token as written, e.g. `last_name`, `this.image_url`, `#each recommendations`.
    pub token: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl std::fmt::Display for Offence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} line {}, column {}: {}: {}",
            self.part, self.line, self.column, self.token, self.message
        )
    }
}

struct Walker<'a> {
    grant: &'a PurposeGrant,
    part: String,
    out: Vec<Offence>,
    roots: std::collections::BTreeSet<String>,
    partials: &'a BTreeMap<String, Template>,
    /// The partials being walked into (a partial may not include itself).
    stack: Vec<String>,
    /// Partial uses walked so far, each a copy rendering would make.
    expansions: usize,
}

/// At most this many partial uses in one part, counting each use inside a partial as
/// many times as that partial is used: partials that each use another twice would
/// otherwise make a message of a million copies.
pub const MAX_PARTIAL_EXPANSIONS: usize = 1_000;

/// The named segments of a path and how many `../` it starts with.
fn split(path: &Path) -> Option<(usize, Vec<String>, String)> {
    match path {
        Path::Relative((segs, raw)) => {
            let ups = raw.matches("../").count();
            let names = segs
                .iter()
                .filter_map(|s| match s {
                    PathSeg::Named(n) => Some(n.clone()),
                    _ => None,
                })
                .collect();
            Some((ups, names, raw.clone()))
        }
        // `@index`, `@key`, `@first`, `@last`, `@root`...
        Path::Local(_) => None,
    }
}

impl Walker<'_> {
    fn offend(&mut self, token: &str, at: (usize, usize), message: String) {
        self.out.push(Offence {
            part: self.part.clone(),
            token: token.to_owned(),
            line: at.0,
            column: at.1,
            message,
        });
    }

    /// What `full` (from the profile root; `[]` for a list's element) is, or why not.
    fn judge(&self, full: &[String]) -> Result<(), String> {
        let purpose = &self.grant.purpose();
        let reads = |c: &str| purpose.may_read(c);
        let Some(first) = full.first() else {
            return Ok(());
        };
        let rest = &full[1..];
        match first.as_str() {
            "pseudonym" | "unsubscribe_url" | "campaign" | "variant" => Ok(()),
            "email" if reads("user.contact.email") => Ok(()),
            "phone" if reads("user.contact.phone_number") => Ok(()),
            "email" | "phone" => Err(format!("purpose {} may not read it", purpose.name)),
            "recommendations" => {
                if !BEHAVIOUR.iter().any(|c| reads(c)) {
                    return Err(format!(
                        "recommendations come from browsing and purchase history, which purpose {} may not read",
                        purpose.name
                    ));
                }
                match rest {
                    [] | [_] => Ok(()),
                    [_, field, ..] if RECOMMENDATION_FIELDS.contains(&field.as_str()) => Ok(()),
                    _ => Err(format!(
                        "a recommendation has {}",
                        RECOMMENDATION_FIELDS.join(", ")
                    )),
                }
            }
            "aggregates" => match rest.first() {
                None => Ok(()),
                Some(name) => match AGGREGATE_CATEGORIES.iter().find(|(n, _)| n == name) {
                    None => Err(format!(
                        "not an aggregate; known: {}",
                        AGGREGATE_CATEGORIES
                            .iter()
                            .map(|(n, _)| *n)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                    Some((_, c)) if reads(c) => Ok(()),
                    Some((_, c)) => Err(format!("purpose {} may not read {c}", purpose.name)),
                },
            },
            "scores" => {
                let profiling = purpose.profiling && purpose.legal_basis == LegalBasis::Consent;
                if profiling && reads(SCORE_CATEGORY) {
                    Ok(())
                } else {
                    Err(format!(
                        "scores are profiling (GDPR Art. 22): only a purpose marked profiling, on consent, may read them; {} is not",
                        purpose.name
                    ))
                }
            }
            "traits" => match rest.first() {
                None => Err("name the trait: traits.NAME".into()),
                Some(name) => self.attribute(name),
            },
            name => self.attribute(name),
        }
    }

    fn attribute(&self, name: &str) -> Result<(), String> {
        let c = self.grant.policies().taxonomy.classify(name);
        if c.category == crate::policy::UNCLASSIFIED {
            return Err(
                "not an attribute the taxonomy knows (policies/taxonomy.yaml), so no purpose may read it"
                    .into(),
            );
        }
        if c.category == "user.contact.email" || c.category == "user.contact.phone_number" {
            return Err("write {{email}} or {{phone}}".into());
        }
        if self.grant.purpose().may_read(c.category) {
            Ok(())
        } else {
            Err(format!(
                "purpose {} may not read {}",
                self.grant.purpose().name,
                c.category
            ))
        }
    }

    /// The path `p` read in context `ctx`, checked; returns where it points.
    fn path(&mut self, p: &Path, ctx: &[Vec<String>], at: (usize, usize)) -> Option<Vec<String>> {
        let (ups, names, raw) = split(p)?;
        let base = ctx
            .len()
            .checked_sub(1 + ups)
            .and_then(|i| ctx.get(i))
            .cloned()
            .unwrap_or_default();
        if names.last().is_some_and(|n| n == "length") {
            self.offend(
                &raw,
                at,
                "`.length` is not supported: {{#if list}} is false for an empty list".into(),
            );
            return None;
        }
        let mut full = base;
        full.extend(names);
        if let Some(first) = full.first() {
            self.roots.insert(first.clone());
        }
        if let Err(m) = self.judge(&full) {
            self.offend(&raw, at, m);
        }
        Some(full)
    }

    fn param(
        &mut self,
        p: &Parameter,
        ctx: &[Vec<String>],
        at: (usize, usize),
    ) -> Option<Vec<String>> {
        match p {
            Parameter::Path(path) => self.path(path, ctx, at),
            Parameter::Subexpression(s) => {
                self.element(s.as_element(), ctx, at);
                None
            }
            _ => None,
        }
    }

    fn helper(&mut self, h: &HelperTemplate, ctx: &[Vec<String>], at: (usize, usize), block: bool) {
        let name = match &h.name {
            Parameter::Name(n) => Some(n.clone()),
            Parameter::Path(p) if !h.params.is_empty() || !h.hash.is_empty() || block => {
                split(p).map(|(_, _, raw)| raw)
            }
            Parameter::Path(p) => {
                // A variable.
                self.path(p, ctx, at);
                None
            }
            other => {
                self.param(other, ctx, at);
                None
            }
        };
        let mut target = None;
        if let Some(n) = &name
            && !HELPERS.contains(&n.as_str())
        {
            self.offend(
                n,
                at,
                format!("unknown helper; the helpers are {}", HELPERS.join(", ")),
            );
        }
        for (i, p) in h.params.iter().enumerate() {
            let points = self.param(p, ctx, at);
            if i == 0 {
                target = points;
            }
        }
        for p in h.hash.values() {
            self.param(p, ctx, at);
        }
        let inner: Vec<Vec<String>> = match (name.as_deref(), target) {
            (Some("each"), Some(mut t)) => {
                t.push("[]".into());
                ctx.iter().cloned().chain([t]).collect()
            }
            (Some("with"), Some(t)) => ctx.iter().cloned().chain([t]).collect(),
            _ => ctx.to_vec(),
        };
        if let Some(t) = &h.template {
            self.template(t, &inner);
        }
        if let Some(t) = &h.inverse {
            self.template(t, ctx);
        }
    }

    fn element(&mut self, e: &TemplateElement, ctx: &[Vec<String>], at: (usize, usize)) {
        match e {
            TemplateElement::RawString(_) | TemplateElement::Comment(_) => {}
            TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h) => {
                self.helper(h, ctx, at, false)
            }
            TemplateElement::HelperBlock(h) => self.helper(h, ctx, at, true),
            TemplateElement::PartialExpression(d) => self.partial(d, ctx, at),
            TemplateElement::PartialBlock(_) => self.offend(
                "{{#> ...}}",
                at,
                "partial blocks are not supported: use {{> name}}".into(),
            ),
            TemplateElement::DecoratorExpression(_) | TemplateElement::DecoratorBlock(_) => {
                self.offend("{{* ...}}", at, "decorators are not supported".into())
            }
            _ => self.offend(
                "{{...}}",
                at,
                "a construct this version does not support".into(),
            ),
        }
    }

    /// `{{> name}}` or `{{> name context}}`: the partial's tokens are checked where it is
    /// used, in the context it is given.
    fn partial(&mut self, d: &DecoratorTemplate, ctx: &[Vec<String>], at: (usize, usize)) {
        let name = match &d.name {
            Parameter::Name(n) => n.clone(),
            Parameter::Path(p) => match split(p) {
                Some((_, _, raw)) => raw,
                None => {
                    self.offend("{{> ...}}", at, "not a partial name".into());
                    return;
                }
            },
            _ => {
                self.offend(
                    "{{> (...)}}",
                    at,
                    "dynamic partials are not supported: name the partial".into(),
                );
                return;
            }
        };
        let token = format!("> {name}");
        if !d.hash.is_empty() {
            self.offend(
                &token,
                at,
                "partial parameters (name=value) are not supported: pass a context, {{> name path}}"
                    .into(),
            );
            return;
        }
        let Some(t) = self.partials.get(&name) else {
            let known: Vec<&str> = self.partials.keys().map(String::as_str).collect();
            let message = if known.is_empty() {
                "unknown partial: this template has no partials".to_owned()
            } else {
                format!(
                    "unknown partial; this template's partials are {}",
                    known.join(", ")
                )
            };
            self.offend(&token, at, message);
            return;
        };
        if self.stack.contains(&name) {
            self.offend(&token, at, "a partial may not include itself".into());
            return;
        }
        self.expansions += 1;
        if self.expansions > MAX_PARTIAL_EXPANSIONS {
            if self.expansions == MAX_PARTIAL_EXPANSIONS + 1 {
                self.offend(
                    &token,
                    at,
                    format!(
                        "partials expand to more than {MAX_PARTIAL_EXPANSIONS} copies in this part"
                    ),
                );
            }
            return;
        }
        let inner: Vec<Vec<String>> = match d.params.as_slice() {
            [] => ctx.to_vec(),
            [p] => match self.param(p, ctx, at) {
                Some(target) => ctx.iter().cloned().chain([target]).collect(),
                None => ctx.to_vec(),
            },
            _ => {
                self.offend(&token, at, "a partial takes at most one context".into());
                return;
            }
        };
        let outer = std::mem::replace(&mut self.part, format!("partials.{name}"));
        self.stack.push(name);
        self.template(t, &inner);
        self.stack.pop();
        self.part = outer;
    }

    fn template(&mut self, t: &Template, ctx: &[Vec<String>]) {
        for (i, e) in t.elements.iter().enumerate() {
            let at = t.mapping.get(i).map_or((0, 0), |m| (m.0, m.1));
            self.element(e, ctx, at);
        }
    }
}

/// What a check found: every token of the template that the grant's purpose may not
/// read (unknown names and helpers included; empty when it may be rendered), and the
/// top-level names it reads (rendering fills a name such as `customer_name` from the
/// attribute it is a spelling of).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checked {
    pub offences: Vec<Offence>,
    pub names: std::collections::BTreeSet<String>,
}

/// Checks one part of a template (named `part`) against `grant`.
pub fn check(part: &str, template: &Template, grant: &PurposeGrant) -> Checked {
    check_with(part, template, grant, &BTreeMap::new())
}

/// Checks one part of a template that may use `partials` (each checked where it is used).
pub fn check_with(
    part: &str,
    template: &Template,
    grant: &PurposeGrant,
    partials: &BTreeMap<String, Template>,
) -> Checked {
    let mut w = Walker {
        grant,
        part: part.to_owned(),
        out: Vec::new(),
        roots: Default::default(),
        partials,
        stack: Vec::new(),
        expansions: 0,
    };
    w.template(template, &[Vec::new()]);
    let mut offences = w.out;
    // A partial used twice in the same context offends once.
    offences.sort_by(|a, b| {
        (&a.part, a.line, a.column, &a.token).cmp(&(&b.part, b.line, b.column, &b.token))
    });
    offences.dedup();
    Checked {
        offences,
        names: w.roots,
    }
}
