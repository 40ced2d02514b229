//! The filter stage's settings: SES and authentication policies, the attachment policy,
//! sender allow and block lists, and the content rules and model of the spam score.

use serde::{Deserialize, Deserializer};

use crate::model::Verdict;

use super::*;

/// accept | quarantine | reject, for the configurable SES and authentication policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    Accept,
    Quarantine,
    Reject,
}

impl Policy {
    pub fn verdict(self) -> Verdict {
        match self {
            Policy::Accept => Verdict::Accept,
            Policy::Quarantine => Verdict::Quarantine,
            Policy::Reject => Verdict::Reject,
        }
    }
}

/// What to do when DMARC fails: follow the sender's published `p=`, or a fixed policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DmarcPolicy {
    Follow,
    Accept,
    Quarantine,
    Reject,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Larger messages are quarantined unread. SES accepts up to 40 MB.
    #[serde(default = "default_max_size")]
    pub max_message_size: ByteSize,
    /// A spam score at or above this quarantines.
    #[serde(default = "default_quarantine_score")]
    pub quarantine_score: f32,
    /// A spam score at or above this rejects.
    #[serde(default = "default_reject_score")]
    pub reject_score: f32,
    #[serde(default = "quarantine")]
    pub ses_spam_fail: Policy,
    #[serde(default = "accept")]
    pub ses_spam_gray: Policy,
    #[serde(default = "quarantine")]
    pub spf_fail: Policy,
    #[serde(default = "accept")]
    pub dkim_fail: Policy,
    #[serde(default = "follow")]
    pub dmarc_fail: DmarcPolicy,
    #[serde(default)]
    pub attachments: AttachmentPolicy,
    /// Addresses (`ann@example.org`) or domains (`@example.org`) whose mail skips the
    /// spam score and authentication policies (never the virus verdict or attachment policy).
    #[serde(default)]
    pub allow_senders: Vec<String>,
    /// Addresses or domains whose mail is rejected.
    #[serde(default)]
    pub block_senders: Vec<String>,
    /// Content-scoring rules of the rule-based scorer.
    #[serde(default)]
    pub rules: Vec<ScoreRule>,
    /// A spam model (`mailroom train` on ham/ and spam/ folders), relative to the config
    /// file's directory. The rules still score; the model adds its points on top.
    #[serde(default)]
    pub spam_model: Option<String>,
    /// P(spam) at or above this adds `model_score_weight` points (default 0.9).
    #[serde(default = "default_spam_threshold", deserialize_with = "probability")]
    pub spam_threshold: f32,
    /// Points the spam model adds (default: `quarantine_score`).
    #[serde(default)]
    pub model_score_weight: Option<f32>,
}

fn default_spam_threshold() -> f32 {
    0.9
}

fn default_max_size() -> ByteSize {
    ByteSize(40 * 1024 * 1024)
}
fn default_quarantine_score() -> f32 {
    5.0
}
fn default_reject_score() -> f32 {
    15.0
}
fn quarantine() -> Policy {
    Policy::Quarantine
}
fn accept() -> Policy {
    Policy::Accept
}
fn follow() -> DmarcPolicy {
    DmarcPolicy::Follow
}

impl Default for FilterConfig {
    fn default() -> Self {
        toml::from_str("").expect("empty filter config")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachmentPolicy {
    /// Extensions (without dot, case-insensitive) that are never delivered, also as the
    /// inner part of a double extension such as `invoice.pdf.exe`.
    #[serde(default = "default_blocked_extensions")]
    pub blocked_extensions: Vec<String>,
    /// Detect executables by magic bytes whatever their name.
    #[serde(default = "yes")]
    pub detect_executables: bool,
    /// Macro-enabled Office documents (`.docm`, `.xlsm`, OLE files with VBA).
    #[serde(default = "yes")]
    pub block_macros: bool,
    /// What a blocked attachment does to the message.
    #[serde(default = "quarantine")]
    pub action: Policy,
}

fn default_blocked_extensions() -> Vec<String> {
    [
        "exe", "com", "scr", "pif", "bat", "cmd", "vbs", "vbe", "js", "jse", "wsf", "wsh", "msi",
        "msp", "hta", "cpl", "jar", "ps1", "psm1", "lnk", "iso", "img", "reg", "dll", "apk", "app",
        "gadget", "chm",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

impl Default for AttachmentPolicy {
    fn default() -> Self {
        toml::from_str("").expect("empty attachment policy")
    }
}

/// Which text a content rule looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    Subject,
    Body,
    From,
    /// Subject and body.
    Text,
    Header(String),
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "subject" => Field::Subject,
            "body" => Field::Body,
            "from" => Field::From,
            "text" => Field::Text,
            other => match other.strip_prefix("header:") {
                Some(name) if !name.trim().is_empty() => {
                    Field::Header(name.trim().to_ascii_lowercase())
                }
                _ => {
                    return Err(serde::de::Error::custom(format!(
                        "unknown field {s:?}: expected subject, body, from, text or header:NAME"
                    )));
                }
            },
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreRule {
    pub name: String,
    #[serde(default = "text_field")]
    pub field: Field,
    pub pattern: Pattern,
    pub score: f32,
}

fn text_field() -> Field {
    Field::Text
}
