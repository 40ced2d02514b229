//! The one TOML configuration. Parsing validates everything a value can check by itself
//! (regexes, sizes, durations, unknown keys) so that errors carry the line and column toml
//! gives; [`Config::validate`] then checks what needs the whole file (template references,
//! unreachable rules).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Deserializer};
use toml::Spanned;

use crate::model::{Action, Priority, Verdict};

/// A config problem, located in the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}:{line}:{column}: {message}")]
pub struct ConfigError {
    pub origin: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub mailroom: General,
    #[serde(default)]
    pub filter: FilterConfig,
    #[serde(default)]
    pub classify: ClassifyConfig,
    #[serde(default)]
    pub routing: RoutingConfig,
    #[serde(default, rename = "route")]
    pub routes: Vec<Spanned<RouteRule>>,
    #[serde(default)]
    pub respond: RespondConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct General {
    /// Domains we receive mail for. Mail from them never gets an auto-reply.
    #[serde(default)]
    pub domains: Vec<String>,
    /// Further addresses of ours (in other domains) that must never get an auto-reply.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// The SES-verified address forwards and replies are sent from.
    #[serde(default = "default_from")]
    pub from_address: String,
    /// Appended to the original display name in forwards: "Ann Example via mailroom".
    #[serde(default = "default_via")]
    pub forward_name_suffix: String,
}

fn default_from() -> String {
    "mailroom@example.com".into()
}
fn default_via() -> String {
    "via mailroom".into()
}

impl Default for General {
    fn default() -> Self {
        General {
            domains: Vec::new(),
            addresses: Vec::new(),
            from_address: default_from(),
            forward_name_suffix: default_via(),
        }
    }
}

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

/// A number between 0 and 1 (a probability threshold).
fn probability<'de, D: Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
    let x = f32::deserialize(d)?;
    if (0.0..=1.0).contains(&x) {
        Ok(x)
    } else {
        Err(serde::de::Error::custom(format!(
            "{x} is not a probability between 0 and 1"
        )))
    }
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

fn yes() -> bool {
    true
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifyConfig {
    #[serde(default = "default_category")]
    pub default_category: String,
    #[serde(default = "default_priority")]
    pub default_priority: Priority,
    /// Category rules, first match wins.
    #[serde(default)]
    pub rules: Vec<Spanned<ClassifyRule>>,
    /// Priority rules, first match wins; they may use the category just decided.
    #[serde(default)]
    pub priority_rules: Vec<Spanned<PriorityRule>>,
    /// Urgency words per language (`en = ["urgent", "asap"]`): a match in subject or body
    /// raises the priority to `high` when no priority rule matched.
    #[serde(default)]
    pub urgent_words: UrgentWords,
    /// A category model, relative to the config file's directory: decides when no rule
    /// matched, if its confidence reaches `category_min_confidence`.
    #[serde(default)]
    pub category_model: Option<String>,
    #[serde(default, deserialize_with = "probability")]
    pub category_min_confidence: f32,
    /// A priority model (labels low, medium, high): decides when no priority rule and no
    /// urgent word matched, if its confidence reaches `priority_min_confidence`.
    #[serde(default)]
    pub priority_model: Option<String>,
    #[serde(default, deserialize_with = "probability")]
    pub priority_min_confidence: f32,
}

fn default_category() -> String {
    "general".into()
}
fn default_priority() -> Priority {
    Priority::Medium
}

impl Default for ClassifyConfig {
    fn default() -> Self {
        toml::from_str("").expect("empty classify config")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifyRule {
    pub name: String,
    pub category: String,
    #[serde(default = "one")]
    pub confidence: f32,
    pub when: Match,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriorityRule {
    pub name: String,
    pub priority: Priority,
    #[serde(default = "one")]
    pub confidence: f32,
    pub when: Match,
}

fn one() -> f32 {
    1.0
}

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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RespondConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// At most one reply per sender per template in this period.
    #[serde(default = "default_period")]
    pub period: HumanDuration,
    /// Prefix of the reference id given to the sender.
    #[serde(default = "default_reference_prefix")]
    pub reference_prefix: String,
    #[serde(default)]
    pub templates: Vec<Template>,
}

fn default_period() -> HumanDuration {
    HumanDuration(Duration::from_secs(7 * 24 * 3600))
}
fn default_reference_prefix() -> String {
    "MR-".into()
}

impl Default for RespondConfig {
    fn default() -> Self {
        toml::from_str("").expect("empty respond config")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    pub name: String,
    /// Categories this template answers; none means any category without a template of its own.
    #[serde(default)]
    pub category: OneOrMany<String>,
    /// ISO 639-1 code; a template with a language is preferred for mail in that language.
    pub language: Option<String>,
    /// minijinja templates; placeholders: subject, sender_name, sender, category, reference.
    pub subject: Spanned<String>,
    pub body: Spanned<String>,
}

/// A case-insensitive regular expression, compiled when the config is read.
#[derive(Clone)]
pub struct Pattern(pub Regex);

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.0.as_str())
    }
}

impl Pattern {
    pub fn is_match(&self, text: &str) -> bool {
        self.0.is_match(text)
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RegexBuilder::new(&s)
            .case_insensitive(true)
            .size_limit(1 << 20)
            .build()
            .map(Pattern)
            .map_err(|e| serde::de::Error::custom(format!("bad regex {s:?}: {e}")))
    }
}

/// Words or phrases matched as whole words, case-insensitively. They are compiled into one
/// automaton when the config is read, so a list of any length costs one pass over the text.
#[derive(Clone, Default)]
pub struct Keywords {
    pub words: Vec<String>,
    automaton: Option<aho_corasick::AhoCorasick>,
}

impl fmt::Debug for Keywords {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keywords({:?})", self.words)
    }
}

impl Keywords {
    /// Words as matched: trimmed, lower-cased, empty ones dropped.
    fn normalize(words: Vec<String>) -> Vec<String> {
        words
            .into_iter()
            .map(|w| w.trim().to_lowercase())
            .filter(|w| !w.is_empty())
            .collect()
    }

    pub fn new(words: Vec<String>) -> Result<Keywords, String> {
        let words = Keywords::normalize(words);
        if words.is_empty() {
            return Ok(Keywords::default());
        }
        let automaton = aho_corasick::AhoCorasick::new(&words)
            .map_err(|e| format!("bad keyword list {words:?}: {e}"))?;
        Ok(Keywords {
            words,
            automaton: Some(automaton),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The first keyword found as a whole word in `lower` (lower-cased text).
    pub fn find_in(&self, lower: &str) -> Option<&str> {
        self.indices_in(lower)
            .next()
            .map(|i| self.words[i].as_str())
    }

    /// The index in `words` of each whole-word occurrence in `lower`, in text order.
    fn indices_in<'s>(&'s self, lower: &'s str) -> impl Iterator<Item = usize> + 's {
        self.automaton
            .iter()
            .flat_map(move |a| a.find_overlapping_iter(lower))
            .filter(move |m| {
                let before = lower[..m.start()].chars().next_back();
                let after = lower[m.end()..].chars().next();
                !before.is_some_and(char::is_alphanumeric)
                    && !after.is_some_and(char::is_alphanumeric)
            })
            .map(|m| m.pattern().as_usize())
    }
}

/// Urgency words per language, compiled into one automaton with, for each word, the
/// languages that list it: a message is scanned once, not once per language.
#[derive(Debug, Clone, Default)]
pub struct UrgentWords {
    languages: Vec<String>,
    all: Keywords,
    /// For each of `all.words`, the positions in `languages` of the languages listing it,
    /// in increasing order.
    languages_of: Vec<Vec<usize>>,
}

impl UrgentWords {
    pub fn new(by_language: BTreeMap<String, Vec<String>>) -> Result<UrgentWords, String> {
        let mut languages: Vec<String> = Vec::new();
        let mut words: Vec<String> = Vec::new();
        let mut languages_of: Vec<Vec<usize>> = Vec::new();
        for (lang, list) in by_language {
            let lang_index = languages.len();
            languages.push(lang);
            for w in Keywords::normalize(list) {
                match words.iter().position(|x| *x == w) {
                    Some(i) => languages_of[i].push(lang_index),
                    None => {
                        words.push(w);
                        languages_of.push(vec![lang_index]);
                    }
                }
            }
        }
        Ok(UrgentWords {
            all: Keywords::new(words)?,
            languages,
            languages_of,
        })
    }

    /// The configured languages, in name order.
    pub fn languages(&self) -> impl Iterator<Item = &str> {
        self.languages.iter().map(String::as_str)
    }

    /// The first language, in name order, with one of its words in any of `lower_texts`
    /// (lower-cased), as a whole word.
    pub fn first_language_in(&self, lower_texts: &[&str]) -> Option<&str> {
        let first = lower_texts
            .iter()
            .flat_map(|text| self.all.indices_in(text))
            .filter_map(|word| self.languages_of[word].first().copied())
            .min()?;
        self.languages.get(first).map(String::as_str)
    }
}

impl<'de> Deserialize<'de> for UrgentWords {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let by_language = BTreeMap::<String, OneOrMany<String>>::deserialize(d)?
            .into_iter()
            .map(|(lang, words)| (lang, words.0))
            .collect();
        UrgentWords::new(by_language).map_err(serde::de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for Keywords {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Keywords::new(OneOrMany::<String>::deserialize(d)?.0).map_err(serde::de::Error::custom)
    }
}

/// A byte count given as a number or as `"40MB"`, `"512 KiB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => parse_byte_size(&s)
                .map(ByteSize)
                .map_err(serde::de::Error::custom),
        }
    }
}

fn parse_byte_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("bad size {s:?}: expected e.g. 40MB or 512KiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1000,
        "kib" => 1024,
        "mb" | "m" => 1000 * 1000,
        "mib" => 1024 * 1024,
        "gb" => 1000 * 1000 * 1000,
        "gib" => 1024 * 1024 * 1024,
        other => {
            return Err(format!(
                "bad size unit {other:?} in {s:?}: use B, KB, KiB, MB, MiB, GB or GiB"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// A duration given as `"7d"`, `"12h"`, `"1week"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map(HumanDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!("bad duration {s:?}: {e} (e.g. \"7d\", \"12h\")"))
            })
    }
}

/// A value or a list of values, so that `recipient = "a@x"` and `recipient = ["a@x", "b@x"]`
/// both read.
#[derive(Debug, Clone, PartialEq)]
pub struct OneOrMany<T>(pub Vec<T>);

impl<T> Default for OneOrMany<T> {
    fn default() -> Self {
        OneOrMany(Vec::new())
    }
}

impl<T> OneOrMany<T> {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.0.iter()
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw<T> {
            Many(Vec<T>),
            One(T),
        }
        Ok(match Raw::deserialize(d)? {
            Raw::Many(v) => OneOrMany(v),
            Raw::One(v) => OneOrMany(vec![v]),
        })
    }
}

impl Config {
    /// Parses and validates a config. `origin` names the file in error messages.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
            ConfigError {
                origin: origin.into(),
                line,
                column,
                message: e.message().trim().to_string(),
            }
        })?;
        config.validate(text, origin)?;
        Ok(config)
    }

    /// Reads a config file.
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            origin: origin.clone(),
            line: 0,
            column: 0,
            message: format!("cannot read config: {e}"),
        })?;
        Config::from_toml(&text, &origin)
    }

    fn validate(&self, text: &str, origin: &str) -> Result<(), ConfigError> {
        let err = |span: std::ops::Range<usize>, message: String| {
            let (line, column) = line_col(text, span.start);
            ConfigError {
                origin: origin.into(),
                line,
                column,
                message,
            }
        };

        let templates: Vec<&str> = self
            .respond
            .templates
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        for t in &self.respond.templates {
            if templates.iter().filter(|n| **n == t.name).count() > 1 {
                return Err(err(
                    t.subject.span(),
                    format!("template {:?} is defined more than once", t.name),
                ));
            }
            for part in [&t.subject, &t.body] {
                let env = minijinja::Environment::new();
                if let Err(e) = env.template_from_str(part.get_ref()) {
                    return Err(err(
                        part.span(),
                        format!("template {:?} does not compile: {e}", t.name),
                    ));
                }
            }
        }

        for (i, rule) in self.routes.iter().enumerate() {
            let r = rule.get_ref();
            if let Some(t) = &r.reply_template
                && !templates.contains(&t.get_ref().as_str())
            {
                return Err(err(
                    t.span(),
                    format!(
                        "route rule {:?} names template {:?}, which is not defined in [[respond.templates]]",
                        r.name,
                        t.get_ref()
                    ),
                ));
            }
            if r.actions.is_empty() {
                return Err(err(
                    rule.span(),
                    format!("route rule {:?} has no actions", r.name),
                ));
            }
            for a in &r.actions {
                if let Action::Store(prefix) = a
                    && let Some(problem) = storage_prefix_problem(prefix)
                {
                    return Err(err(
                        rule.span(),
                        format!("route rule {:?}: {problem}", r.name),
                    ));
                }
                if let Action::Forward(to) = a {
                    if to.is_empty() {
                        return Err(err(
                            rule.span(),
                            format!(
                                "route rule {:?}: forward needs at least one address",
                                r.name
                            ),
                        ));
                    }
                    if let Some(bad) = to.iter().find(|a| !is_plausible_address(a)) {
                        return Err(err(
                            rule.span(),
                            format!("route rule {:?}: {bad:?} is not an e-mail address", r.name),
                        ));
                    }
                }
            }
            // A catch-all that stops makes every later rule it covers unreachable.
            if r.when.is_catch_all() && !r.continue_ {
                let covered = r.when.verdicts();
                if let Some(later) = self.routes[i + 1..].iter().find(|l| {
                    l.get_ref()
                        .when
                        .verdicts()
                        .iter()
                        .all(|v| covered.contains(v))
                }) {
                    return Err(err(
                        later.span(),
                        format!(
                            "route rule {:?} is unreachable: the catch-all rule {:?} before it matches everything and does not `continue`",
                            later.get_ref().name,
                            r.name
                        ),
                    ));
                }
            }
        }

        for rule in &self.classify.rules {
            let r = rule.get_ref();
            if !r.when.category.is_empty() || !r.when.priority.is_empty() {
                return Err(err(
                    rule.span(),
                    format!(
                        "classify rule {:?} cannot test category or priority: they are what classify decides",
                        r.name
                    ),
                ));
            }
        }
        check_unreachable(
            &self.classify.rules,
            |r| (&r.name, &r.when),
            "classify rule",
            text,
            origin,
        )?;
        for rule in &self.classify.priority_rules {
            if !rule.get_ref().when.priority.is_empty() {
                return Err(err(
                    rule.span(),
                    format!(
                        "priority rule {:?} cannot test priority: it decides it",
                        rule.get_ref().name
                    ),
                ));
            }
        }
        check_unreachable(
            &self.classify.priority_rules,
            |r| (&r.name, &r.when),
            "priority rule",
            text,
            origin,
        )?;

        for a in &self.routing.default_actions {
            if let Action::Store(prefix) = a
                && let Some(problem) = storage_prefix_problem(prefix)
            {
                return Err(ConfigError {
                    origin: origin.into(),
                    line: 1,
                    column: 1,
                    message: format!("[routing] default_actions: {problem}"),
                });
            }
        }
        let q = &self.routing.quarantine_prefix;
        if let Some(problem) = storage_prefix_problem(q).or_else(|| {
            (!q.starts_with(QUARANTINE_ROOT))
                .then(|| format!("it must lie below {QUARANTINE_ROOT:?}"))
        }) {
            return Err(ConfigError {
                origin: origin.into(),
                line: 1,
                column: 1,
                message: format!("[routing] quarantine_prefix {q:?}: {problem}"),
            });
        }
        if self.filter.quarantine_score > self.filter.reject_score {
            return Err(ConfigError {
                origin: origin.into(),
                line: 1,
                column: 1,
                message: format!(
                    "[filter] quarantine_score ({}) is above reject_score ({})",
                    self.filter.quarantine_score, self.filter.reject_score
                ),
            });
        }
        if !is_plausible_address(&self.mailroom.from_address) {
            return Err(ConfigError {
                origin: origin.into(),
                line: 1,
                column: 1,
                message: format!(
                    "[mailroom] from_address {:?} is not an e-mail address",
                    self.mailroom.from_address
                ),
            });
        }
        Ok(())
    }

    /// The default configuration: no rules, every policy at its default.
    pub fn default_config() -> Config {
        Config::from_toml("", "<default>").expect("the default config is valid")
    }
}

fn check_unreachable<R>(
    rules: &[Spanned<R>],
    parts: impl Fn(&R) -> (&String, &Match),
    what: &str,
    text: &str,
    origin: &str,
) -> Result<(), ConfigError> {
    if let Some(pos) = rules.iter().position(|r| {
        parts(r.get_ref()).1.is_catch_all() && parts(r.get_ref()).1.verdict.is_empty()
    }) && let Some(later) = rules.get(pos + 1)
    {
        let (line, column) = line_col(text, later.span().start);
        return Err(ConfigError {
            origin: origin.into(),
            line,
            column,
            message: format!(
                "{what} {:?} is unreachable: {what} {:?} before it has no conditions and matches everything",
                parts(later.get_ref()).0,
                parts(rules[pos].get_ref()).0
            ),
        });
    }
    Ok(())
}

fn is_plausible_address(a: &str) -> bool {
    match a.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !a
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
        }
        None => false,
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urgent_words_pick_the_first_language_in_name_order_in_one_pass() {
        let words = |ws: &[&str]| ws.iter().map(|w| w.to_string()).collect::<Vec<_>>();
        let urgent = UrgentWords::new(BTreeMap::from([
            ("de".to_string(), words(&["Dringend", "sofort"])),
            ("en".to_string(), words(&["urgent", "asap"])),
            ("fr".to_string(), words(&["urgent", "panne"])),
        ]))
        .unwrap();
        assert_eq!(urgent.languages().collect::<Vec<_>>(), ["de", "en", "fr"]);
        // A word two languages list counts for the first of them.
        assert_eq!(urgent.first_language_in(&["re: urgent", ""]), Some("en"));
        assert_eq!(urgent.first_language_in(&["", "une panne"]), Some("fr"));
        // Whichever text it is in, the earlier language wins over the earlier match.
        assert_eq!(
            urgent.first_language_in(&["asap", "bitte sofort"]),
            Some("de")
        );
        // Whole words only, and lower-cased input against lower-cased words.
        assert_eq!(urgent.first_language_in(&["urgently", "dringender"]), None);
        assert_eq!(urgent.first_language_in(&["dringend!", ""]), Some("de"));
        assert_eq!(UrgentWords::default().first_language_in(&["urgent"]), None);
    }

    fn error(text: &str) -> ConfigError {
        Config::from_toml(text, "t.toml").expect_err("config should be refused")
    }

    #[test]
    fn empty_config_is_valid_with_defaults() {
        let c = Config::from_toml("", "t.toml").unwrap();
        assert_eq!(c.filter.max_message_size, ByteSize(40 * 1024 * 1024));
        assert_eq!(c.respond.period.0, Duration::from_secs(604800));
        assert!(
            c.filter
                .attachments
                .blocked_extensions
                .contains(&"exe".to_string())
        );
    }

    #[test]
    fn unknown_key_is_located() {
        let e = error("[filter]\nquarantine_score = 4.0\nspam_treshold = 3\n");
        assert_eq!((e.line, e.column), (3, 1), "{e}");
        assert!(e.message.contains("unknown field `spam_treshold`"), "{e}");
    }

    #[test]
    fn bad_regex_is_located() {
        let e = error(
            "[[classify.rules]]\nname = \"x\"\ncategory = \"billing\"\nwhen = { subject = \"(unclosed\" }\n",
        );
        assert_eq!(e.line, 4, "{e}");
        assert!(e.message.contains("bad regex"), "{e}");
    }

    #[test]
    fn missing_template_is_located() {
        let e = error("[[route]]\nname = \"r\"\nactions = [\"drop\"]\nreply_template = \"nope\"\n");
        assert_eq!(e.line, 4, "{e}");
        assert!(e.message.contains("\"nope\""), "{e}");
    }

    #[test]
    fn rule_after_catch_all_is_unreachable() {
        let e = error(
            "[[route]]\nname = \"all\"\nactions = [\"drop\"]\n\n[[route]]\nname = \"later\"\nwhen = { sender = \"a@b.c\" }\nactions = [\"quarantine\"]\n",
        );
        assert!(e.message.contains("\"later\" is unreachable"), "{e}");
        assert_eq!(e.line, 5, "{e}");
    }

    #[test]
    fn catch_all_that_continues_or_other_verdict_is_fine() {
        Config::from_toml(
            "[[route]]\nname = \"all\"\ncontinue = true\nactions = [{ tag = { header = \"X-A\", value = \"1\" } }]\n\n[[route]]\nname = \"later\"\nactions = [\"drop\"]\n\n[[route]]\nname = \"q\"\nwhen = { verdict = \"quarantine\" }\nactions = [\"quarantine\"]\n",
            "t.toml",
        )
        .unwrap();
    }

    #[test]
    fn storage_prefixes_stay_below_their_roots() {
        for bad in ["/etc/", "../x/", "a//b/", "billing", "a/./b/"] {
            let e = error(&format!(
                "[[route]]\nname = \"s\"\nactions = [{{ store = \"{bad}\" }}]\n"
            ));
            assert!(e.message.contains("route rule \"s\""), "{bad}: {e}");
        }
        Config::from_toml(
            "[[route]]\nname = \"s\"\nactions = [{ store = \"billing/2026/\" }]\n",
            "t",
        )
        .unwrap();
        let e = error("[routing]\ndefault_actions = [{ store = \"../up/\" }]\n");
        assert!(e.message.contains("default_actions"), "{e}");
        let e = error("[routing]\nquarantine_prefix = \"held/\"\n");
        assert!(e.message.contains("below \"quarantine/\""), "{e}");
        Config::from_toml("[routing]\nquarantine_prefix = \"quarantine/2026/\"\n", "t").unwrap();
    }

    #[test]
    fn sizes_and_durations_parse() {
        let c = Config::from_toml(
            "[filter]\nmax_message_size = \"10MiB\"\n[respond]\nperiod = \"12h\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.filter.max_message_size.0, 10 * 1024 * 1024);
        assert_eq!(c.respond.period.0, Duration::from_secs(43200));
        let e = error("[filter]\nmax_message_size = \"10 parsecs\"\n");
        assert!(e.message.contains("bad size unit"), "{e}");
    }
}
