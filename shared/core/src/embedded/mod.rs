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

/// A once-only effect as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EffectRow {
    pub done: bool,
    /// While not done: the claim is held until this time (seconds since the epoch).
    pub lease_until: u64,
    pub note: String,
}

/// Decides a claim from what is stored; returns the row to write when the claim succeeds.
pub fn decide_claim(
    existing: Option<&EffectRow>,
    lease: Duration,
    now: SystemTime,
) -> (Claim, Option<EffectRow>) {
    match existing {
        Some(row) if row.done => (Claim::Done(row.note.clone()), None),
        Some(row) if row.lease_until > secs(now) => (Claim::Busy, None),
        _ => (
            Claim::Acquired,
            Some(EffectRow {
                done: false,
                lease_until: secs(now + lease),
                note: String::new(),
            }),
        ),
    }
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
mod tests {
    use super::*;

    #[test]
    fn claims_follow_done_lease_and_expiry() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let lease = Duration::from_secs(60);
        let (c, row) = decide_claim(None, lease, t0);
        assert_eq!(c, Claim::Acquired);
        let row = row.unwrap();
        assert_eq!(
            decide_claim(Some(&row), lease, t0 + Duration::from_secs(30)).0,
            Claim::Busy
        );
        assert_eq!(
            decide_claim(Some(&row), lease, t0 + Duration::from_secs(61)).0,
            Claim::Acquired
        );
        let done = EffectRow {
            done: true,
            lease_until: 0,
            note: "sent x".into(),
        };
        assert_eq!(
            decide_claim(Some(&done), lease, t0).0,
            Claim::Done("sent x".into())
        );
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
