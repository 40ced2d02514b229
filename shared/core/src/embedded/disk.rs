//! The on-disk state store for local runs: one redb file holding the audit trail, effects
//! and rate-limit slots, so that a second run over the same mail repeats no
//! effect and sends no second auto-reply.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use redb::{Database, Durability, ReadableTable, TableDefinition};

use super::{EffectRow, SlotRow, decide_claim, decide_release, decide_slot};
use crate::model::{AuditRecord, RawRef};
use crate::operate::{
    Correction, ErasureRecord, Forget, MessageSummary, Page, Query, collect_page, index_keys,
    index_range,
};
use crate::ports::{
    AllowedSender, AuditLog, Claim, FeedbackLog, MessageIndex, PortError, PortResult,
    RecipientAllowList, StateStore,
};

/// Stage records, which the audit records have replaced: kept so that an erasure also
/// clears them from a state file written before.
const STAGES: TableDefinition<&str, &str> = TableDefinition::new("stages");
const EFFECTS: TableDefinition<&str, &str> = TableDefinition::new("effects");
const SLOTS: TableDefinition<&str, &str> = TableDefinition::new("rate_limits");
const AUDIT: TableDefinition<&str, &str> = TableDefinition::new("audit");
/// Message summaries by id, and the operators' index of them (see
/// [`crate::operate::index_keys`]): key to message id.
const SUMMARIES: TableDefinition<&str, &str> = TableDefinition::new("summaries");
const INDEX: TableDefinition<&str, &str> = TableDefinition::new("index");
/// Erasure records, by time and subject hash; and the store's own settings (its key for
/// subject hashes).
const ERASURES: TableDefinition<&str, &str> = TableDefinition::new("erasures");
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
/// Operators' corrections, by message id.
const FEEDBACK: TableDefinition<&str, &str> = TableDefinition::new("feedback");
/// The per-recipient allow lists: `r\0<recipient>\0<sender>` holds the entry, and
/// `s\0<sender>\0<recipient>` the same, so that an erasure of either address finds it.
const ALLOWED: TableDefinition<&str, &str> = TableDefinition::new("allowed");
const TABLES: [TableDefinition<&str, &str>; 10] = [
    STAGES, EFFECTS, SLOTS, AUDIT, SUMMARIES, INDEX, ERASURES, META, FEEDBACK, ALLOWED,
];

/// The state store. Writes collect in memory and reach the file in groups, one transaction
/// each (every [`MAX_PENDING`] writes, while other messages go on, and at
/// [`DiskState::flush`], at the end of a run): a transaction per write would cost more than
/// the pipeline itself. redb locks the file, so
/// one process owns the state and the in-memory check-and-set is atomic.
pub struct DiskState {
    /// Behind a lock only so that [`DiskState::rewrite_open`] can swap the file.
    db: RwLock<Database>,
    dir: PathBuf,
    /// Every write the file may not hold yet: reads look here first.
    pending: Mutex<Pending>,
    /// Held while a group of writes goes to the file, so that groups reach it in order.
    writing: Mutex<()>,
    /// Groups written to the file, and their writes let go of (changed under the pending
    /// lock): a read of the file outside the lock knows whether it may be out of date.
    groups_written: AtomicU64,
    /// The subject key once read: every auto-reply and digest hashes an address with it.
    subject_key: std::sync::OnceLock<Vec<u8>>,
}

/// Flush on our own once this many writes are pending, bounding memory on large runs.
const MAX_PENDING: usize = 20_000;

fn key2(a: &str, b: &str) -> String {
    format!("{a}\u{0}{b}")
}

fn err(what: &str) -> impl Fn(redb::Error) -> PortError + '_ {
    move |e| PortError::Permanent(format!("state store ({what}): {e}"))
}

fn table(name: &'static str) -> TableDefinition<'static, &'static str, &'static str> {
    match name {
        "stages" => STAGES,
        "effects" => EFFECTS,
        "rate_limits" => SLOTS,
        "summaries" => SUMMARIES,
        "index" => INDEX,
        "erasures" => ERASURES,
        "meta" => META,
        "feedback" => FEEDBACK,
        "allowed" => ALLOWED,
        _ => AUDIT,
    }
}

type Pending = BTreeMap<(&'static str, String), Option<String>>;

impl DiskState {
    /// Opens (or creates) `DIR/state.redb`.
    pub fn open(dir: &Path) -> Result<DiskState, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create state directory {}: {e}", dir.display()))?;
        let path = dir.join("state.redb");
        let db = Database::create(&path)
            .map_err(|e| format!("cannot open state store {}: {e}", path.display()))?;
        let tx = db.begin_write().map_err(|e| e.to_string())?;
        for t in TABLES {
            tx.open_table(t).map_err(|e| e.to_string())?;
        }
        tx.commit().map_err(|e| e.to_string())?;
        Ok(DiskState {
            db: RwLock::new(db),
            dir: dir.to_path_buf(),
            pending: Mutex::new(BTreeMap::new()),
            writing: Mutex::new(()),
            groups_written: AtomicU64::new(0),
            subject_key: std::sync::OnceLock::new(),
        })
    }

    /// The file's value of `key`.
    fn stored(&self, name: &'static str, key: &str) -> PortResult<Option<String>> {
        let tx = self.db().begin_read().map_err(|e| err(name)(e.into()))?;
        let t = tx
            .open_table(table(name))
            .map_err(|e| err(name)(e.into()))?;
        Ok(t.get(key)
            .map_err(|e| err(name)(e.into()))?
            .map(|v| v.value().to_string()))
    }

    /// The value of `key`: its pending write, or the file's, read with the pending lock
    /// let go so that other messages go on meanwhile. A key not pending is in no group on
    /// its way to the file either, so the file's value stands unless a group has reached
    /// the file since (then it is read again, under the lock) or the key was written since.
    fn current<'a>(
        &'a self,
        pending: MutexGuard<'a, Pending>,
        name: &'static str,
        key: &str,
    ) -> PortResult<(MutexGuard<'a, Pending>, Option<String>)> {
        let k = (name, key.to_string());
        if let Some(v) = pending.get(&k) {
            let v = v.clone();
            return Ok((pending, v));
        }
        let groups = self.groups_written.load(Ordering::Relaxed);
        drop(pending);
        let stored = self.stored(name, key)?;
        let pending = self.pending.lock().expect("state lock");
        let value = match pending.get(&k) {
            Some(v) => v.clone(),
            None if self.groups_written.load(Ordering::Relaxed) == groups => stored,
            None => self.stored(name, key)?,
        };
        Ok((pending, value))
    }

    /// Runs a check-and-set on one table under the pending lock.
    fn update<T>(
        &self,
        name: &'static str,
        key: &str,
        f: impl FnOnce(Option<String>) -> (T, Option<Option<String>>),
    ) -> PortResult<T> {
        let (out, full) = {
            let pending = self.pending.lock().expect("state lock");
            let (mut pending, current) = self.current(pending, name, key)?;
            let (out, write) = f(current);
            if let Some(value) = write {
                pending.insert((name, key.to_string()), value);
            }
            (out, pending.len() >= MAX_PENDING)
        };
        self.make_room(full)?;
        Ok(out)
    }

    /// Writes `key` (`None` deletes it) blind: a write that does not depend on what the
    /// key holds costs no read of the file.
    fn set(&self, name: &'static str, key: &str, value: Option<String>) -> PortResult<()> {
        let full = {
            let mut pending = self.pending.lock().expect("state lock");
            pending.insert((name, key.to_string()), value);
            pending.len() >= MAX_PENDING
        };
        self.make_room(full)
    }

    /// Writes a group once [`MAX_PENDING`] writes are pending, unless a group is on its
    /// way already: that makes room too.
    fn make_room(&self, full: bool) -> PortResult<()> {
        if full {
            self.write_group(false)?;
        }
        Ok(())
    }

    /// Writes what is pending to the file in one durable transaction. The pending lock is
    /// held only to copy the group out and, once the file holds it, to drop what was not
    /// written again meanwhile: other messages read and write all the while. With `wait`
    /// false it does nothing while another group is being written.
    fn write_group(&self, wait: bool) -> PortResult<()> {
        // It guards no data: a panic while holding it leaves nothing half done.
        let _writing = if wait {
            self.writing.lock().unwrap_or_else(|e| e.into_inner())
        } else {
            match self.writing.try_lock() {
                Ok(guard) => guard,
                Err(std::sync::TryLockError::WouldBlock) => return Ok(()),
                Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            }
        };
        self.write_pending()
    }

    /// The group writer's own part of [`DiskState::write_group`]: the caller holds
    /// `writing`, so no other group is on its way.
    fn write_pending(&self) -> PortResult<()> {
        let group = self.pending.lock().expect("state lock").clone();
        // Nothing to write is not worth a durable commit (reads flush first).
        if group.is_empty() {
            return Ok(());
        }
        Self::write_out(&self.db(), &group)?;
        self.written(group);
        Ok(())
    }

    /// Drops from the pending writes a group the file now holds, but for the keys written
    /// again since: those still wait for the next group.
    fn written(&self, group: Pending) {
        let mut pending = self.pending.lock().expect("state lock");
        for (k, v) in group {
            if pending.get(&k) == Some(&v) {
                pending.remove(&k);
            }
        }
        self.groups_written.fetch_add(1, Ordering::Relaxed);
    }

    fn write_out(db: &Database, group: &Pending) -> PortResult<()> {
        let mut tx = db.begin_write().map_err(|e| err("flush")(e.into()))?;
        tx.set_durability(Durability::Immediate);
        for ((name, key), value) in group {
            let mut t = tx
                .open_table(table(name))
                .map_err(|e| err("flush")(e.into()))?;
            match value {
                Some(v) => t.insert(key.as_str(), v.as_str()).map(|_| ()),
                None => t.remove(key.as_str()).map(|_| ()),
            }
            .map_err(|e| err("flush")(e.into()))?;
        }
        tx.commit().map_err(|e| err("flush")(e.into()))
    }

    /// Writes everything pending to the file, durably.
    pub fn flush(&self) -> PortResult<()> {
        self.write_group(true)
    }

    fn db(&self) -> std::sync::RwLockReadGuard<'_, Database> {
        self.db.read().expect("state file lock")
    }

    /// [`DiskState::rewrite`] on this open store (the console erases while it serves):
    /// pending writes go out, the file is closed, rewritten and opened again, with every
    /// other use of the store waiting meanwhile.
    pub fn rewrite_open(&self) -> Result<(), String> {
        // Every pending removal (an erasure's) reaches the old file before it is copied.
        // Writes made after this wait for the next group, which goes to the new file.
        let _writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        self.write_pending().map_err(|e| e.to_string())?;
        let mut db = self.db.write().expect("state file lock");
        // redb locks its file: the old handle must close before the file is reopened.
        let placeholder = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|e| e.to_string())?;
        drop(std::mem::replace(&mut *db, placeholder));
        let rewritten = DiskState::rewrite(&self.dir);
        let path = self.dir.join("state.redb");
        *db = Database::create(&path)
            .map_err(|e| format!("cannot reopen state store {}: {e}", path.display()))?;
        rewritten
    }

    /// Rewrites `DIR/state.redb` into a new file holding only what is live, and puts it in
    /// the old one's place: the bytes of removed records (an erasure's) are gone from disk,
    /// not left in free pages. The store must not be open.
    pub fn rewrite(dir: &Path) -> Result<(), String> {
        let path = dir.join("state.redb");
        let fresh = dir.join("state.redb.rewrite");
        let _ = std::fs::remove_file(&fresh);
        let what = |e: &dyn std::fmt::Display| format!("rewriting {}: {e}", path.display());
        {
            let old = Database::open(&path).map_err(|e| what(&e))?;
            let new = Database::create(&fresh).map_err(|e| what(&e))?;
            let read = old.begin_read().map_err(|e| what(&e))?;
            let mut write = new.begin_write().map_err(|e| what(&e))?;
            write.set_durability(Durability::Immediate);
            for t in TABLES {
                let Ok(from) = read.open_table(t) else {
                    continue;
                };
                let mut to = write.open_table(t).map_err(|e| what(&e))?;
                for row in from.iter().map_err(|e| what(&e))? {
                    let (k, v) = row.map_err(|e| what(&e))?;
                    to.insert(k.value(), v.value()).map_err(|e| what(&e))?;
                }
            }
            write.commit().map_err(|e| what(&e))?;
        }
        std::fs::rename(&fresh, &path).map_err(|e| what(&e))
    }

    /// A 32-byte secret kept in the store (made on first use): the subject key of erasure
    /// records, the link key of quarantine digests.
    fn secret(&self, name: &str) -> PortResult<Vec<u8>> {
        let hex = self.update("meta", name, |cur| match cur {
            Some(k) => (Ok(k), None),
            None => match crate::secret::random_key(name) {
                Ok(bytes) => {
                    let k = crate::secret::hex(&bytes);
                    (Ok(k.clone()), Some(Some(k)))
                }
                Err(e) => (Err(e), None),
            },
        })?;
        let hex = hex.map_err(PortError::Permanent)?;
        self.flush()?;
        Ok(crate::secret::unhex(&hex))
    }

    /// The key digest links are signed with.
    pub fn link_key(&self) -> PortResult<Vec<u8>> {
        self.secret("link_key")
    }

    /// The keys of `table` that start with `prefix`, pending writes included.
    fn keys_from(&self, name: &'static str, prefix: &str) -> PortResult<Vec<String>> {
        self.flush()?;
        let tx = self.db().begin_read().map_err(|e| err(name)(e.into()))?;
        let t = tx
            .open_table(table(name))
            .map_err(|e| err(name)(e.into()))?;
        let mut out = Vec::new();
        for row in t.range(prefix..).map_err(|e| err(name)(e.into()))? {
            let (k, _) = row.map_err(|e| err(name)(e.into()))?;
            let k = k.value();
            if !k.starts_with(prefix) {
                break;
            }
            out.push(k.to_string());
        }
        Ok(out)
    }

    /// The audit trail, in key order (message id, then stage). Flushes first.
    pub fn audit_records(&self) -> PortResult<Vec<AuditRecord>> {
        self.flush()?;
        let tx = self
            .db()
            .begin_read()
            .map_err(|e| err("read audit")(e.into()))?;
        let table = tx
            .open_table(AUDIT)
            .map_err(|e| err("read audit")(e.into()))?;
        let mut out = Vec::new();
        for row in table.iter().map_err(|e| err("read audit")(e.into()))? {
            let (_, v) = row.map_err(|e| err("read audit")(e.into()))?;
            out.push(
                serde_json::from_str(v.value())
                    .map_err(|e| PortError::Permanent(format!("corrupt audit record: {e}")))?,
            );
        }
        Ok(out)
    }
}

impl Drop for DiskState {
    /// Nothing recorded is lost when a run ends early: pending writes reach the file.
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

fn row<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("rows serialise")
}

/// The write of an update that stores `v`.
fn json<T: serde::Serialize>(v: &T) -> Option<Option<String>> {
    Some(Some(row(v)))
}

#[async_trait]
impl Forget for DiskState {
    async fn messages_naming(&self, address: &str) -> PortResult<Vec<String>> {
        let prefix = format!("a\u{0}{address}\u{0}");
        let mut ids: Vec<String> = self
            .keys_from("index", &prefix)?
            .into_iter()
            .filter_map(|k| k.rsplit('\u{0}').next().map(str::to_string))
            .collect();
        // Summaries written before the address index: their sender and recipients.
        for p in ["s", "r"] {
            for k in self.keys_from("index", &format!("{p}\u{0}{address}\u{0}"))? {
                if let Some(id) = k.rsplit('\u{0}').next() {
                    ids.push(id.to_string());
                }
            }
        }
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    async fn forget_message(&self, id: &str) -> PortResult<usize> {
        let mut gone = 0;
        let prefix = key2(id, "");
        for name in ["stages", "effects", "audit"] {
            for k in self.keys_from(name, &prefix)? {
                self.set(name, &k, None)?;
                gone += 1;
            }
        }
        let summary: Option<MessageSummary> = self.update("summaries", id, |cur| {
            (cur.and_then(|v| serde_json::from_str(&v).ok()), Some(None))
        })?;
        if let Some(summary) = summary {
            gone += 1;
            for k in index_keys(&summary) {
                self.set("index", &k, None)?;
                gone += 1;
            }
        }
        if self.update("feedback", id, |cur| (cur.is_some(), Some(None)))? {
            gone += 1;
        }
        self.flush()?;
        Ok(gone)
    }

    async fn forget_slots(
        &self,
        address: &str,
        hash: &str,
        _templates: &[String],
    ) -> PortResult<usize> {
        // Under the hash, and under the address as slots written before named it.
        let (old, new) = (
            format!("#{}#", address.to_ascii_lowercase()),
            format!("#{hash}#"),
        );
        let keys: Vec<String> = self
            .keys_from("rate_limits", "")?
            .into_iter()
            .filter(|k| {
                let k = k.to_ascii_lowercase();
                k.contains(&old) || k.contains(&new)
            })
            .collect();
        for k in &keys {
            self.set("rate_limits", k, None)?;
        }
        self.flush()?;
        Ok(keys.len())
    }

    async fn forget_digests(&self, address: &str, _runs: &[String]) -> PortResult<usize> {
        // Every digest run's effects are in the file: all are looked at.
        let old = format!("\u{0}respond/digest/{}", address.to_ascii_lowercase());
        let keys: Vec<String> = self
            .keys_from("effects", "digest-")?
            .into_iter()
            .filter(|k| k.to_ascii_lowercase().ends_with(&old))
            .collect();
        for k in &keys {
            self.set("effects", k, None)?;
        }
        self.flush()?;
        Ok(keys.len())
    }

    async fn purge_object(&self, key: &str) -> PortResult<usize> {
        // The folder `mailroom run` writes copies into beside the state (no versions).
        let objects = super::files::DirObjects {
            root: self.dir.join("objects"),
        };
        crate::ports::ObjectStore::delete_object(&objects, key).await?;
        Ok(1)
    }

    async fn purge_raw(&self, _id: &str, _raw: &RawRef) -> PortResult<Option<usize>> {
        Ok(None)
    }

    async fn begin_erasure(&self, subject: &str, ids: &[String]) -> PortResult<()> {
        self.set("meta", &format!("erasing/{subject}"), Some(row(&ids)))?;
        self.flush()
    }

    async fn pending_erasure(&self, subject: &str) -> PortResult<Vec<String>> {
        let pending = self.update("meta", &format!("erasing/{subject}"), |cur| (cur, None))?;
        Ok(pending
            .and_then(|v| serde_json::from_str(&v).ok())
            .unwrap_or_default())
    }

    /// Kept until `mailroom gc` applies `retention.erasures`.
    async fn record_erasure(&self, record: &ErasureRecord, _keep_until: u64) -> PortResult<()> {
        let key = format!("{:020}\u{0}{}", record.at, record.subject);
        self.set("erasures", &key, Some(row(record)))?;
        self.update("meta", &format!("erasing/{}", record.subject), |_| {
            ((), Some(None))
        })?;
        self.flush()
    }

    async fn forget_erasures_before(&self, at: u64) -> PortResult<usize> {
        let before = format!("{at:020}");
        let old: Vec<String> = self
            .keys_from("erasures", "")?
            .into_iter()
            .take_while(|k| *k < before)
            .collect();
        for k in &old {
            self.set("erasures", k, None)?;
        }
        self.flush()?;
        Ok(old.len())
    }
}

fn allowed_keys(recipient: &str, sender: &str) -> [String; 2] {
    [
        format!("r\u{0}{recipient}\u{0}{sender}"),
        format!("s\u{0}{sender}\u{0}{recipient}"),
    ]
}

#[async_trait]
impl RecipientAllowList for DiskState {
    async fn allow_sender(&self, entry: &AllowedSender) -> PortResult<()> {
        for k in allowed_keys(&entry.recipient, &entry.sender) {
            self.set("allowed", &k, Some(row(entry)))?;
        }
        // Another process (`mailroom run`) reads it next: on disk now.
        self.flush()
    }

    async fn allowing(&self, sender: &str, recipients: &[String]) -> PortResult<Vec<String>> {
        let mut pending = self.pending.lock().expect("state lock");
        let mut out = Vec::new();
        for r in recipients {
            let [key, _] = allowed_keys(r, sender);
            let allowed;
            (pending, allowed) = self.current(pending, "allowed", &key)?;
            if allowed.is_some() {
                out.push(r.clone());
            }
        }
        Ok(out)
    }

    async fn forget_allowed(&self, address: &str) -> PortResult<usize> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (side, prefix) in [
            ("r", format!("r\u{0}{address}\u{0}")),
            ("s", format!("s\u{0}{address}\u{0}")),
        ] {
            for k in self.keys_from("allowed", &prefix)? {
                let other = k[prefix.len()..].to_string();
                let pair = match side {
                    "r" => (address.to_string(), other),
                    _ => (other, address.to_string()),
                };
                if !pairs.contains(&pair) {
                    pairs.push(pair);
                }
            }
        }
        for (r, s) in &pairs {
            for k in allowed_keys(r, s) {
                self.set("allowed", &k, None)?;
            }
        }
        self.flush()?;
        Ok(pairs.len())
    }
}

#[async_trait]
impl FeedbackLog for DiskState {
    async fn correct(&self, correction: &Correction) -> PortResult<()> {
        self.set("feedback", &correction.id, Some(row(correction)))?;
        self.flush()
    }

    async fn corrections(&self) -> PortResult<Vec<Correction>> {
        self.flush()?;
        let tx = self
            .db()
            .begin_read()
            .map_err(|e| err("feedback")(e.into()))?;
        let t = tx
            .open_table(FEEDBACK)
            .map_err(|e| err("feedback")(e.into()))?;
        let mut out: Vec<Correction> = Vec::new();
        for row in t.iter().map_err(|e| err("feedback")(e.into()))? {
            let (k, v) = row.map_err(|e| err("feedback")(e.into()))?;
            out.push(serde_json::from_str(v.value()).map_err(|e| {
                PortError::Permanent(format!("corrupt correction of {}: {e}", k.value()))
            })?);
        }
        out.sort_by(|a, b| (a.at, &a.id).cmp(&(b.at, &b.id)));
        Ok(out)
    }
}

#[async_trait]
impl StateStore for DiskState {
    async fn claim_effect(
        &self,
        id: &str,
        effect: &str,
        owner: &str,
        lease: Duration,
        now: SystemTime,
    ) -> PortResult<Claim> {
        self.update("effects", &key2(id, effect), |cur| {
            let existing: Option<EffectRow> = cur.and_then(|v| serde_json::from_str(&v).ok());
            let (claim, row) = decide_claim(existing.as_ref(), owner, lease, now);
            (claim, row.and_then(|r| json(&r)))
        })
    }

    async fn complete_effect(&self, id: &str, effect: &str, note: &str) -> PortResult<()> {
        self.update("effects", &key2(id, effect), |_| {
            ((), json(&EffectRow::done(note)))
        })
    }

    async fn release_effect(&self, id: &str, effect: &str, owner: &str) -> PortResult<()> {
        self.update("effects", &key2(id, effect), |cur| {
            let existing: Option<EffectRow> = cur.and_then(|v| serde_json::from_str(&v).ok());
            (
                (),
                decide_release(existing.as_ref(), owner).and_then(|r| json(&r)),
            )
        })
    }

    async fn acquire_rate_limit(
        &self,
        key: &str,
        owner: &str,
        until: SystemTime,
        now: SystemTime,
    ) -> PortResult<bool> {
        self.update("rate_limits", key, |cur| {
            let existing: Option<SlotRow> = cur.and_then(|v| serde_json::from_str(&v).ok());
            match decide_slot(existing.as_ref(), owner, until, now) {
                Some(row) => (true, json(&row)),
                None => (false, None),
            }
        })
    }

    async fn release_rate_limit(&self, key: &str, owner: &str) -> PortResult<()> {
        self.update("rate_limits", key, |cur| {
            let held = cur
                .and_then(|v| serde_json::from_str::<SlotRow>(&v).ok())
                .is_some_and(|row| row.owner == owner);
            ((), held.then_some(None))
        })
    }

    async fn count_request(&self, key: &str, until: SystemTime) -> PortResult<u64> {
        let now = crate::pipeline::epoch_secs(SystemTime::now());
        let until = crate::pipeline::epoch_secs(until);
        let n = self.update("rate_limits", &format!("count/{key}"), |cur| {
            let (n, kept) = cur
                .and_then(|v| serde_json::from_str::<(u64, u64)>(&v).ok())
                .filter(|(_, kept)| *kept >= now)
                .unwrap_or((0, until));
            (n + 1, json(&(n + 1, kept)))
        })?;
        self.flush()?;
        Ok(n)
    }

    async fn subject_key(&self) -> PortResult<Vec<u8>> {
        if let Some(key) = self.subject_key.get() {
            return Ok(key.clone());
        }
        let key = self.secret("subject_key")?;
        Ok(self.subject_key.get_or_init(|| key).clone())
    }
}

#[async_trait]
impl MessageIndex for DiskState {
    async fn record(&self, summary: &MessageSummary) -> PortResult<()> {
        let old: Option<MessageSummary> = self.update("summaries", &summary.id, |cur| {
            let old = cur.and_then(|v| serde_json::from_str(&v).ok());
            (old, json(summary))
        })?;
        let new_keys = index_keys(summary);
        for k in old
            .iter()
            .flat_map(index_keys)
            .filter(|k| !new_keys.contains(k))
        {
            self.set("index", &k, None)?;
        }
        for k in new_keys {
            self.set("index", &k, Some(summary.id.clone()))?;
        }
        Ok(())
    }

    async fn get(&self, id: &str) -> PortResult<Option<MessageSummary>> {
        let pending = self.pending.lock().expect("state lock");
        let (_pending, summary) = self.current(pending, "summaries", id)?;
        Ok(summary.and_then(|v| serde_json::from_str(&v).ok()))
    }

    /// Reads the file's index and the writes not yet flushed together, newer writes
    /// winning, under the pending lock (a flush cannot come between the two): a lookup for
    /// each message of a run (a follow-up's conversation) costs no durable commit.
    async fn query(&self, query: &Query) -> PortResult<Page> {
        let e = |e: redb::Error| PortError::Permanent(format!("state store (index): {e}"));
        let (from, to) = index_range(query);
        let pending = self.pending.lock().expect("state lock");
        let tx = self.db().begin_read().map_err(|x| e(x.into()))?;
        let index = tx.open_table(INDEX).map_err(|x| e(x.into()))?;
        let summaries = tx.open_table(SUMMARIES).map_err(|x| e(x.into()))?;
        // The unflushed index entries in the range; `None` is a removed entry.
        let mut fresh = pending
            .range(("index", from.clone())..("index", to.clone()))
            .rev()
            .peekable();
        let mut stored = index
            .range(from.as_str()..to.as_str())
            .map_err(|x| e(x.into()))?
            .rev()
            .peekable();
        let mut rows = Vec::new();
        loop {
            let stored_key = match stored.peek() {
                Some(Ok((k, _))) => Some(k.value().to_string()),
                Some(Err(_)) => {
                    let Some(Err(x)) = stored.next() else {
                        unreachable!("peeked an error")
                    };
                    return Err(e(x.into()));
                }
                None => None,
            };
            let id = match (fresh.peek(), stored_key) {
                (None, None) => break,
                (Some(((_, k), _)), Some(s)) if *k < s => stored
                    .next()
                    .and_then(|r| r.ok())
                    .map(|(_, id)| id.value().to_string()),
                (None, Some(_)) => stored
                    .next()
                    .and_then(|r| r.ok())
                    .map(|(_, id)| id.value().to_string()),
                (Some(((_, k), _)), stored_key) => {
                    if stored_key.as_deref() == Some(k.as_str()) {
                        stored.next();
                    }
                    fresh.next().and_then(|(_, id)| id.clone())
                }
            };
            let Some(id) = id else { continue };
            let json = match pending.get(&("summaries", id.clone())) {
                Some(json) => json.clone(),
                None => summaries
                    .get(id.as_str())
                    .map_err(|x| e(x.into()))?
                    .map(|v| v.value().to_string()),
            };
            if let Some(row) = json.and_then(|v| serde_json::from_str::<MessageSummary>(&v).ok())
                && query.matches(&row)
            {
                rows.push(row);
                if rows.len() == query.page_size() {
                    break;
                }
            }
        }
        Ok(collect_page(rows.into_iter(), query))
    }
}

#[async_trait]
impl AuditLog for DiskState {
    async fn append(&self, record: &AuditRecord) -> PortResult<()> {
        self.update("audit", &key2(&record.id, &record.key()), |cur| match cur {
            Some(_) => ((), None),
            None => ((), json(record)),
        })
    }

    async fn records(&self, id: &str) -> PortResult<Vec<AuditRecord>> {
        self.flush()?;
        let e = |x: redb::Error| PortError::Permanent(format!("state store (audit): {x}"));
        let tx = self.db().begin_read().map_err(|x| e(x.into()))?;
        let table = tx.open_table(AUDIT).map_err(|x| e(x.into()))?;
        let (from, to) = (key2(id, ""), format!("{id}\u{1}"));
        let mut out: Vec<AuditRecord> = Vec::new();
        for row in table
            .range(from.as_str()..to.as_str())
            .map_err(|x| e(x.into()))?
        {
            let (_, v) = row.map_err(|x| e(x.into()))?;
            out.push(
                serde_json::from_str(v.value()).map_err(|x| {
                    PortError::Permanent(format!("corrupt audit record of {id}: {x}"))
                })?,
            );
        }
        out.sort_by_key(|r| (r.stage, r.event.is_some(), r.at));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Stage;
    use std::time::UNIX_EPOCH;

    #[test]
    fn a_key_written_again_while_its_group_is_written_keeps_the_newer_value() {
        let dir = std::env::temp_dir().join(format!("mailroom-group-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let set = |s: &DiskState, k: &str, v: &str| {
            s.update("meta", k, |_| ((), Some(Some(v.to_string()))))
                .unwrap()
        };
        let get = |s: &DiskState, k: &str| {
            let pending = s.pending.lock().unwrap();
            s.current(pending, "meta", k).unwrap().1
        };
        {
            let s = DiskState::open(&dir).unwrap();
            set(&s, "a", "1");
            set(&s, "b", "1");
            // A group on its way to the file, and a write to one of its keys meanwhile.
            let group = s.pending.lock().unwrap().clone();
            set(&s, "a", "2");
            DiskState::write_out(&s.db(), &group).unwrap();
            s.written(group);
            let left: Vec<_> = s.pending.lock().unwrap().keys().cloned().collect();
            assert_eq!(left, [("meta", "a".to_string())], "b is in the file now");
            assert_eq!(get(&s, "a").as_deref(), Some("2"));
            assert_eq!(get(&s, "b").as_deref(), Some("1"));
            s.flush().unwrap();
            assert!(s.pending.lock().unwrap().is_empty());
        }
        let s = DiskState::open(&dir).unwrap();
        assert_eq!(get(&s, "a").as_deref(), Some("2"));
        assert_eq!(get(&s, "b").as_deref(), Some("1"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn check_and_sets_from_many_threads_lose_no_update_while_groups_are_written() {
        let dir = std::env::temp_dir().join(format!("mailroom-cas-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = DiskState::open(&dir).unwrap();
        let add = |k: &str| {
            s.update("meta", k, |cur| {
                let n: u64 = cur.map_or(0, |v| v.parse().unwrap());
                ((), Some(Some((n + 1).to_string())))
            })
            .unwrap()
        };
        let (threads, each, keys) = (4, 300, ["a", "b", "c"]);
        std::thread::scope(|scope| {
            for t in 0..threads {
                scope.spawn(move || {
                    for i in 0..each {
                        add(keys[(t + i) % keys.len()]);
                    }
                });
            }
            // Groups go to the file all the while, each letting go of what it wrote.
            scope.spawn(|| {
                for _ in 0..40 {
                    s.flush().unwrap();
                }
            });
        });
        s.flush().unwrap();
        let total: u64 = keys
            .iter()
            .map(|k| {
                s.stored("meta", k)
                    .unwrap()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
            })
            .sum();
        assert_eq!(total, (threads * each) as u64);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn an_unfinished_erasure_is_remembered_across_a_restart_until_recorded() {
        let dir =
            std::env::temp_dir().join(format!("mailroom-erasing-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ids = vec!["m1".to_string(), "m2".to_string()];
        {
            let s = DiskState::open(&dir).unwrap();
            s.begin_erasure("h1", &ids).await.unwrap();
            // The process dies here.
        }
        let s = DiskState::open(&dir).unwrap();
        assert_eq!(s.pending_erasure("h1").await.unwrap(), ids);
        assert!(s.pending_erasure("h2").await.unwrap().is_empty());
        let record = ErasureRecord {
            subject: "h1".into(),
            at: 1,
            by: "t".into(),
            messages: 2,
            objects: 0,
            records: 0,
            slots: 0,
            allowed: 0,
        };
        s.record_erasure(&record, 10).await.unwrap();
        assert!(s.pending_erasure("h1").await.unwrap().is_empty());
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn corrections_survive_a_reopen_replace_each_other_and_go_with_their_message() {
        use crate::model::Verdict;
        use crate::operate::Judgement;
        let dir =
            std::env::temp_dir().join(format!("mailroom-feedback-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let correction = |id: &str, label, at| Correction {
            id: id.into(),
            raw: RawRef {
                bucket: "local".into(),
                key: format!("in/{id}.eml"),
            },
            label,
            verdict: Verdict::Quarantine,
            by: "ops".into(),
            at,
            via: "mark".into(),
        };
        {
            let s = DiskState::open(&dir).unwrap();
            s.correct(&correction("m2", Judgement::Spam, 5))
                .await
                .unwrap();
            s.correct(&correction("m1", Judgement::Ham, 7))
                .await
                .unwrap();
            s.correct(&correction("m2", Judgement::Ham, 9))
                .await
                .unwrap();
        }
        let s = DiskState::open(&dir).unwrap();
        let all = s.corrections().await.unwrap();
        let got: Vec<(&str, Judgement, u64)> =
            all.iter().map(|c| (c.id.as_str(), c.label, c.at)).collect();
        assert_eq!(got, [("m1", Judgement::Ham, 7), ("m2", Judgement::Ham, 9)]);
        assert!(all[0].contradicts(), "ham that was quarantined");
        assert_eq!(s.forget_message("m2").await.unwrap(), 1);
        let left: Vec<String> = s
            .corrections()
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(left, ["m1"]);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn the_allow_list_on_disk_keeps_pairs_across_a_reopen_and_forgets_either_address() {
        let dir =
            std::env::temp_dir().join(format!("mailroom-allowed-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let s = DiskState::open(&dir).unwrap();
            super::super::tests::exercise_allow_list(&s).await;
            s.allow_sender(&AllowedSender {
                recipient: "carol@corp.test".into(),
                sender: "promo@x.test".into(),
                via: "m9".into(),
                at: 5,
            })
            .await
            .unwrap();
        }
        let s = DiskState::open(&dir).unwrap();
        let carol = vec!["carol@corp.test".to_string()];
        assert_eq!(s.allowing("promo@x.test", &carol).await.unwrap(), carol);
        assert_eq!(
            s.forget_allowed("promo@x.test").await.unwrap(),
            2,
            "bob's and carol's"
        );
        drop(s);
        // The rewrite after an erasure keeps what is left and nothing of what went.
        DiskState::rewrite(&dir).unwrap();
        let bytes = std::fs::read(dir.join("state.redb")).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains("promo@x.test"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn record(decision: &str) -> AuditRecord {
        AuditRecord {
            id: "m1".into(),
            stage: Stage::Filter,
            decision: decision.into(),
            reasons: vec![],
            decided_by: vec![],
            sender: None,
            at: 2_000_000_000,
            event: None,
        }
    }

    #[tokio::test]
    async fn state_survives_reopen_and_dedups() {
        let dir = std::env::temp_dir().join(format!("mailroom-disk-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let t0 = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        {
            let s = DiskState::open(&dir).unwrap();
            s.append(&record("accept")).await.unwrap();
            s.append(&record("a duplicate delivery's")).await.unwrap();
            assert_eq!(
                s.claim_effect("m1", "respond/reply", "a1", Duration::from_secs(60), t0)
                    .await
                    .unwrap(),
                Claim::Acquired
            );
            s.complete_effect("m1", "respond/reply", "sent")
                .await
                .unwrap();
            assert!(
                s.acquire_rate_limit("a@x#t", "m1", t0 + Duration::from_secs(600), t0)
                    .await
                    .unwrap()
            );
            s.flush().unwrap();
        }
        let s = DiskState::open(&dir).unwrap();
        s.append(&record("after the reopen")).await.unwrap();
        let kept = s.records("m1").await.unwrap();
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert_eq!(kept[0].decision, "accept");
        assert_eq!(
            s.claim_effect("m1", "respond/reply", "a2", Duration::from_secs(60), t0)
                .await
                .unwrap(),
            Claim::Done("sent".into())
        );
        assert!(
            !s.acquire_rate_limit("a@x#t", "m2", t0 + Duration::from_secs(600), t0)
                .await
                .unwrap()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn queries_see_unflushed_writes_and_removals() {
        let dir = std::env::temp_dir().join(format!("mailroom-disk-query-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = DiskState::open(&dir).unwrap();
        let row = |id: &str, at: u64, quarantined: bool| -> MessageSummary {
            serde_json::from_value(serde_json::json!({
                "id": id, "at": at, "subject": "s", "verdict": "accept", "score": 0.0,
                "raw": { "bucket": "b", "key": id }, "message_id": format!("<{id}@x.example>"),
                "quarantined": quarantined.then(|| format!("quarantine/{id}.eml")),
            }))
            .unwrap()
        };
        s.record(&row("a", 10, true)).await.unwrap();
        s.record(&row("b", 20, true)).await.unwrap();
        s.flush().unwrap();
        // Released (off the quarantine index) and a newer message, neither flushed.
        s.record(&row("a", 10, false)).await.unwrap();
        s.record(&row("c", 30, true)).await.unwrap();
        let ids = |p: Page| p.rows.into_iter().map(|r| r.id).collect::<Vec<_>>();
        let quarantine = Query {
            quarantined_only: true,
            ..Query::default()
        };
        assert_eq!(ids(s.query(&quarantine).await.unwrap()), ["c", "b"]);
        assert_eq!(
            ids(s.query(&Query::default()).await.unwrap()),
            ["c", "b", "a"]
        );
        let by_id = Query {
            message_id: Some("c@x.example".into()),
            ..Query::default()
        };
        assert_eq!(ids(s.query(&by_id).await.unwrap()), ["c"]);
        assert!(
            !s.pending.lock().unwrap().is_empty(),
            "the queries left the writes pending"
        );
        s.flush().unwrap();
        assert_eq!(ids(s.query(&quarantine).await.unwrap()), ["c", "b"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The operators' index at 100,000 messages: `cargo test -p mailroom-core --release --lib
/// index_at_100k -- --ignored --nocapture` prints how long writing them and each query
/// take (a measurement, not a check of speed).
#[cfg(test)]
mod scale {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::model::{RawRef, Verdict};
    use crate::operate::{MessageSummary, Query};

    #[tokio::test]
    #[ignore]
    async fn index_at_100k() {
        let dir = std::env::temp_dir().join(format!("mailroom-index-100k-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = DiskState::open(&dir).unwrap();
        let n = 100_000u64;
        let started = Instant::now();
        let sender_of = |i: u64| format!("sender{}@domain{}.example", i % 5_000, i % 300);
        for i in 0..n {
            let quarantined = i % 100 == 0;
            s.record(&MessageSummary {
                id: format!("{i:024x}"),
                at: 1_790_000_000 + i * 30,
                date: None,
                sender: Some(sender_of(i)),
                recipients: vec![format!("team{}@example.com", i % 40)],
                subject: format!("Message number {i} about invoice {}", i % 977),
                message_id: Some(format!("<{i}@x.example>")),
                verdict: if quarantined {
                    Verdict::Quarantine
                } else {
                    Verdict::Accept
                },
                score: (i % 13) as f32,
                reasons: if quarantined {
                    vec!["SES_SPAM_FAIL".into()]
                } else {
                    vec![]
                },
                category: Some(["billing", "support", "sales"][(i % 3) as usize].into()),
                routes: vec!["forward".into()],
                addresses: vec![sender_of(i), format!("team{}@example.com", i % 40)],
                stored: vec![],
                quarantined: quarantined.then(|| format!("quarantine/{i}.eml")),
                raw: RawRef {
                    bucket: "local".into(),
                    key: format!("{i}.eml"),
                },
                reference: Some(format!("MR-{i:010}")),
                conversation: (i % 10 != 0).then(|| format!("{:024x}", i - i % 10)),
                follows: (i % 10 != 0).then(|| format!("{:024x}", i - 1)),
                priority: None,
                category_rule: None,
                priority_rule: None,
                route_rules: vec![],
                draft: None,
            })
            .await
            .unwrap();
        }
        s.flush().unwrap();
        let wrote = started.elapsed();
        let s = &s;
        let time = |q: Query| async move {
            let t = Instant::now();
            let mut rows = 0;
            let mut runs = 0;
            while t.elapsed() < Duration::from_millis(300) || runs == 0 {
                rows = s.query(&q).await.unwrap().rows.len();
                runs += 1;
            }
            (t.elapsed() / runs, rows)
        };
        let size = std::fs::metadata(dir.join("state.redb"))
            .map(|m| m.len())
            .unwrap_or(0);
        println!(
            "index at {n} messages: written in {:.1} s, state.redb {:.1} MB",
            wrote.as_secs_f64(),
            size as f64 / 1e6
        );
        for (name, q) in [
            (
                "quarantine list, first page of 50",
                Query {
                    quarantined_only: true,
                    ..Query::default()
                },
            ),
            (
                "search by sender",
                Query {
                    sender: Some("sender42@domain42.example".into()),
                    ..Query::default()
                },
            ),
            (
                "search by recipient, first page",
                Query {
                    recipient: Some("team7@example.com".into()),
                    ..Query::default()
                },
            ),
            ("search by time, first page", Query::default()),
            (
                "search by subject, a rare word (scans the time index)",
                Query {
                    subject: Some("invoice 976".into()),
                    ..Query::default()
                },
            ),
        ] {
            let (each, rows) = time(q).await;
            println!(
                "  {name}: {rows} rows in {:.2} ms",
                each.as_secs_f64() * 1e3
            );
        }
        // A follow-up's lookup, as the classify stage makes it: by a quoted reference, by
        // a participant's In-Reply-To (with the participant check), and a stranger's
        // forged References (every clue looked up, none followed).
        let followed = 77_771u64;
        let by_reference = format!(
            "From: <someone@else.example>\r\nSubject: Re: [MR-{followed:010}]\r\n\r\nok\r\n"
        );
        let by_header = format!(
            "From: <{}>\r\nIn-Reply-To: <{followed}@x.example>\r\nSubject: Re\r\n\r\nok\r\n",
            sender_of(followed)
        );
        let forged = format!(
            "From: <mallory@evil.example>\r\nReferences: {}\r\nSubject: Re\r\n\r\nok\r\n",
            (0..20)
                .map(|k| format!("<{}@x.example>", followed - k))
                .collect::<Vec<_>>()
                .join(" ")
        );
        for (name, raw, joins) in [
            ("follow-up by reference", by_reference, true),
            (
                "follow-up by In-Reply-To, participant checked",
                by_header,
                true,
            ),
            (
                "forged References, 20 Message-IDs, none followed",
                forged,
                false,
            ),
        ] {
            let mail = crate::mail::Mail::parse(raw.as_bytes()).unwrap();
            let t = Instant::now();
            let mut runs = 0u32;
            let mut found = None;
            while t.elapsed() < Duration::from_millis(300) || runs == 0 {
                found = crate::conversation::find(
                    s,
                    "new",
                    &mail,
                    &crate::conversation::clues(&mail, "MR-"),
                )
                .await
                .unwrap()
                .conversation;
                runs += 1;
            }
            assert_eq!(found.is_some(), joins, "{name}");
            println!(
                "  {name}: {:.3} ms",
                (t.elapsed() / runs).as_secs_f64() * 1e3
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
