//! The operator commands, on the embedded store of `mailroom run` or on a deployed stack
//! (see [`Target`]): list the quarantine and search the messages from the store's index
//! (no scan), newest first, a page at a time; show one message with its audit trail;
//! release or delete quarantined mail. All of them call the core's operator functions.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::Args;
use mailroom_core::model::Verdict;
use mailroom_core::operate::{Cursor, MessageSummary, MessageView, Query};
use mailroom_core::pipeline::release::Releaser;

use crate::Format;
use crate::target::{Target, runtime};

/// Where the messages are, and how to print them.
#[derive(Args)]
pub struct StoreArgs {
    #[command(flatten)]
    pub target: Target,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Rows per page.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// The page after this cursor (printed after a full page).
    #[arg(long)]
    pub page: Option<String>,
}

/// Conditions both commands take.
#[derive(Args)]
pub struct Filters {
    /// Received at or after: a date (2026-11-30), a time (2026-11-30T08:00:00Z) or an age
    /// (7d, 12h).
    #[arg(long)]
    pub since: Option<String>,
    #[arg(long)]
    pub sender: Option<String>,
    #[arg(long)]
    pub recipient: Option<String>,
}

/// Conditions of `search` only.
#[derive(Args)]
pub struct SearchFilters {
    /// Received at or before (as --since).
    #[arg(long)]
    pub until: Option<String>,
    /// A piece of the subject, case-insensitive.
    #[arg(long)]
    pub subject: Option<String>,
    /// accept, quarantine or reject.
    #[arg(long)]
    pub verdict: Option<String>,
    #[arg(long)]
    pub category: Option<String>,
    /// The Message-ID header, with or without angle brackets.
    #[arg(long)]
    pub message_id: Option<String>,
    /// The reference mailroom gave the message (MR-...), as its auto-reply quoted it.
    #[arg(long)]
    pub reference: Option<String>,
    /// The follow-ups of a conversation: the id of its first message.
    #[arg(long)]
    pub conversation: Option<String>,
}

/// A time given as a date, an RFC 3339 time or an age before now.
pub fn parse_time(s: &str) -> Result<u64> {
    let t = s.trim();
    if let Ok(age) = humantime::parse_duration(t) {
        let now = SystemTime::now();
        return Ok(now
            .checked_sub(age)
            .unwrap_or(UNIX_EPOCH)
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0));
    }
    let full = if t.len() == 10 {
        format!("{t}T00:00:00Z")
    } else {
        t.to_string()
    };
    let at = humantime::parse_rfc3339_weak(&full).with_context(|| {
        format!("{s:?} is not a date (2026-11-30), a time (2026-11-30T08:00:00Z) or an age (7d)")
    })?;
    Ok(at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0))
}

pub fn verdict(s: &str) -> Result<Verdict> {
    Ok(match s.trim().to_ascii_lowercase().as_str() {
        "accept" => Verdict::Accept,
        "quarantine" => Verdict::Quarantine,
        "reject" => Verdict::Reject,
        other => bail!("{other:?} is not a verdict: use accept, quarantine or reject"),
    })
}

/// `mailroom quarantine list`.
pub fn quarantine_list(store: &StoreArgs, filters: &Filters, reason: Option<&str>) -> Result<()> {
    let query = Query {
        quarantined_only: true,
        reason: reason.map(str::to_string),
        ..base_query(store, filters)?
    };
    print_page(store, &query)
}

/// `mailroom search`.
pub fn search(store: &StoreArgs, filters: &Filters, more: &SearchFilters) -> Result<()> {
    let query = Query {
        until: more.until.as_deref().map(parse_time).transpose()?,
        subject: more.subject.clone(),
        verdict: more.verdict.as_deref().map(verdict).transpose()?,
        category: more.category.clone(),
        message_id: more.message_id.clone(),
        reference: more.reference.clone(),
        conversation: more.conversation.clone(),
        ..base_query(store, filters)?
    };
    print_page(store, &query)
}

fn base_query(store: &StoreArgs, filters: &Filters) -> Result<Query> {
    Ok(Query {
        since: filters.since.as_deref().map(parse_time).transpose()?,
        sender: filters.sender.clone(),
        recipient: filters.recipient.clone(),
        limit: store.limit.max(1),
        before: store
            .page
            .as_deref()
            .map(str::parse::<Cursor>)
            .transpose()
            .map_err(anyhow::Error::msg)?,
        ..Query::default()
    })
}

fn print_page(store: &StoreArgs, query: &Query) -> Result<()> {
    let runtime = runtime()?;
    let operator = store.target.connect(&runtime)?.operator;
    let page = runtime.block_on(operator.list(query))?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match store.format {
        Format::Jsonl => {
            for row in &page.rows {
                writeln!(out, "{}", serde_json::to_string(row)?)?;
            }
        }
        Format::Table => {
            writeln!(out, "{}", TABLE_HEADER)?;
            for row in &page.rows {
                writeln!(out, "{}", table_row(row))?;
            }
        }
    }
    if let Some(next) = &page.next {
        eprintln!("more: --page {next}");
    }
    Ok(())
}

/// Where an operator action runs, and who acts.
#[derive(Args)]
pub struct ActionArgs {
    #[command(flatten)]
    pub target: Target,
    /// Who acts, for the audit trail (default: $MAILROOM_OPERATOR, else $USER).
    #[arg(long)]
    pub by: Option<String>,
}

pub fn operator_name(by: &Option<String>) -> String {
    by.clone()
        .or_else(|| std::env::var("MAILROOM_OPERATOR").ok())
        .or_else(|| std::env::var("USER").ok())
        .map(|b| shown(b.trim(), 80))
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| "unknown operator".into())
}

/// Prints what a release or deletion did, safe for a terminal.
fn report(id: &str, verb: &str, handled: mailroom_core::pipeline::release::Handled) {
    println!("{}", shown(&handled.describe(id, verb), 600));
}

/// `mailroom quarantine release ID [--force-macro]`.
pub fn release(args: &ActionArgs, id: &str, force_macro: bool) -> Result<()> {
    let runtime = runtime()?;
    let operator = args.target.connect(&runtime)?.operator;
    let by = Releaser::Operator {
        name: operator_name(&args.by),
        force_macro,
    };
    let handled = runtime.block_on(operator.release(id, &by))?;
    report(id, "released", handled);
    Ok(())
}

/// `mailroom mark ID spam|ham`.
pub fn mark(args: &ActionArgs, id: &str, label: &str) -> Result<()> {
    let judgement = mailroom_core::operate::Judgement::parse(label)
        .with_context(|| format!("{label:?} is neither spam nor ham"))?;
    let runtime = runtime()?;
    let operator = args.target.connect(&runtime)?.operator;
    let c = runtime.block_on(operator.mark(id, judgement, &operator_name(&args.by)))?;
    println!(
        "marked {} as {} (the filter's verdict was {}{}); `mailroom train --feedback` learns from it",
        shown(&c.id, 80),
        c.label.label(),
        c.verdict.as_str(),
        if c.contradicts() {
            ": a correction"
        } else {
            ": confirmed"
        }
    );
    Ok(())
}

/// `mailroom quarantine delete ID`.
pub fn delete(args: &ActionArgs, id: &str) -> Result<()> {
    let runtime = runtime()?;
    let operator = args.target.connect(&runtime)?.operator;
    let handled = runtime.block_on(operator.delete(id, &operator_name(&args.by)))?;
    report(id, "deleted", handled);
    Ok(())
}

/// `mailroom show ID`.
pub fn show(target: &Target, format: Format, id: &str) -> Result<()> {
    let runtime = runtime()?;
    let operator = target.connect(&runtime)?.operator;
    let view = runtime.block_on(operator.show(id))?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match format {
        Format::Jsonl => writeln!(out, "{}", serde_json::to_string(&view)?)?,
        Format::Table => write_view(&mut out, &view)?,
    }
    Ok(())
}

fn write_view(out: &mut impl Write, v: &MessageView) -> Result<()> {
    let s = &v.summary;
    writeln!(out, "message {}", shown(&s.id, 80))?;
    writeln!(out, "  received   {} UTC", received(s.at))?;
    writeln!(
        out,
        "  verdict    {} (score {:.1})",
        s.verdict.as_str(),
        s.score
    )?;
    if let Some(q) = &s.quarantined {
        writeln!(out, "  quarantine {}", shown(q, 200))?;
    }
    if let Some(e) = &v.parse_error {
        writeln!(out, "  ({})", shown(e, 200))?;
    }
    if let Some(r) = &s.reference {
        writeln!(out, "  reference  {}", shown(r, 40))?;
    }
    if !v.conversation.is_empty() {
        writeln!(
            out,
            "conversation {} ({} messages, first first)",
            shown(s.conversation_id(), 80),
            v.conversation.len()
        )?;
        for m in &v.conversation {
            writeln!(
                out,
                "  {} {} {:<26} {} {} -> {} [{}] {}",
                if m.id == s.id { "*" } else { " " },
                received(m.at),
                shown(&m.id, 26),
                m.verdict.as_str(),
                shown(m.category.as_deref().unwrap_or("-"), 30),
                shown(&m.routes.join(","), 60),
                shown(&m.route_rules.join(","), 60),
                shown(&m.subject, 80)
            )?;
        }
    }
    if let Some(draft) = &s.draft {
        writeln!(out, "draft reply (from the assist model, not sent)")?;
        for line in draft.lines().take(100) {
            writeln!(out, "  | {}", shown(line, 200))?;
        }
    }
    writeln!(out, "headers")?;
    for (name, value) in &v.headers {
        writeln!(out, "  {}: {}", shown(name, 60), shown(value, 200))?;
    }
    writeln!(out, "text")?;
    for line in v.text.lines().take(200) {
        writeln!(out, "  | {}", shown(line, 200))?;
    }
    writeln!(out, "attachments")?;
    for a in &v.attachments {
        writeln!(
            out,
            "  {} ({}, {} bytes): {}",
            shown(a.name.as_deref().unwrap_or("(no name)"), 80),
            shown(&a.content_type, 60),
            a.size,
            if a.policy.is_empty() {
                "allowed".to_string()
            } else {
                shown(&a.policy.join("; "), 200)
            }
        )?;
    }
    writeln!(out, "audit")?;
    for r in &v.audit {
        let stage = match &r.event {
            Some(event) => format!("{} ({event})", r.stage),
            None => r.stage.to_string(),
        };
        writeln!(
            out,
            "  {:<18} {} [{}] {}",
            stage,
            shown(&r.decision, 80),
            shown(&r.decided_by.join(" "), 80),
            shown(&r.reasons.join("; "), 300)
        )?;
    }
    Ok(())
}

const TABLE_HEADER: &str = "ID                         RECEIVED              SENDER                     RECIPIENTS                 SCORE  SUBJECT / REASONS";

/// Text from a message, safe for a terminal: control characters (escape sequences
/// included) become spaces, and it is cut to `n` characters.
pub fn shown(s: &str, n: usize) -> String {
    let clean: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.chars().count() <= n {
        clean
    } else {
        format!("{}…", clean.chars().take(n - 1).collect::<String>())
    }
}

/// A time as `2026-11-30 08:00:00` (UTC).
pub fn received(at: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(at))
        .to_string()
        .replace('T', " ")
        .trim_end_matches('Z')
        .to_string()
}

fn table_row(r: &MessageSummary) -> String {
    let received = received(r.at);
    format!(
        "{:<26} {:<21} {:<26} {:<26} {:>5.1}  {} [{}]",
        shown(&r.id, 26),
        received,
        shown(r.sender.as_deref().unwrap_or("-"), 26),
        shown(&r.recipients.join(","), 26),
        r.score,
        shown(&r.subject, 60),
        shown(&r.reasons.join(" "), 60),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_dates_times_or_ages() {
        assert_eq!(parse_time("2026-11-30").unwrap(), 1_795_996_800);
        assert_eq!(
            parse_time("2026-11-30T08:00:00Z").unwrap(),
            1_795_996_800 + 8 * 3600
        );
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(parse_time("7d").unwrap().abs_diff(now - 7 * 86_400) < 5);
        assert!(parse_time("last tuesday").is_err());
    }

    #[test]
    fn hostile_text_cannot_drive_the_terminal() {
        assert_eq!(shown("a\u{1b}[2Jb\r\nc", 20), "a [2Jb  c");
        assert_eq!(shown("abcdef", 4), "abc…");
    }
}
