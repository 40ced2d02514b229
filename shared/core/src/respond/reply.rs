//! Who gets the auto-reply, which template answers, and the reply message itself.

use std::time::{SystemTime, UNIX_EPOCH};

use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address;
use mail_builder::headers::date::Date;
use mail_builder::headers::message_id::MessageId;
use mail_builder::headers::raw::Raw;
use mail_parser::HeaderValue;
use minijinja::{Environment, UndefinedBehavior};
use sha2::{Digest, Sha256};

use crate::config::{General, RespondConfig, Template};
use crate::mail::Mail;
use crate::ports::OutgoingMail;
use crate::route::headers::{clean_address, clean_header_text};

/// At most this many message ids are carried in `References` (the first and the latest).
const MAX_REFERENCES: usize = 20;

/// What the `Return-Path` of a message says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReturnPath {
    /// No `Return-Path` field.
    Absent,
    /// `Return-Path: <>`: the null sender of bounces and other automatic mail.
    Null,
    /// A usable address, lower-cased.
    Address(String),
    /// Present but not a usable address (the text between the angle brackets, lower-cased).
    Unusable(String),
}

/// The first `Return-Path` field (the one the receiving MTA, SES, put on top).
pub fn return_path(mail: &Mail) -> ReturnPath {
    let Some(value) = mail.header_text("Return-Path") else {
        return ReturnPath::Absent;
    };
    let inner = value.trim();
    let inner = match (inner.find('<'), inner.rfind('>')) {
        (Some(open), Some(close)) if open < close => &inner[open + 1..close],
        _ => inner,
    };
    let inner = inner.trim();
    if inner.is_empty() {
        return ReturnPath::Null;
    }
    match clean_address(inner) {
        Some(a) => ReturnPath::Address(a.to_ascii_lowercase()),
        None => ReturnPath::Unusable(inner.to_ascii_lowercase()),
    }
}

/// True for the null sender, `Return-Path: <>`.
pub fn is_null_sender(mail: &Mail) -> bool {
    return_path(mail) == ReturnPath::Null
}

/// Where a reply goes: the `Return-Path` address, else the first `Reply-To` address, else the
/// `From` address; lower-cased. `None` for the null sender (`Return-Path: <>`) and when no
/// usable address is found.
pub fn reply_address(mail: &Mail) -> Option<String> {
    match return_path(mail) {
        ReturnPath::Null => return None,
        ReturnPath::Address(a) => return Some(a),
        ReturnPath::Absent | ReturnPath::Unusable(_) => {}
    }
    let reply_to = mail
        .message
        .reply_to()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .and_then(clean_address);
    reply_to
        .or_else(|| mail.from.as_deref().and_then(clean_address))
        .map(|a| a.to_ascii_lowercase())
}

/// The template for a reply. A `override_name` (from a route rule) wins, and is `None` when
/// no template has that name. Otherwise: the templates whose categories include `category`,
/// preferring the one in `language`, then one without a language; failing that the templates
/// without categories (the defaults), with the same language preference. Templates in
/// another language than the detected one are never chosen.
pub fn choose_template<'c>(
    config: &'c RespondConfig,
    category: &str,
    language: Option<&str>,
    override_name: Option<&str>,
) -> Option<&'c Template> {
    if let Some(name) = override_name {
        return config.templates.iter().find(|t| t.name == name);
    }
    let pick = |candidates: &[&'c Template]| -> Option<&'c Template> {
        let in_language = language.and_then(|l| {
            candidates.iter().copied().find(|t| {
                t.language
                    .as_deref()
                    .is_some_and(|tl| tl.trim().eq_ignore_ascii_case(l.trim()))
            })
        });
        in_language.or_else(|| candidates.iter().copied().find(|t| t.language.is_none()))
    };
    let for_category: Vec<&Template> = config
        .templates
        .iter()
        .filter(|t| t.category.iter().any(|c| c.eq_ignore_ascii_case(category)))
        .collect();
    let defaults: Vec<&Template> = config
        .templates
        .iter()
        .filter(|t| t.category.is_empty())
        .collect();
    pick(&for_category).or_else(|| pick(&defaults))
}

/// The values a reply template gets besides those taken from the message.
#[derive(Debug, Clone, Copy)]
pub struct ReplyContext<'a> {
    pub category: &'a str,
    pub reference: &'a str,
    /// The reply address is authenticated. When not, the reply carries none of the
    /// original's text: the subject is [`unauthenticated_subject`], the placeholders
    /// `subject` and `sender_name` are empty and `sender` is the reply address.
    pub authenticated: bool,
}

/// The subject of a reply to an unauthenticated sender: fixed, with the reference only.
pub fn unauthenticated_subject(reference: &str) -> String {
    format!("Automatic reply [{}]", clean_header_text(reference))
}

/// Renders `template` for `mail` and builds the reply to `to` as a MIME message. Errors name
/// the template (render errors, including undefined placeholders) or the bad address.
pub fn build_reply(
    mail: &Mail,
    template: &Template,
    ctx: &ReplyContext,
    general: &General,
    to: &str,
) -> Result<OutgoingMail, String> {
    let to = clean_address(to).ok_or_else(|| format!("reply address {to:?} is not usable"))?;
    let from = clean_address(&general.from_address).ok_or_else(|| {
        format!(
            "[mailroom] from_address {:?} is not usable",
            general.from_address
        )
    })?;

    let (subject, sender_name, sender) = if ctx.authenticated {
        let sender = mail.from.clone().unwrap_or_else(|| to.clone());
        let sender_name = mail.from_name.clone().unwrap_or_else(|| {
            sender
                .split_once('@')
                .map_or(sender.as_str(), |(local, _)| local)
                .to_string()
        });
        (
            clean_header_text(&mail.subject),
            clean_header_text(&sender_name),
            sender,
        )
    } else {
        (String::new(), String::new(), to.clone())
    };
    let values = minijinja::context! {
        subject => subject,
        sender_name => sender_name,
        sender => sender,
        category => ctx.category,
        reference => ctx.reference,
        authenticated => ctx.authenticated,
    };
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    let render = |part: &str, source: &str| {
        env.render_str(source, &values)
            .map_err(|e| format!("template {:?}: cannot render {part}: {e}", template.name))
    };
    let subject = clean_header_text(&render("subject", template.subject.get_ref())?);
    let body = render("body", template.body.get_ref())?;
    let subject = if !ctx.authenticated {
        unauthenticated_subject(ctx.reference)
    } else if subject.is_empty() {
        re_subject(&mail.subject)
    } else {
        collapse_re(&subject)
    };

    let domain = from.rsplit_once('@').map_or("localhost", |(_, d)| d);
    let mut builder = MessageBuilder::new()
        .from(Address::from(from.clone()))
        .to(Address::from(to.clone()))
        .subject(subject)
        .date(Date::now())
        .message_id(MessageId::new(new_message_id(
            mail,
            &to,
            domain,
            ctx.reference,
        )))
        .header("Auto-Submitted", Raw::new("auto-replied"))
        .header("X-Auto-Response-Suppress", Raw::new("All"))
        .text_body(body);
    if let Some(id) = mail.message_id.as_deref().and_then(clean_message_id) {
        builder = builder.in_reply_to(MessageId::new(id));
    }
    let references = references(mail);
    if !references.is_empty() {
        builder = builder.references(MessageId::from(references));
    }
    let raw = builder
        .write_to_vec()
        .map_err(|e| format!("template {:?}: cannot build reply: {e}", template.name))?;
    Ok(OutgoingMail {
        from,
        to: vec![to],
        raw: raw.into(),
    })
}

/// Leading `Re:` prefixes (any case) collapsed into the first, so that a template such as
/// `Re: {{ subject }}` on a subject that is already a reply never says `Re: Re:`.
pub fn collapse_re(subject: &str) -> String {
    let mut rest = subject;
    let mut first = None;
    loop {
        let t = rest.trim_start();
        match t.get(..3) {
            Some(p) if p.eq_ignore_ascii_case("re:") => {
                first.get_or_insert(p);
                rest = &t[3..];
            }
            _ => break,
        }
    }
    match first {
        Some(prefix) => format!("{prefix} {}", rest.trim_start())
            .trim_end()
            .to_string(),
        None => subject.to_string(),
    }
}

/// `Re: <subject>`, unless the subject already starts with `Re:` (any case).
pub fn re_subject(original: &str) -> String {
    let original = collapse_re(&clean_header_text(original));
    let already = original
        .get(..3)
        .is_some_and(|p| p.eq_ignore_ascii_case("re:"));
    if already {
        original
    } else if original.is_empty() {
        "Re:".to_string()
    } else {
        format!("Re: {original}")
    }
}

/// The original `References` plus its `Message-ID`, at most [`MAX_REFERENCES`] ids (the first
/// one and the latest ones), without duplicates.
fn references(mail: &Mail) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    let mut push = |id: &str| {
        if let Some(id) = clean_message_id(id)
            && !ids.contains(&id)
        {
            ids.push(id);
        }
    };
    match mail.message.references() {
        HeaderValue::Text(t) => push(t),
        HeaderValue::TextList(list) => list.iter().for_each(|t| push(t)),
        _ => {}
    }
    if let Some(id) = &mail.message_id {
        push(id);
    }
    if ids.len() > MAX_REFERENCES {
        ids.drain(1..ids.len() - (MAX_REFERENCES - 1));
    }
    ids
}

/// A message id (without angle brackets) if it can go into a header: printable ASCII without
/// brackets or whitespace.
fn clean_message_id(id: &str) -> Option<String> {
    let id = id.trim().trim_start_matches('<').trim_end_matches('>');
    (!id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>'))
    .then(|| id.to_string())
}

/// A fresh message id at our domain. It starts with the reference (when the reference is
/// letters, digits and dashes), so that a reply to it, which names it in In-Reply-To and
/// References, carries the reference back (see [`crate::conversation`]).
fn new_message_id(mail: &Mail, to: &str, domain: &str, reference: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut h = Sha256::new();
    h.update(now.as_nanos().to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    h.update(mail.message_id.as_deref().unwrap_or_default().as_bytes());
    h.update(to.as_bytes());
    let digest = h.finalize();
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    let safe = !reference.is_empty()
        && reference
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    match safe {
        true => format!("{reference}.{hex}.{}@{domain}", now.as_secs()),
        false => format!("{hex}.{}@{domain}", now.as_secs()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use mail_parser::{MessageParser, MimeHeaders};

    fn config(templates: &str) -> Config {
        Config::from_toml(templates, "t.toml").unwrap()
    }

    const TEMPLATES: &str = r#"
[[respond.templates]]
name = "billing-de"
category = "billing"
language = "de"
subject = "Ihre Anfrage {{ reference }}"
body = "Hallo {{ sender_name }}"

[[respond.templates]]
name = "billing"
category = ["billing", "invoices"]
subject = "Billing {{ reference }}"
body = "Hi {{ sender_name }}"

[[respond.templates]]
name = "sales-fr"
category = "sales"
language = "fr"
subject = "Merci"
body = "Bonjour"

[[respond.templates]]
name = "default-de"
language = "de"
subject = "Danke"
body = "Danke"

[[respond.templates]]
name = "default"
subject = ""
body = "Dear {{ sender_name }} ({{ sender }}), we got your {{ category }} mail \"{{ subject }}\". Ref {{ reference }}.\n"
"#;

    fn chosen(c: &Config, cat: &str, lang: Option<&str>, over: Option<&str>) -> Option<String> {
        choose_template(&c.respond, cat, lang, over).map(|t| t.name.clone())
    }

    #[test]
    fn template_choice_order() {
        let c = config(TEMPLATES);
        let name = |cat, lang, over| chosen(&c, cat, lang, over);
        assert_eq!(
            name("billing", Some("de"), None).as_deref(),
            Some("billing-de")
        );
        assert_eq!(
            name("billing", Some("en"), None).as_deref(),
            Some("billing")
        );
        assert_eq!(name("billing", None, None).as_deref(), Some("billing"));
        assert_eq!(
            name("invoices", Some("de"), None).as_deref(),
            Some("billing")
        );
        assert_eq!(name("sales", Some("fr"), None).as_deref(), Some("sales-fr"));
        assert_eq!(
            name("sales", Some("de"), None).as_deref(),
            Some("default-de")
        );
        assert_eq!(
            name("other", Some("DE"), None).as_deref(),
            Some("default-de")
        );
        assert_eq!(name("other", None, None).as_deref(), Some("default"));
        assert_eq!(
            name("billing", Some("de"), Some("sales-fr")).as_deref(),
            Some("sales-fr")
        );
        assert_eq!(name("billing", None, Some("missing")), None);
        let only_lang = config(
            "[[respond.templates]]\nname = \"x\"\nlanguage = \"de\"\nsubject = \"s\"\nbody = \"b\"\n",
        );
        assert_eq!(chosen(&only_lang, "general", Some("en"), None), None);
    }

    const MSG: &[u8] = b"Return-Path: <Ann@Example.org>\r\nFrom: \"Ann Example\" <ann@example.org>\r\nTo: support@example.com\r\nSubject: Invoice question\r\nMessage-ID: <orig-2@example.org>\r\nReferences: <orig-0@example.org> <orig-1@example.org>\r\n\r\nHello\r\n";

    #[test]
    fn reply_address_prefers_return_path_then_reply_to_then_from() {
        let m = Mail::parse(MSG).unwrap();
        assert_eq!(reply_address(&m).as_deref(), Some("ann@example.org"));
        let raw = b"Return-Path: <>\nFrom: ann@example.org\n\nx";
        let m = Mail::parse(raw).unwrap();
        assert!(is_null_sender(&m));
        assert_eq!(reply_address(&m), None);
        let raw = b"From: ann@example.org\nReply-To: Team <Team@Example.org>\n\nx";
        assert_eq!(
            reply_address(&Mail::parse(raw).unwrap()).as_deref(),
            Some("team@example.org")
        );
        let raw = b"From: Ann@Example.org\nSubject: x\n\nx";
        assert_eq!(
            reply_address(&Mail::parse(raw).unwrap()).as_deref(),
            Some("ann@example.org")
        );
        let raw = b"Subject: x\n\nx";
        assert_eq!(reply_address(&Mail::parse(raw).unwrap()), None);
    }

    fn build(
        raw: &[u8],
        template: &str,
        subject_override: Option<&str>,
    ) -> Result<Vec<u8>, String> {
        let mut c = config(TEMPLATES);
        let t = c
            .respond
            .templates
            .iter_mut()
            .find(|t| t.name == template)
            .unwrap();
        if let Some(s) = subject_override {
            *t.subject.get_mut() = s.to_string();
        }
        let t = t.clone();
        let m = Mail::parse(raw).unwrap();
        let to = reply_address(&m).unwrap();
        let ctx = ReplyContext {
            category: "billing",
            reference: "MR-ABCDE12345",
            authenticated: true,
        };
        let out = build_reply(&m, &t, &ctx, &c.mailroom, &to)?;
        assert_eq!(out.from, "mailroom@example.com");
        assert_eq!(out.to, [to]);
        Ok(out.raw.to_vec())
    }

    #[test]
    fn builds_a_threaded_auto_reply() {
        let raw = build(MSG, "default", None).unwrap();
        let p = MessageParser::default().parse(raw.as_slice()).unwrap();
        assert_eq!(p.subject(), Some("Re: Invoice question"));
        let from = p.from().unwrap().first().unwrap();
        assert_eq!(from.address(), Some("mailroom@example.com"));
        assert_eq!(
            p.to().unwrap().first().unwrap().address(),
            Some("ann@example.org")
        );
        assert_eq!(p.in_reply_to().as_text(), Some("orig-2@example.org"));
        assert_eq!(
            p.references().as_text_list().unwrap(),
            [
                "orig-0@example.org",
                "orig-1@example.org",
                "orig-2@example.org"
            ]
        );
        let header = |n: &str| {
            p.headers()
                .iter()
                .find(|h| h.name().eq_ignore_ascii_case(n))
                .and_then(|h| h.value().as_text().map(str::to_string))
        };
        assert_eq!(header("Auto-Submitted").as_deref(), Some("auto-replied"));
        assert_eq!(header("X-Auto-Response-Suppress").as_deref(), Some("All"));
        assert!(header("Precedence").is_none());
        assert!(p.message_id().unwrap().ends_with("@example.com"));
        assert_ne!(p.message_id(), Some("orig-2@example.org"));
        assert!(p.date().is_some());
        assert_eq!(
            p.body_text(0).unwrap().trim_end(),
            "Dear Ann Example (ann@example.org), we got your billing mail \"Invoice question\". Ref MR-ABCDE12345."
        );
        let ct = p.content_type().unwrap();
        assert_eq!((ct.ctype(), ct.subtype()), ("text", Some("plain")));
        assert_eq!(ct.attribute("charset"), Some("utf-8"));
    }

    #[test]
    fn rendered_subject_is_used_as_is_and_non_ascii_survives() {
        let raw = build(MSG, "billing-de", None).unwrap();
        let p = MessageParser::default().parse(raw.as_slice()).unwrap();
        assert_eq!(p.subject(), Some("Ihre Anfrage MR-ABCDE12345"));
        let raw = build(MSG, "default", Some("Re: {{ subject }} – erhalten ✓")).unwrap();
        let p = MessageParser::default().parse(raw.as_slice()).unwrap();
        assert_eq!(p.subject(), Some("Re: Invoice question – erhalten ✓"));
        let raw = build(MSG, "default", Some("Grüße")).unwrap();
        let p = MessageParser::default().parse(raw.as_slice()).unwrap();
        assert_eq!(p.subject(), Some("Grüße"));
    }

    #[test]
    fn re_is_not_doubled() {
        assert_eq!(re_subject("Invoice"), "Re: Invoice");
        assert_eq!(re_subject("Re: Invoice"), "Re: Invoice");
        assert_eq!(re_subject("RE: Invoice"), "RE: Invoice");
        assert_eq!(re_subject("re:Invoice"), "re: Invoice");
        assert_eq!(re_subject("Re: Re: Invoice"), "Re: Invoice");
        assert_eq!(
            collapse_re("Re: Re: Export fails [MR-1]"),
            "Re: Export fails [MR-1]"
        );
        assert_eq!(collapse_re("Report"), "Report");
        assert_eq!(re_subject("Fwd: Invoice"), "Re: Fwd: Invoice");
        assert_eq!(re_subject(""), "Re:");
        assert_eq!(re_subject("Ré"), "Re: Ré");
        let raw = MSG.to_vec();
        let raw = String::from_utf8(raw)
            .unwrap()
            .replace("Subject: Invoice question", "Subject: RE: Invoice question");
        let out = build(raw.as_bytes(), "default", None).unwrap();
        let p = MessageParser::default().parse(out.as_slice()).unwrap();
        assert_eq!(p.subject(), Some("RE: Invoice question"));
    }

    #[test]
    fn header_injection_through_subject_is_stripped() {
        let raw = MSG.to_vec();
        let raw = String::from_utf8(raw).unwrap().replace(
            "Subject: Invoice question",
            "Subject: =?utf-8?B?aGkNCkJjYzogdmljdGltQHg=?=",
        );
        let m = Mail::parse(raw.as_bytes()).unwrap();
        assert_eq!(m.subject, "hi\r\nBcc: victim@x");
        for subject in [None, Some("{{ subject }}"), Some("{{ sender_name }}")] {
            let out = build(raw.as_bytes(), "default", subject).unwrap();
            let p = MessageParser::default().parse(out.as_slice()).unwrap();
            let names: Vec<&str> = p.headers().iter().map(|h| h.name()).collect();
            assert!(
                !names.iter().any(|n| n.eq_ignore_ascii_case("bcc")),
                "{names:?}"
            );
            assert_eq!(
                names
                    .iter()
                    .filter(|n| n.eq_ignore_ascii_case("subject"))
                    .count(),
                1
            );
            assert!(p.bcc().is_none());
        }
        // A template that puts a line break into the subject itself.
        let out = build(MSG, "default", Some("a{{ '\\r\\n' }}Bcc: victim@x")).unwrap();
        let p = MessageParser::default().parse(out.as_slice()).unwrap();
        assert!(p.bcc().is_none());
        assert_eq!(p.subject(), Some("a Bcc: victim@x"));
    }

    #[test]
    fn a_reply_to_an_unauthenticated_sender_carries_no_original_text() {
        let raw = String::from_utf8(MSG.to_vec())
            .unwrap()
            .replace(
                "Subject: Invoice question",
                "Subject: Pills at spam.example",
            )
            .replace("\"Ann Example\"", "\"Visit spam.example\"");
        let c = config(&format!(
            "{TEMPLATES}\n[[respond.templates]]\nname = \"branch\"\nsubject = \"{{% if authenticated %}}Re: {{{{ subject }}}}{{% endif %}}\"\nbody = \"{{% if authenticated %}}Hello {{{{ sender_name }}}}{{% else %}}Hello{{% endif %}}\"\n"
        ));
        let m = Mail::parse(raw.as_bytes()).unwrap();
        let to = reply_address(&m).unwrap();
        let reply = |name: &str, authenticated: bool| {
            let t = c.respond.templates.iter().find(|t| t.name == name).unwrap();
            let ctx = ReplyContext {
                category: "billing",
                reference: "MR-ABCDE12345",
                authenticated,
            };
            let out = build_reply(&m, t, &ctx, &c.mailroom, &to).unwrap();
            out.raw.to_vec()
        };
        for name in ["default", "billing", "billing-de", "branch"] {
            let raw = reply(name, false);
            assert!(
                !String::from_utf8_lossy(&raw).contains("spam.example"),
                "{name}: {}",
                String::from_utf8_lossy(&raw)
            );
            let p = MessageParser::default().parse(raw.as_slice()).unwrap();
            assert_eq!(
                p.subject(),
                Some("Automatic reply [MR-ABCDE12345]"),
                "{name}"
            );
        }
        let p = |raw: Vec<u8>| {
            let p = MessageParser::default().parse(raw.as_slice()).unwrap();
            (
                p.subject().unwrap_or_default().to_string(),
                p.body_text(0).unwrap_or_default().trim_end().to_string(),
            )
        };
        assert_eq!(
            p(reply("default", false)).1,
            "Dear  (ann@example.org), we got your billing mail \"\". Ref MR-ABCDE12345."
        );
        assert_eq!(p(reply("branch", false)).1, "Hello");
        assert_eq!(
            p(reply("branch", true)),
            (
                "Re: Pills at spam.example".to_string(),
                "Hello Visit spam.example".to_string()
            )
        );
    }

    #[test]
    fn undefined_placeholder_is_an_error_naming_the_template() {
        let err = build(MSG, "default", Some("Hi {{ nmae }}")).unwrap_err();
        assert!(err.contains("\"default\""), "{err}");
        assert!(err.contains("subject"), "{err}");
    }

    #[test]
    fn sender_name_falls_back_to_local_part() {
        let raw = b"From: ann.smith@example.org\nSubject: x\nMessage-ID: <a@b>\n\nhello";
        let out = build(raw, "billing", None).unwrap();
        let p = MessageParser::default().parse(out.as_slice()).unwrap();
        assert_eq!(p.body_text(0).unwrap().trim_end(), "Hi ann.smith");
    }

    #[test]
    fn long_reference_chains_are_capped() {
        let refs: Vec<String> = (0..30).map(|i| format!("<r{i}@x>")).collect();
        let raw = format!(
            "From: a@b.c\nMessage-ID: <last@x>\nReferences: {}\n\nx",
            refs.join(" ")
        );
        let m = Mail::parse(raw.as_bytes()).unwrap();
        let ids = references(&m);
        assert_eq!(ids.len(), MAX_REFERENCES);
        assert_eq!(ids[0], "r0@x");
        assert_eq!(ids[MAX_REFERENCES - 1], "last@x");
        assert_eq!(ids[MAX_REFERENCES - 2], "r29@x");
    }
}
