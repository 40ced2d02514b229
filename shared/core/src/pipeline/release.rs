//! What an operator does with quarantined mail: release it, so that it goes on from the
//! route stage as accepted mail (its forwards, deliveries and auto-reply carried out once,
//! like any effect), or delete its quarantined copy. Both are audited as operator events
//! with who acted and when; doing either twice does nothing the second time.

use std::time::SystemTime;

use super::{Engine, Raw, StageError, epoch_secs};
use crate::model::{AuditRecord, Envelope, RawRef, Reason, Receipt, Stage, Verdict};
use crate::operate::{Correction, Judgement, MessageSummary};

/// Findings that keep a message in quarantine whatever an operator says: a virus, the
/// attachment policy's executables (by extension, by content, inside an archive), and what
/// the attachment policy could not look into (a malformed, encrypted or unreadable archive,
/// a limit reached), which nobody has seen the inside of.
pub const NEVER_RELEASED: [&str; 8] = [
    "VIRUS_FAIL",
    "EXECUTABLE",
    "BLOCKED_EXTENSION",
    "ARCHIVE_BLOCKED_ENTRY",
    "ARCHIVE_MALFORMED",
    "ARCHIVE_ENCRYPTED",
    "ARCHIVE_UNSCANNABLE",
    "SCAN_LIMIT",
];

/// The finding among `reasons` that keeps a message in quarantine, if there is one.
pub fn never_released(reasons: &[String]) -> Option<&String> {
    reasons
        .iter()
        .find(|r| NEVER_RELEASED.contains(&r.as_str()))
}

/// What a release or a deletion did.
#[derive(Debug)]
pub enum Handled {
    /// Done now; the operator event's audit record.
    Done(AuditRecord),
    /// Handed to the route stage's queue: the deployed functions carry out its effects and
    /// audit them as the release.
    Queued,
    /// The message is not in quarantine (released or deleted before): nothing to do.
    NotInQuarantine,
}

impl Handled {
    /// What was done to message `id`, for people: `verb` is "released" or "deleted".
    pub fn describe(&self, id: &str, verb: &str) -> String {
        match self {
            Handled::Done(record) => format!(
                "{verb} {id} ({}): {}",
                record.decided_by.join(" "),
                record.reasons.join("; ")
            ),
            Handled::Queued => format!(
                "{verb} {id}: handed to the route stage, whose functions send its forwards and reply"
            ),
            Handled::NotInQuarantine => format!(
                "message {id} is not in quarantine (released or deleted before): nothing done"
            ),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("message {id} was quarantined for {finding}, and such mail is never released")]
    Refused { id: String, finding: String },
    #[error(transparent)]
    Stage(#[from] StageError),
    #[error("message {id}: {detail}")]
    Store { id: String, detail: String },
    #[error("no message {id:?} in {store}")]
    UnknownId { id: String, store: String },
    #[error("listing {store}: {detail}")]
    Index { store: String, detail: String },
}

impl Engine {
    /// Releases a quarantined message: its filter decision stands but for the verdict,
    /// which becomes accept (with a `RELEASED` finding naming `by`), and it goes through
    /// route and respond again, their effects claimed as always. `raw` is the quarantined
    /// copy, found at `raw_ref`. With `via_queue` the released envelope is published to the
    /// route stage instead (a deployed stack: its functions send, with their own identity
    /// and permissions).
    pub async fn release(
        &self,
        summary: &MessageSummary,
        raw_ref: RawRef,
        raw: &[u8],
        by: &str,
        via_queue: bool,
    ) -> Result<Handled, OperatorError> {
        if let Some(finding) = never_released(&summary.reasons) {
            return Err(OperatorError::Refused {
                id: summary.id.clone(),
                finding: finding.clone(),
            });
        }
        if summary.quarantined.is_none() {
            return Ok(Handled::NotInQuarantine);
        }
        // The operator's word that this is not spam, kept first: a release whose
        // correction could not be written is refused and can be run again.
        self.correct(summary, Judgement::Ham, by, "release").await?;
        let mut env = Envelope::new(summary.id.clone(), raw_ref);
        // Routing matches the recipients the message was routed by.
        env.receipt = Some(Receipt {
            recipients: summary.recipients.clone(),
            ..Receipt::default()
        });
        let parsed = self.parse(raw, &env);
        let mail = parsed.as_ref();
        let mut filter = self.filter_stage(raw, mail).result;
        filter.verdict = Verdict::Accept;
        filter.reasons.push(Reason {
            check: "release".into(),
            tag: "RELEASED".into(),
            detail: format!("released from quarantine by {by}"),
            score: 0.0,
        });
        env.results.filter = Some(filter);
        env.results.classify = Some(self.classify_stage(&env, mail)?.result);
        env.released_by = Some(by.to_string());
        if via_queue {
            self.ports
                .publisher
                .publish(Stage::Route, &env)
                .await
                .map_err(|e| OperatorError::Store {
                    id: summary.id.clone(),
                    detail: format!("handing it to the route stage: {e}"),
                })?;
            return Ok(Handled::Queued);
        }
        let mut audits = Vec::new();
        let mut listed = None;
        for stage in [Stage::Route, Stage::Respond] {
            let mut decided = self.decide(stage, &mut env, raw, mail).await?;
            // Off the quarantine list only once every effect is done: a release stopped
            // half way can be run again.
            listed = listed.or(decided.summary.take());
            let record = self
                .finish(stage, &mut env, decided, Raw::Borrowed(raw))
                .await?;
            audits.push(record);
        }
        if let Some(row) = listed {
            self.ports
                .index
                .record(&row)
                .await
                .map_err(|e| OperatorError::Store {
                    id: summary.id.clone(),
                    detail: format!("taking it off the quarantine list: {e}"),
                })?;
        }
        // What the release did, in one record: the route's actions and both stages' notes.
        let (route, respond): (&AuditRecord, &AuditRecord) = (&audits[0], &audits[1]);
        Ok(Handled::Done(AuditRecord {
            id: summary.id.clone(),
            stage: Stage::Route,
            decision: route.decision.clone(),
            reasons: route
                .reasons
                .iter()
                .chain(&respond.reasons)
                .cloned()
                .collect(),
            decided_by: route.decided_by.clone(),
            sender: summary.sender.clone(),
            at: epoch_secs(SystemTime::now()),
            event: Some("release".into()),
        }))
    }

    /// Keeps an operator's correction of message `summary` (see
    /// [`crate::operate::feedback`]): `via` is `release` or `mark`.
    pub async fn correct(
        &self,
        summary: &MessageSummary,
        label: Judgement,
        by: &str,
        via: &str,
    ) -> Result<Correction, OperatorError> {
        let correction = Correction {
            id: summary.id.clone(),
            raw: summary.raw.clone(),
            label,
            verdict: summary.verdict,
            by: by.to_string(),
            at: epoch_secs(SystemTime::now()),
            via: via.to_string(),
        };
        self.ports
            .feedback
            .correct(&correction)
            .await
            .map_err(|e| OperatorError::Store {
                id: summary.id.clone(),
                detail: format!("recording the correction: {e}"),
            })?;
        Ok(correction)
    }

    /// Deletes a message's quarantined copy and takes it off the quarantine list.
    pub async fn delete_quarantined(
        &self,
        summary: &MessageSummary,
        by: &str,
    ) -> Result<Handled, OperatorError> {
        let Some(key) = summary.quarantined.clone() else {
            return Ok(Handled::NotInQuarantine);
        };
        let store = |detail: String| OperatorError::Store {
            id: summary.id.clone(),
            detail,
        };
        self.ports
            .objects
            .delete_object(&key)
            .await
            .map_err(|e| store(format!("deleting {key}: {e}")))?;
        let record = AuditRecord {
            id: summary.id.clone(),
            stage: Stage::Route,
            decision: "deleted".into(),
            reasons: vec![format!("deleted the quarantined copy {key}")],
            decided_by: vec![format!("operator:{by}")],
            sender: summary.sender.clone(),
            at: epoch_secs(SystemTime::now()),
            event: Some("delete".into()),
        };
        self.ports
            .audit
            .append(&record)
            .await
            .map_err(|e| store(format!("auditing the deletion: {e}")))?;
        let mut out = summary.clone();
        out.quarantined = None;
        self.ports
            .index
            .record(&out)
            .await
            .map_err(|e| store(format!("taking it off the quarantine list: {e}")))?;
        Ok(Handled::Done(record))
    }
}
