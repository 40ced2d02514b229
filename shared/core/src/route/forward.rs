//! The SES forwarder rewrite.
//!
//! SES only sends from verified identities and refuses some headers of the original, so a
//! forward cannot be the message as received. The rewrite is the usual one: `From` becomes
//! `"Ann Example via mailroom" <from_address>`, the original sender moves to `Reply-To`
//! (unless the message has a `Reply-To` already), `DKIM-Signature`, `Return-Path` and
//! `Sender` go, a repeated `Message-ID` is cut to its first occurrence, and everything else,
//! body included, stays byte for byte (see [`super::headers`]).

use crate::config::General;
use crate::mail::Mail;
use crate::matcher::domain_matches;
use crate::ports::{MailBytes, OutgoingMail};

use super::headers::{self, HeaderEdit, clean_address, clean_header_text, rfc2047_encode};

/// SES accepts at most this many recipients per message.
pub const MAX_RECIPIENTS: usize = 50;

/// Names the original sender when the message has no usable `From`.
const UNKNOWN_SENDER: &str = "unknown sender";

/// Records which of our addresses the message was sent to.
pub const FORWARDED_FOR: &str = "X-Mailroom-Forwarded-For";

/// A forward worked out from the parsed message, to be carried out on the raw bytes
/// alone: so the parse (with its decoded attachments) can be dropped before the message is
/// rewritten and sent, and a large message is not held three times. One [`OutgoingMail`]
/// per [`MAX_RECIPIENTS`] recipients (duplicates, compared case-insensitively, are
/// dropped); none when there is no recipient.
#[derive(Debug, Clone)]
pub struct ForwardPlan {
    pub edit: HeaderEdit,
    pub from: String,
    /// At most [`MAX_RECIPIENTS`] each; empty when there is no one to forward to.
    pub chunks: Vec<Vec<String>>,
}

impl ForwardPlan {
    pub fn new(mail: &Mail, general: &General, to: &[String], tags: &[(String, String)]) -> Self {
        let mut recipients: Vec<String> = Vec::with_capacity(to.len());
        for r in to.iter().map(|r| r.trim()).filter(|r| !r.is_empty()) {
            if !recipients.iter().any(|x| x.eq_ignore_ascii_case(r)) {
                recipients.push(r.to_string());
            }
        }
        ForwardPlan {
            edit: headers::tag_edit(rewrite_edit(mail, general), tags),
            from: general.from_address.clone(),
            chunks: recipients
                .chunks(MAX_RECIPIENTS)
                .map(<[String]>::to_vec)
                .collect(),
        }
    }

    /// The messages to send, given the rewritten bytes ([`HeaderEdit::apply_shared`] of
    /// `edit`), which every chunk's send shares.
    pub fn messages(self, raw: MailBytes) -> impl Iterator<Item = OutgoingMail> {
        let from = self.from;
        self.chunks.into_iter().map(move |to| OutgoingMail {
            from: from.clone(),
            to,
            raw: raw.clone(),
        })
    }
}

/// The header edit a forward makes: our From, the sender as Reply-To, signatures and
/// envelope headers dropped, the addresses it was sent to recorded.
fn rewrite_edit(mail: &Mail, general: &General) -> HeaderEdit {
    // The first From, as everywhere else (mail-parser's from() is the last one).
    let original = mail
        .message
        .header_values("From")
        .next()
        .and_then(|v| v.as_address())
        .and_then(|a| a.first());
    let address = original.and_then(|a| a.address()).and_then(clean_address);
    let name = original
        .and_then(|a| a.name())
        .map(display_name)
        .filter(|n| !n.is_empty());

    let shown = name
        .clone()
        .or_else(|| address.clone())
        .unwrap_or_else(|| UNKNOWN_SENDER.to_string());
    let phrase = display_name(&format!("{shown} {}", general.forward_name_suffix));
    let from = format_mailbox(Some(&phrase), &general.from_address);

    let mut edit = HeaderEdit::new()
        .remove("From")
        .remove("DKIM-Signature")
        .remove("Return-Path")
        .remove("Sender")
        .remove(FORWARDED_FOR)
        .keep_first("Message-ID")
        .encode_8bit()
        .prepend_encoded("From", &from);
    if !mail.has_header("Reply-To")
        && let Some(address) = &address
    {
        edit = edit.prepend_encoded("Reply-To", &format_mailbox(name.as_deref(), address));
    }
    let ours: Vec<&str> = mail
        .recipients
        .iter()
        .filter(|r| is_ours(r, general) && clean_address(r).is_some())
        .map(String::as_str)
        .collect();
    if !ours.is_empty() {
        edit = edit.prepend(FORWARDED_FOR, &ours.join(", "));
    }
    edit
}

fn is_ours(address: &str, general: &General) -> bool {
    general
        .addresses
        .iter()
        .any(|a| a.trim().eq_ignore_ascii_case(address))
        || address
            .rsplit_once('@')
            .is_some_and(|(_, d)| general.domains.iter().any(|p| domain_matches(p, d)))
}

/// A display name with quotes, backslashes and control characters removed and whitespace
/// collapsed, ready to be quoted or encoded.
fn display_name(name: &str) -> String {
    clean_header_text(&name.replace(['"', '\\'], " "))
}

/// `"Name" <address>`, with a non-ASCII name RFC 2047-encoded (unquoted, as a phrase of
/// encoded-words), or just `address` without a name. The name is cleaned of quotes,
/// backslashes and control characters; the address is written as given, so pass one that
/// [`clean_address`] accepted.
pub fn format_mailbox(name: Option<&str>, address: &str) -> String {
    let name = name.map(display_name).unwrap_or_default();
    let address = clean_header_text(address);
    if name.is_empty() {
        address
    } else if name.is_ascii() {
        format!("\"{name}\" <{address}>")
    } else {
        format!("{} <{address}>", rfc2047_encode(&name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use mail_parser::MessageParser;

    const RAW: &[u8] = b"Return-Path: <ann@example.org>\r\nDKIM-Signature: v=1; a=rsa-sha256;\r\n\tb=xyz\r\nFrom: \"Ann Example\" <Ann@Example.org>\r\nSender: list@example.org\r\nTo: support@example.com\r\nSubject: Help\r\nMessage-ID: <m1@example.org>\r\nMessage-ID: <m2@example.org>\r\nX-Custom: keep me\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello,\r\nFrom: this line is body\r\n";

    fn general() -> General {
        General {
            domains: vec!["example.com".into()],
            ..General::default()
        }
    }

    /// A forward as sent, in one piece.
    struct Sent {
        from: String,
        to: Vec<String>,
        raw: Vec<u8>,
    }

    fn forward(raw: &[u8], to: &[String]) -> Vec<Sent> {
        let mail = Mail::parse(raw).unwrap();
        let plan = ForwardPlan::new(
            &mail,
            &general(),
            to,
            &[("X-Team".into(), "support".into())],
        );
        let contiguous = plan.edit.apply(mail.raw);
        let shared = plan.edit.apply_shared(&Bytes::copy_from_slice(raw));
        assert_eq!(
            shared.to_vec(),
            contiguous,
            "the shared rewrite is the copied one"
        );
        plan.messages(shared)
            .map(|m| Sent {
                raw: m.raw.to_vec(),
                from: m.from,
                to: m.to,
            })
            .collect()
    }

    fn header_count(raw: &[u8], name: &str) -> usize {
        let s = headers::split(raw);
        headers::fields(s.headers).filter(|f| f.is(name)).count()
    }

    #[test]
    fn rewrites_sender_headers_and_keeps_the_rest() {
        let out = forward(RAW, &["agent@example.net".into()]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].from, "mailroom@example.com");
        assert_eq!(out[0].to, ["agent@example.net"]);
        let raw = &out[0].raw;
        let text = String::from_utf8_lossy(raw);
        assert!(
            text.contains("From: \"Ann Example via mailroom\" <mailroom@example.com>\r\n"),
            "{text}"
        );
        assert!(text.contains("Reply-To: \"Ann Example\" <Ann@Example.org>\r\n"));
        for gone in ["DKIM-Signature", "Return-Path", "Sender"] {
            assert_eq!(header_count(raw, gone), 0, "{gone}");
        }
        assert_eq!(header_count(raw, "Message-ID"), 1);
        assert!(text.contains("Message-ID: <m1@example.org>\r\n"));
        assert!(text.contains("X-Custom: keep me\r\n"));
        assert!(text.contains("X-Team: support\r\n"));
        assert!(text.contains("X-Mailroom-Forwarded-For: support@example.com\r\n"));
        assert!(text.ends_with("\r\n\r\nHello,\r\nFrom: this line is body\r\n"));
        assert_eq!(header_count(raw, "From"), 1);

        let parsed = MessageParser::default().parse(&raw[..]).unwrap();
        let from = parsed.from().unwrap().first().unwrap();
        assert_eq!(from.name(), Some("Ann Example via mailroom"));
        assert_eq!(from.address(), Some("mailroom@example.com"));
        assert_eq!(
            parsed.reply_to().unwrap().first().unwrap().address(),
            Some("Ann@Example.org")
        );
    }

    #[test]
    fn existing_reply_to_is_kept() {
        let raw = b"From: Ann <ann@example.org>\nReply-To: team@example.org\nSubject: x\n\nbody\n";
        let out = forward(raw, &["a@example.net".into()]);
        let text = String::from_utf8_lossy(&out[0].raw);
        assert_eq!(header_count(&out[0].raw, "Reply-To"), 1);
        assert!(text.contains("Reply-To: team@example.org\n"));
        assert!(text.starts_with("From: \"Ann via mailroom\" <mailroom@example.com>\n"));
    }

    #[test]
    fn address_is_used_when_there_is_no_display_name() {
        let raw = b"From: ann@example.org\nSubject: x\n\nbody\n";
        let out = forward(raw, &["a@example.net".into()]);
        let text = String::from_utf8_lossy(&out[0].raw);
        assert!(text.contains("From: \"ann@example.org via mailroom\" <mailroom@example.com>\n"));
        assert!(text.contains("Reply-To: ann@example.org\n"));
    }

    #[test]
    fn missing_from_becomes_unknown_sender_without_reply_to() {
        let raw = b"To: support@example.com\nSubject: x\n\nbody\n";
        let out = forward(raw, &["a@example.net".into()]);
        let text = String::from_utf8_lossy(&out[0].raw);
        assert!(text.contains("From: \"unknown sender via mailroom\" <mailroom@example.com>\n"));
        assert_eq!(header_count(&out[0].raw, "Reply-To"), 0);
    }

    #[test]
    fn hostile_and_non_ascii_names_are_cleaned_and_encoded() {
        let raw = "From: \"Jürgen \\\"Boss\\\" Müller\" <j@example.de>\nSubject: x\n\nbody\n";
        let out = forward(raw.as_bytes(), &["a@example.net".into()]);
        let parsed = MessageParser::default().parse(&out[0].raw[..]).unwrap();
        let from = parsed.from().unwrap().first().unwrap();
        assert_eq!(from.name(), Some("Jürgen Boss Müller via mailroom"));
        assert_eq!(from.address(), Some("mailroom@example.com"));
        let reply_to = parsed.reply_to().unwrap().first().unwrap();
        assert_eq!(reply_to.name(), Some("Jürgen Boss Müller"));
        assert_eq!(reply_to.address(), Some("j@example.de"));
        assert!(out[0].raw.split(|&b| b == b'\n').next().unwrap().is_ascii());

        let raw = b"From: \"Eve\r\n Bcc: x@y\" <eve@example.org>\r\nSubject: x\r\n\r\nbody\r\n";
        let out = forward(raw, &["a@example.net".into()]);
        assert_eq!(header_count(&out[0].raw, "Bcc"), 0);
    }

    #[test]
    fn more_than_fifty_recipients_are_split() {
        let to: Vec<String> = (0..120).map(|i| format!("r{i}@example.net")).collect();
        let mut with_dupes = to.clone();
        with_dupes.push("R0@example.net".into());
        let out = forward(RAW, &with_dupes);
        assert_eq!(
            out.iter().map(|m| m.to.len()).collect::<Vec<_>>(),
            [50, 50, 20]
        );
        assert_eq!(
            out.iter().flat_map(|m| m.to.clone()).collect::<Vec<_>>(),
            to
        );
        assert!(out.iter().all(|m| m.raw == out[0].raw));
        assert!(forward(RAW, &[]).is_empty());
    }

    #[test]
    fn format_mailbox_quotes_or_encodes() {
        assert_eq!(format_mailbox(None, "a@b.c"), "a@b.c");
        assert_eq!(format_mailbox(Some(" "), "a@b.c"), "a@b.c");
        assert_eq!(format_mailbox(Some("A \"B\""), "a@b.c"), "\"A B\" <a@b.c>");
        assert!(format_mailbox(Some("Zoë"), "a@b.c").starts_with("=?utf-8?B?"));
    }
}
