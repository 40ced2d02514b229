//! The on-disk state store for local runs: one redb file holding stage records, effects,
//! rate-limit slots and the audit trail, so that a second run over the same mail repeats no
//! effect and sends no second auto-reply.

use std::path::Path;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use redb::{Database, Durability, ReadableTable, TableDefinition};

use super::{EffectRow, SlotRow, decide_claim, decide_slot};
use crate::model::{AuditRecord, Stage};
use crate::ports::{AuditLog, Claim, PortError, PortResult, StateStore};

const STAGES: TableDefinition<&str, &str> = TableDefinition::new("stages");
const EFFECTS: TableDefinition<&str, &str> = TableDefinition::new("effects");
const SLOTS: TableDefinition<&str, &str> = TableDefinition::new("rate_limits");
const AUDIT: TableDefinition<&str, &str> = TableDefinition::new("audit");

pub struct DiskState {
    db: Database,
}

fn key2(a: &str, b: &str) -> String {
    format!("{a}\u{0}{b}")
}

fn err(what: &str) -> impl Fn(redb::Error) -> PortError + '_ {
    move |e| PortError::Permanent(format!("state store ({what}): {e}"))
}

impl DiskState {
    /// Opens (or creates) `DIR/state.redb`.
    pub fn open(dir: &Path) -> Result<DiskState, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create state directory {}: {e}", dir.display()))?;
        let path = dir.join("state.redb");
        let db = Database::create(&path)
            .map_err(|e| format!("cannot open state store {}: {e}", path.display()))?;
        let state = DiskState { db };
        state
            .write("init", |tx| {
                tx.open_table(STAGES)?;
                tx.open_table(EFFECTS)?;
                tx.open_table(SLOTS)?;
                tx.open_table(AUDIT)?;
                Ok(())
            })
            .map_err(|e| e.to_string())?;
        state.flush().map_err(|e| e.to_string())?;
        Ok(state)
    }

    /// One write transaction. Commits are not fsynced one by one (a local run writes
    /// several per message); [`DiskState::flush`] makes everything so far durable.
    fn write<T>(
        &self,
        what: &str,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, redb::Error>,
    ) -> PortResult<T> {
        let mut tx = self.db.begin_write().map_err(|e| err(what)(e.into()))?;
        tx.set_durability(Durability::None);
        let out = f(&tx).map_err(err(what))?;
        tx.commit().map_err(|e| err(what)(e.into()))?;
        Ok(out)
    }

    /// Makes every earlier write durable.
    pub fn flush(&self) -> PortResult<()> {
        let mut tx = self.db.begin_write().map_err(|e| err("flush")(e.into()))?;
        tx.set_durability(Durability::Immediate);
        tx.commit().map_err(|e| err("flush")(e.into()))
    }

    /// The audit trail, in key order (message id, then stage).
    pub fn audit_records(&self) -> PortResult<Vec<AuditRecord>> {
        let tx = self
            .db
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

#[async_trait]
impl StateStore for DiskState {
    async fn record_stage(&self, id: &str, stage: Stage, summary: &str) -> PortResult<bool> {
        self.write("record stage", |tx| {
            let mut t = tx.open_table(STAGES)?;
            let key = key2(id, stage.as_str());
            if t.get(key.as_str())?.is_some() {
                return Ok(false);
            }
            t.insert(key.as_str(), summary)?;
            Ok(true)
        })
    }

    async fn claim_effect(
        &self,
        id: &str,
        effect: &str,
        lease: Duration,
        now: SystemTime,
    ) -> PortResult<Claim> {
        self.write("claim effect", |tx| {
            let mut t = tx.open_table(EFFECTS)?;
            let key = key2(id, effect);
            let existing: Option<EffectRow> = t
                .get(key.as_str())?
                .and_then(|v| serde_json::from_str(v.value()).ok());
            let (claim, row) = decide_claim(existing.as_ref(), lease, now);
            if let Some(row) = row {
                t.insert(
                    key.as_str(),
                    serde_json::to_string(&row)
                        .expect("rows serialise")
                        .as_str(),
                )?;
            }
            Ok(claim)
        })
    }

    async fn complete_effect(&self, id: &str, effect: &str, note: &str) -> PortResult<()> {
        self.write("complete effect", |tx| {
            let mut t = tx.open_table(EFFECTS)?;
            let row = EffectRow {
                done: true,
                lease_until: 0,
                note: note.to_string(),
            };
            t.insert(
                key2(id, effect).as_str(),
                serde_json::to_string(&row)
                    .expect("rows serialise")
                    .as_str(),
            )?;
            Ok(())
        })
    }

    async fn release_effect(&self, id: &str, effect: &str) -> PortResult<()> {
        self.write("release effect", |tx| {
            let mut t = tx.open_table(EFFECTS)?;
            let key = key2(id, effect);
            let done = t
                .get(key.as_str())?
                .and_then(|v| serde_json::from_str::<EffectRow>(v.value()).ok())
                .is_some_and(|r| r.done);
            if !done {
                t.remove(key.as_str())?;
            }
            Ok(())
        })
    }

    async fn acquire_rate_limit(
        &self,
        key: &str,
        owner: &str,
        until: SystemTime,
        now: SystemTime,
    ) -> PortResult<bool> {
        self.write("rate limit", |tx| {
            let mut t = tx.open_table(SLOTS)?;
            let existing: Option<SlotRow> = t
                .get(key)?
                .and_then(|v| serde_json::from_str(v.value()).ok());
            match decide_slot(existing.as_ref(), owner, until, now) {
                Some(row) => {
                    t.insert(
                        key,
                        serde_json::to_string(&row)
                            .expect("rows serialise")
                            .as_str(),
                    )?;
                    Ok(true)
                }
                None => Ok(false),
            }
        })
    }
}

#[async_trait]
impl AuditLog for DiskState {
    async fn append(&self, record: &AuditRecord) -> PortResult<()> {
        self.write("append audit", |tx| {
            let mut t = tx.open_table(AUDIT)?;
            let key = key2(&record.id, record.stage.as_str());
            if t.get(key.as_str())?.is_none() {
                t.insert(
                    key.as_str(),
                    serde_json::to_string(record)
                        .expect("records serialise")
                        .as_str(),
                )?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[tokio::test]
    async fn state_survives_reopen_and_dedups() {
        let dir = std::env::temp_dir().join(format!("mailroom-disk-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let t0 = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        {
            let s = DiskState::open(&dir).unwrap();
            assert!(s.record_stage("m1", Stage::Filter, "accept").await.unwrap());
            assert!(!s.record_stage("m1", Stage::Filter, "accept").await.unwrap());
            assert_eq!(
                s.claim_effect("m1", "respond/reply", Duration::from_secs(60), t0)
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
        assert!(!s.record_stage("m1", Stage::Filter, "accept").await.unwrap());
        assert_eq!(
            s.claim_effect("m1", "respond/reply", Duration::from_secs(60), t0)
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
}
