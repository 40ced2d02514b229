//! `mailroom dlq list` and `mailroom dlq redrive`: a deployed stack's dead-letter queues.

use anyhow::{Result, bail};
use mailroom_core::model::Stage;

use crate::Format;
use crate::target::Target;

/// The stages a `--queue` names: one, or all four.
pub fn stages(queue: Option<&str>) -> Result<Vec<Stage>> {
    Ok(match queue.map(|q| q.trim().to_ascii_lowercase()) {
        None => Stage::ALL.to_vec(),
        Some(q) => vec![match q.as_str() {
            "filter" | "inbound" => Stage::Filter,
            "classify" => Stage::Classify,
            "route" => Stage::Route,
            "respond" => Stage::Respond,
            other => {
                bail!("{other:?} is not a queue: use filter (inbound), classify, route or respond")
            }
        }],
    })
}

#[cfg(not(feature = "aws"))]
pub fn list(target: &Target, queue: Option<&str>, _format: Format) -> Result<()> {
    aws_only(target, queue)
}

#[cfg(not(feature = "aws"))]
pub fn redrive(target: &Target, queue: Option<&str>, _all: bool, _ids: &[String]) -> Result<()> {
    aws_only(target, queue)
}

#[cfg(not(feature = "aws"))]
fn aws_only(target: &Target, queue: Option<&str>) -> Result<()> {
    if !target.is_aws() {
        bail!("dead-letter queues are a deployed stack's: pass --stack NAME");
    }
    // Says that this build has no AWS support.
    target.connect(&crate::target::runtime()?)?;
    stages(queue).map(|_| ())
}

#[cfg(feature = "aws")]
fn connected(
    target: &Target,
    runtime: &tokio::runtime::Runtime,
) -> Result<crate::target::Connected> {
    if !target.is_aws() {
        bail!("dead-letter queues are a deployed stack's: pass --stack NAME");
    }
    target.connect(runtime)
}

#[cfg(feature = "aws")]
pub fn list(target: &Target, queue: Option<&str>, format: Format) -> Result<()> {
    use std::io::Write;
    let stages = stages(queue)?;
    let runtime = crate::target::runtime()?;
    let connected = connected(target, &runtime)?;
    let dlqs = connected.stack.as_ref().expect("an AWS target").dlqs();
    let audit = connected.operator.engine().ports().audit.clone();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if let Format::Table = format {
        writeln!(
            out,
            "QUEUE                SQS ID                                 MAIL ID                          TRIES  REASON"
        )?;
    }
    for stage in stages {
        let entries = runtime
            .block_on(dlqs.list(stage, audit.as_ref()))
            .map_err(anyhow::Error::msg)?;
        for e in entries {
            match format {
                Format::Jsonl => writeln!(out, "{}", serde_json::to_string(&e)?)?,
                Format::Table => writeln!(
                    out,
                    "{:<20} {:<38} {:<32} {:>5}  {}",
                    crate::operate::shown(&e.queue, 20),
                    crate::operate::shown(&e.sqs_id, 38),
                    crate::operate::shown(e.id.as_deref().unwrap_or("-"), 32),
                    e.receive_count,
                    crate::operate::shown(e.reason.as_deref().unwrap_or("(no audit record)"), 200),
                )?,
            }
        }
    }
    Ok(())
}

#[cfg(feature = "aws")]
pub fn redrive(target: &Target, queue: Option<&str>, all: bool, ids: &[String]) -> Result<()> {
    if !all && ids.is_empty() {
        bail!("name the messages to redrive (SQS message ids or mail ids), or pass --all");
    }
    let stages = stages(queue)?;
    let runtime = crate::target::runtime()?;
    let connected = connected(target, &runtime)?;
    let dlqs = connected.stack.as_ref().expect("an AWS target").dlqs();
    let mut failed = 0;
    for stage in stages {
        let report = runtime
            .block_on(dlqs.redrive(stage, (!all).then_some(ids)))
            .map_err(anyhow::Error::msg)?;
        if let Some(handle) = &report.move_task {
            println!("{stage}: SQS is moving the DLQ back (move task {handle})");
            continue;
        }
        if let Some(why) = &report.fallback {
            eprintln!("{stage}: {why}; moving the messages one by one");
        }
        for id in &report.moved {
            println!("{stage}: redrove {id}");
        }
        for (id, why) in &report.failed {
            failed += 1;
            eprintln!("{stage}: {id} stays in the DLQ: {why}");
        }
    }
    if failed > 0 {
        bail!("{failed} message(s) were not redriven");
    }
    Ok(())
}
