//! Edits the header section of a raw RFC 5322 message without touching its body.
//!
//! Forwarding and storing must not re-encode MIME: the body (up to 40 MB) is copied byte for
//! byte, in one pass into one output buffer, with no parse round trip. The header section is
//! everything before the first empty line (CRLF or LF); fields are iterated with their folded
//! continuation lines, and new fields are written in the line-ending style the message uses.

use std::borrow::Cow;

use bytes::Bytes;

use crate::ports::MailBytes;

/// Header lines longer than this (in bytes) are folded at whitespace when we write them.
const FOLD_AT: usize = 78;

/// Bytes of UTF-8 text per RFC 2047 encoded-word: 36 bytes are 48 base64 characters, so an
/// encoded-word (`=?utf-8?B?` + 48 + `?=`, 60 characters) stays well within the 75 RFC 2047
/// allows and fits on the first line after most field names.
const WORD_BYTES: usize = 36;

/// A raw message split into its header section and the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split<'a> {
    /// The header fields, each ending with its line ending (the last one may lack it when
    /// the message has no body and no final newline).
    pub headers: &'a [u8],
    /// The empty line that ends the header section plus the body, verbatim (empty when the
    /// message has no empty line).
    pub rest: &'a [u8],
    /// Whether the message uses CRLF line endings (judged from its first line).
    pub crlf: bool,
}

/// Splits a raw message at the first empty line.
pub fn split(raw: &[u8]) -> Split<'_> {
    let crlf = match raw.iter().position(|&b| b == b'\n') {
        Some(nl) => nl > 0 && raw[nl - 1] == b'\r',
        None => true,
    };
    let mut start = 0;
    while start < raw.len() {
        let line_end = raw[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(raw.len(), |p| start + p + 1);
        let line = &raw[start..line_end];
        if line == b"\n" || line == b"\r\n" {
            break;
        }
        start = line_end;
    }
    Split {
        headers: &raw[..start],
        rest: &raw[start..],
        crlf,
    }
}

/// One header field, possibly spanning several (folded) lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    /// The name as written (without the colon or trailing blanks). For a stray line without a
    /// colon it is the whole line; for a continuation line at the very start it is empty.
    pub name: &'a [u8],
    /// The whole field: name, value, continuation lines and line endings, verbatim.
    pub raw: &'a [u8],
}

impl Field<'_> {
    /// Case-insensitive name comparison.
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
    }
}

/// Iterates the header fields of a header section (as returned in [`Split::headers`]).
pub fn fields(headers: &[u8]) -> Fields<'_> {
    Fields { rest: headers }
}

/// Iterator over header fields, see [`fields`].
#[derive(Debug, Clone)]
pub struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Fields<'a> {
    type Item = Field<'a>;

    fn next(&mut self) -> Option<Field<'a>> {
        if self.rest.is_empty() {
            return None;
        }
        let buf = self.rest;
        let line_end = |from: usize| {
            buf[from..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(buf.len(), |p| from + p + 1)
        };
        let first_end = line_end(0);
        let first = &buf[..first_end];
        let name = if first[0] == b' ' || first[0] == b'\t' {
            &first[..0]
        } else {
            let n = first
                .iter()
                .position(|&b| b == b':')
                .map_or_else(|| trim_line_end(first), |c| &first[..c]);
            trim_trailing_blanks(n)
        };
        let mut end = first_end;
        while end < buf.len() && (buf[end] == b' ' || buf[end] == b'\t') {
            end = line_end(end);
        }
        self.rest = &buf[end..];
        Some(Field {
            name,
            raw: &buf[..end],
        })
    }
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn trim_trailing_blanks(mut s: &[u8]) -> &[u8] {
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// A set of edits to apply to a message's header section in one pass: fields to remove,
/// fields of which only the first is kept, and fields to prepend.
#[derive(Debug, Clone, Default)]
pub struct HeaderEdit {
    remove: Vec<String>,
    keep_first: Vec<String>,
    prepend: Vec<(String, String)>,
    encode_8bit: bool,
}

/// Unstructured fields (free text, RFC 5322 3.6.5) that [`HeaderEdit::encode_8bit`]
/// rewrites as encoded-words when they hold raw 8-bit text.
const UNSTRUCTURED: [&str; 3] = ["Subject", "Comments", "Thread-Topic"];

impl HeaderEdit {
    pub fn new() -> Self {
        Self::default()
    }

    /// Removes every field with this name (case-insensitive).
    pub fn remove(mut self, name: &str) -> Self {
        self.remove.push(name.to_string());
        self
    }

    /// Rewrites unstructured fields written in raw 8-bit bytes (UTF-8, else read as
    /// Windows-1252, as older mailers write Latin-1) as RFC 2047 encoded-words: SES sends
    /// only 7-bit header sections, and the recipient sees the characters that were meant.
    pub fn encode_8bit(mut self) -> Self {
        self.encode_8bit = true;
        self
    }

    /// Keeps only the first field with this name (case-insensitive).
    pub fn keep_first(mut self, name: &str) -> Self {
        self.keep_first.push(name.to_string());
        self
    }

    /// Prepends a field. The name is made a valid field name (see [`sanitize_header_name`];
    /// a name with nothing valid in it is skipped) and the value is passed through
    /// [`sanitize_header_value`]. Prepended fields come out in the order they were added.
    pub fn prepend(self, name: &str, value: &str) -> Self {
        let value = sanitize_header_value(value);
        self.prepend_encoded(name, &value)
    }

    /// Prepends a field whose value the caller has already made safe: it must hold no CR, LF
    /// or other control character, and non-ASCII text must already be RFC 2047-encoded. This
    /// is for structured values such as `"Ann via mailroom" <mailroom@example.com>`. Control
    /// characters are still replaced by spaces as a last line of defence.
    pub fn prepend_encoded(mut self, name: &str, value: &str) -> Self {
        if let Some(name) = sanitize_header_name(name) {
            let value = clean_header_text(value);
            self.prepend.push((name, value));
        }
        self
    }

    /// Writes the edited message: one output buffer of about the input size; the body is
    /// copied verbatim.
    pub fn apply(&self, raw: &[u8]) -> Vec<u8> {
        let split = split(raw);
        let headers = self.header_section(&split);
        let mut out = Vec::with_capacity(headers.len() + split.rest.len());
        out.extend_from_slice(&headers);
        out.extend_from_slice(split.rest);
        out
    }

    /// The same edit as a forward sends it: the rewritten header section, then the rest of
    /// `raw` (after a leading mbox `From ` line) shared, not copied.
    pub fn apply_shared(&self, raw: &Bytes) -> MailBytes {
        let skip = raw.len() - crate::mail::strip_mbox_from_line(raw).len();
        let split = split(&raw[skip..]);
        let body = skip + split.headers.len();
        MailBytes::from_chunks([Bytes::from(self.header_section(&split)), raw.slice(body..)])
    }

    /// The edited header fields, each with its line ending.
    fn header_section(&self, split: &Split) -> Vec<u8> {
        let eol: &[u8] = if split.crlf { b"\r\n" } else { b"\n" };
        let added: usize = self
            .prepend
            .iter()
            .map(|(n, v)| n.len() + v.len() + 8 + v.len() / FOLD_AT * 3)
            .sum();
        let mut out = Vec::with_capacity(split.headers.len() + added);
        for (name, value) in &self.prepend {
            write_field(&mut out, name, value, eol);
        }
        let mut seen = vec![false; self.keep_first.len()];
        for field in fields(split.headers) {
            if self.remove.iter().any(|n| field.is(n)) {
                continue;
            }
            if let Some(i) = self.keep_first.iter().position(|n| field.is(n)) {
                if seen[i] {
                    continue;
                }
                seen[i] = true;
            }
            if self.encode_8bit && !field.raw.is_ascii() && UNSTRUCTURED.iter().any(|n| field.is(n))
            {
                let value = &field.raw[(field.name.len() + 1).min(field.raw.len())..];
                let text = match std::str::from_utf8(value) {
                    Ok(t) => Cow::Borrowed(t),
                    Err(_) => {
                        encoding_rs::WINDOWS_1252
                            .decode_without_bom_handling(value)
                            .0
                    }
                };
                let unfolded =
                    clean_header_text(&text.split_whitespace().collect::<Vec<_>>().join(" "));
                let name = String::from_utf8_lossy(field.name);
                write_field(&mut out, &name, &rfc2047_encode(&unfolded), eol);
                continue;
            }
            out.extend_from_slice(field.raw);
        }
        out
    }
}

/// Writes `name: value` plus the line ending, folding at whitespace before [`FOLD_AT`] bytes.
fn write_field(out: &mut Vec<u8>, name: &str, value: &str, eol: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.push(b':');
    let mut line_len = name.len() + 1;
    for (i, word) in value.split(' ').enumerate() {
        if i > 0 && line_len + 1 + word.len() > FOLD_AT && line_len > name.len() + 1 {
            out.extend_from_slice(eol);
            line_len = 0;
        }
        out.push(b' ');
        out.extend_from_slice(word.as_bytes());
        line_len += 1 + word.len();
    }
    out.extend_from_slice(eol);
}

/// Adds the tags to an edit: removes same-named fields and prepends the sanitized tags, so
/// that a sender cannot pre-set a tag header that downstream systems trust.
pub fn tag_edit(edit: HeaderEdit, tags: &[(String, String)]) -> HeaderEdit {
    let edit = tags
        .iter()
        .fold(edit, |e, (name, _)| match sanitize_header_name(name) {
            Some(n) => e.remove(&n),
            None => e,
        });
    tags.iter().fold(edit, |e, (n, v)| e.prepend(n, v))
}

/// A valid field name (printable ASCII except `:`): invalid characters become `-`, leading
/// and trailing `-` are dropped; `None` when nothing is left.
pub fn sanitize_header_name(name: &str) -> Option<String> {
    let cleaned: String = name
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != ':' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let cleaned = cleaned.trim_matches('-');
    (!cleaned.is_empty()).then(|| cleaned.to_string())
}

/// Replaces CR, LF, tabs and every other control character by a space, collapses runs of
/// whitespace and trims. The result can go into a header without starting a new field.
pub fn clean_header_text(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut pending_space = false;
    for c in value.chars() {
        if c.is_control() || c.is_whitespace() {
            pending_space = !out.is_empty();
        } else {
            if pending_space {
                out.push(' ');
                pending_space = false;
            }
            out.push(c);
        }
    }
    out
}

/// A header value that is safe to write: control characters (CR, LF, ...) removed as in
/// [`clean_header_text`], and non-ASCII text RFC 2047 B-encoded (UTF-8).
pub fn sanitize_header_value(value: &str) -> String {
    let clean = clean_header_text(value);
    if clean.is_ascii() {
        clean
    } else {
        rfc2047_encode(&clean).into_owned()
    }
}

/// The address if it can be written into a header as is: `local@domain`, both parts
/// non-empty, with no whitespace, control character or `<>,;"()\\` that could smuggle in a
/// second address or break the field. Surrounding whitespace and angle brackets are removed.
pub fn clean_address(address: &str) -> Option<String> {
    let a = address
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim();
    let (local, domain) = a.split_once('@')?;
    let bad = |c: char| {
        c.is_control()
            || c.is_whitespace()
            || matches!(c, '<' | '>' | ',' | ';' | '"' | '(' | ')' | '\\')
    };
    (!local.is_empty() && !domain.is_empty() && !domain.contains('@') && !a.contains(bad))
        .then(|| a.to_string())
}

/// RFC 2047 B-encoding (UTF-8) of a text, as encoded-words of at most 60 characters separated
/// by spaces (which decoders drop between adjacent encoded-words). ASCII text is returned
/// unchanged. The input should already be free of control characters.
pub fn rfc2047_encode(text: &str) -> Cow<'_, str> {
    if text.is_ascii() {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() * 2);
    let mut start = 0;
    while start < text.len() {
        let mut end = (start + WORD_BYTES).min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str("=?utf-8?B?");
        out.push_str(&base64(&text.as_bytes()[start..end]));
        out.push_str("?=");
        start = end;
    }
    Cow::Owned(out)
}

fn base64(bytes: &[u8]) -> String {
    // mail-builder's encoder, inline mode: no line breaks. Writing to a Vec cannot fail.
    let encoded = mail_builder::encoders::base64::base64_encode(bytes).unwrap_or_default();
    String::from_utf8(encoded).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Removes every field with one of these names (case-insensitive).
    fn remove_fields(raw: &[u8], names: &[&str]) -> Vec<u8> {
        names
            .iter()
            .fold(HeaderEdit::new(), |e, n| e.remove(n))
            .apply(raw)
    }

    /// Keeps only the first field of each of these names (case-insensitive).
    fn keep_first(raw: &[u8], names: &[&str]) -> Vec<u8> {
        names
            .iter()
            .fold(HeaderEdit::new(), |e, n| e.keep_first(n))
            .apply(raw)
    }

    /// Prepends fields (values sanitized with [`sanitize_header_value`]).
    fn prepend_fields(raw: &[u8], new: &[(String, String)]) -> Vec<u8> {
        new.iter()
            .fold(HeaderEdit::new(), |e, (n, v)| e.prepend(n, v))
            .apply(raw)
    }

    /// The tagged copy a `store` with tags writes (see [`tag_edit`]).
    fn tagged_copy(raw: &[u8], tags: &[(String, String)]) -> Vec<u8> {
        tag_edit(HeaderEdit::new(), tags).apply(raw)
    }

    #[test]
    fn raw_8bit_subjects_become_encoded_words_in_forwards() {
        let raw = b"Subject: R\xfcckfrage \x96 Rechnung\r\n  folgt\r\nX-Other: \xfc\r\nTo: a@example.com\r\n\r\nK\xf6rper";
        let out = HeaderEdit::new().encode_8bit().apply(raw);
        let (head, body) = out.split_at(out.windows(4).position(|w| w == b"\r\n\r\n").unwrap());
        let subject =
            std::str::from_utf8(&head[..head.iter().position(|b| *b == b'\n').unwrap()]).unwrap();
        assert!(subject.starts_with("Subject: =?utf-8?B?"), "{subject}");
        let parsed = mail_parser::MessageParser::default()
            .parse(&out[..])
            .unwrap();
        assert_eq!(parsed.subject(), Some("Rückfrage \u{2013} Rechnung folgt"));
        assert!(
            head.windows(9).any(|w| w == b"X-Other: "),
            "other fields stay as they were"
        );
        assert_eq!(body, b"\r\n\r\nK\xf6rper", "the body is untouched");
        assert_eq!(
            HeaderEdit::new().apply(raw),
            raw.to_vec(),
            "only when asked"
        );
    }

    #[test]
    fn shared_edit_matches_the_copied_one() {
        let edit = HeaderEdit::new()
            .remove("DKIM-Signature")
            .keep_first("Message-ID")
            .prepend("X-Long", &"word ".repeat(40));
        let lf = String::from_utf8_lossy(CRLF_MSG).replace("\r\n", "\n");
        let mboxed = [b"From ann@example.org Mon Jan  1 00:00:00 2024\n", CRLF_MSG].concat();
        for raw in [CRLF_MSG, lf.as_bytes(), &mboxed] {
            let stripped = crate::mail::strip_mbox_from_line(raw);
            let shared = edit.apply_shared(&Bytes::copy_from_slice(raw));
            assert_eq!(shared.chunks().count(), 2, "header section and body");
            assert_eq!(
                shared.to_vec(),
                edit.apply(stripped),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    const CRLF_MSG: &[u8] = b"Received: from a\r\n\tby b\r\nFrom: Ann <ann@example.org>\r\nDKIM-Signature: v=1;\r\n b=abc\r\nSubject: hi\r\nMessage-ID: <1@x>\r\nmessage-id: <2@x>\r\n\r\nbody line\r\n\r\nFrom: not a header\r\n";
    const LF_MSG: &[u8] = b"From: ann@example.org\nSubject: hi\n\nbody\n";

    fn text(v: &[u8]) -> &str {
        std::str::from_utf8(v).unwrap()
    }

    #[test]
    fn splits_at_first_empty_line_crlf_and_lf() {
        let s = split(CRLF_MSG);
        assert!(s.crlf);
        assert!(s.headers.ends_with(b"message-id: <2@x>\r\n"));
        assert!(s.rest.starts_with(b"\r\nbody line"));
        let s = split(LF_MSG);
        assert!(!s.crlf);
        assert_eq!(s.headers, b"From: ann@example.org\nSubject: hi\n");
        assert_eq!(s.rest, b"\nbody\n");
        let s = split(b"Subject: only headers");
        assert_eq!(s.headers, b"Subject: only headers");
        assert!(s.rest.is_empty());
    }

    #[test]
    fn iterates_fields_with_continuations() {
        let s = split(CRLF_MSG);
        let names: Vec<&str> = fields(s.headers).map(|f| text(f.name)).collect();
        assert_eq!(
            names,
            [
                "Received",
                "From",
                "DKIM-Signature",
                "Subject",
                "Message-ID",
                "message-id"
            ]
        );
        let dkim = fields(s.headers).find(|f| f.is("dkim-signature")).unwrap();
        assert_eq!(dkim.raw, b"DKIM-Signature: v=1;\r\n b=abc\r\n");
        let joined: Vec<u8> = fields(s.headers).flat_map(|f| f.raw.to_vec()).collect();
        assert_eq!(joined, s.headers, "fields cover the header section exactly");
    }

    #[test]
    fn removes_dedupes_and_prepends_without_touching_body() {
        let out = HeaderEdit::new()
            .remove("dkim-signature")
            .keep_first("Message-Id")
            .prepend("X-Team", "billing")
            .apply(CRLF_MSG);
        let out = text(&out);
        assert!(out.starts_with("X-Team: billing\r\nReceived: from a\r\n\tby b\r\n"));
        assert!(!out.contains("DKIM"));
        assert!(out.contains("Message-ID: <1@x>\r\n"));
        assert!(!out.contains("<2@x>"));
        assert!(out.ends_with("\r\n\r\nbody line\r\n\r\nFrom: not a header\r\n"));
    }

    #[test]
    fn convenience_functions_and_lf_style() {
        let out = prepend_fields(LF_MSG, &[("X-A".into(), "1".into())]);
        assert_eq!(
            text(&out),
            "X-A: 1\nFrom: ann@example.org\nSubject: hi\n\nbody\n"
        );
        let out = remove_fields(LF_MSG, &["subject"]);
        assert_eq!(text(&out), "From: ann@example.org\n\nbody\n");
        let out = keep_first(CRLF_MSG, &["message-id"]);
        assert!(!text(&out).contains("<2@x>"));
    }

    #[test]
    fn body_is_copied_verbatim_with_one_allocation() {
        let mut raw = b"Subject: big\r\n\r\n".to_vec();
        raw.extend(std::iter::repeat_n(0xffu8, 1 << 20));
        let out = tagged_copy(&raw, &[("X-Tag".into(), "v".into())]);
        assert!(out.capacity() < raw.len() + 256);
        assert_eq!(&out[out.len() - (1 << 20)..], &raw[raw.len() - (1 << 20)..]);
        assert!(out.starts_with(b"X-Tag: v\r\nSubject: big\r\n\r\n"));
    }

    #[test]
    fn tagged_copy_replaces_sender_supplied_tag_headers() {
        let raw = b"X-Team: forged\nFrom: a@b.c\n\nx";
        let out = tagged_copy(raw, &[("X-Team".into(), "sales".into())]);
        assert_eq!(text(&out), "X-Team: sales\nFrom: a@b.c\n\nx");
    }

    #[test]
    fn sanitized_value_cannot_inject_a_header() {
        let v = sanitize_header_value("hello\r\nBcc: victim@x\u{7}\u{85}end");
        assert!(!v.contains(['\r', '\n', '\u{7}']));
        let out = prepend_fields(LF_MSG, &[("X-Note".into(), "hi\r\nBcc: victim@x".into())]);
        let s = split(&out);
        let names: Vec<&str> = fields(s.headers).map(|f| text(f.name)).collect();
        assert_eq!(names, ["X-Note", "From", "Subject"]);
        assert!(text(&out).starts_with("X-Note: hi Bcc: victim@x\n"));
    }

    #[test]
    fn non_ascii_is_b_encoded_and_decodes_back() {
        let v = sanitize_header_value("Grüße aus Köln");
        assert!(v.is_ascii());
        assert!(v.starts_with("=?utf-8?B?"));
        let long = "ü".repeat(100);
        let raw = prepend_fields(b"From: a@b.c\r\n\r\nx", &[("Subject".into(), long.clone())]);
        for line in text(&raw).split("\r\n") {
            assert!(line.len() <= FOLD_AT, "{line}");
        }
        let parsed = mail_parser::MessageParser::default().parse(&raw).unwrap();
        assert_eq!(parsed.subject(), Some(long.as_str()));
        let parsed = mail_parser::MessageParser::default()
            .parse(b"Subject: =?utf-8?B?R3LDvMOfZSBhdXMgS8O2bG4=?=\r\n\r\n".as_slice())
            .unwrap();
        assert_eq!(parsed.subject(), Some("Grüße aus Köln"));
        assert_eq!(v, "=?utf-8?B?R3LDvMOfZSBhdXMgS8O2bG4=?=");
    }

    #[test]
    fn addresses_are_checked_before_going_into_headers() {
        assert_eq!(
            clean_address(" <Ann@Example.org> ").as_deref(),
            Some("Ann@Example.org")
        );
        assert_eq!(clean_address("ann@example.org, eve@evil.test"), None);
        assert_eq!(clean_address("ann@example.org\r\nBcc: x@y"), None);
        assert_eq!(clean_address("@example.org"), None);
        assert_eq!(clean_address("ann"), None);
        assert_eq!(clean_address(""), None);
    }

    #[test]
    fn header_names_are_made_valid() {
        assert_eq!(sanitize_header_name("X-Team").as_deref(), Some("X-Team"));
        assert_eq!(sanitize_header_name("X Team:").as_deref(), Some("X-Team"));
        assert_eq!(sanitize_header_name(" \r\n"), None);
        let out = prepend_fields(LF_MSG, &[("\r\n".into(), "x".into())]);
        assert_eq!(out, LF_MSG);
    }
}
