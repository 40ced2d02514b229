//! `mailroom run`: the whole pipeline over mail files, with embedded storage. Messages run
//! `--jobs` at a time on a runtime with one worker per job; their reports are written in
//! the input order. Where a message reads what an earlier one writes (the effects of a copy
//! of it, a follow-up's conversation, an auto-reply's rate limit), it waits for that one at
//! that stage ([`turns`]), so `--jobs N` decides what `--jobs 1` decides.

mod turns;

use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use mailroom_core::mail::strip_mbox_from_line;
use mailroom_core::model::{Envelope, RawRef, Receipt};
use mailroom_core::pipeline::{Engine, content_id};
use mailroom_core::report::Report;
use mailroom_core::route::headers;

use crate::{Format, input, output, retention, target};
use turns::MessageTurns;

/// The mail of messages running at once, beyond one per worker.
const IN_FLIGHT: usize = 64 << 20;

pub struct RunArgs<'a> {
    pub config: Option<&'a Path>,
    pub format: Format,
    pub state_dir: &'a Path,
    pub outbox: &'a Path,
    pub metrics: Option<&'a Path>,
    pub jobs: usize,
    pub inputs: &'a [PathBuf],
}

/// The cores this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// One message through every stage, or the failure path; never a panic.
async fn process(
    engine: Arc<Engine>,
    source: String,
    raw: Vec<u8>,
    env: Envelope,
    mut turns: MessageTurns,
) -> Report {
    let named = source.clone();
    let task = tokio::spawn(async move {
        turns.start().await;
        let outcome = match engine.run_all_in_turn(env.clone(), &raw, &mut turns).await {
            Ok(outcome) => Ok(outcome),
            Err(e) if e.is_retryable() => Err(e.to_string()),
            // The failure path the functions take: quarantine and audit.
            Err(e) => {
                turns.before_failure_path().await;
                Err(
                    match engine.quarantine_failure(&env, &e, Some(&raw)).await {
                        Ok(record) => format!("{e} ({})", record.decision),
                        Err(also) => also,
                    },
                )
            }
        };
        // Whoever waits for this message goes on once its failure path is done too.
        drop(turns);
        (source, outcome)
    });
    // A bug in one message must not end the run: the panic is caught with its task.
    match task.await {
        Ok((source, Ok(outcome))) => Report::of(&source, &outcome),
        Ok((source, Err(e))) => Report::failure(&source, &e),
        Err(joined) => {
            let text = joined
                .try_into_panic()
                .map(panic_text)
                .unwrap_or_else(|e| format!("internal error: {e}"));
            Report::failure(&named, &text)
        }
    }
}

/// Returns whether every input was processed.
pub fn run(args: &RunArgs<'_>) -> Result<bool> {
    let (engine, state) = crate::local_engine(args.config, args.state_dir, args.outbox)?;
    let engine = Arc::new(engine);
    let jobs = args.jobs.max(1);
    // Messages started and not yet written: many more than the workers, so that one slow
    // message (or one that writes a group of state to the file, some 50 ms) does not leave
    // the others idle; and beyond one per worker, no more than IN_FLIGHT bytes of mail, so
    // that large messages do not pile up.
    let window = if jobs == 1 { 1 } else { 64 * jobs };
    // One job runs on this thread alone: no hand-off between threads per message. Timers
    // bound the effects' leases and the [assist] model's calls, which also need I/O.
    let runtime = if jobs == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(jobs)
            .enable_all()
            .build()
    }
    .context("starting the async runtime")?;

    let files = input::files(args.inputs);
    let progress = if std::io::stderr().is_terminal() && files.len() > 200 {
        let bar = ProgressBar::new(files.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} files {per_sec} eta {eta}")
                .expect("valid template"),
        );
        bar
    } else {
        ProgressBar::hidden()
    };

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if let Format::Table = args.format {
        writeln!(out, "{}", output::TABLE_HEADER)?;
    }
    let mut summary = output::Summary::default();
    let started = Instant::now();
    let mut write = |record: Report, summary: &mut output::Summary| -> Result<()> {
        if record.error.is_some() {
            summary.failed += 1;
        }
        summary.add(&record);
        match args.format {
            Format::Jsonl => writeln!(out, "{}", serde_json::to_string(&record)?)?,
            Format::Table => writeln!(out, "{}", output::table_row(&record))?,
        }
        Ok(())
    };
    runtime.block_on(async {
        // In input order: the reports of messages started and not yet written.
        // With the size of each message's mail.
        let mut running: VecDeque<(tokio::task::JoinHandle<Report>, usize)> = VecDeque::new();
        let mut in_flight = 0;
        let mut order = turns::Order::new(window);
        for file in files {
            for msg in input::messages(file) {
                let size = msg.raw.as_ref().map_or(0, Vec::len);
                while running.len() >= window
                    || (running.len() >= jobs && in_flight + size > IN_FLIGHT)
                {
                    let (done, bytes) = running.pop_front().expect("a running message");
                    in_flight -= bytes;
                    write(joined(done.await), &mut summary)?;
                }
                in_flight += size;
                let raw = match msg.raw {
                    Err(e) => {
                        running.push_back((
                            tokio::spawn(async move { Report::failure(&msg.source, &e) }),
                            0,
                        ));
                        continue;
                    }
                    Ok(raw) => raw,
                };
                summary.bytes += raw.len() as u64;
                let id = content_id(&raw);
                let mut env = Envelope::new(
                    id.clone(),
                    RawRef {
                        bucket: "local".into(),
                        key: msg.source.clone(),
                    },
                );
                env.receipt = msg.receipt;
                // Handed out here, in input order.
                let turns = order.next(&id, &reply_keys(&raw, env.receipt.as_ref()));
                running.push_back((
                    tokio::spawn(process(engine.clone(), msg.source, raw, env, turns)),
                    size,
                ));
            }
            progress.inc(1);
        }
        while let Some((done, _)) = running.pop_front() {
            write(joined(done.await), &mut summary)?;
        }
        anyhow::Ok(())
    })?;
    progress.finish_and_clear();
    out.flush()?;
    drop(out);
    state.flush().map_err(|e| anyhow::anyhow!("{e}"))?;
    // The config's retention, applied to the store as of now.
    let collected = retention::collect(&runtime, engine, &state, target::now(), false)?;
    eprintln!("{}", summary.render(started.elapsed()));
    if let Some(path) = args.metrics {
        std::fs::write(path, summary.json(started.elapsed()).to_string())
            .with_context(|| format!("writing the metrics to {}", path.display()))?;
    }
    if collected != Default::default() {
        eprintln!("  retention:  removed {}", retention::describe(&collected));
    }
    eprintln!(
        "  outbox:     {}\n  state:      {}",
        args.outbox.display(),
        args.state_dir.display()
    );
    Ok(summary.failed == 0)
}

/// Every address a reply to the message could go to (the `Return-Path`, `Reply-To`,
/// `From` and `Sender` fields, the envelope sender), lower-cased: more than the
/// auto-reply's rate-limit key, never less, read from the header section without a parse.
fn reply_keys(raw: &[u8], receipt: Option<&Receipt>) -> Vec<String> {
    let split = headers::split(strip_mbox_from_line(raw));
    let mut keys: Vec<String> = headers::fields(split.headers)
        .filter(|f| {
            ["Return-Path", "Reply-To", "From", "Sender"]
                .iter()
                .any(|n| f.is(n))
        })
        .flat_map(|f| {
            String::from_utf8_lossy(f.raw)
                .split(|c: char| c.is_whitespace() || "<>,;:\"'()[]".contains(c))
                .filter(|t| t.contains('@'))
                .map(str::to_ascii_lowercase)
                .collect::<Vec<_>>()
        })
        .chain(receipt.and_then(|r| r.mail_from.clone()))
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

fn joined(r: Result<Report, tokio::task::JoinError>) -> Report {
    r.unwrap_or_else(|e| Report::failure("", &format!("internal error: {e}")))
}

fn panic_text(panic: Box<dyn std::any::Any + Send>) -> String {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned());
    format!(
        "internal error (panic) while processing: {}",
        what.unwrap_or_default()
    )
}
