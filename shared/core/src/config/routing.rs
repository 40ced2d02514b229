//! The route stage's settings: route rules, their conditions and the storage prefixes.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use crate::model::{Action, Priority, Verdict};

use super::*;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// Actions for accepted mail that no route rule matched. Nothing is silently lost.
    #[serde(default = "default_actions")]
    pub default_actions: Vec<Action>,
    /// Storage prefix quarantined mail is copied under; it must lie below `quarantine/`,
    /// the only quarantine prefix the functions may write.
    #[serde(default = "default_quarantine_prefix")]
    pub quarantine_prefix: String,
}

/// Every `store` action writes below this root: `store = "billing/"` keeps the message as
/// `store/billing/<id>.eml`. In AWS the functions may write nowhere else but the quarantine.
pub const STORE_ROOT: &str = "store/";

/// The prefix quarantined mail must lie below.
pub const QUARANTINE_ROOT: &str = "quarantine/";

/// Why a storage prefix cannot be used: it must be a relative key prefix that ends with
/// `/` (or be empty), without `..`, empty segments, a backslash or control characters.
pub fn storage_prefix_problem(prefix: &str) -> Option<String> {
    if prefix.is_empty() {
        return None;
    }
    if !prefix.ends_with('/') {
        return Some(format!("storage prefix {prefix:?} must end with '/'"));
    }
    let body = &prefix[..prefix.len() - 1];
    if body
        .split('/')
        .any(|segment| segment.is_empty() || segment == "." || segment == "..")
    {
        return Some(format!(
            "storage prefix {prefix:?} must be relative, without empty, '.' or '..' segments"
        ));
    }
    if prefix.chars().any(|c| c.is_control() || c == '\\') {
        return Some(format!(
            "storage prefix {prefix:?} must not contain control characters or backslashes"
        ));
    }
    None
}

fn default_actions() -> Vec<Action> {
    vec![Action::Store("unrouted/".into())]
}
fn default_quarantine_prefix() -> String {
    "quarantine/".into()
}

impl Default for RoutingConfig {
    fn default() -> Self {
        toml::from_str("").expect("empty routing config")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRule {
    pub name: String,
    /// Conditions, all of which must hold. Without a `verdict` condition a rule only sees
    /// accepted mail.
    #[serde(default)]
    pub when: Match,
    pub actions: Vec<Action>,
    /// Go on to the next rule after this one matched (as Sieve and SES Mail Manager do).
    #[serde(default, rename = "continue")]
    pub continue_: bool,
    /// The auto-reply template for mail this rule matched, instead of the per-category one.
    #[serde(default)]
    pub reply_template: Option<Spanned<String>>,
    /// `false` suppresses the auto-reply for mail this rule matched.
    #[serde(default = "yes")]
    pub reply: bool,
    /// Follow-ups of mail this rule routed are routed the same way (unless a rule with
    /// `when = { follow_up = true }` matches them); `false` routes them afresh.
    #[serde(default = "yes")]
    pub sticky: bool,
}

/// Conditions shared by classify and route rules. Every condition given must hold; a list
/// holds when any of its entries does.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// `ann@example.com`, `@example.com` (catch-all) or `billing@` (any of our domains).
    /// Plus-addressing is folded: `sales+promo@` matches `sales@`. Matches the envelope
    /// recipients (`RCPT TO`) when SES reported them, else the header recipients.
    #[serde(default)]
    pub recipient: OneOrMany<String>,
    /// The same patterns against the `To` and `Cc` headers: what the sender wrote.
    #[serde(default)]
    pub to_header: OneOrMany<String>,
    /// `ann@example.org` or `@example.org`.
    #[serde(default)]
    pub sender: OneOrMany<String>,
    /// Sender domain, matching subdomains too.
    #[serde(default)]
    pub domain: OneOrMany<String>,
    pub subject: Option<Pattern>,
    pub body: Option<Pattern>,
    /// Words or phrases, case-insensitive, in the subject or body.
    #[serde(default)]
    pub keywords: Keywords,
    /// Header name to pattern: `header = { "X-Priority" = "^1" }`.
    #[serde(default)]
    pub header: BTreeMap<String, Pattern>,
    #[serde(default)]
    pub category: OneOrMany<String>,
    #[serde(default)]
    pub priority: OneOrMany<Priority>,
    #[serde(default)]
    pub verdict: OneOrMany<Verdict>,
    #[serde(default)]
    pub language: OneOrMany<String>,
    pub spam_score_min: Option<f32>,
    pub spam_score_max: Option<f32>,
    pub has_attachment: Option<bool>,
    pub size_min: Option<ByteSize>,
    pub size_max: Option<ByteSize>,
    /// `true` matches only follow-ups of a conversation mailroom has seen (a reply to our
    /// auto-reply or to a message we received); `false` only messages that start one.
    pub follow_up: Option<bool>,
}

impl Match {
    /// True when no condition is set other than `verdict`: such a rule matches everything
    /// it is allowed to see.
    pub fn is_catch_all(&self) -> bool {
        self.recipient.is_empty()
            && self.to_header.is_empty()
            && self.sender.is_empty()
            && self.domain.is_empty()
            && self.subject.is_none()
            && self.body.is_none()
            && self.keywords.is_empty()
            && self.header.is_empty()
            && self.category.is_empty()
            && self.priority.is_empty()
            && self.language.is_empty()
            && self.spam_score_min.is_none()
            && self.spam_score_max.is_none()
            && self.has_attachment.is_none()
            && self.size_min.is_none()
            && self.size_max.is_none()
            && self.follow_up.is_none()
    }

    /// The verdicts a rule with these conditions sees: accepted mail unless it says otherwise.
    pub fn verdicts(&self) -> Vec<Verdict> {
        if self.verdict.is_empty() {
            vec![Verdict::Accept]
        } else {
            self.verdict.0.clone()
        }
    }
}
