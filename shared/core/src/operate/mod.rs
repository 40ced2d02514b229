//! What operators look messages up by: one summary per message, written by the pipeline
//! when the route stage has decided (and by the failure path), and kept in an index by
//! arrival time, sender, recipient and quarantine, so that listing and searching read an
//! index instead of scanning the state or the bucket.
//!
//! The operator functions ([`Operator`]: list, search, show, release, delete, the overview)
//! work on any store through the ports: the embedded state of `mailroom run`, or the
//! DynamoDB table and S3 bucket of a deployed stack. The commands and the console both call
//! them.

pub mod digest;
mod erase;
pub mod feedback;
pub mod links;
mod operator;
mod overview;
mod retention;

pub use erase::{
    ErasedMessage, Erasure, ErasureRecord, Exported, Forget, MAX_DIGEST_RUNS, SHORT_HASH,
    digest_runs, hide_addresses, log_key, short_subject, subject_hash,
};
pub use feedback::{Correction, Judgement};
pub use operator::{Operator, ReleaseVia};
pub use overview::{Overview, OverviewDay};
pub use retention::Collected;

use serde::{Deserialize, Serialize};

use crate::mail::Mail;
use crate::model::{AuditRecord, DecidedBy, Envelope, Priority, RawRef, Stage, Verdict};

/// One message as the operator lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageSummary {
    /// The pipeline's id: the SES message id in AWS, a content hash locally.
    pub id: String,
    /// When the pipeline decided its route (seconds since the epoch): the list order.
    pub at: u64,
    /// The `Date` header, as the sender wrote it (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<i64>,
    /// The `From` address, lower-cased.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    /// The recipients routing matched: the envelope's when SES reported them.
    #[serde(default)]
    pub recipients: Vec<String>,
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    pub verdict: Verdict,
    pub score: f32,
    /// The tags of the filter's findings that counted (passes left out).
    #[serde(default)]
    pub reasons: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// The kinds of the route's actions (forward, deliver, store, tag, quarantine, drop).
    #[serde(default)]
    pub routes: Vec<String>,
    /// Every address the message names (From, To, Cc, Reply-To, the envelope recipients),
    /// lower-cased: what an erasure request finds it by.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// The keys of its stored copies (`store` actions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stored: Vec<String>,
    /// The quarantined copy's key, while the message is in quarantine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantined: Option<String>,
    pub raw: RawRef,
    /// The reference mailroom gives the sender for it (`MR-…`, in the auto-reply and its
    /// Message-ID): a message quoting it follows this one up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The conversation it belongs to (its first message's id), when it follows one up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<String>,
    /// The message it follows up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follows: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// The classify rule whose category holds (its own, or kept from its conversation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category_rule: Option<String>,
    /// The priority rule whose priority holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_rule: Option<String>,
    /// The route rules that matched it (`default` when none did).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route_rules: Vec<String>,
    /// The language model's draft reply (`[assist]`), for an operator to review.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draft: Option<String>,
}

impl MessageSummary {
    /// The summary of a message after its route stage, from its envelope and parse.
    pub fn of(
        env: &Envelope,
        mail: Option<&Mail<'_>>,
        at: u64,
        quarantined: Option<String>,
    ) -> Self {
        let r = &env.results;
        let filter = r.filter.as_ref();
        MessageSummary {
            id: env.id.clone(),
            at,
            date: mail
                .and_then(|m| m.message.date())
                .map(|d| d.to_timestamp()),
            sender: mail.and_then(|m| m.from.clone()),
            recipients: mail.map(|m| m.recipients.clone()).unwrap_or_else(|| {
                env.receipt
                    .as_ref()
                    .map(|r| r.recipients.clone())
                    .unwrap_or_default()
            }),
            subject: mail.map(|m| m.subject.clone()).unwrap_or_default(),
            message_id: mail.and_then(|m| m.message_id.clone()),
            verdict: filter.map_or(Verdict::Quarantine, |f| f.verdict),
            score: filter.map_or(0.0, |f| f.spam_score),
            reasons: filter
                .map(|f| {
                    f.reasons
                        .iter()
                        .filter(|x| !x.tag.ends_with("_PASS"))
                        .map(|x| x.tag.clone())
                        .collect()
                })
                .unwrap_or_default(),
            category: r.classify.as_ref().map(|c| c.category.clone()),
            routes: r
                .route
                .as_ref()
                .map(|r| r.actions.iter().map(|a| a.kind().to_string()).collect())
                .unwrap_or_default(),
            addresses: named_addresses(env, mail),
            stored: r
                .route
                .iter()
                .flat_map(|r| &r.actions)
                .filter_map(|a| match a {
                    crate::model::Action::Store(prefix) => Some(format!(
                        "{}{prefix}{}.eml",
                        crate::config::STORE_ROOT,
                        env.id
                    )),
                    _ => None,
                })
                .collect(),
            quarantined,
            raw: env.raw.clone(),
            reference: None,
            conversation: env.conversation.as_ref().map(|c| c.id.clone()),
            follows: env.conversation.as_ref().map(|c| c.follows.clone()),
            priority: r.classify.as_ref().map(|c| c.priority),
            category_rule: r.classify.as_ref().and_then(|c| {
                rule_of(
                    &c.category_by,
                    env.conversation
                        .as_ref()
                        .and_then(|x| x.category_rule.as_ref()),
                )
            }),
            priority_rule: r.classify.as_ref().and_then(|c| {
                rule_of(
                    &c.priority_by,
                    env.conversation
                        .as_ref()
                        .and_then(|x| x.priority_rule.as_ref()),
                )
            }),
            route_rules: r
                .route
                .as_ref()
                .map(|r| r.rules.clone())
                .unwrap_or_default(),
            draft: env.assist.as_ref().and_then(|a| a.draft.clone()),
        }
    }

    /// The conversation it belongs to: its own id when it starts one.
    pub fn conversation_id(&self) -> &str {
        self.conversation.as_deref().unwrap_or(&self.id)
    }
}

/// The rule behind a decision: its own, or the one its conversation kept.
fn rule_of(by: &DecidedBy, kept: Option<&String>) -> Option<String> {
    match by {
        DecidedBy::Rule(name) => Some(name.clone()),
        DecidedBy::Conversation(_) => kept.cloned(),
        DecidedBy::Model(_) | DecidedBy::Default | DecidedBy::Assist(_) => None,
    }
}

/// Every address a message names, once each, lower-cased.
fn named_addresses(env: &Envelope, mail: Option<&Mail<'_>>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |a: &str| {
        let a = a.trim().to_ascii_lowercase();
        if a.contains('@') && !out.contains(&a) {
            out.push(a);
        }
    };
    if let Some(m) = mail {
        m.from.iter().for_each(|a| add(a));
        m.recipients.iter().for_each(|a| add(a));
        m.header_recipients.iter().for_each(|a| add(a));
        for header in [m.message.reply_to(), m.message.sender()] {
            for a in header.into_iter().flat_map(|a| a.iter()) {
                if let Some(x) = a.address() {
                    add(x);
                }
            }
        }
    }
    for r in env.receipt.iter().flat_map(|r| &r.recipients) {
        add(r);
    }
    if let Some(from) = env.receipt.as_ref().and_then(|r| r.mail_from.as_deref()) {
        add(from);
    }
    out
}

/// What `show` gives of a message: its summary, its headers and text (never its HTML as
/// such: HTML bodies arrive as text), its attachments with what the attachment policy said
/// about each, and every stage's audit record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessageView {
    pub summary: MessageSummary,
    /// Header fields in order, values unfolded.
    pub headers: Vec<(String, String)>,
    pub text: String,
    pub attachments: Vec<AttachmentView>,
    pub audit: Vec<AuditRecord>,
    /// Why the stored copy could not be parsed, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parse_error: Option<String>,
    /// Its conversation, first message first, when it has follow-ups or is one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conversation: Vec<MessageSummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttachmentView {
    pub name: Option<String>,
    pub content_type: String,
    pub size: usize,
    /// The attachment policy's findings for it (blocked extension, executable, macros,
    /// blocked archive entry); empty when it passed.
    pub policy: Vec<String>,
}

/// The attachment policy's finding tags.
const ATTACHMENT_TAGS: [&str; 4] = [
    "BLOCKED_EXTENSION",
    "EXECUTABLE",
    "MACRO_DOCUMENT",
    "ARCHIVE_BLOCKED_ENTRY",
];

impl MessageView {
    /// The view of a message from its summary, its audit records and its raw bytes.
    pub fn of(summary: MessageSummary, audit: Vec<AuditRecord>, raw: &[u8]) -> MessageView {
        let filter_reasons: Vec<String> = audit
            .iter()
            .filter(|r| r.stage == Stage::Filter)
            .flat_map(|r| r.reasons.clone())
            .filter(|r| ATTACHMENT_TAGS.iter().any(|t| r.starts_with(t)))
            .collect();
        let (headers, text, attachments, parse_error) = match Mail::parse(raw) {
            Ok(mail) => {
                let headers = mail
                    .message
                    .headers_raw()
                    .map(|(n, v)| {
                        (
                            n.to_string(),
                            v.replace(['\r', '\n'], " ").trim().to_string(),
                        )
                    })
                    .collect();
                let attachments = mail
                    .attachments()
                    .iter()
                    .map(|a| {
                        let name = a.name.map(str::to_string);
                        AttachmentView {
                            policy: filter_reasons
                                .iter()
                                .filter(|r| name.as_deref().is_some_and(|n| r.contains(n)))
                                .cloned()
                                .collect(),
                            name,
                            content_type: a.content_type.clone(),
                            size: a.contents.len(),
                        }
                    })
                    .collect();
                (headers, mail.text.clone(), attachments, None)
            }
            Err(e) => (Vec::new(), String::new(), Vec::new(), Some(e.to_string())),
        };
        MessageView {
            summary,
            headers,
            text,
            attachments,
            audit,
            parse_error,
            conversation: Vec::new(),
        }
    }
}

/// Which index a query reads: the most selective its conditions allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexKey {
    Conversation(String),
    Reference(String),
    MessageId(String),
    Sender(String),
    Recipient(String),
    Quarantine,
    Time,
}

/// What to list: every condition given must hold. Newest first, at most `limit` rows,
/// older than `before` (the cursor of the previous page).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    pub quarantined_only: bool,
    pub since: Option<u64>,
    pub until: Option<u64>,
    pub sender: Option<String>,
    pub recipient: Option<String>,
    /// A case-insensitive substring of the subject.
    pub subject: Option<String>,
    /// A case-insensitive substring of a reason tag.
    pub reason: Option<String>,
    pub verdict: Option<Verdict>,
    pub category: Option<String>,
    pub message_id: Option<String>,
    /// The reference mailroom gave it (`MR-…`), case-insensitive.
    pub reference: Option<String>,
    /// The follow-ups of a conversation (its first message's id).
    pub conversation: Option<String>,
    pub limit: usize,
    pub before: Option<Cursor>,
}

/// Where a page ends: the last row's time and id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    pub at: u64,
    pub id: String,
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.at, self.id)
    }
}

impl std::str::FromStr for Cursor {
    type Err = String;
    fn from_str(s: &str) -> Result<Cursor, String> {
        let (at, id) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?} is not a page cursor (TIME:ID)"))?;
        Ok(Cursor {
            at: at
                .parse()
                .map_err(|_| format!("{s:?} is not a page cursor (TIME:ID)"))?,
            id: id.to_string(),
        })
    }
}

/// One page of a query.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Page {
    pub rows: Vec<MessageSummary>,
    /// The cursor of the next page, when there may be one.
    pub next: Option<Cursor>,
}

impl Query {
    /// The index to read.
    pub fn index(&self) -> IndexKey {
        if let Some(c) = &self.conversation {
            IndexKey::Conversation(c.trim().to_string())
        } else if let Some(r) = &self.reference {
            IndexKey::Reference(r.trim().to_ascii_uppercase())
        } else if let Some(m) = &self.message_id {
            IndexKey::MessageId(bare_message_id(m).to_string())
        } else if let Some(s) = &self.sender {
            IndexKey::Sender(s.trim().to_ascii_lowercase())
        } else if let Some(r) = &self.recipient {
            IndexKey::Recipient(r.trim().to_ascii_lowercase())
        } else if self.quarantined_only {
            IndexKey::Quarantine
        } else {
            IndexKey::Time
        }
    }

    /// Whether a row the index gave holds every condition (the index's own included).
    pub fn matches(&self, s: &MessageSummary) -> bool {
        let lower = |x: &str| x.to_lowercase();
        (!self.quarantined_only || s.quarantined.is_some())
            && self.since.is_none_or(|t| s.at >= t)
            && self.until.is_none_or(|t| s.at <= t)
            && self
                .sender
                .as_ref()
                .is_none_or(|x| s.sender.as_deref() == Some(x.trim().to_ascii_lowercase().as_str()))
            && self.recipient.as_ref().is_none_or(|x| {
                let x = x.trim().to_ascii_lowercase();
                s.recipients.contains(&x)
            })
            && self
                .subject
                .as_ref()
                .is_none_or(|x| lower(&s.subject).contains(&lower(x)))
            && self
                .reason
                .as_ref()
                .is_none_or(|x| s.reasons.iter().any(|r| lower(r).contains(&lower(x))))
            && self.verdict.is_none_or(|v| s.verdict == v)
            && self.category.as_ref().is_none_or(|c| {
                s.category
                    .as_deref()
                    .is_some_and(|x| x.eq_ignore_ascii_case(c))
            })
            && self.message_id.as_ref().is_none_or(|m| {
                s.message_id
                    .as_deref()
                    .is_some_and(|x| bare_message_id(x) == bare_message_id(m))
            })
            && self.reference.as_ref().is_none_or(|x| {
                s.reference
                    .as_deref()
                    .is_some_and(|r| r.eq_ignore_ascii_case(x.trim()))
            })
            && self
                .conversation
                .as_ref()
                .is_none_or(|c| s.conversation.as_deref() == Some(c.trim()))
            && self
                .before
                .as_ref()
                .is_none_or(|c| (s.at, s.id.as_str()) < (c.at, c.id.as_str()))
    }

    /// The page size, at least 1.
    pub fn page_size(&self) -> usize {
        if self.limit == 0 { 50 } else { self.limit }
    }
}

/// A Message-ID without its angle brackets and surrounding space.
pub fn bare_message_id(id: &str) -> &str {
    id.trim().trim_start_matches('<').trim_end_matches('>')
}

/// Message-IDs longer than this are not indexed (a DynamoDB key holds at most 2 KB): a
/// reply naming one is not found by it, and is classified as a new message.
pub const MAX_INDEXED_MESSAGE_ID: usize = 250;

/// The index key of a row in one of its orders: `prefix` (`t` time, `s` sender, `r`
/// recipient, `q` quarantine, `a` address, `m` Message-ID, `f` reference, `c`
/// conversation), the value for all but `t` and `q`, then the time (fixed width, so that
/// keys sort by it) and the id.
pub fn index_key(prefix: &str, value: Option<&str>, at: u64, id: &str) -> String {
    match value {
        Some(v) => format!("{prefix}\u{0}{v}\u{0}{at:020}\u{0}{id}"),
        None => format!("{prefix}\u{0}{at:020}\u{0}{id}"),
    }
}

/// Every index key of a summary.
pub fn index_keys(s: &MessageSummary) -> Vec<String> {
    let mut keys = vec![index_key("t", None, s.at, &s.id)];
    if let Some(sender) = &s.sender {
        keys.push(index_key("s", Some(sender), s.at, &s.id));
    }
    for r in &s.recipients {
        keys.push(index_key("r", Some(r), s.at, &s.id));
    }
    if s.quarantined.is_some() {
        keys.push(index_key("q", None, s.at, &s.id));
    }
    for a in &s.addresses {
        keys.push(index_key("a", Some(a), s.at, &s.id));
    }
    if let Some(m) = indexed_message_id(s) {
        keys.push(index_key("m", Some(m), s.at, &s.id));
    }
    if let Some(r) = &s.reference {
        keys.push(index_key("f", Some(r), s.at, &s.id));
    }
    if let Some(c) = &s.conversation {
        keys.push(index_key("c", Some(c), s.at, &s.id));
    }
    keys
}

/// The Message-ID a summary is indexed by, when it has one short enough.
pub fn indexed_message_id(s: &MessageSummary) -> Option<&str> {
    s.message_id
        .as_deref()
        .map(bare_message_id)
        .filter(|m| !m.is_empty() && m.len() <= MAX_INDEXED_MESSAGE_ID)
}

/// The key range an index query reads, newest last: `(from, to)`, `to` exclusive (the
/// page cursor, or the end of the index's keys).
pub fn index_range(q: &Query) -> (String, String) {
    let (prefix, value) = match q.index() {
        IndexKey::Conversation(c) => ("c", Some(c)),
        IndexKey::Reference(r) => ("f", Some(r)),
        IndexKey::MessageId(m) => ("m", Some(m)),
        IndexKey::Sender(s) => ("s", Some(s)),
        IndexKey::Recipient(r) => ("r", Some(r)),
        IndexKey::Quarantine => ("q", None),
        IndexKey::Time => ("t", None),
    };
    let from = index_key(prefix, value.as_deref(), q.since.unwrap_or(0), "");
    let to = match &q.before {
        Some(c) => index_key(prefix, value.as_deref(), c.at, &c.id),
        None => index_key(
            prefix,
            value.as_deref(),
            q.until.map_or(u64::MAX, |u| u.saturating_add(1)),
            "",
        ),
    };
    (from, to)
}

/// The page of `query` from rows in index order, newest first.
pub fn collect_page(rows: impl Iterator<Item = MessageSummary>, query: &Query) -> Page {
    let size = query.page_size();
    let mut out = Vec::new();
    for row in rows {
        if query.matches(&row) {
            out.push(row);
            if out.len() == size {
                break;
            }
        }
    }
    let next = (out.len() == size).then(|| {
        let last = out.last().expect("a full page");
        Cursor {
            at: last.at,
            id: last.id.clone(),
        }
    });
    Page { rows: out, next }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, at: u64, sender: &str, quarantined: bool) -> MessageSummary {
        MessageSummary {
            id: id.into(),
            at,
            date: None,
            sender: Some(sender.into()),
            recipients: vec!["billing@example.com".into()],
            subject: "Invoice 118".into(),
            message_id: Some("<m1@x.example>".into()),
            verdict: if quarantined {
                Verdict::Quarantine
            } else {
                Verdict::Accept
            },
            score: 0.0,
            reasons: vec!["SES_SPAM_FAIL".into()],
            category: Some("billing".into()),
            routes: vec!["forward".into()],
            addresses: vec![],
            stored: vec![],
            quarantined: quarantined.then(|| format!("quarantine/{id}.eml")),
            raw: RawRef {
                bucket: "b".into(),
                key: format!("raw/{id}"),
            },
            reference: None,
            conversation: None,
            follows: None,
            priority: None,
            category_rule: None,
            priority_rule: None,
            route_rules: vec![],
            draft: None,
        }
    }

    #[test]
    fn queries_pick_an_index_and_filter_the_rest() {
        let q = Query {
            sender: Some(" Ann@X.example ".into()),
            subject: Some("invoice".into()),
            ..Query::default()
        };
        assert_eq!(q.index(), IndexKey::Sender("ann@x.example".into()));
        assert!(q.matches(&row("a", 10, "ann@x.example", false)));
        assert!(!q.matches(&row("a", 10, "bob@x.example", false)));
        let q = Query {
            quarantined_only: true,
            reason: Some("spam".into()),
            message_id: Some("m1@x.example".into()),
            before: Some(Cursor {
                at: 10,
                id: "b".into(),
            }),
            ..Query::default()
        };
        assert_eq!(
            q.index(),
            IndexKey::MessageId("m1@x.example".into()),
            "a Message-ID is the most selective"
        );
        assert!(
            q.matches(&row("a", 10, "x@y", true)),
            "older than the cursor by id"
        );
        assert!(
            !q.matches(&row("c", 10, "x@y", true)),
            "the cursor's page is done"
        );
        assert!(!q.matches(&row("a", 9, "x@y", false)), "not quarantined");
        assert_eq!(Query::default().index(), IndexKey::Time);
        let c: Cursor = "1700000000:abc".parse().unwrap();
        assert_eq!(c.to_string(), "1700000000:abc");
        assert!("nope".parse::<Cursor>().is_err());
    }
}
