//! Erasure per data subject (GDPR Art. 17): every message that names an address as its
//! sender, a recipient, in Cc or Reply-To loses its stored and quarantined copies, its
//! stage, effect and audit records, its summary and index entries; the address's
//! rate-limit slots go too, and every per-recipient allow-list entry (a digest's "always
//! allow") naming it as the recipient or as the sender. What stays is one erasure record: a keyed hash of the address
//! (not the address), when, by whom, and the counts. Mail already forwarded or delivered
//! cannot be recalled: the report says where each message went.
//!
//! Records that are not a message's name an address only by its keyed hash
//! ([`subject_hash`], with the store's [`StateStore::subject_key`]): a digest's effect
//! (`respond/digest/<hash>`) and an auto-reply's rate-limit slot (`reply#<hash>#<template>`).
//! Keys written before that named the address itself; an erasure removes those by their
//! old form too. Log lines carry [`hide_addresses`]'s short form of the same hash.
//! The config's sender lists are the operator's to edit: the report names the lists that
//! hold the address (`mailroom erase --from-config` takes it off them).
//!
//! Every step can run again: the messages are noted first, then objects go, then the
//! records that find them, so an interrupted erasure run again finishes the job (from the
//! note, for messages no index finds any more).

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::Operator;
use crate::model::{RawRef, Stage};
use crate::pipeline::release::OperatorError;
use crate::ports::{PortResult, StateStore};

/// What a store must do for an erasure, beyond the pipeline's ports.
#[async_trait]
pub trait Forget: Send + Sync {
    /// The ids of the messages whose summary names `address` (lower-cased).
    async fn messages_naming(&self, address: &str) -> PortResult<Vec<String>>;
    /// Removes everything kept about message `id`: stage, effect and audit records, its
    /// summary and index entries. Returns how many records went.
    async fn forget_message(&self, id: &str) -> PortResult<usize>;
    /// Removes the auto-reply rate-limit slots kept for `address` (one per template of
    /// `templates`): under its keyed hash `hash`, and under the address itself, as keys
    /// written before the hash named it. Returns how many went.
    async fn forget_slots(
        &self,
        address: &str,
        hash: &str,
        templates: &[String],
    ) -> PortResult<usize>;
    /// Removes the effects of digests sent to `address` under its old key
    /// (`respond/digest/<address>`, written before the key named its hash) in the digest
    /// runs `runs` (`digest-<n>`; a store that can look them all up may ignore the list).
    /// Returns how many went.
    async fn forget_digests(&self, address: &str, runs: &[String]) -> PortResult<usize>;
    /// Removes a stored or quarantined copy, every version of it where the store keeps
    /// versions. Returns how many objects (or versions) went.
    async fn purge_object(&self, key: &str) -> PortResult<usize>;
    /// Removes message `id`'s raw mail where the store holds it (a stack's `raw/`, and
    /// `raw`, where the summary says it lies: a released message's is its quarantined
    /// copy); `None` when it is the user's own input, left to them.
    async fn purge_raw(&self, id: &str, raw: &RawRef) -> PortResult<Option<usize>>;
    /// Notes, before anything is removed, which messages an erasure of `subject` (its hash)
    /// covers: a run that stops half way is finished by the next from this list, even for
    /// messages no index finds any more.
    async fn begin_erasure(&self, subject: &str, ids: &[String]) -> PortResult<()>;
    /// The messages of an unfinished erasure of `subject`.
    async fn pending_erasure(&self, subject: &str) -> PortResult<Vec<String>>;
    /// Keeps the erasure record until `keep_until` (seconds since the epoch) and ends the
    /// erasure begun for its subject.
    async fn record_erasure(&self, record: &ErasureRecord, keep_until: u64) -> PortResult<()>;
    /// Removes the erasure records made before `at` (their retention ran out).
    async fn forget_erasures_before(&self, at: u64) -> PortResult<usize>;
}

/// What stays of an erasure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErasureRecord {
    /// HMAC-SHA256 of the lower-cased address with the store's key, hex: the same address
    /// gives the same hash in this store, and the hash does not give the address back.
    pub subject: String,
    pub at: u64,
    pub by: String,
    pub messages: usize,
    pub objects: usize,
    pub records: usize,
    pub slots: usize,
    /// Per-recipient allow-list entries naming the address, as recipient or sender.
    #[serde(default)]
    pub allowed: usize,
}

/// One message an erasure found, and where it went before.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErasedMessage {
    pub id: String,
    /// Where the raw mail is (locally: the input file, which is the user's own); none
    /// when an earlier, interrupted erasure took the message's summary already.
    pub raw: Option<RawRef>,
    /// The raw mail was removed (a stack's `raw/`, every version).
    pub raw_erased: bool,
    /// The stored and quarantined copies removed.
    pub objects: Vec<String>,
    /// What was carried out for it and cannot be recalled: forwards, deliveries, replies.
    pub went: Vec<String>,
}

/// An erasure's report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Erasure {
    pub dry_run: bool,
    pub messages: Vec<ErasedMessage>,
    /// The record kept (none on a dry run).
    pub record: Option<ErasureRecord>,
    /// The config's sender lists that name the address (`allow_senders`,
    /// `block_senders`): the operator's to edit, which `erase --from-config` does.
    pub sender_lists: Vec<String>,
}

/// The keyed hash of an address.
pub fn subject_hash(key: &[u8], address: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(address.trim().to_ascii_lowercase().as_bytes());
    crate::secret::hex(&mac.finalize().into_bytes())
}

/// How many hex digits of [`subject_hash`] a log line carries: the ones `mailroom erase`
/// prints of its erasure record.
pub const SHORT_HASH: usize = 16;

/// The form an address takes in a log line: `addr:` and the first [`SHORT_HASH`] hex digits
/// of its keyed hash.
pub fn short_subject(key: &[u8], address: &str) -> String {
    format!("addr:{}", &subject_hash(key, address)[..SHORT_HASH])
}

/// The characters of an address's local part, but `/`: in a log line it separates the
/// parts of a key (`route/forward/a@x.example`).
fn local_char(c: char) -> bool {
    c.is_alphanumeric() || !c.is_ascii() || "!#$%&'*+=?^_`{|}~.-".contains(c)
}

fn domain_char(c: char) -> bool {
    c.is_alphanumeric() || !c.is_ascii() || c == '.' || c == '-'
}

/// `text` with every address in it (`local@domain`) replaced by its [`short_subject`]: what
/// a log line carries. Without a key (the store could not give it) an address becomes
/// `addr:?`. Message ids and everything else stay as they are.
pub fn hide_addresses(key: Option<&[u8]>, text: &str) -> String {
    if !text.contains('@') {
        return text.to_string();
    }
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0; // byte offset in `text` up to which `out` holds it
    let mut i = 0;
    while i < chars.len() {
        if chars[i].1 != '@' {
            i += 1;
            continue;
        }
        let mut start = i;
        while start > 0 && local_char(chars[start - 1].1) {
            start -= 1;
        }
        let mut end = i + 1;
        while end < chars.len() && domain_char(chars[end].1) {
            end += 1;
        }
        // A sentence's full stop is not the domain's.
        while end > i + 1 && matches!(chars[end - 1].1, '.' | '-') {
            end -= 1;
        }
        let (from, to) = (chars[start].0, chars.get(end).map_or(text.len(), |c| c.0));
        if start == i || end == i + 1 || from < copied {
            i += 1;
            continue;
        }
        out.push_str(&text[copied..from]);
        out.push_str(&match key {
            Some(k) => short_subject(k, &text[from..to]),
            None => "addr:?".to_string(),
        });
        copied = to;
        i = end;
    }
    out.push_str(&text[copied..]);
    out
}

/// The store's subject key, for log lines: none when the store cannot give it now.
pub async fn log_key(state: &dyn StateStore) -> Option<Vec<u8>> {
    state.subject_key().await.ok()
}

/// The digest runs whose effects may still be kept at `now`: one per `period` over
/// `kept` (the records' retention), newest first, at most [`MAX_DIGEST_RUNS`].
pub fn digest_runs(now: u64, period: u64, kept: u64) -> Vec<String> {
    let period = period.max(1);
    let last = now / period;
    let first = now.saturating_sub(kept) / period;
    (first..=last)
        .rev()
        .take(MAX_DIGEST_RUNS)
        .map(|n| format!("digest-{n}"))
        .collect()
}

/// At most this many digest runs are looked up for effects under an address's old key
/// (a year and a half of daily digests); older ones expire with the records' retention.
pub const MAX_DIGEST_RUNS: usize = 550;

/// The notes of effects that left the system, from a message's audit records.
fn went(records: &[crate::model::AuditRecord]) -> Vec<String> {
    records
        .iter()
        .filter(|r| matches!(r.stage, Stage::Route | Stage::Respond))
        .flat_map(|r| {
            let decision = (r.stage == Stage::Respond && r.decision.starts_with("sent"))
                .then(|| format!("auto-reply {}", r.decision));
            r.reasons
                .iter()
                .filter(|x| {
                    x.starts_with("forwarded")
                        || x.starts_with("delivered")
                        || x.starts_with("sent")
                })
                .cloned()
                .chain(decision)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn store(e: impl std::fmt::Display, id: &str) -> OperatorError {
    OperatorError::Store {
        id: id.to_string(),
        detail: e.to_string(),
    }
}

/// One message of an access request: what `show` gives, and the mail itself.
#[derive(Debug, Clone)]
pub struct Exported {
    pub view: super::MessageView,
    pub bytes: Vec<u8>,
}

impl Operator {
    /// Every message that names `address`, for an access request (GDPR Art. 15).
    pub async fn export(
        &self,
        forget: &dyn Forget,
        address: &str,
    ) -> Result<Vec<Exported>, OperatorError> {
        let address = address.trim().to_ascii_lowercase();
        let ids = forget
            .messages_naming(&address)
            .await
            .map_err(|e| store(e, &address))?;
        let mut out = Vec::new();
        for id in &ids {
            let summary = self.summary(id).await?;
            let audit = self
                .engine()
                .ports()
                .audit
                .records(id)
                .await
                .map_err(|e| store(format!("reading the audit trail: {e}"), id))?;
            let bytes = self
                .bytes(&summary)
                .await
                .map_err(|e| store(format!("reading the mail: {e}"), id))?;
            let view = super::MessageView::of(summary, audit, &bytes);
            out.push(Exported { view, bytes });
        }
        Ok(out)
    }

    /// Erases every message that names `address` (see the module). With `dry_run` it only
    /// reports what would go.
    pub async fn erase(
        &self,
        forget: &dyn Forget,
        address: &str,
        by: &str,
        dry_run: bool,
        now: u64,
    ) -> Result<Erasure, OperatorError> {
        let address = address.trim().to_ascii_lowercase();
        let ports = self.engine().ports();
        let key = ports
            .state
            .subject_key()
            .await
            .map_err(|e| store(e, "subject key"))?;
        let subject = subject_hash(&key, &address);
        let mut ids = forget
            .messages_naming(&address)
            .await
            .map_err(|e| store(e, &address))?;
        let pending = forget
            .pending_erasure(&subject)
            .await
            .map_err(|e| store(e, "the unfinished erasure"))?;
        ids.extend(pending);
        ids.sort();
        ids.dedup();
        let mut messages = Vec::new();
        for id in &ids {
            // A message an interrupted erasure already took the summary of is finished
            // from what is left.
            let summary = ports.index.get(id).await.map_err(|e| store(e, id))?;
            let audit = ports.audit.records(id).await.map_err(|e| store(e, id))?;
            messages.push(ErasedMessage {
                id: id.clone(),
                raw: summary.as_ref().map(|s| s.raw.clone()),
                objects: summary
                    .iter()
                    .flat_map(|s| s.quarantined.iter().chain(&s.stored))
                    .cloned()
                    .collect(),
                went: went(&audit),
                raw_erased: false,
            });
        }
        let filter = &self.engine().config().filter;
        let sender_lists: Vec<String> = [
            ("allow_senders", &filter.allow_senders),
            ("block_senders", &filter.block_senders),
        ]
        .into_iter()
        .filter(|(_, list)| list.iter().any(|s| s.trim().eq_ignore_ascii_case(&address)))
        .map(|(name, _)| name.to_string())
        .collect();
        if dry_run {
            return Ok(Erasure {
                dry_run,
                messages,
                record: None,
                sender_lists,
            });
        }
        forget
            .begin_erasure(&subject, &ids)
            .await
            .map_err(|e| store(e, "noting the erasure"))?;
        let (mut objects, mut records) = (0, 0);
        for m in &mut messages {
            for key in &m.objects {
                objects += forget
                    .purge_object(key)
                    .await
                    .map_err(|e| store(e, &m.id))?;
            }
            if let Some(raw) = &m.raw
                && let Some(n) = forget
                    .purge_raw(&m.id, raw)
                    .await
                    .map_err(|e| store(e, &m.id))?
            {
                objects += n;
                m.raw_erased = true;
            }
        }
        for m in &messages {
            records += forget
                .forget_message(&m.id)
                .await
                .map_err(|e| store(e, &m.id))?;
        }
        let templates: Vec<String> = self
            .engine()
            .config()
            .respond
            .templates
            .iter()
            .map(|t| t.name.clone())
            .collect();
        let slots = forget
            .forget_slots(&address, &subject, &templates)
            .await
            .map_err(|e| store(e, "rate limits"))?;
        let allowed = ports
            .allow_list
            .forget_allowed(&address)
            .await
            .map_err(|e| store(e, "the recipients' allow lists"))?;
        let config = self.engine().config();
        let runs = digest_runs(
            now,
            config.digest.period.0.as_secs(),
            crate::config::RetentionConfig::secs(&config.retention.audit),
        );
        records += forget
            .forget_digests(&address, &runs)
            .await
            .map_err(|e| store(e, "digest records"))?;
        let record = ErasureRecord {
            subject,
            at: now,
            by: by.to_string(),
            messages: messages.len(),
            objects,
            records,
            slots,
            allowed,
        };
        let keep = crate::config::RetentionConfig::secs(&self.engine().config().retention.erasures);
        forget
            .record_erasure(&record, now + keep)
            .await
            .map_err(|e| store(e, "erasure record"))?;
        Ok(Erasure {
            dry_run,
            messages,
            record: Some(record),
            sender_lists,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_hashes_are_keyed_and_case_blind() {
        let a = subject_hash(b"k1", "Ann@Example.org");
        assert_eq!(a, subject_hash(b"k1", " ann@example.org "));
        assert_ne!(a, subject_hash(b"k2", "ann@example.org"));
        assert_eq!(a.len(), 64);
        assert!(!a.contains("ann"));
    }

    #[test]
    fn log_lines_carry_addresses_as_their_short_hash_and_keep_the_rest() {
        let key = b"k1";
        let short = short_subject(key, "ann@example.org");
        assert_eq!(short.len(), 5 + SHORT_HASH);
        assert!(subject_hash(key, "ann@example.org").starts_with(&short[5..]));
        let line = "sending auto-reply to Ann@Example.org: refused; digest:ops@corp.example. \
                    route/forward/a@x.example,b@x.example for 0100018f-abc (ann@example.org)";
        let hidden = hide_addresses(Some(key), line);
        assert!(
            !hidden.to_ascii_lowercase().contains("example.org"),
            "{hidden}"
        );
        assert!(
            !hidden.contains("ops@") && !hidden.contains("x.example"),
            "{hidden}"
        );
        assert_eq!(
            hidden.matches(&short).count(),
            2,
            "one address, one form: {hidden}"
        );
        assert!(hidden.contains("digest:addr:") && hidden.contains(". route/forward/addr:"));
        assert!(hidden.contains("0100018f-abc"), "ids stay: {hidden}");
        assert_eq!(
            hide_addresses(Some(key), "no address @ all, a@, @b"),
            "no address @ all, a@, @b"
        );
        assert_eq!(hide_addresses(None, "to Ünï@bücher.example!"), "to addr:?!");
    }

    #[test]
    fn digest_runs_cover_the_retention_newest_first_and_are_capped() {
        let runs = digest_runs(10 * 86_400 + 5, 86_400, 3 * 86_400);
        assert_eq!(runs, ["digest-10", "digest-9", "digest-8", "digest-7"]);
        assert_eq!(
            digest_runs(1 << 40, 3600, 400 * 86_400).len(),
            MAX_DIGEST_RUNS
        );
    }
}
