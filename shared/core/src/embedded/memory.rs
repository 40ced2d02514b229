//! In-memory adapters, for tests and in-process benchmarks.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::{EffectRow, SlotRow, decide_claim, decide_release, decide_slot};
use crate::model::{AuditRecord, Envelope, RawRef, Stage};
use crate::operate::{
    Correction, MessageSummary, Page, Query, collect_page, index_keys, index_range,
};
use crate::pipeline::Ports;
use crate::ports::{
    AllowedSender, AuditLog, Claim, FeedbackLog, MailSender, MessageIndex, ObjectStore,
    OutgoingMail, PortError, PortResult, QueueDelivery, RawMailSource, RecipientAllowList,
    StagePublisher, StateStore,
};

/// Every port wired to one fresh [`MemoryWorld`] and [`MemoryState`], for tests and
/// in-process benchmarks; the two handles let the caller inspect what happened.
pub fn memory_ports() -> (Ports, Arc<MemoryWorld>, Arc<MemoryState>) {
    let world = Arc::new(MemoryWorld::default());
    let state = Arc::new(MemoryState::default());
    let ports = Ports {
        raw: world.clone(),
        objects: world.clone(),
        state: state.clone(),
        audit: state.clone(),
        publisher: world.clone(),
        queues: world.clone(),
        sender: world.clone(),
        index: state.clone(),
        feedback: state.clone(),
        allow_list: state.clone(),
        assistant: Arc::new(crate::assist::NoAssistant("no assistant is wired")),
    };
    (ports, world, state)
}

/// State, effects, rate limits and the audit trail in memory.
#[derive(Default)]
pub struct MemoryState {
    inner: Mutex<Tables>,
}

#[derive(Default)]
struct Tables {
    effects: HashMap<(String, String), EffectRow>,
    slots: HashMap<String, SlotRow>,
    counters: HashMap<String, (u64, SystemTime)>,
    /// By message id and [`AuditRecord::key`].
    audit: BTreeMap<(String, String), AuditRecord>,
    summaries: HashMap<String, MessageSummary>,
    index: BTreeMap<String, String>,
    /// Corrections by message id, with the order they came in.
    corrections: BTreeMap<String, (u64, Correction)>,
    correction_seq: u64,
    /// The per-recipient allow lists, by recipient and sender.
    allowed: BTreeMap<(String, String), AllowedSender>,
    /// The key of address hashes, made on first use.
    subject_key: Option<Vec<u8>>,
}

impl MemoryState {
    /// Every audit record, by message id, then in stage order.
    pub fn audit_records(&self) -> Vec<AuditRecord> {
        let mut out: Vec<AuditRecord> = self
            .inner
            .lock()
            .expect("state lock")
            .audit
            .values()
            .cloned()
            .collect();
        out.sort_by(|a, b| {
            (&a.id, a.stage, a.event.is_some(), a.at).cmp(&(
                &b.id,
                b.stage,
                b.event.is_some(),
                b.at,
            ))
        });
        out
    }
}

#[async_trait]
impl StateStore for MemoryState {
    async fn claim_effect(
        &self,
        id: &str,
        effect: &str,
        owner: &str,
        lease: Duration,
        now: SystemTime,
    ) -> PortResult<Claim> {
        let mut t = self.inner.lock().expect("state lock");
        let key = (id.to_string(), effect.to_string());
        let (claim, row) = decide_claim(t.effects.get(&key), owner, lease, now);
        if let Some(row) = row {
            t.effects.insert(key, row);
        }
        Ok(claim)
    }

    async fn complete_effect(&self, id: &str, effect: &str, note: &str) -> PortResult<()> {
        let mut t = self.inner.lock().expect("state lock");
        t.effects
            .insert((id.to_string(), effect.to_string()), EffectRow::done(note));
        Ok(())
    }

    async fn release_effect(&self, id: &str, effect: &str, owner: &str) -> PortResult<()> {
        let mut t = self.inner.lock().expect("state lock");
        let key = (id.to_string(), effect.to_string());
        if let Some(row) = decide_release(t.effects.get(&key), owner) {
            t.effects.insert(key, row);
        }
        Ok(())
    }

    async fn acquire_rate_limit(
        &self,
        key: &str,
        owner: &str,
        until: SystemTime,
        now: SystemTime,
    ) -> PortResult<bool> {
        let mut t = self.inner.lock().expect("state lock");
        match decide_slot(t.slots.get(key), owner, until, now) {
            Some(row) => {
                t.slots.insert(key.to_string(), row);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn release_rate_limit(&self, key: &str, owner: &str) -> PortResult<()> {
        let mut t = self.inner.lock().expect("state lock");
        if t.slots.get(key).is_some_and(|row| row.owner == owner) {
            t.slots.remove(key);
        }
        Ok(())
    }

    async fn count_request(&self, key: &str, until: SystemTime) -> PortResult<u64> {
        let mut t = self.inner.lock().expect("state lock");
        let now = SystemTime::now();
        let entry = t.counters.entry(key.to_string()).or_insert((0, until));
        if entry.1 < now {
            *entry = (0, until);
        }
        entry.0 += 1;
        Ok(entry.0)
    }

    async fn subject_key(&self) -> PortResult<Vec<u8>> {
        let mut t = self.inner.lock().expect("state lock");
        if let Some(key) = &t.subject_key {
            return Ok(key.clone());
        }
        let key = crate::secret::random_key("subject key").map_err(PortError::Permanent)?;
        t.subject_key = Some(key.to_vec());
        Ok(key.to_vec())
    }
}

#[async_trait]
impl FeedbackLog for MemoryState {
    async fn correct(&self, correction: &Correction) -> PortResult<()> {
        let mut t = self.inner.lock().expect("state lock");
        t.correction_seq += 1;
        let seq = t.correction_seq;
        t.corrections
            .insert(correction.id.clone(), (seq, correction.clone()));
        Ok(())
    }

    async fn corrections(&self) -> PortResult<Vec<Correction>> {
        let t = self.inner.lock().expect("state lock");
        let mut all: Vec<&(u64, Correction)> = t.corrections.values().collect();
        all.sort_by_key(|(seq, _)| *seq);
        Ok(all.into_iter().map(|(_, c)| c.clone()).collect())
    }
}

#[async_trait]
impl MessageIndex for MemoryState {
    async fn record(&self, summary: &MessageSummary) -> PortResult<()> {
        let mut t = self.inner.lock().expect("state lock");
        if let Some(old) = t.summaries.insert(summary.id.clone(), summary.clone()) {
            for k in index_keys(&old) {
                t.index.remove(&k);
            }
        }
        for k in index_keys(summary) {
            t.index.insert(k, summary.id.clone());
        }
        Ok(())
    }

    async fn get(&self, id: &str) -> PortResult<Option<MessageSummary>> {
        Ok(self
            .inner
            .lock()
            .expect("state lock")
            .summaries
            .get(id)
            .cloned())
    }

    async fn query(&self, query: &Query) -> PortResult<Page> {
        let t = self.inner.lock().expect("state lock");
        let (from, to) = index_range(query);
        let rows = t
            .index
            .range(from..to)
            .rev()
            .filter_map(|(_, id)| t.summaries.get(id).cloned());
        Ok(collect_page(rows, query))
    }
}

#[async_trait]
impl RecipientAllowList for MemoryState {
    async fn allow_sender(&self, entry: &AllowedSender) -> PortResult<()> {
        let mut t = self.inner.lock().expect("state lock");
        t.allowed.insert(
            (entry.recipient.clone(), entry.sender.clone()),
            entry.clone(),
        );
        Ok(())
    }

    async fn allowing(&self, sender: &str, recipients: &[String]) -> PortResult<Vec<String>> {
        let t = self.inner.lock().expect("state lock");
        Ok(recipients
            .iter()
            .filter(|r| t.allowed.contains_key(&(r.to_string(), sender.to_string())))
            .cloned()
            .collect())
    }

    async fn forget_allowed(&self, address: &str) -> PortResult<usize> {
        let mut t = self.inner.lock().expect("state lock");
        let before = t.allowed.len();
        t.allowed.retain(|(r, s), _| r != address && s != address);
        Ok(before - t.allowed.len())
    }
}

#[async_trait]
impl AuditLog for MemoryState {
    async fn append(&self, record: &AuditRecord) -> PortResult<()> {
        let mut t = self.inner.lock().expect("state lock");
        t.audit
            .entry((record.id.clone(), record.key()))
            .or_insert_with(|| record.clone());
        Ok(())
    }

    async fn records(&self, id: &str) -> PortResult<Vec<AuditRecord>> {
        let t = self.inner.lock().expect("state lock");
        let mut out: Vec<AuditRecord> = t
            .audit
            .iter()
            .filter(|((i, _), _)| i == id)
            .map(|(_, r)| r.clone())
            .collect();
        out.sort_by_key(|r| (r.stage, r.event.is_some(), r.at));
        Ok(out)
    }
}

/// Raw mail, objects written, mail sent, deliveries and publications, all in memory.
#[derive(Default)]
pub struct MemoryWorld {
    pub raw: Mutex<HashMap<String, Vec<u8>>>,
    pub objects: Mutex<BTreeMap<String, Vec<u8>>>,
    pub sent: Mutex<Vec<OutgoingMail>>,
    pub delivered: Mutex<Vec<(String, String)>>,
    pub published: Mutex<Vec<(Stage, Envelope)>>,
}

#[async_trait]
impl RawMailSource for MemoryWorld {
    async fn get_raw(&self, raw: &RawRef) -> PortResult<Vec<u8>> {
        self.raw
            .lock()
            .expect("world lock")
            .get(&raw.key)
            .cloned()
            .ok_or_else(|| {
                PortError::Permanent(format!("no raw mail at {}/{}", raw.bucket, raw.key))
            })
    }
}

#[async_trait]
impl ObjectStore for MemoryWorld {
    async fn put_object(&self, key: &str, bytes: Vec<u8>) -> PortResult<()> {
        self.objects
            .lock()
            .expect("world lock")
            .insert(key.to_string(), bytes);
        Ok(())
    }

    async fn delete_object(&self, key: &str) -> PortResult<()> {
        self.objects.lock().expect("world lock").remove(key);
        Ok(())
    }

    async fn get_object(&self, key: &str) -> PortResult<Vec<u8>> {
        self.objects
            .lock()
            .expect("world lock")
            .get(key)
            .cloned()
            .ok_or_else(|| PortError::Permanent(format!("no object {key}")))
    }

    fn object_ref(&self, key: &str) -> RawRef {
        RawRef {
            bucket: "memory-objects".into(),
            key: key.into(),
        }
    }
}

#[async_trait]
impl MailSender for MemoryWorld {
    async fn send(&self, mail: OutgoingMail) -> PortResult<String> {
        let mut sent = self.sent.lock().expect("world lock");
        sent.push(mail);
        Ok(format!("memory-{}", sent.len()))
    }
}

#[async_trait]
impl QueueDelivery for MemoryWorld {
    async fn deliver(&self, queue: &str, body: &str) -> PortResult<()> {
        self.delivered
            .lock()
            .expect("world lock")
            .push((queue.to_string(), body.to_string()));
        Ok(())
    }
}

#[async_trait]
impl StagePublisher for MemoryWorld {
    async fn publish(&self, next: Stage, envelope: &Envelope) -> PortResult<()> {
        self.published
            .lock()
            .expect("world lock")
            .push((next, envelope.clone()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_allow_list_in_memory_keeps_pairs_and_forgets_either_address() {
        super::super::tests::exercise_allow_list(&MemoryState::default()).await;
    }
}
