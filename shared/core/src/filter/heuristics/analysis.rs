//! What the heuristics read, computed once per message.

use mail_parser::{Encoding, PartType};

use super::text::clip_bytes;
use crate::mail::{MAX_TEXT, Mail};

pub(crate) struct Analysis<'m> {
    pub mail: &'m Mail<'m>,
    /// The lower-cased subject and text, one after the other.
    pub lower: String,
    /// The HTML bodies (not attachments), at most [`MAX_TEXT`] bytes.
    pub html: String,
    /// The same, ASCII-lower-cased.
    pub lower_html: String,
    /// A plain-text body exists.
    pub has_plain: bool,
    /// A body part was sent base64-encoded.
    pub base64_text: bool,
}

impl<'m> Analysis<'m> {
    pub fn of(mail: &'m Mail<'m>) -> Analysis<'m> {
        // The body parts only (attachments are the attachment check's business): the HTML
        // bodies for links and layout, whether a plain-text body exists, how they were
        // encoded.
        let msg = &mail.message;
        let mut html = String::new();
        let mut has_plain = false;
        let mut base64_text = false;
        let mut seen = vec![false; msg.parts.len()];
        for id in msg.text_body.iter().chain(&msg.html_body) {
            let id = *id as usize;
            let Some(part) = msg.parts.get(id) else {
                continue;
            };
            if std::mem::replace(&mut seen[id], true) {
                continue; // an HTML-only body is in both lists
            }
            if part.encoding == Encoding::Base64 {
                base64_text = true;
            }
            match &part.body {
                PartType::Text(_) => has_plain = true,
                PartType::Html(h) if html.len() < MAX_TEXT => {
                    html.push_str(clip_bytes(h, MAX_TEXT - html.len()));
                    html.push('\n');
                }
                _ => {}
            }
        }
        Analysis {
            mail,
            lower: format!("{}\n{}", mail.subject_lower(), mail.text_lower()),
            lower_html: html.to_ascii_lowercase(),
            html,
            has_plain,
            base64_text,
        }
    }
}
