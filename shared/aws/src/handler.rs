//! The SQS batch handler every function shares. Each record is handled on its own task, one
//! after another (one raw message in memory at a time), and reported on its own:
//!
//! - done, or a permanent failure that the shared failure path quarantined: acknowledged;
//! - a retryable failure, a poison body, or a panic: returned in `batchItemFailures`, so
//!   the queue retries only that record and its redrive policy ends it in the DLQ.
//!
//! The handler watches the invocation's deadline. It starts no record once less than
//! [`START_RESERVE`] is left, and stops one that runs into [`FINISH_MARGIN`] before the
//! deadline; both are reported as failures, and the batch's answer goes out before Lambda's
//! timeout, so the records already done are acknowledged instead of the whole batch coming
//! back (and using up its healthy records' receive counts).
//!
//! Its log lines carry no address: reasons, errors and results go through
//! [`crate::hidden`] (the message ids stay).

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use mailroom_core::model::{Envelope, Stage};
use mailroom_core::pipeline::Engine;
use tracing::Instrument;

use crate::app::App;
use crate::events;
use crate::metrics::Metrics;

/// No record is started with less than this left before the deadline.
pub const START_RESERVE: Duration = Duration::from_secs(2);
/// A record still running this close to the deadline is stopped and retried.
pub const FINISH_MARGIN: Duration = Duration::from_millis(500);

/// Handles one SQS batch; `deadline` is the invocation's (none: no limit).
pub async fn handle_batch(
    app: Arc<App>,
    event: SqsEvent,
    deadline: Option<Instant>,
) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    let mut out_of_time = false;
    for record in event.records {
        let id = record.message_id.clone().unwrap_or_default();
        let span = tracing::info_span!("record", sqs_message_id = %id, stage = %app.stage());
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if out_of_time || left.is_some_and(|l| l < START_RESERVE) {
            out_of_time = true;
            span.in_scope(|| {
                tracing::warn!(
                    "not started: the invocation's deadline is near; the queue will retry it"
                )
            });
            app.metrics.fault(app.stage(), "deadline");
            response.batch_item_failures.push(failure(id));
            continue;
        }
        let task = tokio::spawn(handle_record(app.clone(), record).instrument(span.clone()));
        let abort = task.abort_handle();
        let joined = match left {
            Some(left) => tokio::time::timeout(left.saturating_sub(FINISH_MARGIN), task).await,
            None => Ok(task.await),
        };
        let failed = match joined {
            Ok(Ok(Ok(()))) => false,
            Ok(Ok(Err(reason))) => {
                let reason = crate::hidden(app.ports.state.as_ref(), &reason).await;
                span.in_scope(
                    || tracing::warn!(reason = %reason, "record failed; the queue will retry it"),
                );
                true
            }
            Ok(Err(join)) => {
                span.in_scope(
                    || tracing::error!(error = %join, "record panicked; the queue will retry it"),
                );
                app.metrics.fault(app.stage(), "panic");
                true
            }
            Err(_) => {
                abort.abort();
                out_of_time = true;
                app.metrics.fault(app.stage(), "deadline");
                span.in_scope(|| {
                    tracing::warn!("stopped at the invocation's deadline; the queue will retry it")
                });
                true
            }
        };
        if failed {
            response.batch_item_failures.push(failure(id));
        }
    }
    response
}

fn failure(id: String) -> BatchItemFailure {
    let mut f = BatchItemFailure::default();
    f.item_identifier = id;
    f
}

async fn handle_record(app: Arc<App>, record: SqsMessage) -> Result<(), String> {
    let stage = app.stage();
    // SQS counts receives: the attempt a failure's audit record names.
    let attempt = record
        .attributes
        .get("ApproximateReceiveCount")
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(1);
    let body = record.body.unwrap_or_default();
    let envelopes = match stage {
        Stage::Filter => events::inbound_envelopes(&body),
        _ => events::envelope(&body).map(|e| vec![e]),
    }
    .map_err(|e| {
        app.metrics.fault(stage, "poison");
        format!("poison message: {e}")
    })?;
    let engine = app.engine().await;
    for env in envelopes {
        let span = tracing::info_span!("message", message_id = %env.id);
        run_one(&engine, &app.metrics, stage, env, attempt)
            .instrument(span)
            .await?;
    }
    Ok(())
}

async fn run_one(
    engine: &Engine,
    metrics: &Metrics,
    stage: Stage,
    env: Envelope,
    attempt: u32,
) -> Result<(), String> {
    let started = Instant::now();
    let state = engine.ports().state.as_ref();
    match engine.run_stage(stage, env.clone()).await {
        Ok(done) => {
            let summary = crate::hidden(state, &summary(stage, &done)).await;
            tracing::info!(summary = %summary, "stage done");
            metrics.stage(stage, &done, started.elapsed());
            Ok(())
        }
        Err(e) if e.is_retryable() => {
            metrics.fault(stage, "retryable");
            // What `mailroom dlq list` shows once the retries are used up. Best effort: the
            // store may be what failed, and the queue retries either way.
            if let Err(also) = engine.audit_attempt_failed(&env, stage, attempt, &e).await {
                let also = crate::hidden(state, &also.to_string()).await;
                tracing::warn!(error = %also, "could not audit the failed attempt");
            }
            Err(e.to_string())
        }
        Err(e) => {
            metrics.fault(stage, "permanent");
            let shown = crate::hidden(state, &e.to_string()).await;
            tracing::error!(error = %shown, "permanent failure; quarantining the message");
            let record = engine.quarantine_failure(&env, &e, None).await?;
            tracing::info!(decision = %record.decision, "failure handled");
            Ok(())
        }
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
