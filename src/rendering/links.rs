//! UTM parameters on the links of a campaign message, so that the shop's analytics (and
//! this gateway's experiment results) can tell which campaign and variant a visit came
//! from. The HTML is rewritten by `lol_html`, a streaming HTML rewriter, so that only real
//! `<a href>` attributes are touched (not text, comments or scripts that look like links).
//!
//! Only absolute `http`/`https` links are tagged; the existing query and fragment are
//! kept, a `utm_*` parameter already present is never overridden, and the unsubscribe
//! link (under the gateway's `/u/`) is left exactly as signed.
use std::borrow::Cow;

use lol_html::{RewriteStrSettings, element, rewrite_str};
use url::form_urlencoded::byte_serialize;

/// What the links say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Utm {
    /// `utm_campaign`: the campaign id.
    pub campaign: String,
    /// `utm_content`: the variant, in an experiment.
    pub content: Option<String>,
}

impl Utm {
    fn pairs(&self) -> Vec<(&'static str, &str)> {
        let mut p = vec![
            ("utm_source", "consentry"),
            ("utm_medium", "email"),
            ("utm_campaign", self.campaign.as_str()),
        ];
        if let Some(c) = &self.content {
            p.push(("utm_content", c.as_str()));
        }
        p
    }
}

/// The link `href` (its value as HTML source) with the UTM parameters added, or `None`
/// when it is left alone.
fn tagged(raw: &str, utm: &Utm, skip_prefix: &str) -> Option<String> {
    let decoded = html_escape::decode_html_entities(raw);
    let href = decoded.trim();
    let lower = href.to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return None;
    }
    if !skip_prefix.is_empty() && href.starts_with(skip_prefix) {
        return None;
    }
    let parsed = url::Url::parse(href).ok()?;
    let present: Vec<String> = parsed.query_pairs().map(|(k, _)| k.into_owned()).collect();
    let add: Vec<String> = utm
        .pairs()
        .into_iter()
        .filter(|(k, _)| !present.iter().any(|p| p == k))
        .map(|(k, v)| format!("{k}={}", byte_serialize(v.as_bytes()).collect::<String>()))
        .collect();
    if add.is_empty() {
        return None;
    }
    let (before, fragment) = match href.find('#') {
        Some(i) => href.split_at(i),
        None => (href, ""),
    };
    let joiner = match before.find('?') {
        None => "?",
        Some(_) if before.ends_with('?') || before.ends_with('&') => "",
        Some(_) => "&",
    };
    let out = format!("{before}{joiner}{}{fragment}", add.join("&"));
    Some(html_escape::encode_double_quoted_attribute(&out).into_owned())
}

/// `html` with every absolute http(s) `<a href>` carrying the UTM parameters, except
/// those starting with `skip_prefix` (the unsubscribe links).
pub fn with_utm(html: &str, utm: &Utm, skip_prefix: &str) -> Result<String, String> {
    let settings =
        RewriteStrSettings::new().append_element_content_handler(element!("a[href]", |el| {
            if let Some(raw) = el.get_attribute("href")
                && let Some(new) = tagged(&raw, utm, skip_prefix)
            {
                el.set_attribute("href", &new)?;
            }
            Ok(())
        }));
    rewrite_str(html, settings).map_err(|e| e.to_string())
}

/// Like [`with_utm`], borrowing `html` when it has no link at all.
pub fn tag_links<'a>(html: &'a str, utm: &Utm, skip_prefix: &str) -> Result<Cow<'a, str>, String> {
    if !html.contains("href") {
        return Ok(Cow::Borrowed(html));
    }
    with_utm(html, utm, skip_prefix).map(Cow::Owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SKIP: &str = "https://gw.example/u/";

    fn utm(content: Option<&str>) -> Utm {
        Utm {
            campaign: "c123".into(),
            content: content.map(str::to_owned),
        }
    }

    fn tag(html: &str) -> String {
        with_utm(html, &utm(Some("B")), SKIP).unwrap()
    }

    const ALL: &str =
        "utm_source=consentry&amp;utm_medium=email&amp;utm_campaign=c123&amp;utm_content=B";

    #[test]
    fn absolute_links_get_the_parameters_and_keep_query_and_fragment() {
        assert_eq!(
            tag(r#"<a href="https://shop.example/p">x</a>"#),
            format!(r#"<a href="https://shop.example/p?{ALL}">x</a>"#)
        );
        assert_eq!(
            tag(r#"<a class="b" href="https://shop.example/p?a=1&amp;b=2#top">x</a>"#),
            format!(
                r#"<a class="b" href="https://shop.example/p?a=1&amp;b=2&amp;{ALL}#top">x</a>"#
            )
        );
        assert_eq!(
            tag(r#"<a href="http://shop.example/?">x</a>"#),
            format!(r#"<a href="http://shop.example/?{ALL}">x</a>"#)
        );
        // Single quotes and a bare `&` in the source: rewritten as valid double-quoted HTML.
        assert_eq!(
            tag("<a href='https://shop.example/p?a=1&b=\"q\"'>x</a>"),
            format!(r#"<a href="https://shop.example/p?a=1&amp;b=&quot;q&quot;&amp;{ALL}">x</a>"#)
        );
        // No variant outside an experiment.
        assert_eq!(
            with_utm(r#"<a href="https://shop.example/">x</a>"#, &utm(None), SKIP).unwrap(),
            r#"<a href="https://shop.example/?utm_source=consentry&amp;utm_medium=email&amp;utm_campaign=c123">x</a>"#
        );
    }

    #[test]
    fn present_utm_parameters_are_not_overridden() {
        assert_eq!(
            tag(r#"<a href="https://shop.example/p?utm_source=news&amp;utm_campaign=xmas">x</a>"#),
            r#"<a href="https://shop.example/p?utm_source=news&amp;utm_campaign=xmas&amp;utm_medium=email&amp;utm_content=B">x</a>"#
        );
        let all = format!(r#"<a href="https://shop.example/p?{ALL}">x</a>"#);
        assert_eq!(tag(&all), all);
    }

    #[test]
    fn other_links_the_unsubscribe_link_and_text_are_left_alone() {
        for html in [
            r#"<a href="mailto:help@shop.example?subject=Hi">x</a>"#,
            r#"<a href="/relative/path">x</a>"#,
            r##"<a href="#top">x</a>"##,
            r#"<a href="tel:+4930123">x</a>"#,
            r#"<a href="javascript:void(0)">x</a>"#,
            r#"<a href="https://gw.example/u/u1~c~ps1.x~99~sig">Unsubscribe</a>"#,
            r#"<a name="x">anchor</a>"#,
            r#"<p>Visit https://shop.example/ today</p><!-- <a href="https://shop.example/"> -->"#,
            r#"<img src="https://shop.example/i.png">"#,
        ] {
            assert_eq!(tag(html), html, "{html}");
        }
    }

    #[test]
    fn every_link_of_a_message_is_tagged() {
        let html = r#"<div><a href="https://a.example/">A</a> and <a href="https://b.example/x">B</a></div>"#;
        let out = tag(html);
        assert_eq!(out.matches("utm_content=B").count(), 2, "{out}");
        assert!(matches!(
            tag_links("<p>no links</p>", &utm(None), SKIP).unwrap(),
            Cow::Borrowed(_)
        ));
    }
}
