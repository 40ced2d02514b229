//! The data that flows between stages. Everything here is serialisable, because between
//! Lambda functions it travels inside the [`Envelope`] on SQS, and locally it is printed as JSONL.

use serde::{Deserialize, Serialize};

/// Version of the [`Envelope`] wire format; bump on any incompatible change.
pub const ENVELOPE_VERSION: u32 = 1;

/// The four pipeline stages, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Filter,
    Classify,
    Route,
    Respond,
}

impl Stage {
    pub const ALL: [Stage; 4] = [Stage::Filter, Stage::Classify, Stage::Route, Stage::Respond];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Filter => "filter",
            Stage::Classify => "classify",
            Stage::Route => "route",
            Stage::Respond => "respond",
        }
    }

    pub fn next(self) -> Option<Stage> {
        match self {
            Stage::Filter => Some(Stage::Classify),
            Stage::Classify => Some(Stage::Route),
            Stage::Route => Some(Stage::Respond),
            Stage::Respond => None,
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the raw message lives. The message never travels between stages whole: only its
/// header section does, from route to respond ([`Envelope::header_section`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawRef {
    /// Bucket name in AWS; a label such as `local` for the embedded adapters.
    pub bucket: String,
    /// Object key in AWS; file path (plus `#N` for the Nth message of an mbox) locally.
    pub key: String,
}

/// The small versioned message that passes between stages: a reference to the raw mail and
/// the results so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub version: u32,
    /// Pipeline-wide id: the SES message id in AWS, a content hash locally.
    pub id: String,
    pub raw: RawRef,
    /// What SES's receipt notification said (the SMTP envelope and SES's verdicts); none for
    /// local runs over mail files without a notification beside them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<Receipt>,
    #[serde(default)]
    pub results: StageResults,
    /// Set when an operator released the message from quarantine (their name): route and
    /// respond then audit their work as the release's, with who released it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_by: Option<String>,
    /// The force an operator named to release it (`force-macro`, see
    /// [`crate::pipeline::release::FORCE_RELEASED`]): audited beside their name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_force: Option<String>,
    /// Set by the classify stage when the message is a follow-up of one received before:
    /// which conversation it joins and what the conversation decided so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<Conversation>,
    /// What the optional language model did for it (`[assist]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assist: Option<Assisted>,
    /// The message's header section, blank line included, for the respond stage, which reads
    /// nothing else of the mail: set by route on the envelope it hands to respond, when the
    /// message parsed and the section is at most [`HEADER_SECTION_MAX`] bytes (base64 on
    /// the wire). Without it respond reads the raw mail.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "base64_bytes"
    )]
    pub header_section: Option<Vec<u8>>,
    /// The message with its binary parts' contents left out, for the classify stage, which
    /// reads nothing else of the mail: set by filter on the envelope it hands to classify,
    /// when the message parsed and the copy is at most [`CLASSIFY_COPY_MAX`] bytes. Without
    /// it classify reads the raw mail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classify_copy: Option<MailCopy>,
}

/// A copy of a message for a stage that reads no attachment contents (see
/// [`crate::mail::Mail::without_attachment_contents`]), with the message's own size, which
/// rules match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MailCopy {
    pub size: u64,
    /// base64 on the wire.
    #[serde(with = "base64_bytes::required")]
    pub mail: Vec<u8>,
}

/// The largest copy an envelope carries to classify: 40 KiB, 54 KiB in base64, so that the
/// envelope stays within one 64 KiB chunk, the unit SQS bills a send and a receive by
/// (a longer copy would cost more in SQS chunks than the S3 GET it saves). Copies are
/// mostly far smaller (of the SpamAssassin corpus: a median of 3.5 KiB, 12 of its
/// 4,245 over the cap); a longer copy makes classify read the raw mail, as before.
pub const CLASSIFY_COPY_MAX: usize = 40 * 1024;

/// The largest header section an envelope carries to respond: 32 KiB, 43 KiB in base64, well
/// inside SQS's 256 KiB message. Ordinary mail has 2 to 10 KiB of headers; a longer section
/// makes respond read the raw mail, as before.
pub const HEADER_SECTION_MAX: usize = 32 * 1024;

/// `Option<Vec<u8>>` as a base64 string: header sections may hold 8-bit bytes that are not
/// UTF-8, which a JSON string cannot carry as they are.
mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => s.serialize_str(&STANDARD.encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| STANDARD.decode(text).map_err(serde::de::Error::custom))
            .transpose()
    }

    /// The same for a `Vec<u8>` that is always there.
    pub mod required {
        use super::*;

        pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(&STANDARD.encode(bytes))
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
            STANDARD
                .decode(String::deserialize(d)?)
                .map_err(serde::de::Error::custom)
        }
    }
}

/// The language model's part in a message: each task's outcome (`decided`, `invalid`,
/// `timeout`, `throttled`, `error`, `budget`, `drafted`), and the draft reply, which is
/// for an operator and never sent by itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Assisted {
    pub model: String,
    #[serde(default)]
    pub outcomes: std::collections::BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draft: Option<String>,
}

/// A follow-up's place in its conversation (see [`crate::conversation`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    /// The conversation's id: the pipeline id of its first message.
    pub id: String,
    /// The message it follows (the one its reference or headers named).
    pub follows: String,
    /// How it was found: `reference` (a reference token mailroom issued, in the subject,
    /// body, headers or a `+ref` address) or `message-id` (In-Reply-To or References,
    /// from a participant of the conversation).
    pub by: String,
    /// What the conversation decided, which a follow-up keeps unless a rule says otherwise.
    pub category: Option<String>,
    pub priority: Option<Priority>,
    /// The classify rule that decided the category, when a rule did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category_rule: Option<String>,
    /// The priority rule that decided the priority, when a rule did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_rule: Option<String>,
    /// The route rules that matched it (`default` when none did).
    #[serde(default)]
    pub route_rules: Vec<String>,
}

/// The SMTP envelope and SES's verdicts, from the receipt notification SES publishes when it
/// has stored a message. Unlike the message's own headers, the sender cannot write any of
/// it: recipient conditions match these envelope recipients when they are known.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The envelope sender (`MAIL FROM`, `mail.source`), lower-cased; empty for bounces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mail_from: Option<String>,
    /// The envelope recipients (`RCPT TO`) the receipt rule matched, lower-cased.
    #[serde(default)]
    pub recipients: Vec<String>,
    /// SES's verdicts as it wrote them (`PASS`, `FAIL`, `GRAY`, `PROCESSING_FAILED`,
    /// `DISABLED`); `None` when the notification did not give one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spam: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virus: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spf: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dkim: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dmarc: Option<String>,
    /// The sender domain's published DMARC policy (`none`, `quarantine`, `reject`), which SES
    /// reports when DMARC fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dmarc_policy: Option<String>,
}

impl Envelope {
    pub fn new(id: impl Into<String>, raw: RawRef) -> Self {
        Envelope {
            version: ENVELOPE_VERSION,
            id: id.into(),
            raw,
            receipt: None,
            results: StageResults::default(),
            released_by: None,
            release_force: None,
            conversation: None,
            assist: None,
            header_section: None,
            classify_copy: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageResults {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<FilterResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classify: Option<ClassifyResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<RouteResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub respond: Option<RespondResult>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Accept,
    Quarantine,
    Reject,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Accept => "accept",
            Verdict::Quarantine => "quarantine",
            Verdict::Reject => "reject",
        }
    }
}

/// One finding of one filter check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reason {
    /// The check that wrote it, e.g. `ses_virus`, `attachments`.
    pub check: String,
    /// A stable machine-readable tag, e.g. `VIRUS_FAIL`, `BLOCKED_EXTENSION`.
    pub tag: String,
    /// Human-readable detail (which attachment, which header value).
    pub detail: String,
    /// What it added to the spam score (0 for pure verdict findings).
    #[serde(default)]
    pub score: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilterResult {
    pub verdict: Verdict,
    pub spam_score: f32,
    pub reasons: Vec<Reason>,
    /// Which scorer produced the content part of the score (`rules`, or a model name).
    pub scorer: String,
    /// The spam model's P(spam), when a model scored the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spam_probability: Option<f32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Low,
    Medium,
    High,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Medium => "medium",
            Priority::High => "high",
        }
    }
}

/// What decided a classification: a named rule, a model, or the configured default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "lowercase")]
pub enum DecidedBy {
    Rule(String),
    Model(String),
    Default,
    /// Kept from the conversation the message follows up (the followed message's id).
    Conversation(String),
    /// The language model of `[assist]` (its id).
    Assist(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifyResult {
    pub category: String,
    pub category_confidence: f32,
    pub category_by: DecidedBy,
    pub priority: Priority,
    pub priority_confidence: f32,
    pub priority_by: DecidedBy,
    /// ISO 639-1 code when detected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
}

/// A route action, as configured and as decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Forward(Vec<String>),
    Deliver(String),
    Store(String),
    Tag { header: String, value: String },
    Quarantine,
    Drop,
}

impl Action {
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Forward(_) => "forward",
            Action::Deliver(_) => "deliver",
            Action::Store(_) => "store",
            Action::Tag { .. } => "tag",
            Action::Quarantine => "quarantine",
            Action::Drop => "drop",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteResult {
    /// Names of the rules that matched, in order (`default` when none did).
    pub rules: Vec<String>,
    pub actions: Vec<Action>,
    /// The auto-reply template a matched rule chose, overriding the per-category choice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_template: Option<String>,
    /// Set when a matched rule said `reply = false`: the name of that rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_suppressed_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum RespondResult {
    Sent {
        to: String,
        template: String,
        reference: String,
    },
    /// The reply was handed to the sender but its outcome is unknown (the connection broke,
    /// the function stopped before recording it). Auto-replies are sent at most once, so it
    /// is not repeated.
    Unconfirmed {
        to: String,
        template: String,
        reference: String,
        reason: String,
    },
    Suppressed {
        reason: String,
    },
}

/// One audit-trail entry. Deliberately without bodies: the sender address is the only PII.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub id: String,
    pub stage: Stage,
    pub decision: String,
    pub reasons: Vec<String>,
    /// The rule(s) or model that decided.
    pub decided_by: Vec<String>,
    pub sender: Option<String>,
    /// Seconds since the Unix epoch.
    pub at: u64,
    /// The operator's action the record is of (`release`, `delete`); none for a stage's
    /// own decision. A stage has one record of each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
}

impl AuditRecord {
    /// What makes the record one of its kind for its message: the stage, and the event.
    pub fn key(&self) -> String {
        match &self.event {
            None => self.stage.as_str().to_string(),
            Some(e) => format!("{}#{e}", self.stage),
        }
    }
}
