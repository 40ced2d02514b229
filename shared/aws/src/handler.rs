//! The SQS batch handler every function shares. Each record is handled on its own task, one
//! after another (one raw message in memory at a time), and reported on its own:
//!
//! - done, or a permanent failure that quarantined the message: acknowledged;
//! - a retryable failure, a poison body, or a panic: returned in `batchItemFailures`, so
//!   the queue retries only that record and its redrive policy ends it in the DLQ.

use std::sync::Arc;

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use mailroom_core::model::{AuditRecord, Envelope, Stage};
use mailroom_core::pipeline::{Engine, StageError};
use tracing::Instrument;

use crate::app::App;
use crate::events;

/// Handles one SQS batch.
pub async fn handle_batch(app: Arc<App>, event: SqsEvent) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for record in event.records {
        let id = record.message_id.clone().unwrap_or_default();
        let span = tracing::info_span!("record", sqs_message_id = %id, stage = %app.stage());
        let task = tokio::spawn(handle_record(app.clone(), record).instrument(span.clone()));
        let failed = match task.await {
            Ok(Ok(())) => false,
            Ok(Err(reason)) => {
                span.in_scope(
                    || tracing::warn!(reason = %reason, "record failed; the queue will retry it"),
                );
                true
            }
            Err(join) => {
                span.in_scope(
                    || tracing::error!(error = %join, "record panicked; the queue will retry it"),
                );
                true
            }
        };
        if failed {
            let mut f = BatchItemFailure::default();
            f.item_identifier = id;
            response.batch_item_failures.push(f);
        }
    }
    response
}

async fn handle_record(app: Arc<App>, record: SqsMessage) -> Result<(), String> {
    let stage = app.stage();
    let body = record.body.unwrap_or_default();
    let envelopes = match stage {
        Stage::Filter => events::inbound_envelopes(&body),
        _ => events::envelope(&body).map(|e| vec![e]),
    }
    .map_err(|e| format!("poison message: {e}"))?;
    let engine = app.engine().await;
    for env in envelopes {
        let span = tracing::info_span!("message", message_id = %env.id);
        run_one(&engine, stage, env).instrument(span).await?;
    }
    Ok(())
}

async fn run_one(engine: &Engine, stage: Stage, env: Envelope) -> Result<(), String> {
    match engine.run_stage(stage, env.clone()).await {
        Ok(done) => {
            tracing::info!(summary = %summary(stage, &done), "stage done");
            Ok(())
        }
        Err(e) if e.is_retryable() => Err(e.to_string()),
        Err(e) => quarantine(engine, stage, &env, &e).await,
    }
}

fn summary(stage: Stage, env: &Envelope) -> String {
    let r = &env.results;
    match stage {
        Stage::Filter => r
            .filter
            .as_ref()
            .map(|f| format!("{} score {}", f.verdict.as_str(), f.spam_score)),
        Stage::Classify => r
            .classify
            .as_ref()
            .map(|c| format!("{} {}", c.category, c.priority.as_str())),
        Stage::Route => r.route.as_ref().map(|x| {
            x.actions
                .iter()
                .map(|a| a.kind())
                .collect::<Vec<_>>()
                .join(",")
        }),
        Stage::Respond => r
            .respond
            .as_ref()
            .map(|x| serde_json::to_string(x).unwrap_or_default()),
    }
    .unwrap_or_default()
}

/// A permanent failure: keep the raw mail under the quarantine prefix and audit why, then
/// acknowledge. If even that fails, the record is retried (and ends in the DLQ).
async fn quarantine(
    engine: &Engine,
    stage: Stage,
    env: &Envelope,
    error: &StageError,
) -> Result<(), String> {
    tracing::error!(error = %error, "permanent failure; quarantining the message");
    let key = format!("{}{}.eml", engine.config.routing.quarantine_prefix, env.id);
    let decision = match engine.ports.raw.get_raw(&env.raw).await {
        Ok(raw) => {
            engine
                .ports
                .objects
                .copy_raw(&env.raw, &key, &raw)
                .await
                .map_err(|e| format!("{error}; then quarantining failed: {e}"))?;
            format!("quarantined as {key}")
        }
        Err(e) if !e.is_retryable() => format!("failed: raw mail unavailable ({e})"),
        Err(e) => {
            return Err(format!(
                "{error}; then reading it for quarantine failed: {e}"
            ));
        }
    };
    let record = AuditRecord {
        id: env.id.clone(),
        stage,
        decision,
        reasons: vec![error.to_string()],
        decided_by: vec!["error".into()],
        sender: None,
        at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    engine
        .ports
        .audit
        .append(&record)
        .await
        .map_err(|e| format!("{error}; then auditing the quarantine failed: {e}"))
}
