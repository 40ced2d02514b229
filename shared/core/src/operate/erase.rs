//! Erasure per data subject (GDPR Art. 17): every message that names an address as its
//! sender, a recipient, in Cc or Reply-To loses its stored and quarantined copies, its
//! stage, effect and audit records, its summary and index entries; the address's
//! rate-limit slots go too, and every per-recipient allow-list entry (a digest's "always
//! allow") naming it as the recipient or as the sender. What stays is one erasure record: a keyed hash of the address
//! (not the address), when, by whom, and the counts. Mail already forwarded or delivered
//! cannot be recalled: the report says where each message went.
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
use crate::ports::PortResult;

/// What a store must do for an erasure, beyond the pipeline's ports.
#[async_trait]
pub trait Forget: Send + Sync {
    /// The ids of the messages whose summary names `address` (lower-cased).
    async fn messages_naming(&self, address: &str) -> PortResult<Vec<String>>;
    /// Removes everything kept about message `id`: stage, effect and audit records, its
    /// summary and index entries. Returns how many records went.
    async fn forget_message(&self, id: &str) -> PortResult<usize>;
    /// Removes the auto-reply rate-limit slots kept for `address` (one per template of
    /// `templates`). Returns how many went.
    async fn forget_slots(&self, address: &str, templates: &[String]) -> PortResult<usize>;
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
    /// The store's secret key for subject hashes (made on first use, kept with the store).
    async fn subject_key(&self) -> PortResult<Vec<u8>>;
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
}

/// The keyed hash of an address.
pub fn subject_hash(key: &[u8], address: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(address.trim().to_ascii_lowercase().as_bytes());
    crate::secret::hex(&mac.finalize().into_bytes())
}

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
        let key = forget
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
        if dry_run {
            return Ok(Erasure {
                dry_run,
                messages,
                record: None,
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
            .forget_slots(&address, &templates)
            .await
            .map_err(|e| store(e, "rate limits"))?;
        let allowed = ports
            .allow_list
            .forget_allowed(&address)
            .await
            .map_err(|e| store(e, "the recipients' allow lists"))?;
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
}
