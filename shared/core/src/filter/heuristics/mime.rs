//! How the body was sent: base64-encoded text, HTML without a plain-text part.

use super::{Analysis, Hit};

pub(super) fn check(a: &Analysis, hits: &mut Vec<Hit>) {
    if a.base64_text {
        hits.push((
            "MIME_BASE64_TEXT",
            0.5,
            "text body sent base64-encoded".into(),
        ));
    }
    if !a.html.is_empty() && !a.has_plain {
        let text_len = a.mail.text.trim().len();
        if text_len < 400 {
            hits.push((
                "HTML_ONLY_LITTLE_TEXT",
                2.0,
                format!("HTML-only body with {text_len} characters of text"),
            ));
        } else {
            hits.push(("HTML_ONLY", 1.0, "HTML-only body, no plain text".into()));
        }
    }
}
