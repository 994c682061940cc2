//! Rendering compiled templates (subject, HTML, text) with arbitrary JSON data, as the
//! renderer does for one person. Sizes are bounded so that the work is too: the source of
//! each part to 1 KiB, the data to 256 bytes, and `#each` nested at most two deep (a
//! deeper nest multiplies by the data's length per level, which any Handlebars does).
#![no_main]
mod common;

use arbitrary::Arbitrary;
use consentry::rendering::check::compile;
use consentry::rendering::render::Renderer;
use handlebars::template::{Parameter, Template, TemplateElement};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    subject: &'a str,
    html: &'a str,
    text: &'a str,
    data: &'a [u8],
}

fn each_depth(t: &Template) -> usize {
    t.elements
        .iter()
        .map(|e| match e {
            TemplateElement::HelperBlock(h) => {
                let own = usize::from(matches!(&h.name, Parameter::Name(n) if n == "each"));
                let inner = [&h.template, &h.inverse]
                    .into_iter()
                    .flatten()
                    .map(each_depth)
                    .max()
                    .unwrap_or(0);
                own + inner
            }
            TemplateElement::DecoratorBlock(d) | TemplateElement::PartialBlock(d) => {
                d.template.as_ref().map_or(0, each_depth)
            }
            _ => 0,
        })
        .max()
        .unwrap_or(0)
}

fuzz_target!(|input: Input<'_>| {
    if [input.subject, input.html, input.text]
        .iter()
        .any(|s| s.len() > 1024)
        || input.data.len() > 256
    {
        return;
    }
    let (Ok(subject), Ok(html), Ok(text)) = (
        compile("subject", input.subject),
        compile("html", input.html),
        compile("text", input.text),
    ) else {
        return;
    };
    if [&subject, &html, &text].iter().any(|t| each_depth(t) > 2) {
        return;
    }
    let data = serde_json::from_slice(input.data).unwrap_or_else(|_| {
        json!({
            "first_name": "Ann",
            "email": "ann@example.com",
            "aggregates": {"orders": 3, "spend": 120.5},
            "recommendations": [
                {"id": "p1", "name": "Boots", "url": "https://shop.example/p1", "price": 10},
                {"id": "p2", "name": "<b>Hat</b>", "url": "https://shop.example/p2", "price": 2.5},
            ],
        })
    });
    let _ = Renderer::new(subject, html, text).render(&data);
});
