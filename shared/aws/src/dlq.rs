//! The stages' dead-letter queues, for the operator: list what lies in each with the
//! reason its last attempt failed (from the audit trail), and move messages back to the
//! queue they came from.
//!
//! Redriving a whole queue uses SQS's `StartMessageMoveTask` where the endpoint has it.
//! Otherwise (an emulator, or chosen messages) each message is received, sent to the
//! source queue with the same body, and deleted from the DLQ only after that send
//! succeeded: a failure at any step leaves it in the DLQ, never nowhere.

use std::collections::HashSet;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{ChangeMessageVisibilityBatchRequestEntry, MessageSystemAttributeName};
use mailroom_core::model::Stage;
use mailroom_core::ports::AuditLog;
use serde::Serialize;

use crate::operator::StackNames;

/// How long a listed or redriven message stays hidden from others while this runs.
const HOLD_SECONDS: i32 = 60;

/// One message in a dead-letter queue.
#[derive(Debug, Clone, Serialize)]
pub struct DlqEntry {
    /// The stage whose queue it came from.
    pub stage: Stage,
    pub queue: String,
    /// The SQS message id (what `dlq redrive` takes, as does the mail id).
    pub sqs_id: String,
    /// The pipeline's id of the mail it carries (what `show` takes), when the body names one.
    pub id: Option<String>,
    pub receive_count: u32,
    /// When it was first sent to the stage's queue (seconds since the epoch).
    pub sent_at: Option<u64>,
    /// The last failed attempt's reason, from the audit trail.
    pub reason: Option<String>,
    #[serde(skip)]
    receipt_handle: String,
    #[serde(skip)]
    body: String,
}

/// What a redrive did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Redriven {
    pub stage: Option<Stage>,
    /// SQS moves the messages itself: its task handle.
    pub move_task: Option<String>,
    /// Messages sent back to the source queue and deleted from the DLQ.
    pub moved: Vec<String>,
    /// Messages left in the DLQ, with why.
    pub failed: Vec<(String, String)>,
    /// Why the move task could not be used, when a whole queue was redriven by hand.
    pub fallback: Option<String>,
}

pub struct Dlqs<'a> {
    pub client: Client,
    pub names: &'a StackNames,
}

fn sdk<E: std::error::Error + 'static>(what: &str, e: E) -> String {
    format!("{what}: {}", DisplayErrorContext(e))
}

impl Dlqs<'_> {
    fn name(&self, stage: Stage, dlq: bool) -> Result<String, String> {
        self.names.queue(stage, dlq).ok_or_else(|| {
            "the queues are found by the stack's name: pass --stack NAME".to_string()
        })
    }

    async fn url(&self, name: &str) -> Result<String, String> {
        self.client
            .get_queue_url()
            .queue_name(name)
            .send()
            .await
            .map_err(|e| sdk(&format!("looking up queue {name}"), e))?
            .queue_url
            .ok_or_else(|| format!("SQS gave no URL for queue {name}"))
    }

    /// Every message in the queue, received and held for [`HOLD_SECONDS`].
    async fn receive_all(&self, stage: Stage, url: &str) -> Result<Vec<DlqEntry>, String> {
        let queue = self.name(stage, true)?;
        let mut out: Vec<DlqEntry> = Vec::new();
        let mut seen = HashSet::new();
        loop {
            let got = self
                .client
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .visibility_timeout(HOLD_SECONDS)
                .wait_time_seconds(0)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send()
                .await
                .map_err(|e| sdk(&format!("receiving from {queue}"), e))?;
            let messages = got.messages.unwrap_or_default();
            if messages.is_empty() {
                break;
            }
            for m in messages {
                let sqs_id = m.message_id.clone().unwrap_or_default();
                if !seen.insert(sqs_id.clone()) {
                    continue;
                }
                let attr = |a: MessageSystemAttributeName| {
                    m.attributes.as_ref().and_then(|x| x.get(&a)).cloned()
                };
                let body = m.body.clone().unwrap_or_default();
                out.push(DlqEntry {
                    stage,
                    queue: queue.clone(),
                    sqs_id,
                    id: mail_id(stage, &body),
                    receive_count: attr(MessageSystemAttributeName::ApproximateReceiveCount)
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0),
                    sent_at: attr(MessageSystemAttributeName::SentTimestamp)
                        .and_then(|n| n.parse::<u64>().ok())
                        .map(|ms| ms / 1000),
                    reason: None,
                    receipt_handle: m.receipt_handle.unwrap_or_default(),
                    body,
                });
            }
        }
        Ok(out)
    }

    /// Makes held messages visible again at once.
    async fn unhold(&self, url: &str, entries: &[&DlqEntry]) -> Result<(), String> {
        for chunk in entries.chunks(10) {
            let batch: Vec<_> = chunk
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(format!("m{i}"))
                        .receipt_handle(&e.receipt_handle)
                        .visibility_timeout(0)
                        .build()
                        .expect("id and receipt handle are set")
                })
                .collect();
            self.client
                .change_message_visibility_batch()
                .queue_url(url)
                .set_entries(Some(batch))
                .send()
                .await
                .map_err(|e| sdk("making listed messages visible again", e))?;
        }
        Ok(())
    }

    /// The messages in `stage`'s DLQ, each with its last failed attempt's reason. They
    /// stay in the queue, visible again when this returns.
    pub async fn list(&self, stage: Stage, audit: &dyn AuditLog) -> Result<Vec<DlqEntry>, String> {
        let url = self.url(&self.name(stage, true)?).await?;
        let mut entries = self.receive_all(stage, &url).await?;
        self.unhold(&url, &entries.iter().collect::<Vec<_>>())
            .await?;
        for e in &mut entries {
            let Some(id) = &e.id else { continue };
            let records = audit.records(id).await.map_err(|x| x.to_string())?;
            e.reason = records
                .iter()
                .filter(|r| r.stage == stage)
                .max_by_key(|r| (r.at, attempt_of(r.event.as_deref())))
                .map(|r| r.reasons.join("; "));
        }
        Ok(entries)
    }

    /// Moves messages of `stage`'s DLQ back to the stage's queue: those whose SQS id or
    /// mail id is in `only`, or all of them.
    pub async fn redrive(&self, stage: Stage, only: Option<&[String]>) -> Result<Redriven, String> {
        let dlq_name = self.name(stage, true)?;
        let source_name = self.name(stage, false)?;
        let dlq = self.url(&dlq_name).await?;
        let source = self.url(&source_name).await?;
        let mut report = Redriven {
            stage: Some(stage),
            ..Redriven::default()
        };
        if only.is_none() {
            match self.move_task(&dlq, &source).await {
                Ok(handle) => {
                    report.move_task = Some(handle);
                    return Ok(report);
                }
                Err(why) => report.fallback = Some(why),
            }
        }
        let entries = self.receive_all(stage, &dlq).await?;
        let wanted = |e: &DlqEntry| {
            only.is_none_or(|ids| {
                ids.iter()
                    .any(|x| *x == e.sqs_id || e.id.as_deref() == Some(x.as_str()))
            })
        };
        let mut keep = Vec::new();
        for e in &entries {
            if !wanted(e) {
                keep.push(e);
                continue;
            }
            let sent = self
                .client
                .send_message()
                .queue_url(&source)
                .message_body(&e.body)
                .send()
                .await;
            if let Err(err) = sent {
                report.failed.push((
                    e.sqs_id.clone(),
                    sdk(&format!("sending to {source_name}"), err),
                ));
                keep.push(e);
                continue;
            }
            // Sent: only now may it leave the DLQ. Should the delete fail, the message is
            // in both queues, and the stage's once-only records make the copy harmless.
            match self
                .client
                .delete_message()
                .queue_url(&dlq)
                .receipt_handle(&e.receipt_handle)
                .send()
                .await
            {
                Ok(_) => report.moved.push(e.sqs_id.clone()),
                Err(err) => report.failed.push((
                    e.sqs_id.clone(),
                    sdk(
                        &format!("sent to {source_name}, but deleting it from {dlq_name}"),
                        err,
                    ),
                )),
            }
        }
        self.unhold(&dlq, &keep).await?;
        if let Some(ids) = only {
            for id in ids {
                if !entries
                    .iter()
                    .any(|e| e.sqs_id == *id || e.id.as_deref() == Some(id.as_str()))
                {
                    report
                        .failed
                        .push((id.clone(), format!("not in {dlq_name}")));
                }
            }
        }
        Ok(report)
    }

    /// SQS's own redrive of a whole DLQ to its source queue.
    async fn move_task(&self, dlq: &str, source: &str) -> Result<String, String> {
        let arn = |url: &str| {
            let url = url.to_string();
            async move {
                self.client
                    .get_queue_attributes()
                    .queue_url(&url)
                    .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                    .send()
                    .await
                    .map_err(|e| sdk("reading the queue's ARN", e))?
                    .attributes
                    .and_then(|a| {
                        a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                            .cloned()
                    })
                    .ok_or_else(|| format!("no ARN for {url}"))
            }
        };
        let (from, to) = (arn(dlq).await?, arn(source).await?);
        self.client
            .start_message_move_task()
            .source_arn(from)
            .destination_arn(to)
            .send()
            .await
            .map_err(|e| sdk("StartMessageMoveTask", e))?
            .task_handle
            .ok_or_else(|| "StartMessageMoveTask gave no task handle".to_string())
    }
}

/// The mail id a DLQ body carries: an SES receipt notification in the inbound DLQ, an
/// envelope in the others.
fn mail_id(stage: Stage, body: &str) -> Option<String> {
    match stage {
        Stage::Filter => crate::events::inbound_envelopes(body)
            .ok()
            .and_then(|v| v.into_iter().next())
            .map(|e| e.id),
        _ => crate::events::envelope(body).ok().map(|e| e.id),
    }
}

/// N of an `attempt-N-failed` event, so that the latest attempt wins a tie in time.
fn attempt_of(event: Option<&str>) -> u32 {
    event
        .and_then(|e| e.strip_prefix("attempt-"))
        .and_then(|e| e.strip_suffix("-failed"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}
