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

/// Findings that a digest link never releases and an operator releases only by naming the
/// force beside it (`mailroom quarantine release ID --force-macro`, the console's
/// *Release anyway*): a document with macros is how much malware arrives, and also how
/// some businesses still send their spreadsheets, so a person who has looked at it decides.
/// The force is named in the release's audit record.
pub const FORCE_RELEASED: [(&str, &str); 1] = [("MACRO_DOCUMENT", FORCE_MACRO)];

/// The force that releases a message held for a macro document, as the audit names it.
pub const FORCE_MACRO: &str = "force-macro";

/// Who asks for a release, which decides what may be released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Releaser {
    /// An operator (the CLI or the console), by name; `force_macro` releases mail held for
    /// a macro document.
    Operator { name: String, force_macro: bool },
    /// A digest's recipient, through a link of the digest.
    Digest { recipient: String },
}

impl Releaser {
    /// An operator releasing without any force.
    pub fn operator(name: impl Into<String>) -> Releaser {
        Releaser::Operator {
            name: name.into(),
            force_macro: false,
        }
    }

    /// What the released message carries as who released it: the operator's name, or
    /// `digest:ADDRESS`.
    pub fn by(&self) -> String {
        match self {
            Releaser::Operator { name, .. } => name.clone(),
            Releaser::Digest { recipient } => format!("digest:{recipient}"),
        }
    }

    /// Who, as a correction records it: `operator:NAME` or `digest:ADDRESS` (the retrain
    /// weighs the two differently).
    pub fn who(&self) -> String {
        match self {
            Releaser::Operator { name, .. } => format!("operator:{name}"),
            Releaser::Digest { recipient } => format!("digest:{recipient}"),
        }
    }
}

/// Why a release is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A finding of [`NEVER_RELEASED`]: nobody releases it.
    Never { finding: String },
    /// A finding of [`FORCE_RELEASED`] and a digest link: only an operator may.
    NotFromDigest { finding: String },
    /// A finding of [`FORCE_RELEASED`] and an operator who did not name its force.
    Unforced {
        finding: String,
        force: &'static str,
    },
}

impl Refusal {
    /// The finding that keeps the message in quarantine.
    pub fn finding(&self) -> &str {
        match self {
            Refusal::Never { finding }
            | Refusal::NotFromDigest { finding }
            | Refusal::Unforced { finding, .. } => finding,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Never { finding } => {
                write!(f, "{finding}, and such mail is never released")
            }
            Refusal::NotFromDigest { finding } => write!(
                f,
                "{finding}, which a digest link never releases; an operator can (mailroom quarantine release ID --{FORCE_MACRO})"
            ),
            Refusal::Unforced { finding, force } => write!(
                f,
                "{finding}: releasing it takes --{force} (the console's \u{201c}Release anyway\u{201d}), and the release's audit record names it"
            ),
        }
    }
}

/// Whether a message quarantined for `reasons` may be released by `by`: the one rule the
/// CLI, the console, digest links and the digest's own listing all apply. `Ok` carries the
/// force the release is made with, if it needed one.
pub fn releasable(reasons: &[String], by: &Releaser) -> Result<Option<&'static str>, Refusal> {
    if let Some(finding) = never_released(reasons) {
        return Err(Refusal::Never {
            finding: finding.clone(),
        });
    }
    let forced = reasons.iter().find_map(|r| {
        FORCE_RELEASED
            .iter()
            .find(|(tag, _)| r == tag)
            .map(|(_, force)| (r.clone(), *force))
    });
    match (forced, by) {
        (None, _) => Ok(None),
        (Some((finding, _)), Releaser::Digest { .. }) => Err(Refusal::NotFromDigest { finding }),
        (Some((finding, force)), Releaser::Operator { force_macro, .. }) => {
            if *force_macro {
                Ok(Some(force))
            } else {
                Err(Refusal::Unforced { finding, force })
            }
        }
    }
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
    #[error("message {id} was quarantined for {refusal}")]
    Refused { id: String, refusal: Refusal },
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
    /// which becomes accept (with a `RELEASED` finding naming `releaser`), and it goes through
    /// route and respond again, their effects claimed as always. `raw` is the quarantined
    /// copy, found at `raw_ref`. With `via_queue` the released envelope is published to the
    /// route stage instead (a deployed stack: its functions send, with their own identity
    /// and permissions). What `releaser` may release is [`releasable`]'s to say; a force it used
    /// is named in the release's audit record.
    pub async fn release(
        &self,
        summary: &MessageSummary,
        raw_ref: RawRef,
        raw: &[u8],
        releaser: &Releaser,
        via_queue: bool,
    ) -> Result<Handled, OperatorError> {
        let force =
            releasable(&summary.reasons, releaser).map_err(|refusal| OperatorError::Refused {
                id: summary.id.clone(),
                refusal,
            })?;
        if summary.quarantined.is_none() {
            return Ok(Handled::NotInQuarantine);
        }
        let by = releaser.by();
        // The word that this is not spam, kept first: a release whose correction could
        // not be written is refused and can be run again.
        self.correct(summary, Judgement::Ham, &releaser.who(), "release")
            .await?;
        let mut env = Envelope::new(summary.id.clone(), raw_ref);
        // Routing matches the recipients the message was routed by.
        env.receipt = Some(Receipt {
            recipients: summary.recipients.clone(),
            ..Receipt::default()
        });
        let parsed = self.parse(raw, None, &env);
        let mail = parsed.as_ref();
        let mut filter = self.filter_stage(raw, mail, &[]).result;
        filter.verdict = Verdict::Accept;
        filter.reasons.push(Reason {
            check: "release".into(),
            tag: "RELEASED".into(),
            detail: match force {
                Some(force) => format!("released from quarantine by {by} ({force})"),
                None => format!("released from quarantine by {by}"),
            },
            score: 0.0,
        });
        env.results.filter = Some(filter);
        let (classified, conversation, assisted) = self.classify_stage(&env, mail, None).await?;
        env.results.classify = Some(classified.result);
        env.conversation = conversation;
        env.assist = assisted;
        env.released_by = Some(by);
        env.release_force = force.map(str::to_string);
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
            let mut decided = self.decide(stage, &mut env, raw, mail, None).await?;
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

    /// Keeps a correction of message `summary` (see [`crate::operate::feedback`]) by
    /// `by` (`operator:NAME`, `digest:ADDRESS`): `via` is `release` or `mark`.
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
