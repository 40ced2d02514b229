//! The failure path, shared by the Lambda handler and `mailroom run`: a message a stage can
//! never handle (its effect is refused for good, its envelope is broken) is kept under the
//! quarantine prefix and audited with the reason, so nothing is lost and an operator can
//! see why.

use std::time::SystemTime;

use super::{Engine, StageError, epoch_secs};
use crate::mail::Mail;
use crate::model::{AuditRecord, Envelope};
use crate::operate::MessageSummary;

impl Engine {
    /// Quarantines the message of a permanent `error` and audits it. `raw` is the message
    /// when the caller holds it (local runs); otherwise it is read through the raw-mail port.
    /// A message whose raw mail is gone for good is audited as failed. Returns the audit
    /// record; an error when even this failed for a passing reason, so that the caller
    /// retries the message (in AWS it ends in the dead-letter queue after a few tries).
    pub async fn quarantine_failure(
        &self,
        env: &Envelope,
        error: &StageError,
        raw: Option<&[u8]>,
    ) -> Result<AuditRecord, String> {
        let stage = error.stage();
        let key = format!("{}{}.eml", self.config.routing.quarantine_prefix, env.id);
        let read;
        let bytes = match raw {
            Some(bytes) => Some(bytes),
            None => match self.ports.raw.get_raw(&env.raw).await {
                Ok(b) => {
                    read = b;
                    Some(read.as_slice())
                }
                Err(e) if !e.is_retryable() => {
                    let record = self.failure_record(
                        env,
                        error,
                        format!("failed: raw mail unavailable ({e})"),
                    );
                    return self.audit_failure(record, error).await;
                }
                Err(e) => {
                    return Err(format!(
                        "{error}; then reading it for quarantine failed: {e}"
                    ));
                }
            },
        };
        if let Some(bytes) = bytes {
            self.ports
                .objects
                .copy_raw(&env.raw, &key, bytes)
                .await
                .map_err(|e| format!("{error}; then quarantining in stage {stage} failed: {e}"))?;
            // Listed in the quarantine like any quarantined message.
            let mail = Mail::parse_with_receipt(bytes, env.receipt.as_ref()).ok();
            let summary = MessageSummary::of(
                env,
                mail.as_ref(),
                epoch_secs(SystemTime::now()),
                Some(key.clone()),
            );
            self.ports.index.record(&summary).await.map_err(|e| {
                format!("{error}; then indexing the quarantined message failed: {e}")
            })?;
        }
        let record = self.failure_record(env, error, format!("quarantined as {key}"));
        self.audit_failure(record, error).await
    }

    fn failure_record(&self, env: &Envelope, error: &StageError, decision: String) -> AuditRecord {
        AuditRecord {
            id: env.id.clone(),
            stage: error.stage(),
            decision,
            reasons: vec![error.to_string()],
            decided_by: vec!["error".into()],
            sender: None,
            at: epoch_secs(SystemTime::now()),
            event: None,
        }
    }

    async fn audit_failure(
        &self,
        record: AuditRecord,
        error: &StageError,
    ) -> Result<AuditRecord, String> {
        self.ports
            .audit
            .append(&record)
            .await
            .map_err(|e| format!("{error}; then auditing the quarantine failed: {e}"))?;
        Ok(record)
    }

    /// Audits an attempt that failed for a passing reason (the queue retries it, and after
    /// its last attempt it lies in the stage's dead-letter queue): event
    /// `attempt-N-failed`, so each attempt's reason stays and the last one tells why the
    /// message is in the DLQ.
    pub async fn audit_attempt_failed(
        &self,
        env: &Envelope,
        stage: crate::model::Stage,
        attempt: u32,
        error: &StageError,
    ) -> Result<(), String> {
        let record = AuditRecord {
            id: env.id.clone(),
            stage,
            decision: "retry".into(),
            reasons: vec![error.to_string()],
            decided_by: vec!["error".into()],
            sender: None,
            at: epoch_secs(SystemTime::now()),
            event: Some(format!("attempt-{attempt}-failed")),
        };
        self.ports
            .audit
            .append(&record)
            .await
            .map_err(|e| e.to_string())
    }
}
