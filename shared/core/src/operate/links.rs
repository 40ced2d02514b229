//! The endpoint behind a digest's links (a Lambda function URL, or the local console): GET
//! shows what the link would do and asks to confirm, and only the POST of that page acts,
//! so a mail scanner that opens every link releases nothing. A token works once (its use
//! is claimed like any effect), until it expires, and never for mail held for a virus, an
//! executable or a macro document (what [`releasable`] refuses a digest's recipient).
//!
//! What a request costs: one without a well-formed token (a browser's `/favicon.ico`, a
//! scanner's probe) is answered before anything is counted, read or written. Each source
//! address gets a number of requests per hour, an IPv6 client per /64 (one host holds a
//! whole /64, and would otherwise get a fresh count per address). Every use of a valid
//! token for a kept message is audited on it with the digest's recipient; an expired
//! token's record names the recipient only by the keyed hash erasure records use; a forged
//! token, or one for a message no longer kept (its retention ran out, or it was erased),
//! writes nothing, so no record names an address an erasure can no longer find.

use std::net::IpAddr;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use minijinja::{Environment, context};
use serde::Serialize;

use super::digest::{LinkAction, LinkToken, TokenError};
use super::{MessageSummary, Operator};
use crate::model::{AuditRecord, Stage};
use crate::operate::erase::subject_hash;
use crate::pipeline::effects::{Effects, Ran, Repeat, effect_key};
use crate::pipeline::release::{OperatorError, Refusal, Releaser, releasable};
use crate::ports::{AllowedSender, PortError};

/// Where a source address is counted: an IPv4 address (or one mapped into IPv6) alone, an
/// IPv6 address by its /64, anything else that is not an address in one shared slot.
pub fn rate_key(ip: &str) -> String {
    match ip.trim().parse::<IpAddr>().map(|a| a.to_canonical()) {
        Ok(IpAddr::V4(v4)) => v4.to_string(),
        Ok(IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Err(_) => "unparsed".into(),
    }
}

/// The page of a request without a well-formed token, if it is one: answered before
/// anything is counted, read or written (the adapters call it before they read the key).
pub fn refuse_malformed(token: Option<&str>) -> Option<LinkPage> {
    match token {
        Some(t) if LinkToken::well_formed(t) => None,
        _ => Some(malformed()),
    }
}

fn malformed() -> LinkPage {
    LinkPage::new(
        "malformed",
        400,
        "Not a valid link",
        vec!["This address answers the links of a quarantine digest, and this is not one of them. Nothing was done.".into()],
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkMethod {
    Get,
    Post,
}

/// The page a link request gets.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LinkPage {
    pub status: u16,
    pub title: String,
    pub lines: Vec<String>,
    /// The confirmation form: the token to post back and the button's label.
    pub confirm: Option<(String, String)>,
    /// What happened, for the adapter's log (not shown).
    #[serde(skip)]
    pub log: String,
    /// What happened in a word, for metrics: confirm, nothing, release, allow, reused,
    /// expired, forged, malformed, refused, unknown, limited, unavailable.
    pub outcome: &'static str,
}

impl LinkPage {
    fn new(outcome: &'static str, status: u16, title: &str, lines: Vec<String>) -> LinkPage {
        LinkPage {
            status,
            title: title.to_string(),
            log: format!("{status} {title}"),
            lines,
            confirm: None,
            outcome,
        }
    }

    fn logged(mut self, log: String) -> LinkPage {
        self.log = log;
        self
    }

    /// The page as HTML: every value escaped, no script, no style sheet, no image.
    pub fn html(&self) -> String {
        const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>mailroom: {{ title }}</title></head>
<body><main>
<h1>{{ title }}</h1>
{% for line in lines %}<p>{{ line }}</p>
{% endfor %}{% if confirm %}<form method="post"><input type="hidden" name="t" value="{{ confirm[0] }}"><button type="submit" id="confirm">{{ confirm[1] }}</button></form>
{% endif %}</main></body></html>
"#;
        static PAGES: LazyLock<Environment<'static>> = LazyLock::new(|| {
            let mut env = Environment::new();
            env.add_template("link.html", PAGE)
                .expect("the link page template parses");
            env
        });
        PAGES
            .get_template("link.html")
            .and_then(|t| {
                t.render(context! { title => &self.title, lines => &self.lines, confirm => &self.confirm })
            })
            .unwrap_or_else(|e| format!("<!doctype html><title>error</title><p>{e}</p>"))
    }
}

/// The headers every link page carries: nothing runs, nothing loads, no page frames it,
/// and the token in its URL is not sent on as a referrer or kept in a cache.
pub const PAGE_HEADERS: [(&str, &str); 5] = [
    (
        "content-security-policy",
        "default-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-store"),
    ("x-frame-options", "DENY"),
];

/// The link endpoint over an operator.
pub struct LinkDesk {
    pub operator: Operator,
    /// The current key first, then earlier keys whose links may still be out.
    pub keys: Vec<Vec<u8>>,
}

impl LinkDesk {
    /// Answers one request: `token` from the query (GET) or the form (POST), `ip` the
    /// source address, `now` in seconds since the epoch.
    pub async fn handle(
        &self,
        method: LinkMethod,
        token: Option<&str>,
        ip: &str,
        now: u64,
    ) -> LinkPage {
        let Some(text) = token.filter(|t| LinkToken::well_formed(t)) else {
            return malformed();
        };
        let engine = self.operator.engine();
        let per_hour = engine.config().digest.link_requests_per_hour;
        let hour = now / 3600;
        let until = SystemTime::UNIX_EPOCH + Duration::from_secs((hour + 2) * 3600);
        match engine
            .ports()
            .state
            .count_request(&format!("link-ip/{}/{hour}", rate_key(ip)), until)
            .await
        {
            Ok(n) if n > u64::from(per_hour) => {
                return LinkPage::new(
                    "limited",
                    429,
                    "Too many requests",
                    vec![format!(
                        "This address made more than {per_hour} link requests this hour. Try again later."
                    )],
                );
            }
            Ok(_) => {}
            Err(e) => return unavailable(&e.to_string()),
        }
        let token = match LinkToken::verify(text, &self.keys, now) {
            Ok(t) => t,
            Err(TokenError::Expired(t)) => return self.expired(&t, text, ip, now).await,
            Err(e) => {
                return LinkPage::new(
                    "forged",
                    403,
                    "Not a valid link",
                    vec![format!("{e}. Nothing was done.")],
                )
                .logged(format!("link refused from {ip}: {e}"));
            }
        };
        let summary = match self.operator.summary(&token.id).await {
            Ok(s) => s,
            Err(OperatorError::UnknownId { .. }) => return gone(),
            Err(e) => return unavailable(&e.to_string()),
        };
        let a = Asked {
            what: describe(&summary),
            token,
            summary,
            text,
            ip,
            now,
        };
        let releaser = Releaser::Digest {
            recipient: a.token.recipient.clone(),
        };
        if let Err(refusal) = releasable(&a.summary.reasons, &releaser) {
            self.audit_use(&a, "refused").await;
            let why = match &refusal {
                Refusal::NotFromDigest { finding } => format!(
                    "It was held for {finding} (a document with macros): a digest link does not release it. Ask your mail administrator, who can."
                ),
                other => format!(
                    "It was held for {}, and such mail is never released.",
                    other.finding()
                ),
            };
            return LinkPage::new(
                "refused",
                403,
                "This message cannot be released",
                vec![a.what.clone(), why],
            );
        }
        match method {
            LinkMethod::Get => self.confirm(a).await,
            LinkMethod::Post => self.act(a).await,
        }
    }

    async fn confirm(&self, a: Asked<'_>) -> LinkPage {
        self.audit_use(&a, "viewed").await;
        if a.summary.quarantined.is_none() {
            return LinkPage::new(
                "nothing",
                200,
                "Nothing to do",
                vec![
                    a.what,
                    "It is no longer in quarantine (released or deleted before).".into(),
                ],
            );
        }
        let (title, button) = match a.token.action {
            LinkAction::Release => ("Release this message?", "Release it"),
            LinkAction::Allow => (
                "Release this message and always allow its sender for you?",
                "Release it and allow the sender for me",
            ),
        };
        let mut lines = vec![
            a.what.clone(),
            format!(
                "It goes on to {} as if it had not been held.",
                a.token.recipient
            ),
        ];
        if a.token.action == LinkAction::Allow {
            lines.push(allow_scope(
                &a.token.recipient,
                a.summary.sender.as_deref(),
                &a.summary.recipients,
            ));
        }
        let mut page = LinkPage::new("confirm", 200, title, lines);
        page.confirm = Some((a.text.trim().to_string(), button.to_string()));
        page
    }

    async fn act(&self, a: Asked<'_>) -> LinkPage {
        let (token, summary, ip) = (&a.token, &a.summary, a.ip);
        let engine = self.operator.engine();
        let effects = Effects {
            state: engine.ports().state.as_ref(),
            lease: crate::pipeline::EFFECT_LEASE,
        };
        let releaser = Releaser::Digest {
            recipient: token.recipient.clone(),
        };
        let by = releaser.by();
        let key = effect_key(Stage::Route, "link", &LinkToken::fingerprint(a.text));
        let (operator, allow_list) = (&self.operator, &engine.ports().allow_list);
        let (id, action, sender) = (summary.id.clone(), token.action, summary.sender.clone());
        // "Always allow" allows the sender for the digest's recipient only, and only when
        // the message was addressed to them: never for anyone else, never in the config.
        let allowed = match (action, &sender) {
            (LinkAction::Allow, Some(s)) if summary.recipients.contains(&token.recipient) => {
                Some(AllowedSender {
                    recipient: token.recipient.clone(),
                    sender: s.clone(),
                    via: summary.id.clone(),
                    at: a.now,
                })
            }
            _ => None,
        };
        let scope = allow_scope(&token.recipient, sender.as_deref(), &summary.recipients);
        let allow_note = allow_note(allowed.as_ref(), &scope);
        let ran = effects
            .once(&summary.id, Stage::Route, &key, Repeat::AtLeastOnce, || {
                let releaser = releaser.clone();
                let allow_note = allow_note.clone();
                async move {
                    // The sender first: a release that fails after it is retried as a
                    // whole, and allowing a sender twice changes nothing.
                    let mut notes = Vec::new();
                    if let Some(entry) = &allowed {
                        allow_list.allow_sender(entry).await?;
                    }
                    if action == LinkAction::Allow {
                        notes.push(allow_note);
                    }
                    let handled = operator
                        .release(&id, &releaser)
                        .await
                        .map_err(|e| PortError::Retryable(e.to_string()))?;
                    notes.insert(0, handled.describe(&id, "released"));
                    let note = notes.join("; ");
                    Ok(note)
                }
            })
            .await;
        match ran {
            Ok(Ran::Now(note)) | Ok(Ran::Unconfirmed(note)) => {
                match token.action {
                    LinkAction::Allow => self.audit_allow(&a, &allow_note).await,
                    LinkAction::Release => self.audit_use(&a, token.action.as_str()).await,
                }
                let mut lines = vec![a.what.clone()];
                // What the summary read before acting said: still held, or released before.
                let held = summary.quarantined.is_some();
                lines.push(match (token.action, held) {
                    (LinkAction::Release, true) => {
                        "Released: it goes on as if it had not been held.".into()
                    }
                    (LinkAction::Release, false) => {
                        "It was no longer in quarantine (released or deleted before): nothing to do."
                            .into()
                    }
                    (LinkAction::Allow, true) => format!("Released. {scope}"),
                    (LinkAction::Allow, false) => format!(
                        "It was released before (nothing more to release). {scope}"
                    ),
                });
                LinkPage::new(token.action.as_str(), 200, "Done", lines)
                    .logged(format!("{} by {by} from {ip}: {note}", summary.id))
            }
            Ok(Ran::Before(_)) => {
                self.audit_use(&a, "reused").await;
                LinkPage::new(
                    "reused",
                    409,
                    "This link was used already",
                    vec![
                        a.what.clone(),
                        "A link works once. Nothing more was done.".into(),
                    ],
                )
            }
            Err(e) => unavailable(&e.to_string()),
        }
    }

    /// The audit record of a request with a valid token for a kept message: one per token
    /// and outcome, naming the digest's recipient and the source address.
    async fn audit_use(&self, a: &Asked<'_>, outcome: &str) {
        let record = AuditRecord {
            id: a.token.id.clone(),
            stage: Stage::Route,
            decision: format!("link-{outcome}"),
            reasons: vec![format!(
                "{} link of the digest to {}, from {}",
                a.token.action.as_str(),
                a.token.recipient,
                a.ip
            )],
            decided_by: vec![format!("digest:{}", a.token.recipient)],
            sender: a.summary.sender.clone(),
            at: a.now,
            event: Some(format!("link-{outcome}-{}", LinkToken::fingerprint(a.text))),
        };
        // A lost audit record does not undo what was done; the page's log says so.
        let _ = self.operator.engine().ports().audit.append(&record).await;
    }

    /// The audit record of an "always allow": what was allowed, for whom only.
    async fn audit_allow(&self, a: &Asked<'_>, note: &str) {
        let token = &a.token;
        let record = AuditRecord {
            id: token.id.clone(),
            stage: Stage::Route,
            decision: "link-allow".into(),
            reasons: vec![
                format!(
                    "allow link of the digest to {}, from {}",
                    token.recipient, a.ip
                ),
                note.to_string(),
            ],
            decided_by: vec![format!("digest:{}", token.recipient)],
            sender: a.summary.sender.clone(),
            at: a.now,
            event: Some(format!("link-allow-{}", LinkToken::fingerprint(a.text))),
        };
        let _ = self.operator.engine().ports().audit.append(&record).await;
    }

    /// An expired token (its signature checked): audited on its message while the message
    /// is kept, the recipient named only by the keyed hash of erasure records and no source
    /// address; for a message no longer kept, nothing is written.
    async fn expired(&self, token: &LinkToken, text: &str, ip: &str, now: u64) -> LinkPage {
        let page = LinkPage::new(
            "expired",
            410,
            "This link has expired",
            vec![
                "Links in a quarantine digest work for a limited time. Ask your mail administrator to release the message.".into(),
            ],
        )
        .logged(format!("expired link from {ip}"));
        let summary = match self.operator.summary(&token.id).await {
            Ok(s) => s,
            Err(OperatorError::UnknownId { .. }) => return gone(),
            Err(e) => return unavailable(&e.to_string()),
        };
        let key = match self.operator.engine().ports().state.subject_key().await {
            Ok(k) => k,
            Err(e) => return page.logged(format!("expired link from {ip}, not audited: {e}")),
        };
        let hash = subject_hash(&key, &token.recipient);
        let record = AuditRecord {
            id: summary.id.clone(),
            stage: Stage::Route,
            decision: "link-expired".into(),
            reasons: vec![format!(
                "expired {} link of a digest (recipient's subject hash {hash})",
                token.action.as_str()
            )],
            decided_by: vec![format!("digest-subject:{hash}")],
            sender: summary.sender.clone(),
            at: now,
            event: Some(format!("link-expired-{}", LinkToken::fingerprint(text))),
        };
        let _ = self.operator.engine().ports().audit.append(&record).await;
        page
    }
}

/// A request with a valid token for a message that is kept.
struct Asked<'a> {
    token: LinkToken,
    summary: MessageSummary,
    /// The message in one line, for the page.
    what: String,
    /// The token as given.
    text: &'a str,
    ip: &'a str,
    now: u64,
}

fn describe(s: &MessageSummary) -> String {
    format!(
        "From {}, subject \u{201c}{}\u{201d}.",
        s.sender.as_deref().unwrap_or("(no sender)"),
        s.subject.replace(['\r', '\n'], " ")
    )
}

/// A valid (or expired) token for a message that is no longer kept: nothing is written.
fn gone() -> LinkPage {
    LinkPage::new(
        "unknown",
        404,
        "Message not found",
        vec!["The message is no longer kept (its retention ran out, or it was erased).".into()],
    )
}

/// What an "always allow" by `recipient` does, in a sentence for the page.
fn allow_scope(recipient: &str, sender: Option<&str>, recipients: &[String]) -> String {
    match sender {
        None => "The message has no sender address: no sender is allowed.".into(),
        Some(s) if recipients.iter().any(|r| r == recipient) => format!(
            "Mail from {s} to {recipient} is no longer held for spam, for {recipient} only: \
             mail from {s} that also goes to others is filtered as before, and attachment \
             and virus checks still apply."
        ),
        Some(s) => {
            format!("The message was not addressed to {recipient}: {s} is not allowed for anyone.")
        }
    }
}

/// What an "always allow" did, for the audit trail and the log: `allowed S for R only`,
/// or why nothing was allowed.
fn allow_note(allowed: Option<&AllowedSender>, scope: &str) -> String {
    match allowed {
        Some(e) => format!(
            "allowed {} for {} only (the recipient's own allow list; allow_senders unchanged)",
            e.sender, e.recipient
        ),
        None => format!("no sender allowed: {scope}"),
    }
}

fn unavailable(detail: &str) -> LinkPage {
    LinkPage::new("unavailable", 
        503,
        "Not done: try again",
        vec!["The request could not be carried out just now; nothing was used up. Try the link again in a minute.".into()],
    )
    .logged(format!("link request failed: {detail}"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::Config;
    use crate::embedded::memory::{MemoryState, MemoryWorld, memory_ports};
    use crate::model::{Envelope, RawRef};
    use crate::operate::digest::MAX_PAYLOAD;
    use crate::pipeline::release::Handled;
    use crate::pipeline::{Engine, content_id};

    const CONFIG: &str = r#"
[mailroom]
domains = ["example.com"]

[filter]
ses_spam_fail = "quarantine"

[[classify.rules]]
name = "billing"
category = "billing"
when = { recipient = "billing@" }

[[route]]
name = "billing"
when = { category = "billing" }
actions = [{ forward = ["ledger@corp.example"] }]
"#;

    const KEY: &[u8] = b"link key of the tests, 32 bytes or more";
    const RECIPIENT: &str = "billing@example.com";
    const NOW: u64 = 2_000_000_000;

    /// SES called it spam: a false positive a recipient may release.
    const SPAM: &str = "X-SES-Spam-Verdict: FAIL\r\nFrom: Prize Desk <promo@prizes.example>\r\nTo: billing@example.com\r\nSubject: Your reward\r\nMessage-ID: <reward@prizes.example>\r\n\r\nClaim it.\r\n";

    /// An invoice whose attachment is a macro-enabled Word document.
    const MACRO: &str = "From: Vendor <ap@vendor.example>\r\nTo: billing@example.com\r\nSubject: Invoice 2231\r\nMessage-ID: <inv-2231@vendor.example>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nPlease pay the attached invoice.\r\n--b1\r\nContent-Type: application/vnd.ms-word.document.macroEnabled.12; name=\"invoice.docm\"\r\nContent-Disposition: attachment; filename=\"invoice.docm\"\r\nContent-Transfer-Encoding: base64\r\n\r\nUEsFBgAAAAAAAAAAAAAAAAAAAAAAAA==\r\n--b1--\r\n";

    struct World {
        desk: LinkDesk,
        state: Arc<MemoryState>,
        world: Arc<MemoryWorld>,
        spam: String,
        macro_doc: String,
    }

    async fn world() -> World {
        let (ports, world, state) = memory_ports();
        let config = Arc::new(Config::from_toml(CONFIG, "t.toml").unwrap());
        let engine = Arc::new(Engine::with_rules(config, ports));
        let mut ids = Vec::new();
        for raw in [SPAM, MACRO] {
            let id = content_id(raw.as_bytes());
            let raw_ref = RawRef {
                bucket: "memory".into(),
                key: id.clone(),
            };
            world
                .raw
                .lock()
                .unwrap()
                .insert(id.clone(), raw.as_bytes().to_vec());
            let out = engine
                .run_all(Envelope::new(id.clone(), raw_ref), raw.as_bytes())
                .await
                .unwrap();
            assert_eq!(
                out.envelope.results.filter.unwrap().verdict,
                crate::model::Verdict::Quarantine
            );
            ids.push(id);
        }
        World {
            desk: LinkDesk {
                operator: Operator::new(engine, "memory"),
                keys: vec![KEY.to_vec()],
            },
            state,
            world,
            macro_doc: ids.pop().unwrap(),
            spam: ids.pop().unwrap(),
        }
    }

    fn token(id: &str, expires: u64) -> String {
        LinkToken {
            id: id.to_string(),
            action: LinkAction::Release,
            recipient: RECIPIENT.into(),
            expires,
        }
        .sign(KEY)
    }

    #[tokio::test]
    async fn a_digest_link_never_releases_a_macro_document_and_an_operator_only_by_force() {
        let w = world().await;
        let t = token(&w.macro_doc, NOW + 3600);
        let page = w
            .desk
            .handle(LinkMethod::Get, Some(&t), "203.0.113.9", NOW)
            .await;
        assert_eq!((page.status, page.outcome), (403, "refused"), "{page:?}");
        assert!(page.lines[1].contains("MACRO_DOCUMENT"), "{page:?}");
        let page = w
            .desk
            .handle(LinkMethod::Post, Some(&t), "203.0.113.9", NOW)
            .await;
        assert_eq!(page.status, 403);
        assert!(w.world.sent.lock().unwrap().is_empty(), "nothing forwarded");
        let op = &w.desk.operator;
        assert!(op.corrections().await.unwrap().is_empty(), "no correction");

        // An operator without the force is refused, naming the finding and the flag.
        let e = op
            .release(&w.macro_doc, &Releaser::operator("ops-ann"))
            .await
            .unwrap_err();
        let said = e.to_string();
        assert!(
            said.contains("MACRO_DOCUMENT") && said.contains("--force-macro"),
            "{said}"
        );
        // With it, released, and the audit record names the force beside the operator.
        let forced = Releaser::Operator {
            name: "ops-ann".into(),
            force_macro: true,
        };
        match op.release(&w.macro_doc, &forced).await.unwrap() {
            Handled::Done(record) => {
                let by = &record.decided_by;
                let at = by.iter().position(|b| b == "operator:ops-ann").unwrap();
                assert_eq!(by.get(at + 1).map(String::as_str), Some("force-macro"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(w.world.sent.lock().unwrap().len(), 1, "forwarded once");
        let c = op.corrections().await.unwrap();
        assert_eq!(c[0].by, "operator:ops-ann");
    }

    #[tokio::test]
    async fn a_link_releases_the_spam_as_the_recipients_correction() {
        let w = world().await;
        let t = token(&w.spam, NOW + 3600);
        let page = w
            .desk
            .handle(LinkMethod::Get, Some(&t), "203.0.113.9", NOW)
            .await;
        assert_eq!(page.outcome, "confirm", "{page:?}");
        let page = w
            .desk
            .handle(LinkMethod::Post, Some(&t), "203.0.113.9", NOW)
            .await;
        assert_eq!(page.outcome, "release", "{page:?}");
        assert_eq!(w.world.sent.lock().unwrap().len(), 1);
        let c = w.desk.operator.corrections().await.unwrap();
        assert_eq!(c[0].by, format!("digest:{RECIPIENT}"));
    }

    #[tokio::test]
    async fn a_request_without_a_token_of_ours_counts_and_writes_nothing() {
        let w = world().await;
        let per_hour = w
            .desk
            .operator
            .engine()
            .config()
            .digest
            .link_requests_per_hour;
        let before = w.state.audit_records().len();
        let long = format!("{}.{}", "a".repeat(MAX_PAYLOAD + 1), "b".repeat(43));
        let probes = [
            None,
            Some(""),
            Some("favicon.ico"),
            Some("abc.def"),
            Some("a b.cdefghijklmnopqrstuvwxyzabcdefghijklmnopq"),
            Some(long.as_str()),
        ];
        for _ in 0..per_hour {
            for probe in probes {
                let page = w
                    .desk
                    .handle(LinkMethod::Get, probe, "203.0.113.9", NOW)
                    .await;
                assert_eq!((page.status, page.outcome), (400, "malformed"));
            }
        }
        assert_eq!(w.state.audit_records().len(), before, "no audit");
        // Not one of them was counted: the address still has its whole hour.
        let t = token(&w.spam, NOW + 3600);
        let page = w
            .desk
            .handle(LinkMethod::Get, Some(&t), "203.0.113.9", NOW)
            .await;
        assert_eq!(page.outcome, "confirm", "{page:?}");
    }

    #[tokio::test]
    async fn ipv6_clients_share_a_limit_per_64() {
        let w = world().await;
        let per_hour = w
            .desk
            .operator
            .engine()
            .config()
            .digest
            .link_requests_per_hour;
        // A forged token: counted, then refused.
        let forged = LinkToken {
            id: w.spam.clone(),
            action: LinkAction::Release,
            recipient: RECIPIENT.into(),
            expires: NOW + 3600,
        }
        .sign(b"not the key");
        for i in 0..per_hour {
            let ip = format!("2001:db8:7:9:{i:x}::1");
            let page = w
                .desk
                .handle(LinkMethod::Get, Some(&forged), &ip, NOW)
                .await;
            assert_eq!(page.outcome, "forged", "{i}: {page:?}");
        }
        let page = w
            .desk
            .handle(
                LinkMethod::Get,
                Some(&forged),
                "2001:db8:7:9:ffff:1:2:3",
                NOW,
            )
            .await;
        assert_eq!((page.status, page.outcome), (429, "limited"));
        // The next /64 and an IPv4 client have their own.
        for ip in ["2001:db8:7:a::1", "198.51.100.4"] {
            let page = w.desk.handle(LinkMethod::Get, Some(&forged), ip, NOW).await;
            assert_eq!(page.outcome, "forged", "{ip}");
        }
        assert_eq!(rate_key("2001:DB8:7:9:0:0:0:1"), "2001:db8:7:9::/64");
        assert_eq!(rate_key("::ffff:198.51.100.4"), "198.51.100.4");
        assert_eq!(rate_key("not an address"), "unparsed");
    }

    #[tokio::test]
    async fn an_expired_link_names_its_recipient_by_hash_and_an_orphaned_one_writes_nothing() {
        let w = world().await;
        let before = w.state.audit_records().len();
        // The message is gone (its retention ran out, or it was erased).
        for t in [
            token("erased-message", NOW - 1),
            token("erased-message", NOW + 60),
        ] {
            let page = w
                .desk
                .handle(LinkMethod::Post, Some(&t), "203.0.113.9", NOW)
                .await;
            assert!(matches!(page.outcome, "unknown"), "{page:?}");
        }
        assert_eq!(w.state.audit_records().len(), before, "nothing written");

        let t = token(&w.spam, NOW - 1);
        let page = w
            .desk
            .handle(LinkMethod::Post, Some(&t), "203.0.113.9", NOW)
            .await;
        assert_eq!((page.status, page.outcome), (410, "expired"));
        let records = w.state.audit_records();
        let expired: Vec<&AuditRecord> = records
            .iter()
            .filter(|r| r.decision == "link-expired")
            .collect();
        assert_eq!(expired.len(), 1, "{records:?}");
        let text = serde_json::to_string(expired[0]).unwrap();
        assert!(
            !text.contains("billing@") && !text.contains("203.0.113.9"),
            "{text}"
        );
        let key = crate::ports::StateStore::subject_key(w.state.as_ref())
            .await
            .unwrap();
        let hash = subject_hash(&key, RECIPIENT);
        assert!(text.contains(&hash), "{text}");
        assert!(w.world.sent.lock().unwrap().is_empty());
    }
}
