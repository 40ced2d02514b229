//! Embedded adapters: the ports implemented on disk (for `mailroom run`) and in memory
//! (for tests and benchmarks). The claim and rate-limit rules live here once, shared by both.

pub mod disk;
pub mod files;
pub mod memory;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::ports::Claim;

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A once-only effect as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EffectRow {
    pub done: bool,
    /// While not done: the claim is held until this time (milliseconds since the epoch).
    pub lease_until_ms: u64,
    /// The attempt that holds (or last held) the claim.
    #[serde(default)]
    pub owner: String,
    /// The last holder gave the claim back: its attempt did not take effect.
    #[serde(default)]
    pub released: bool,
    pub note: String,
}

impl EffectRow {
    pub fn done(note: &str) -> EffectRow {
        EffectRow {
            done: true,
            lease_until_ms: 0,
            owner: String::new(),
            released: false,
            note: note.to_string(),
        }
    }
}

/// Decides a claim from what is stored; returns the row to write when the claim succeeds.
pub fn decide_claim(
    existing: Option<&EffectRow>,
    owner: &str,
    lease: Duration,
    now: SystemTime,
) -> (Claim, Option<EffectRow>) {
    let held = EffectRow {
        done: false,
        lease_until_ms: millis(now + lease),
        owner: owner.to_string(),
        released: false,
        note: String::new(),
    };
    match existing {
        None => (Claim::Acquired, Some(held)),
        Some(row) if row.done => (Claim::Done(row.note.clone()), None),
        Some(row) if row.owner == owner => (Claim::Acquired, None),
        Some(row) if row.lease_until_ms > millis(now) => (Claim::Busy, None),
        Some(row) if row.released => (Claim::Acquired, Some(held)),
        Some(_) => (Claim::Orphaned, Some(held)),
    }
}

/// The row after `owner` gives its claim back; `None` when it no longer holds it.
pub fn decide_release(existing: Option<&EffectRow>, owner: &str) -> Option<EffectRow> {
    existing
        .filter(|row| !row.done && row.owner == owner)
        .map(|row| EffectRow {
            lease_until_ms: 0,
            released: true,
            ..row.clone()
        })
}

/// A rate-limit slot as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SlotRow {
    pub owner: String,
    pub until: u64,
}

/// Decides whether `owner` may take the slot; returns the row to write when it may.
pub fn decide_slot(
    existing: Option<&SlotRow>,
    owner: &str,
    until: SystemTime,
    now: SystemTime,
) -> Option<SlotRow> {
    match existing {
        Some(row) if row.owner != owner && row.until > secs(now) => None,
        Some(row) if row.owner == owner => Some(row.clone()),
        _ => Some(SlotRow {
            owner: owner.to_string(),
            until: secs(until),
        }),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ports::{AllowedSender, RecipientAllowList};

    /// What every adapter's per-recipient allow list must do: keep pairs (one recipient's
    /// entry speaks for nobody else), replace a repeated pair, and forget every entry that
    /// names an address on either side.
    pub(crate) async fn exercise_allow_list(list: &dyn RecipientAllowList) {
        let entry = |r: &str, s: &str| AllowedSender {
            recipient: r.into(),
            sender: s.into(),
            via: "m1".into(),
            at: 1_000,
        };
        let (ann, bob, eve) = ("ann@corp.test", "bob@corp.test", "eve@corp.test");
        let all = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        assert!(
            list.allowing("promo@x.test", &all(&[ann]))
                .await
                .unwrap()
                .is_empty()
        );
        list.allow_sender(&entry(ann, "promo@x.test"))
            .await
            .unwrap();
        list.allow_sender(&entry(ann, "promo@x.test"))
            .await
            .unwrap();
        list.allow_sender(&entry(ann, "news@y.test")).await.unwrap();
        list.allow_sender(&entry(bob, "news@y.test")).await.unwrap();
        assert_eq!(
            list.allowing("promo@x.test", &all(&[ann, bob]))
                .await
                .unwrap(),
            [ann],
            "ann's entry is ann's only"
        );
        assert_eq!(
            list.allowing("news@y.test", &all(&[ann, bob, eve]))
                .await
                .unwrap(),
            [ann, bob]
        );
        assert!(
            list.allowing("promo@x.test", &all(&[bob]))
                .await
                .unwrap()
                .is_empty()
        );
        // An erasure of the sender takes its entries for every recipient ...
        assert_eq!(list.forget_allowed("news@y.test").await.unwrap(), 2);
        assert!(
            list.allowing("news@y.test", &all(&[ann, bob]))
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            list.allowing("promo@x.test", &all(&[ann])).await.unwrap(),
            [ann]
        );
        // ... and an erasure of the recipient every entry of theirs.
        list.allow_sender(&entry(bob, "promo@x.test"))
            .await
            .unwrap();
        assert_eq!(list.forget_allowed(ann).await.unwrap(), 1);
        assert_eq!(
            list.allowing("promo@x.test", &all(&[ann, bob]))
                .await
                .unwrap(),
            [bob]
        );
        assert_eq!(list.forget_allowed(ann).await.unwrap(), 0, "nothing left");
    }

    #[test]
    fn claims_follow_done_lease_release_and_expiry() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let lease = Duration::from_secs(60);
        let (c, row) = decide_claim(None, "a1", lease, t0);
        assert_eq!(c, Claim::Acquired);
        let row = row.unwrap();
        let later = |s| t0 + Duration::from_secs(s);
        assert_eq!(
            decide_claim(Some(&row), "a2", lease, later(30)).0,
            Claim::Busy
        );
        // The holder's own retried claim (its first answer was lost) is still its own.
        assert_eq!(
            decide_claim(Some(&row), "a1", lease, later(30)).0,
            Claim::Acquired
        );
        // A lease that ran out without completion or release: the effect may have happened.
        assert_eq!(
            decide_claim(Some(&row), "a2", lease, later(61)).0,
            Claim::Orphaned
        );
        // Given back: the next attempt starts clean, at once.
        let released = decide_release(Some(&row), "a1").unwrap();
        assert_eq!(
            decide_claim(Some(&released), "a2", lease, later(1)).0,
            Claim::Acquired
        );
        assert!(
            decide_release(Some(&row), "a2").is_none(),
            "only the holder releases"
        );
        let done = EffectRow::done("sent x");
        assert_eq!(
            decide_claim(Some(&done), "a3", lease, t0).0,
            Claim::Done("sent x".into())
        );
        assert!(decide_release(Some(&done), "a1").is_none());
    }

    #[test]
    fn slots_are_exclusive_until_expiry_but_reentrant_for_their_owner() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let week = Duration::from_secs(7 * 86400);
        let row = decide_slot(None, "m1", t0 + week, t0).unwrap();
        assert!(decide_slot(Some(&row), "m2", t0 + week, t0 + Duration::from_secs(3600)).is_none());
        assert!(decide_slot(Some(&row), "m1", t0 + week, t0 + Duration::from_secs(3600)).is_some());
        assert_eq!(
            decide_slot(
                Some(&row),
                "m2",
                t0 + week * 2,
                t0 + week + Duration::from_secs(1)
            )
            .unwrap()
            .owner,
            "m2"
        );
    }
}
