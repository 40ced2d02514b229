//! The endpoint behind a digest's links (a Lambda function URL, or the local console): GET
//! shows what the link would do and asks to confirm, and only the POST of that page acts,
//! so a mail scanner that opens every link releases nothing. A token works once (its use
//! is claimed like any effect), until it expires, and never for mail held for a virus or
//! an executable. Each source IP gets a number of requests per hour. Every use of a
//! signed token, refused or not, is audited on its message.

use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use minijinja::{Environment, context};
use serde::Serialize;

use super::digest::{LinkAction, LinkToken, TokenError};
use super::{MessageSummary, Operator};
use crate::model::{AuditRecord, Stage};
use crate::pipeline::effects::{Effects, Ran, Repeat, effect_key};
use crate::pipeline::release::{OperatorError, never_released};
use crate::ports::{AllowedSender, PortError};

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
    /// expired, forged, refused, unknown, limited, unavailable.
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
        let engine = self.operator.engine();
        let per_hour = engine.config().digest.link_requests_per_hour;
        let hour = now / 3600;
        let until = SystemTime::UNIX_EPOCH + Duration::from_secs((hour + 2) * 3600);
        match engine
            .ports()
            .state
            .count_request(&format!("link-ip/{ip}/{hour}"), until)
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
        let Some(text) = token.filter(|t| !t.trim().is_empty()) else {
            return LinkPage::new(
                "malformed",
                400,
                "Not a valid link",
                vec!["The link has no token.".into()],
            );
        };
        let token = match LinkToken::verify(text, &self.keys, now) {
            Ok(t) => t,
            Err(TokenError::Expired(t)) => {
                self.audit(&t, None, "expired", text, ip, now).await;
                return LinkPage::new("expired", 
                    410,
                    "This link has expired",
                    vec![
                        "Links in a quarantine digest work for a limited time. Ask your mail administrator to release the message.".into(),
                    ],
                );
            }
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
            Err(OperatorError::UnknownId { .. }) => {
                return LinkPage::new(
                    "unknown",
                    404,
                    "Message not found",
                    vec![
                        "The message is no longer kept (its retention ran out, or it was erased)."
                            .into(),
                    ],
                );
            }
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
        if let Some(finding) = never_released(&a.summary.reasons) {
            self.audit_use(&a, "refused").await;
            return LinkPage::new(
                "refused",
                403,
                "This message cannot be released",
                vec![
                    a.what.clone(),
                    format!("It was held for {finding}, and such mail is never released."),
                ],
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
        let by = format!("digest:{}", token.recipient);
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
                let by = by.clone();
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
                        .release(&id, &by)
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

    /// The audit record of a request with a valid token for a kept message.
    async fn audit_use(&self, a: &Asked<'_>, outcome: &str) {
        self.audit(&a.token, Some(&a.summary), outcome, a.text, a.ip, a.now)
            .await;
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

    /// One audit record per token and outcome on the token's message.
    async fn audit(
        &self,
        token: &LinkToken,
        summary: Option<&MessageSummary>,
        outcome: &str,
        text: &str,
        ip: &str,
        now: u64,
    ) {
        let record = AuditRecord {
            id: token.id.clone(),
            stage: Stage::Route,
            decision: format!("link-{outcome}"),
            reasons: vec![format!(
                "{} link of the digest to {}, from {ip}",
                token.action.as_str(),
                token.recipient
            )],
            decided_by: vec![format!("digest:{}", token.recipient)],
            sender: summary.and_then(|s| s.sender.clone()),
            at: now,
            event: Some(format!("link-{outcome}-{}", LinkToken::fingerprint(text))),
        };
        // A lost audit record does not undo what was done; the page's log says so.
        let _ = self.operator.engine().ports().audit.append(&record).await;
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
