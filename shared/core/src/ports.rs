//! The core's ports: narrow traits the stages need from the outside world. Adapters implement
//! them: embedded (disk, memory) in this crate, AWS in `mailroom-aws`.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

use crate::model::{AuditRecord, Envelope, RawRef, Stage};
use crate::operate::{Correction, MessageSummary, Page, Query};

/// Why a port call failed. `Retryable` failures (throttling, a refusal before anything
/// happened) are retried by the queue; `Permanent` ones send the message to quarantine.
/// `Unknown` is a call whose outcome is not known (the connection broke after the request
/// went out, a timeout, a server error): it may have taken effect, which decides whether an
/// effect may be repeated (see the pipeline's effects). It is retried like `Retryable`.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("retryable: {0}")]
    Retryable(String),
    #[error("outcome unknown: {0}")]
    Unknown(String),
    #[error("{0}")]
    Permanent(String),
}

impl PortError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, PortError::Retryable(_) | PortError::Unknown(_))
    }

    /// Whether the call may have taken effect although it failed.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, PortError::Unknown(_))
    }
}

pub type PortResult<T> = Result<T, PortError>;

/// Reads the raw message a [`RawRef`] points at.
#[async_trait]
pub trait RawMailSource: Send + Sync {
    async fn get_raw(&self, raw: &RawRef) -> PortResult<Vec<u8>>;
}

/// Writes objects: stored mail (`store` action) and quarantine.
#[async_trait]
pub trait ObjectStore: Send + Sync {
    /// Takes the bytes by value: a 40 MB tagged copy goes to the store without another copy.
    async fn put_object(&self, key: &str, bytes: Vec<u8>) -> PortResult<()>;

    /// Writes an unchanged copy of the raw message `raw` (whose bytes are `bytes`) under
    /// `key`. Stores that hold the raw mail themselves copy it in place, without the bytes
    /// passing through this process.
    async fn copy_raw(&self, _raw: &RawRef, key: &str, bytes: &[u8]) -> PortResult<()> {
        self.put_object(key, bytes.to_vec()).await
    }

    /// Deletes an object (a quarantined copy an operator deletes); a missing one is fine.
    async fn delete_object(&self, key: &str) -> PortResult<()>;

    /// Reads an object back (a quarantined copy an operator views or releases).
    async fn get_object(&self, key: &str) -> PortResult<Vec<u8>>;

    /// Where the object `key` lies, as raw mail the pipeline can read and copy.
    fn object_ref(&self, key: &str) -> RawRef;
}

/// Outcome of claiming a once-only effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This caller owns the effect now and must [`StateStore::complete_effect`] or
    /// [`StateStore::release_effect`] it. Nobody tried it before, or an earlier attempt
    /// gave it back (it failed before taking effect).
    Acquired,
    /// This caller owns the effect now, but an earlier holder's lease ran out before it
    /// completed or gave the effect back (it was killed, timed out, or could not record the
    /// completion): the effect may have happened.
    Orphaned,
    /// The effect was already carried out; the stored note says how.
    Done(String),
    /// Another invocation holds an unexpired lease: retry later.
    Busy,
}

/// Per-message state, once-only effects and rate limits. Every write is conditional so that
/// duplicate deliveries and concurrent invocations cannot double an effect.
#[async_trait]
pub trait StateStore: Send + Sync {
    /// Claims the effect `effect` of message `id` (for example
    /// `route/forward/team@corp.example`) for `lease`, as `owner` (a token unique to this
    /// attempt: a claim whose write succeeded but whose answer was lost and retried is
    /// recognised as the caller's own, not another's).
    async fn claim_effect(
        &self,
        id: &str,
        effect: &str,
        owner: &str,
        lease: Duration,
        now: SystemTime,
    ) -> PortResult<Claim>;
    /// Marks a claimed effect as done, with a short note (what was sent, to whom).
    async fn complete_effect(&self, id: &str, effect: &str, note: &str) -> PortResult<()>;
    /// Gives a claim of `owner` back after a failure that did not take effect (or, for an
    /// effect that may be repeated, one whose outcome is unknown), so that a retry claims it
    /// as [`Claim::Acquired`] at once.
    async fn release_effect(&self, id: &str, effect: &str, owner: &str) -> PortResult<()>;

    /// Takes the rate-limit slot `key` until `until` for `owner` (a message id). Succeeds when
    /// the slot is free, expired, or already held by the same owner (a retry of the same
    /// message). Check and take are one atomic step.
    async fn acquire_rate_limit(
        &self,
        key: &str,
        owner: &str,
        until: SystemTime,
        now: SystemTime,
    ) -> PortResult<bool>;

    /// Frees the slot `key` if `owner` holds it (its reply could never be sent).
    async fn release_rate_limit(&self, key: &str, owner: &str) -> PortResult<()>;

    /// Adds one to the counter `key` (made at zero, kept until `until`) and returns its new
    /// value, in one atomic step: requests per source and window.
    async fn count_request(&self, key: &str, until: SystemTime) -> PortResult<u64>;

    /// The store's secret key for address hashes (made on first use, kept with the store):
    /// effect and rate-limit keys that would name an address name its keyed hash instead
    /// ([`crate::operate::subject_hash`]), the hash erasure records keep, and log lines
    /// carry a short form of it ([`crate::operate::hide_addresses`]).
    async fn subject_key(&self) -> PortResult<Vec<u8>>;
}

/// The audit trail. One record per message and stage: appending a second record for the
/// same pair is a no-op.
#[async_trait]
pub trait AuditLog: Send + Sync {
    async fn append(&self, record: &AuditRecord) -> PortResult<()>;
    /// A message's records, in stage order.
    async fn records(&self, id: &str) -> PortResult<Vec<AuditRecord>>;
}

/// The operators' index of messages: one summary per message, listed newest first by
/// arrival time, sender, recipient or quarantine without scanning the store.
#[async_trait]
pub trait MessageIndex: Send + Sync {
    /// Writes (or replaces) a message's summary and its index entries.
    async fn record(&self, summary: &MessageSummary) -> PortResult<()>;
    /// A message's summary, when it has one.
    async fn get(&self, id: &str) -> PortResult<Option<MessageSummary>>;
    /// One page of the rows that hold every condition of `query`, newest first.
    async fn query(&self, query: &Query) -> PortResult<Page>;
}

/// Operators' corrections (see [`crate::operate::feedback`]): locally in the state, on a
/// stack under the bucket's `feedback/` prefix.
#[async_trait]
pub trait FeedbackLog: Send + Sync {
    /// Keeps a correction, replacing an earlier one of the same message.
    async fn correct(&self, correction: &Correction) -> PortResult<()>;
    /// Every correction, oldest first.
    async fn corrections(&self) -> PortResult<Vec<Correction>>;
}

/// One recipient's "always allow" of a sender, from the link in that recipient's
/// quarantine digest: mail from `sender` to `recipient` counts as allow-listed, for that
/// recipient only (see [`crate::filter::Filter::run_allowing`]). Both addresses are
/// lower-cased.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AllowedSender {
    /// The digest's recipient: the only recipient the entry speaks for.
    pub recipient: String,
    /// The message's `From` address.
    pub sender: String,
    /// The message whose link made the entry.
    pub via: String,
    /// When (seconds since the epoch).
    pub at: u64,
}

/// The per-recipient allow list: locally in the state, on a stack in the state table
/// (`allow#<recipient>` items, with an `allowed#<sender>` item beside each so that an
/// erasure of either address finds it). The global `[filter] allow_senders` is the
/// operator's and is not touched through this port.
#[async_trait]
pub trait RecipientAllowList: Send + Sync {
    /// Keeps an entry (an entry for the same pair is replaced).
    async fn allow_sender(&self, entry: &AllowedSender) -> PortResult<()>;
    /// The recipients among `recipients` (lower-cased) that allowed `sender`.
    async fn allowing(&self, sender: &str, recipients: &[String]) -> PortResult<Vec<String>>;
    /// Removes every entry naming `address` as its recipient or as its sender (an
    /// erasure). Returns how many entries went.
    async fn forget_allowed(&self, address: &str) -> PortResult<usize>;
}

/// One prompt for a language model (see [`crate::assist`]): a fixed instruction, the
/// message as quoted data, and for a classification the JSON schema the answer must match.
#[derive(Debug, Clone, PartialEq)]
pub struct AssistRequest {
    pub model: String,
    pub system: String,
    pub user: String,
    pub schema: Option<serde_json::Value>,
    pub max_tokens: u32,
}

/// A language model (Bedrock's Converse API, an OpenAI-compatible server). `Retryable` is
/// a throttle; the caller bounds the call's time.
#[async_trait]
pub trait Assistant: Send + Sync {
    /// The model's text answer.
    async fn complete(&self, request: &AssistRequest) -> PortResult<String>;
}

/// Hands an envelope to the next stage (an SQS queue in AWS).
#[async_trait]
pub trait StagePublisher: Send + Sync {
    async fn publish(&self, next: Stage, envelope: &Envelope) -> PortResult<()>;
}

/// Delivers a message to a named queue (`deliver` action), for ticketing systems.
#[async_trait]
pub trait QueueDelivery: Send + Sync {
    async fn deliver(&self, queue: &str, body: &str) -> PortResult<()>;
}

/// A message to send: raw MIME plus the envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMail {
    pub from: String,
    pub to: Vec<String>,
    /// Shared between the sends of one forward to more than 50 recipients.
    pub raw: MailBytes,
}

/// A message's bytes as a few shared chunks. A forward is its rewritten header section
/// followed by the body of the message as received, which it shares rather than copies: two
/// forwards of a 40 MB message hold the body once, not three times.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailBytes(Vec<Bytes>);

impl MailBytes {
    pub fn from_chunks(chunks: impl IntoIterator<Item = Bytes>) -> Self {
        MailBytes(chunks.into_iter().filter(|c| !c.is_empty()).collect())
    }

    pub fn len(&self) -> usize {
        self.0.iter().map(Bytes::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn chunks(&self) -> impl Iterator<Item = &[u8]> {
        self.0.iter().map(|c| &c[..])
    }

    /// The bytes in one buffer: without a copy when they are one chunk held nowhere else.
    pub fn into_vec(mut self) -> Vec<u8> {
        match self.0.len() {
            0 => Vec::new(),
            1 => Vec::from(self.0.remove(0)),
            _ => self.to_vec(),
        }
    }

    /// One contiguous copy.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        for chunk in self.chunks() {
            out.extend_from_slice(chunk);
        }
        out
    }
}

impl From<Vec<u8>> for MailBytes {
    fn from(bytes: Vec<u8>) -> Self {
        MailBytes::from_chunks([Bytes::from(bytes)])
    }
}

/// Sends mail (SESv2 in AWS, an outbox folder locally).
#[async_trait]
pub trait MailSender: Send + Sync {
    /// Returns the provider's message id. Takes the message by value: a 40 MB forward is
    /// handed to the provider without another copy.
    async fn send(&self, mail: OutgoingMail) -> PortResult<String>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mail_bytes_join_their_chunks_and_give_back_a_lone_buffer_without_a_copy() {
        let head = Bytes::from_static(b"From: a@b.c\r\n");
        let body = Bytes::from(b"\r\nbody".to_vec());
        let two = MailBytes::from_chunks([head, Bytes::new(), body]);
        assert_eq!(two.chunks().count(), 2, "empty chunks are dropped");
        assert_eq!(two.len(), 19);
        assert_eq!(two.clone().into_vec(), b"From: a@b.c\r\n\r\nbody");

        let buffer = vec![7u8; 1 << 20];
        let at = buffer.as_ptr();
        let back = MailBytes::from(buffer).into_vec();
        assert_eq!(back.as_ptr(), at, "the buffer came back, not a copy");
        assert!(MailBytes::default().into_vec().is_empty());
    }
}
