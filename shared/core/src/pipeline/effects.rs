//! Carrying out an effect once: claim, act, complete. Every send and delivery goes through
//! [`Effects::once`]; store and quarantine copies are writes to fixed keys and need no claim.
//!
//! Delivery is at-least-once (SQS, Lambda retries, a second `mailroom run`), and a call can
//! fail without saying whether it took effect (the connection broke after the request went
//! out, the function was killed after SES accepted a send). What happens then depends on
//! the effect, as the README's table says:
//!
//! - [`Repeat::AtMostOnce`] (auto-replies): an attempt whose outcome is unknown is never
//!   repeated. It is recorded as unconfirmed, and so is an earlier attempt whose holder
//!   vanished (its claim's lease ran out without a completion).
//! - [`Repeat::AtLeastOnce`] (forwards, deliveries): never lost. A failed attempt gives the
//!   claim back and the retry tries again, which repeats the effect only when the failed
//!   attempt's outcome was unknown.
//!
//! Effect keys name what the effect does (`route/forward/<recipients>`,
//! `route/deliver/<queue>`), not the position of a rule or action, so that a config change
//! between two attempts neither skips nor repeats one.

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use super::StageError;
use crate::model::Stage;
use crate::ports::{Claim, PortError, StateStore};

/// How long a claimed effect is reserved for the attempt that claimed it: longer than an
/// invocation can run (the function timeout, 30 s), so a live holder is never overtaken,
/// and shorter than the queue's visibility timeout (240 s), so the redelivery after a
/// killed attempt finds the lease run out and decides by the effect's [`Repeat`].
pub const EFFECT_LEASE: Duration = Duration::from_secs(60);

/// How a completion write is retried before the attempt gives up: the effect has happened,
/// and a completion that is not recorded makes the next attempt unsure whether it did.
const COMPLETE_BACKOFF: [Duration; 5] = [
    Duration::from_millis(25),
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(200),
    Duration::from_millis(400),
];

/// What may happen to an effect whose outcome is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    /// Never repeated: an unknown outcome is recorded as unconfirmed (auto-replies).
    AtMostOnce,
    /// Never lost: retried until it is known to have happened (forwards, deliveries).
    AtLeastOnce,
}

/// What [`Effects::once`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ran {
    /// An earlier attempt carried it out; its note.
    Before(String),
    /// Carried out now; the note recorded.
    Now(String),
    /// At most once, and an attempt's outcome is unknown: not repeated. The reason.
    Unconfirmed(String),
}

/// The prefix of the note an unconfirmed effect is recorded with.
pub const UNCONFIRMED: &str = "unconfirmed: ";

/// The effect key for an action on a target: readable while short, a digest when long (a
/// forward to 50 addresses).
pub fn effect_key(stage: Stage, kind: &str, target: &str) -> String {
    let clean = target.len() <= 160 && target.bytes().all(|b| b.is_ascii_graphic());
    if clean {
        format!("{stage}/{kind}/{target}")
    } else {
        let digest = Sha256::digest(target.as_bytes());
        let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        format!("{stage}/{kind}/#{hex}")
    }
}

/// A token unique to one claim attempt.
fn attempt_token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

/// The claim-act-complete protocol over a state store.
pub struct Effects<'a> {
    pub state: &'a dyn StateStore,
    pub lease: Duration,
}

impl Effects<'_> {
    /// Carries out the effect `key` of message `id` once, by `act`, which returns the note
    /// to record (what was sent, to whom).
    pub async fn once<F, Fut>(
        &self,
        id: &str,
        stage: Stage,
        key: &str,
        repeat: Repeat,
        act: F,
    ) -> Result<Ran, StageError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<String, PortError>>,
    {
        let owner = attempt_token();
        let claim = match self
            .state
            .claim_effect(id, key, &owner, self.lease, SystemTime::now())
            .await
        {
            Ok(claim) => claim,
            Err(e) => {
                // The claim may have been written although its answer was lost. Nothing was
                // carried out under it, so give it back: the retry then starts clean instead
                // of waiting for the lease and finding it orphaned.
                let _ = self.state.release_effect(id, key, &owner).await;
                return Err(StageError::from_port(
                    id,
                    stage,
                    &format!("claiming effect {key}"),
                    e,
                ));
            }
        };
        match claim {
            Claim::Done(note) => return Ok(Ran::Before(note)),
            Claim::Busy => {
                return Err(StageError::Retryable {
                    id: id.into(),
                    stage,
                    detail: format!("effect {key} is being carried out by another invocation"),
                });
            }
            Claim::Orphaned if repeat == Repeat::AtMostOnce => {
                let reason = "an earlier attempt stopped before recording its outcome".to_string();
                self.complete(id, stage, key, &format!("{UNCONFIRMED}{reason}"))
                    .await?;
                return Ok(Ran::Unconfirmed(reason));
            }
            Claim::Orphaned | Claim::Acquired => {}
        }
        match act().await {
            Ok(note) => {
                self.complete(id, stage, key, &note).await?;
                Ok(Ran::Now(note))
            }
            Err(e) if e.outcome_unknown() && repeat == Repeat::AtMostOnce => {
                let reason = e.to_string();
                self.complete(id, stage, key, &format!("{UNCONFIRMED}{reason}"))
                    .await?;
                Ok(Ran::Unconfirmed(reason))
            }
            Err(e) => {
                // Given back at once: the retry tries again (repeating it only when this
                // attempt's outcome was unknown). A failed release only delays the retry
                // until the lease runs out.
                let _ = self.state.release_effect(id, key, &owner).await;
                Err(StageError::from_port(
                    id,
                    stage,
                    &format!("effect {key}"),
                    e,
                ))
            }
        }
    }

    /// Records a completion, retrying with backoff: the effect has happened.
    async fn complete(
        &self,
        id: &str,
        stage: Stage,
        key: &str,
        note: &str,
    ) -> Result<(), StageError> {
        let mut last = None;
        for delay in std::iter::once(Duration::ZERO).chain(COMPLETE_BACKOFF) {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            match self.state.complete_effect(id, key, note).await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_retryable() => last = Some(e),
                Err(e) => {
                    return Err(StageError::from_port(
                        id,
                        stage,
                        &format!("completing effect {key}"),
                        e,
                    ));
                }
            }
        }
        Err(StageError::from_port(
            id,
            stage,
            &format!(
                "completing effect {key} after {} attempts",
                COMPLETE_BACKOFF.len() + 1
            ),
            last.unwrap_or_else(|| PortError::Retryable("no attempt made".into())),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;

    use async_trait::async_trait;

    use super::*;
    use crate::embedded::memory::MemoryState;
    use crate::ports::PortResult;

    fn effects(state: &dyn StateStore) -> Effects<'_> {
        Effects {
            state,
            lease: Duration::from_millis(50),
        }
    }

    #[tokio::test]
    async fn a_done_effect_is_not_repeated_and_keeps_its_note() {
        let state = MemoryState::default();
        let fx = effects(&state);
        let ran = fx
            .once(
                "m",
                Stage::Route,
                "route/forward/a@x",
                Repeat::AtLeastOnce,
                || async { Ok("sent 1".to_string()) },
            )
            .await
            .unwrap();
        assert_eq!(ran, Ran::Now("sent 1".into()));
        let again = fx
            .once(
                "m",
                Stage::Route,
                "route/forward/a@x",
                Repeat::AtLeastOnce,
                || async { panic!("must not run twice") },
            )
            .await
            .unwrap();
        assert_eq!(again, Ran::Before("sent 1".into()));
    }

    #[tokio::test]
    async fn unknown_outcomes_are_not_repeated_at_most_once_and_are_at_least_once() {
        let state = MemoryState::default();
        let fx = effects(&state);
        let unknown = || async { Err(PortError::Unknown("connection reset".into())) };
        let reply = fx
            .once(
                "m",
                Stage::Respond,
                "respond/reply",
                Repeat::AtMostOnce,
                unknown,
            )
            .await
            .unwrap();
        assert!(matches!(reply, Ran::Unconfirmed(ref r) if r.contains("connection reset")));
        let later = fx
            .once(
                "m",
                Stage::Respond,
                "respond/reply",
                Repeat::AtMostOnce,
                || async { panic!("an unconfirmed reply is never repeated") },
            )
            .await
            .unwrap();
        assert!(matches!(later, Ran::Before(ref n) if n.starts_with(UNCONFIRMED)));

        let err = fx
            .once(
                "m",
                Stage::Route,
                "route/forward/a@x",
                Repeat::AtLeastOnce,
                unknown,
            )
            .await
            .unwrap_err();
        assert!(err.is_retryable(), "{err}");
        let retried = fx
            .once(
                "m",
                Stage::Route,
                "route/forward/a@x",
                Repeat::AtLeastOnce,
                || async { Ok("sent 2".to_string()) },
            )
            .await
            .unwrap();
        assert_eq!(
            retried,
            Ran::Now("sent 2".into()),
            "released at once, repeated"
        );
    }

    /// A store whose completion writes fail a given number of times, as a throttled table.
    #[derive(Default)]
    struct FailingCompletions {
        inner: MemoryState,
        failures: AtomicUsize,
        completions: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl StateStore for FailingCompletions {
        async fn claim_effect(
            &self,
            id: &str,
            effect: &str,
            owner: &str,
            lease: Duration,
            now: SystemTime,
        ) -> PortResult<Claim> {
            self.inner.claim_effect(id, effect, owner, lease, now).await
        }
        async fn complete_effect(&self, id: &str, effect: &str, note: &str) -> PortResult<()> {
            if self.failures.load(Ordering::SeqCst) > 0 {
                self.failures.fetch_sub(1, Ordering::SeqCst);
                return Err(PortError::Retryable("ThrottlingException".into()));
            }
            self.completions.lock().unwrap().push(note.to_string());
            self.inner.complete_effect(id, effect, note).await
        }
        async fn release_effect(&self, id: &str, effect: &str, owner: &str) -> PortResult<()> {
            self.inner.release_effect(id, effect, owner).await
        }
        async fn count_request(&self, key: &str, until: SystemTime) -> PortResult<u64> {
            self.inner.count_request(key, until).await
        }
        async fn acquire_rate_limit(
            &self,
            key: &str,
            owner: &str,
            until: SystemTime,
            now: SystemTime,
        ) -> PortResult<bool> {
            self.inner.acquire_rate_limit(key, owner, until, now).await
        }
        async fn release_rate_limit(&self, key: &str, owner: &str) -> PortResult<()> {
            self.inner.release_rate_limit(key, owner).await
        }
        async fn subject_key(&self) -> PortResult<Vec<u8>> {
            self.inner.subject_key().await
        }
    }

    #[tokio::test]
    async fn completion_writes_are_retried_and_a_lost_one_orphans_the_claim() {
        let state = FailingCompletions {
            failures: AtomicUsize::new(3),
            ..Default::default()
        };
        let fx = effects(&state);
        let sends = AtomicUsize::new(0);
        let send = || async {
            sends.fetch_add(1, Ordering::SeqCst);
            Ok("sent".to_string())
        };
        let ran = fx
            .once(
                "m",
                Stage::Route,
                "route/forward/a@x",
                Repeat::AtLeastOnce,
                send,
            )
            .await
            .unwrap();
        assert_eq!(
            ran,
            Ran::Now("sent".into()),
            "three failed completions are retried"
        );

        // Every completion attempt fails: the send happened, the claim stays held (for
        // longer than the completion's backoff takes).
        let fx = Effects {
            state: &state,
            lease: Duration::from_secs(2),
        };
        state.failures.store(100, Ordering::SeqCst);
        let err = fx
            .once(
                "m",
                Stage::Respond,
                "respond/reply",
                Repeat::AtMostOnce,
                send,
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("after 6 attempts"), "{err}");
        state.failures.store(0, Ordering::SeqCst);
        // Until the lease runs out, another attempt is told to wait...
        let busy = fx
            .once(
                "m",
                Stage::Respond,
                "respond/reply",
                Repeat::AtMostOnce,
                send,
            )
            .await
            .unwrap_err();
        assert!(busy.to_string().contains("another invocation"), "{busy}");
        tokio::time::sleep(Duration::from_millis(2100)).await;
        // ...then the reply is recorded as unconfirmed, not sent again.
        let after = fx
            .once(
                "m",
                Stage::Respond,
                "respond/reply",
                Repeat::AtMostOnce,
                send,
            )
            .await
            .unwrap();
        assert!(matches!(after, Ran::Unconfirmed(_)), "{after:?}");
        assert_eq!(sends.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn keys_name_the_target_and_digest_long_ones() {
        assert_eq!(
            effect_key(Stage::Route, "forward", "a@x.example,b@x.example"),
            "route/forward/a@x.example,b@x.example"
        );
        let long: Vec<String> = (0..50).map(|i| format!("r{i}@example.net")).collect();
        let k = effect_key(Stage::Route, "forward", &long.join(","));
        assert!(k.starts_with("route/forward/#") && k.len() < 40, "{k}");
        assert_ne!(k, effect_key(Stage::Route, "forward", &long[1..].join(",")));
    }
}
