//! HTML layout: images with little text, big and red fonts, an opt-out by mail.

use std::sync::LazyLock;

use regex::Regex;

use super::text::clip;
use super::{Analysis, Hit};

/// Shouting HTML: big or red fonts.
static HTML_BIG_FONT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"<font[^>]*?size[ \t\r\n]*=\s*["']?\+?[4-7]"#).expect("font regex")
});
static HTML_RED_FONT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"<font[^>]*?color[ \t\r\n]*=[ \t\r\n]*["']?(?:#?ff0000|red)(?-u:\b)"#)
        .expect("font color regex")
});
/// A `mailto:` link asking for a "remove" mail: the 2000s bulk mailer's opt-out.
static MAILTO_REMOVE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?i)mailto:[^"'\s>]*?(?:remove|unsub|optout|opt-out)"#).expect("mailto regex")
});

pub(super) fn check(a: &Analysis, hits: &mut Vec<Hit>) {
    let lower_html = &a.lower_html;
    let images = lower_html.matches("<img").count();
    if images >= 3 && a.mail.text.trim().len() < 200 * images {
        hits.push((
            "HTML_IMAGES_LITTLE_TEXT",
            0.5,
            format!("{images} images with little text"),
        ));
    }
    if HTML_BIG_FONT.is_match(lower_html) {
        hits.push(("HTML_BIG_FONT", 1.0, "HTML with big fonts".into()));
    }
    if HTML_RED_FONT.is_match(lower_html) {
        hits.push(("HTML_RED_FONT", 1.5, "HTML with red fonts".into()));
    }
    if let Some(m) = MAILTO_REMOVE
        .find(lower_html)
        .or_else(|| MAILTO_REMOVE.find(&a.mail.text))
    {
        hits.push((
            "MAILTO_REMOVE",
            1.5,
            format!("opt-out by mail: {}", clip(m.as_str(), 80)),
        ));
    }
}
