//! A parsed inbound message and the derived facts every stage asks for, computed once.

use std::borrow::Cow;
use std::sync::LazyLock;

use mail_parser::{Address, HeaderName, HeaderValue, Message, MessageParser, MimeHeaders};

use crate::model::Receipt;

/// Bodies longer than this are only partly matched by rules and scorers: enough to judge,
/// bounded so that a 40 MB message costs no more than a small one.
pub const MAX_TEXT: usize = 256 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailError {
    #[error("empty input: no message content")]
    Empty,
    #[error("not an e-mail message: {0}")]
    NotMail(String),
    /// A limit of the parse was reached: the message is held unread.
    #[error("{0}")]
    Limit(String),
}

/// How many times `message/rfc822`, `message/global` and `multipart/digest` (whose parts
/// are messages) may appear in a message, at most. mail-parser opens unencoded attached
/// messages however deep they nest, and builds and drops the nested parts recursively:
/// about a hundred thousand levels (3 MB of mail) overflow a thread's stack, which aborts
/// the process. Each level names one of these types, so their count bounds the depth.
pub const MAX_MESSAGE_TYPES: usize = 1000;

static MESSAGE_TYPES: LazyLock<aho_corasick::AhoCorasick> = LazyLock::new(|| {
    aho_corasick::AhoCorasick::builder()
        .ascii_case_insensitive(true)
        .build(["message/rfc822", "message/global", "multipart/digest"])
        .expect("valid patterns")
});

/// mail-parser's default way of parsing each header, except that `Received` stays text:
/// nothing reads its parsed form, and parsing it was 5 % of the whole pipeline's time on
/// the SpamAssassin corpus, whose mail carries many of them.
static PARSER: LazyLock<MessageParser> = LazyLock::new(|| {
    let lists = [
        HeaderName::ListArchive,
        HeaderName::ListHelp,
        HeaderName::ListId,
        HeaderName::ListOwner,
        HeaderName::ListPost,
        HeaderName::ListSubscribe,
        HeaderName::ListUnsubscribe,
    ];
    let parser = MessageParser::new()
        .with_mime_headers()
        .with_date_headers()
        .with_address_headers()
        .with_message_ids()
        .header_id(HeaderName::ReturnPath)
        .header_text(HeaderName::Subject)
        .header_text(HeaderName::Comments)
        .header_comma_separated(HeaderName::Keywords)
        .header_comma_separated(HeaderName::ContentLanguage)
        .header_raw(HeaderName::Received);
    lists
        .into_iter()
        .fold(parser, MessageParser::header_address)
});

/// A parsed message. Borrows the raw bytes: mail-parser parses zero-copy.
pub struct Mail<'a> {
    pub message: Message<'a>,
    /// The message without any leading mbox `From ` line (or the copy of it that
    /// [`Mail::parse_copy`] parsed).
    pub raw: &'a [u8],
    /// Lower-cased `From` address.
    pub from: Option<String>,
    pub from_name: Option<String>,
    /// The recipients `recipient` conditions match, lower-cased and without duplicates: the
    /// envelope recipients when SES's receipt gave them (the sender cannot forge those, and
    /// they include Bcc'd and aliased addresses), else `To`, `Cc`, `Delivered-To` and
    /// `X-Original-To`.
    pub recipients: Vec<String>,
    /// The `To` and `Cc` addresses, lower-cased: what the sender wrote (`to_header`).
    pub header_recipients: Vec<String>,
    /// SES's receipt notification, when there was one.
    pub receipt: Option<Receipt>,
    pub subject: String,
    /// Text body, or the HTML body reduced to text, at most [`MAX_TEXT`] bytes.
    pub text: String,
    pub message_id: Option<String>,
    /// How many `From` header fields the message has (RFC 5322 allows one).
    pub from_headers: usize,
    /// The size of the message as received: of `raw`, or of the message a copy was made of.
    size: u64,
    /// Lower-cased subject and text, made once on first use (rules and scorers all want it).
    lower: std::sync::OnceLock<(String, String)>,
}

/// What stands for the contents of a binary part that are not UTF-8, in a copy without
/// attachment contents: bytes that decode, in the part's transfer encoding, to bytes that
/// are not UTF-8 either, so the part parses as the binary part it was (an empty body
/// would read as text, and UTF-8 contents join the body text).
fn stand_in(encoding: mail_parser::Encoding) -> &'static [u8] {
    match encoding {
        mail_parser::Encoding::Base64 => b"////",
        mail_parser::Encoding::QuotedPrintable => b"=FF",
        mail_parser::Encoding::None => b"\xff",
    }
}

/// Attached messages (`message/rfc822`, `message/global`) are opened this many levels deep;
/// one nested deeper is reported in [`AttachmentScan::unscanned`].
pub const MAX_MESSAGE_DEPTH: usize = 10;

/// The attachments of a message, and what of it could not be looked into.
pub struct AttachmentScan<'m> {
    /// Every attachment, including the parts of attached messages, up to
    /// [`MAX_MESSAGE_DEPTH`] levels deep.
    pub attachments: Vec<Attachment<'m>>,
    /// Attached messages that were not opened, each with why: nested deeper than
    /// [`MAX_MESSAGE_DEPTH`], or left unparsed by mail-parser (which opens a base64 or
    /// quoted-printable attached message only 3 levels deep, and leaves one it cannot parse
    /// as bytes).
    pub unscanned: Vec<String>,
}

/// An attachment as the checks see it.
pub struct Attachment<'m> {
    /// The `Content-Disposition` `filename`, else the `Content-Type` `name`.
    pub name: Option<&'m str>,
    /// The `Content-Type` `name` when it differs from `name`: mail clients disagree on which
    /// of the two they show and save, so a filter has to look at both.
    pub other_name: Option<&'m str>,
    /// `type/subtype`, lower-cased.
    pub content_type: String,
    pub contents: &'m [u8],
}

/// Drops a leading mbox `From ` separator line, as found in mbox exports and the
/// SpamAssassin corpus.
pub fn strip_mbox_from_line(raw: &[u8]) -> &[u8] {
    if raw.starts_with(b"From ") {
        match raw.iter().position(|&b| b == b'\n') {
            Some(nl) => &raw[nl + 1..],
            None => &[],
        }
    } else {
        raw
    }
}

/// Header names whose presence makes an input recognisably an e-mail message.
const MAIL_HEADERS: &[&str] = &[
    "from",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "received",
    "return-path",
    "sender",
    "mime-version",
    "delivered-to",
    "reply-to",
    "x-ses-receipt",
];

/// Checks that the input starts with a header block containing at least one
/// mail header. mail-parser accepts anything, so a JPEG or a CSV file would otherwise "parse".
fn check_looks_like_mail(raw: &[u8]) -> Result<(), MailError> {
    let limit = raw.len().min(64 * 1024);
    let head = &raw[..limit];
    if head.contains(&0) {
        return Err(MailError::NotMail(
            "binary data (NUL bytes) in the header section".into(),
        ));
    }
    let mut saw_mail_header = false;
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            if saw_mail_header {
                break; // a broken line inside the headers; mail-parser copes.
            }
            return Err(MailError::NotMail(format!(
                "first line is not a header field: {:?}",
                String::from_utf8_lossy(&line[..line.len().min(60)])
            )));
        };
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|&b| b.is_ascii_graphic()) {
            if saw_mail_header {
                break;
            }
            return Err(MailError::NotMail(format!(
                "first line is not a header field: {:?}",
                String::from_utf8_lossy(&line[..line.len().min(60)])
            )));
        }
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        if MAIL_HEADERS.contains(&name.as_str()) {
            saw_mail_header = true;
        }
    }
    if saw_mail_header {
        Ok(())
    } else {
        Err(MailError::NotMail(
            "no From, To, Subject, Date, Message-ID or Received header".into(),
        ))
    }
}

fn addresses<'x>(a: Option<&'x Address<'x>>) -> impl Iterator<Item = String> + 'x {
    a.into_iter()
        .flat_map(|a| a.iter())
        .filter_map(|a| a.address())
        .map(|s| s.trim().to_ascii_lowercase())
}

impl<'a> Mail<'a> {
    /// Parses a raw message (with or without a leading mbox `From ` line).
    pub fn parse(raw: &'a [u8]) -> Result<Mail<'a>, MailError> {
        Self::parse_with_receipt(raw, None)
    }

    /// Parses a raw message together with SES's receipt notification, when there was one.
    ///
    /// Header lines in raw 8-bit bytes that are not UTF-8 (Latin-1 or Windows-1252 names
    /// and subjects without encoded words) are read as Windows-1252, the superset of
    /// Latin-1 that such mailers write, so that they show as the characters they are.
    pub fn parse_with_receipt(
        raw: &'a [u8],
        receipt: Option<&Receipt>,
    ) -> Result<Mail<'a>, MailError> {
        let raw = strip_mbox_from_line(raw);
        if raw.iter().all(|b| b.is_ascii_whitespace()) {
            return Err(MailError::Empty);
        }
        check_looks_like_mail(raw)?;
        if MESSAGE_TYPES
            .find_iter(raw)
            .take(MAX_MESSAGE_TYPES + 1)
            .count()
            > MAX_MESSAGE_TYPES
        {
            return Err(MailError::Limit(format!(
                "more than {MAX_MESSAGE_TYPES} attached-message or digest content types: \
                 not parsed, as their nesting could exhaust the parser's stack"
            )));
        }
        let message = match utf8_headers(raw) {
            // Raw 8-bit header lines, as older mailers send: parsed from a copy whose header
            // lines are UTF-8 (the body stays as it came).
            Some(fixed) => PARSER.parse(&fixed[..]).map(|m| m.into_owned()),
            None => PARSER.parse(raw),
        }
        .ok_or_else(|| MailError::NotMail("mail-parser found no message structure".into()))?;

        // The first From, not mail-parser's last: a second From appended by a sender must not
        // decide the allow and block lists (the filter flags messages with several).
        let from_addr = message
            .header_values("From")
            .next()
            .and_then(|v| v.as_address())
            .and_then(|a| a.first());
        let from_headers = message.header_values("From").count();
        let from = from_addr
            .and_then(|a| a.address())
            .map(|s| s.trim().to_ascii_lowercase());
        let from_name = from_addr
            .and_then(|a| a.name())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());

        let mut header_recipients: Vec<String> = Vec::new();
        for r in addresses(message.to()).chain(addresses(message.cc())) {
            if !header_recipients.contains(&r) {
                header_recipients.push(r);
            }
        }
        // A receipt without recipients (a hand-written notification) says nothing about
        // them: the headers are all there is then.
        let recipients = match receipt.filter(|r| !r.recipients.is_empty()) {
            Some(receipt) => {
                let mut envelope: Vec<String> = Vec::new();
                for r in &receipt.recipients {
                    let r = r.trim().to_ascii_lowercase();
                    if !r.is_empty() && !envelope.contains(&r) {
                        envelope.push(r);
                    }
                }
                envelope
            }
            None => {
                let mut from_headers = header_recipients.clone();
                for name in ["Delivered-To", "X-Original-To"] {
                    for v in message.header_values(name) {
                        if let Some(t) = v.as_text() {
                            let r = t.trim().trim_matches(['<', '>']).to_ascii_lowercase();
                            if r.contains('@') && !from_headers.contains(&r) {
                                from_headers.push(r);
                            }
                        }
                    }
                }
                from_headers
            }
        };

        let subject = message.subject().unwrap_or_default().to_string();
        let text = body_text(&message);
        let message_id = message
            .header_values("Message-ID")
            .next()
            .and_then(|v| v.as_text())
            .map(str::to_string);
        Ok(Mail {
            message,
            raw,
            from,
            from_name,
            recipients,
            header_recipients,
            receipt: receipt.cloned(),
            subject,
            text,
            message_id,
            from_headers,
            size: raw.len() as u64,
            lower: Default::default(),
        })
    }

    /// Parses a copy made by [`Mail::without_attachment_contents`] of a message of `size`
    /// bytes: the same facts as the message's own parse, its size included.
    pub fn parse_copy(
        copy: &'a [u8],
        receipt: Option<&Receipt>,
        size: u64,
    ) -> Result<Mail<'a>, MailError> {
        let mut mail = Self::parse_with_receipt(copy, receipt)?;
        mail.size = size;
        Ok(mail)
    }

    /// The message as parsed, with the contents of its binary parts (attachments, inline
    /// images) replaced by a few bytes that decode as they did (see [`stand_in`]), or
    /// `None` when that is longer than `max` bytes. The headers of every part, its
    /// structure, its text and HTML bodies and its attached messages stay as they are:
    /// everything classify reads. Header lines that were 8-bit are UTF-8 in it, as the
    /// parse read them.
    pub fn without_attachment_contents(&self, max: usize) -> Option<Vec<u8>> {
        let whole = self.message.raw_message();
        let mut cut: Vec<(usize, usize, &[u8])> = self
            .message
            .parts
            .iter()
            .filter_map(|p| {
                let (mail_parser::PartType::Binary(bytes)
                | mail_parser::PartType::InlineBinary(bytes)) = &p.body
                else {
                    return None;
                };
                // Contents that are UTF-8 are text to mail-parser: the body text may hold
                // them. They stay.
                if std::str::from_utf8(bytes).is_ok() {
                    return None;
                }
                let stand_in = stand_in(p.encoding);
                let (start, end) = (
                    p.offset_body as usize,
                    (p.offset_end as usize).min(whole.len()),
                );
                (start + stand_in.len() < end).then_some((start, end, stand_in))
            })
            .collect();
        cut.sort_unstable();
        let mut pieces: Vec<&[u8]> = Vec::with_capacity(cut.len() * 2 + 1);
        let mut at = 0;
        for (start, end, stand_in) in cut {
            // Binary parts are leaves and never overlap; were one inside another, the
            // outer one's contents would stay.
            if start >= at {
                pieces.push(&whole[at..start]);
                pieces.push(stand_in);
                at = end;
            }
        }
        pieces.push(&whole[at..]);
        let len: usize = pieces.iter().map(|p| p.len()).sum();
        (len <= max).then(|| pieces.concat())
    }

    /// The subject, lower-cased.
    pub fn subject_lower(&self) -> &str {
        &self.lowered().0
    }

    /// The text body, lower-cased.
    pub fn text_lower(&self) -> &str {
        &self.lowered().1
    }

    fn lowered(&self) -> &(String, String) {
        self.lower
            .get_or_init(|| (self.subject.to_lowercase(), self.text.to_lowercase()))
    }

    /// The sender's domain, lower-cased.
    pub fn from_domain(&self) -> Option<&str> {
        self.from
            .as_deref()
            .and_then(|f| f.rsplit_once('@'))
            .map(|(_, d)| d)
    }

    /// All values of a header (case-insensitive name) as text. Structured headers (addresses,
    /// dates) are returned raw.
    pub fn header_texts<'s>(&'s self, name: &'s str) -> impl Iterator<Item = Cow<'s, str>> + 's {
        self.message
            .headers()
            .iter()
            .filter(move |h| h.name().eq_ignore_ascii_case(name))
            .map(|h| match h.value() {
                HeaderValue::Text(t) => Cow::Borrowed(t.as_ref()),
                HeaderValue::TextList(l) => Cow::Owned(l.join(", ")),
                _ => {
                    // The offsets are into what mail-parser parsed: a copy whose 8-bit
                    // header lines were made UTF-8, when there were any.
                    let parsed = self.message.raw_message();
                    let start = h.offset_start() as usize;
                    let end = (h.offset_end() as usize).min(parsed.len());
                    String::from_utf8_lossy(parsed.get(start..end).unwrap_or_default())
                        .trim()
                        .to_string()
                        .into()
                }
            })
    }

    /// The first value of a header as text.
    pub fn header_text<'s>(&'s self, name: &'s str) -> Option<Cow<'s, str>> {
        self.header_texts(name).next()
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.message
            .headers()
            .iter()
            .any(|h| h.name().eq_ignore_ascii_case(name))
    }

    /// Attachments, including parts nested in attached messages.
    pub fn attachments(&self) -> Vec<Attachment<'_>> {
        self.attachment_scan().attachments
    }

    /// Attachments, including parts nested in attached messages, and the attached messages
    /// that were not opened.
    pub fn attachment_scan(&self) -> AttachmentScan<'_> {
        let mut scan = AttachmentScan {
            attachments: Vec::new(),
            unscanned: Vec::new(),
        };
        collect_attachments(&self.message, &mut scan, 0);
        scan
    }

    pub fn has_attachment(&self) -> bool {
        self.message.attachment_count() > 0
    }

    pub fn size(&self) -> u64 {
        self.size
    }
}

/// The attachments of `message`, itself attached `depth` levels deep (0: the message).
fn collect_attachments<'m>(message: &'m Message<'_>, scan: &mut AttachmentScan<'m>, depth: usize) {
    for part in message.attachments() {
        let content_type = part
            .content_type()
            .map(|ct| match ct.subtype() {
                Some(sub) => format!("{}/{}", ct.ctype(), sub).to_ascii_lowercase(),
                None => ct.ctype().to_ascii_lowercase(),
            })
            .unwrap_or_else(|| "application/octet-stream".into());
        let name = part.attachment_name();
        let label = name.unwrap_or("(unnamed)");
        match part.message() {
            Some(inner) if depth < MAX_MESSAGE_DEPTH => collect_attachments(inner, scan, depth + 1),
            Some(_) => scan.unscanned.push(format!(
                "attached message {label:?} nested {} levels deep, over the limit of {MAX_MESSAGE_DEPTH}",
                depth + 1
            )),
            None if matches!(content_type.as_str(), "message/rfc822" | "message/global") => {
                scan.unscanned.push(format!(
                    "attached message {label:?} ({} levels deep) was not parsed: \
                     mail-parser opens encoded attached messages 3 levels deep, and no broken one",
                    depth + 1
                ))
            }
            None => {}
        }
        let other_name = part
            .content_type()
            .and_then(|ct| ct.attribute("name"))
            .filter(|n| Some(*n) != name);
        scan.attachments.push(Attachment {
            name,
            other_name,
            content_type,
            contents: part.contents(),
        });
    }
}

fn body_text(message: &Message<'_>) -> String {
    let mut text = String::new();
    for part in message.text_bodies() {
        if let Some(t) = part.text_contents() {
            if part.is_text_html() {
                text.push_str(&mail_parser::decoders::html::html_to_text(t));
            } else {
                text.push_str(t);
            }
            text.push('\n');
        }
        if text.len() >= MAX_TEXT {
            break;
        }
    }
    if text.trim().is_empty() {
        for part in message.html_bodies() {
            if let Some(t) = part.text_contents() {
                text.push_str(&mail_parser::decoders::html::html_to_text(t));
            }
            if text.len() >= MAX_TEXT {
                break;
            }
        }
    }
    if text.len() > MAX_TEXT {
        let mut cut = MAX_TEXT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

/// The message with every header line that is not UTF-8 decoded as Windows-1252 and
/// written as UTF-8; `None` when the header section is UTF-8 already (nearly always).
fn utf8_headers(raw: &[u8]) -> Option<Vec<u8>> {
    // The header section only: it ends at the first empty line, so a body is not scanned.
    let end = crate::route::headers::split(raw).headers.len();
    let head = &raw[..end];
    if std::str::from_utf8(head).is_ok() {
        return None;
    }
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 8);
    for line in head.split_inclusive(|b| *b == b'\n') {
        if std::str::from_utf8(line).is_ok() {
            out.extend_from_slice(line);
        } else {
            let (text, _) = encoding_rs::WINDOWS_1252.decode_without_bom_handling(line);
            out.extend_from_slice(text.as_bytes());
        }
    }
    out.extend_from_slice(&raw[end..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn parses_simple_message_and_strips_mbox_line() {
        let raw = b"From someone@example.org Mon Jan  1 00:00:00 2024\nFrom: \"Ann\" <Ann@Example.org>\nTo: sales+promo@example.com\nSubject: hi\n\nhello there\n";
        let m = Mail::parse(raw).unwrap();
        assert_eq!(m.from.as_deref(), Some("ann@example.org"));
        assert_eq!(m.from_name.as_deref(), Some("Ann"));
        assert_eq!(m.recipients, vec!["sales+promo@example.com"]);
        assert_eq!(m.subject, "hi");
        assert!(m.text.contains("hello there"));
        assert_eq!(m.from_domain(), Some("example.org"));
    }

    #[test]
    fn envelope_recipients_replace_the_header_recipients_when_ses_reported_them() {
        let raw = b"From: a@example.org\nTo: Team <team@partner.example>\nCc: cc@partner.example\nDelivered-To: forged@example.com\nSubject: x\n\nbody\n";
        let m = Mail::parse(raw).unwrap();
        assert_eq!(
            m.recipients,
            [
                "team@partner.example",
                "cc@partner.example",
                "forged@example.com"
            ]
        );
        let receipt = Receipt {
            recipients: vec!["Billing@Example.com".into(), "billing@example.com".into()],
            ..Receipt::default()
        };
        let m = Mail::parse_with_receipt(raw, Some(&receipt)).unwrap();
        assert_eq!(m.recipients, ["billing@example.com"]);
        assert_eq!(
            m.header_recipients,
            ["team@partner.example", "cc@partner.example"]
        );
        assert_eq!(m.receipt, Some(receipt));
        let silent = Receipt::default();
        let m = Mail::parse_with_receipt(raw, Some(&silent)).unwrap();
        assert_eq!(
            m.recipients.len(),
            3,
            "a receipt without recipients leaves the headers"
        );
    }

    /// Every header as mail-parser's default parser gives it, except `Received`, which
    /// must read as the same text `header_texts` cut from the raw bytes before.
    fn assert_parsed_like_default(raw: &[u8]) {
        let ours = PARSER.parse(raw).expect("ours parses");
        let default = MessageParser::default().parse(raw).expect("default parses");
        assert_eq!(ours.headers().len(), default.headers().len());
        for (a, b) in ours.headers().iter().zip(default.headers()) {
            assert_eq!(a.name(), b.name());
            if a.name().eq_ignore_ascii_case("Received") {
                let cut = String::from_utf8_lossy(
                    &raw[b.offset_start() as usize..b.offset_end() as usize],
                );
                assert_eq!(a.value().as_text(), Some(cut.trim()), "{}", a.name());
            } else {
                assert_eq!(a.value(), b.value(), "{}", a.name());
            }
        }
        assert_eq!(ours.text_body, default.text_body);
        assert_eq!(ours.parts.len(), default.parts.len());
    }

    #[test]
    fn raw_latin1_headers_read_as_the_characters_they_are() {
        let raw = b"From: Ren\xe9 M\xfcller <rene@kunde.example>\r\nTo: a@example.com\r\nSubject: R\xfcckfrage \x93Rechnung\x94\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\nGr\xfc\xdfe\r\n";
        let m = Mail::parse(raw).unwrap();
        assert_eq!(m.from_name.as_deref(), Some("René Müller"));
        assert_eq!(m.subject, "Rückfrage \u{201c}Rechnung\u{201d}");
        assert_eq!(m.text.trim(), "Grüße", "the body keeps its own charset");
        assert!(m.message.headers_raw().any(|(n, _)| n == "Subject"));
        assert!(utf8_headers(b"Subject: Gr\xc3\xbc\xc3\x9fe\r\n\r\n\xff").is_none());

        // A structured header after them reads as written: its offsets are into the copy
        // whose lines were made UTF-8 (longer), not into the raw bytes.
        let raw = b"Subject: R\xfcckfrage \xfcber \xe4\xf6\xfc\r\nTo: undisclosed-recipients:;\r\nFrom: a@example.org\r\n\r\nx\r\n";
        let m = Mail::parse(raw).unwrap();
        assert_eq!(
            m.header_text("To").as_deref(),
            Some("undisclosed-recipients:;")
        );
    }

    #[test]
    fn received_stays_text_and_every_other_header_parses_as_by_default() {
        let raw = b"Return-Path: <b@example.org>\r\nReceived: from mx.example.org (mx [192.0.2.1])\r\n\tby inbound.example.com with ESMTPS id 1; Mon, 2 Nov 2026 10:00:00 +0000\r\nReceived: from a by b; Mon, 2 Nov 2026 09:59:00 +0000\r\nFrom: \"Bea\" <b@example.org>\r\nSender: s@example.org\r\nReply-To: r@example.org\r\nTo: a@example.com, c@example.com\r\nCc: d@example.com\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nComments: none\r\nKeywords: a, b\r\nDate: Mon, 2 Nov 2026 10:00:00 +0000\r\nMessage-ID: <1@example.org>\r\nIn-Reply-To: <0@example.org>\r\nReferences: <0@example.org>\r\nList-Unsubscribe: <mailto:u@example.org>\r\nList-Id: <list.example.org>\r\nMIME-Version: 1.0\r\nContent-Language: de\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nHallo =C3=BC\r\n--x\r\nContent-Type: application/pdf; name=a.pdf\r\nContent-Disposition: attachment; filename=a.pdf\r\nContent-ID: <p@x>\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--x--\r\n";
        assert_parsed_like_default(raw);
        let m = Mail::parse(raw).unwrap();
        assert_eq!(m.subject, "Grüße");
        assert_eq!(m.header_texts("Received").count(), 2);

        // And over the whole SpamAssassin corpus, where the team's data kit is present.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/spam");
        let mut n = 0;
        for sub in ["ham", "spam"] {
            for entry in std::fs::read_dir(dir.join(sub))
                .into_iter()
                .flatten()
                .flatten()
            {
                let raw = std::fs::read(entry.path()).unwrap();
                if MessageParser::default().parse(&raw).is_some() {
                    assert_parsed_like_default(&raw);
                    n += 1;
                }
            }
        }
        if n == 0 {
            crate::skip::skipped("the corpus part: ../shared/data/spam is not present");
        } else {
            println!("{n} corpus messages parsed as by default");
        }
    }

    #[test]
    fn nesting_deep_enough_to_exhaust_the_stack_is_not_parsed() {
        let nested = |depth: usize| {
            let mut raw = String::from("From: a@example.org\r\nSubject: x\r\n");
            for _ in 0..depth {
                raw.push_str("Content-Type: Message/RFC822\r\n\r\n");
            }
            raw + "From: b@example.org\r\n\r\nx\r\n"
        };
        let raw = nested(MAX_MESSAGE_TYPES);
        let m = Mail::parse(raw.as_bytes()).unwrap();
        assert_eq!(
            m.attachment_scan().unscanned.len(),
            1,
            "past MAX_MESSAGE_DEPTH"
        );
        // 100,000 levels overflow the stack when mail-parser's structures are dropped.
        assert!(matches!(
            Mail::parse(nested(100_000).as_bytes()).err(),
            Some(MailError::Limit(_))
        ));
    }

    #[test]
    fn rejects_things_that_are_not_mail() {
        assert_eq!(Mail::parse(b"  \n").err(), Some(MailError::Empty));
        assert!(matches!(
            Mail::parse(b"\x89PNG\r\n\x1a\n\0\0\0IHDR").err(),
            Some(MailError::NotMail(_))
        ));
        assert!(matches!(
            Mail::parse(b"name,amount\nann,3\n").err(),
            Some(MailError::NotMail(_))
        ));
        assert!(matches!(
            Mail::parse(b"X-Custom: 1\n\nbody").err(),
            Some(MailError::NotMail(_))
        ));
    }

    /// What classify reads of a message, from `mail`.
    fn classify_facts(m: &Mail) -> String {
        let mut out = format!(
            "{:?} {:?} {:?} {:?} {:?} {:?} {} {} {} {}\n{}\n",
            m.from,
            m.from_name,
            m.recipients,
            m.header_recipients,
            m.message_id,
            m.subject,
            m.from_headers,
            m.size(),
            m.has_attachment(),
            m.message.parts.len(),
            m.text
        );
        for h in m.message.headers() {
            out.push_str(&format!(
                "{}: {:?}\n",
                h.name(),
                m.header_texts(h.name()).collect::<Vec<_>>()
            ));
        }
        for a in m.attachments() {
            out.push_str(&format!(
                "{:?} {:?} {}\n",
                a.name, a.other_name, a.content_type
            ));
        }
        for (i, p) in m.message.parts.iter().enumerate() {
            let ct = p
                .content_type()
                .map(|c| (c.ctype(), c.subtype(), c.attributes()));
            out.push_str(&format!("{i} {ct:?} {:?}", p.content_transfer_encoding()));
            match &p.body {
                mail_parser::PartType::Html(h) => out.push_str(&format!("html {h}")),
                mail_parser::PartType::Text(t) => out.push_str(&format!("text {}", t.len())),
                mail_parser::PartType::Binary(_) => out.push_str("binary"),
                mail_parser::PartType::InlineBinary(_) => out.push_str("inline binary"),
                mail_parser::PartType::Message(_) => out.push_str("message"),
                mail_parser::PartType::Multipart(p) => out.push_str(&format!("multipart {p:?}")),
            }
            out.push('\n');
        }
        out.push_str(&format!(
            "{:?} {:?} {:?} {:?}",
            m.message.text_body,
            m.message.html_body,
            m.message.attachments,
            m.attachment_scan().unscanned
        ));
        out
    }

    /// Whether the copy without attachment contents gives classify the same facts as the
    /// message itself; `false` when the message does not parse.
    fn assert_copy_reads_the_same(raw: &[u8]) -> bool {
        let Ok(whole) = Mail::parse(raw) else {
            return false;
        };
        let copy = whole.without_attachment_contents(usize::MAX).unwrap();
        assert!(copy.len() <= whole.raw.len() + whole.raw.len() / 2);
        let part = Mail::parse_copy(&copy, None, whole.size()).unwrap();
        assert_eq!(classify_facts(&part), classify_facts(&whole));
        true
    }

    #[test]
    fn a_copy_without_attachment_contents_reads_like_the_message() {
        // JPEG bytes, which are not UTF-8.
        let big = "/9j/4AAQ".repeat(50_000);
        let raw = format!(
            "From: =?utf-8?q?Ren=C3=A9?= <rene@customer.example>\r\n\
             To: support@example.com, Cc <cc@example.com>\r\n\
             Subject: Invoice @@@\r\n\
             Date: Mon, 7 Dec 2026 08:00:00 +0000\r\n\
             Message-ID: <m1@customer.example>\r\n\
             MIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n\
             --outer\r\n\
             Content-Type: multipart/related; boundary=\"rel\"\r\n\r\n\
             --rel\r\n\
             Content-Type: text/html; charset=utf-8\r\n\r\n\
             <p>Please see the <a href=\"https://billing.example/x\">invoice</a></p>\r\n\
             --rel\r\n\
             Content-Type: image/png\r\n\
             Content-ID: <logo>\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n\
             {big}\r\n\
             --rel--\r\n\
             --outer\r\n\
             Content-Type: application/pdf; name=\"invoice.pdf\"\r\n\
             Content-Disposition: attachment; filename=\"invoice.pdf\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n\
             {big}\r\n\
             --outer\r\n\
             Content-Type: message/rfc822\r\n\r\n\
             From: inner@partner.example\r\n\
             Subject: inner\r\n\
             Content-Type: multipart/mixed; boundary=\"in\"\r\n\r\n\
             --in\r\n\
             Content-Type: text/plain\r\n\r\n\
             inner text\r\n\
             --in\r\n\
             Content-Type: application/zip; name=\"a.zip\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n\
             UEsDBA==\r\n\
             --in--\r\n\
             --outer--\r\n"
        );
        let mut raw = raw.into_bytes();
        // A Latin-1 subject: its header line is made UTF-8 before the parse.
        let at = raw.windows(3).position(|w| w == b"@@@").unwrap();
        raw.splice(at..at + 3, *b"\xe9t\xe9");
        let whole = Mail::parse(&raw).unwrap();
        assert_eq!(whole.subject, "Invoice été");
        let copy = whole.without_attachment_contents(usize::MAX).unwrap();
        assert!(copy.len() < 2_000, "{} bytes", copy.len());
        assert!(assert_copy_reads_the_same(&raw));
        assert_eq!(whole.attachments().len(), 4, "logo, pdf, message, zip");
        // A cap the copy is over: no copy.
        assert_eq!(whole.without_attachment_contents(copy.len() - 1), None);
        assert!(whole.without_attachment_contents(copy.len()).is_some());
    }

    #[test]
    fn a_copy_of_a_single_binary_part_keeps_its_headers() {
        let raw = b"From: a@example.org\nSubject: scan\nContent-Type: application/pdf\nContent-Transfer-Encoding: base64\n\nJVBERi0xLjQKJeLjz9MK\n";
        assert!(assert_copy_reads_the_same(raw));
        let whole = Mail::parse(raw).unwrap();
        let copy = whole.without_attachment_contents(usize::MAX).unwrap();
        assert!(
            copy.ends_with(b"base64\n\n////"),
            "{}",
            String::from_utf8_lossy(&copy)
        );
        // Contents that are UTF-8 are text to mail-parser, and stay.
        let raw = b"From: a@example.org\nSubject: data\nContent-Type: application/json\nContent-Transfer-Encoding: base64\n\neyJhIjogMX0K\n";
        let whole = Mail::parse(raw).unwrap();
        assert_eq!(whole.without_attachment_contents(usize::MAX).unwrap(), raw);
    }

    #[test]
    fn copies_of_the_corpus_read_like_the_messages() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
        let mut files = Vec::new();
        for sub in ["spam/ham", "spam/spam"] {
            files.extend(
                std::fs::read_dir(dir.join(sub))
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path()),
            );
        }
        let mut walk = vec![dir.join("mime-edge-cases")];
        while let Some(d) = walk.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let path = e.path();
                if path.is_dir() {
                    walk.push(path);
                } else if path.extension().is_none_or(|x| x != "txt") && !path.ends_with("COPYING")
                {
                    files.push(path);
                }
            }
        }
        let n = files
            .iter()
            .filter(|path| {
                let raw = std::fs::read(path).unwrap();
                std::panic::catch_unwind(|| assert_copy_reads_the_same(&raw))
                    .unwrap_or_else(|_| panic!("{}", path.display()))
            })
            .count();
        if n == 0 {
            crate::skip::skipped("copies of the corpus: ../shared/data is not present");
        } else {
            println!("{n} corpus messages: their copies read the same");
        }
    }
}
