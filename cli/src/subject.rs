//! `mailroom erase` and `mailroom export`: one data subject's mail (GDPR Art. 17 and 15), on
//! the embedded store of `mailroom run` or on a stack. Erasure leaves one record with a
//! keyed hash of the address; locally it then rewrites `state.redb` so that the erased
//! bytes are gone from the file.

use std::io::Write;

use anyhow::{Context, Result, bail};
use mailroom_core::embedded::disk::DiskState;
use mailroom_core::operate::{Forget, Operator};

use crate::Format;
use crate::target::{Target, now, runtime};

/// `mailroom erase --subject ADDRESS`.
pub fn erase(
    target: &Target,
    subject: &str,
    by: &str,
    dry_run: bool,
    format: Format,
) -> Result<()> {
    if !subject.contains('@') {
        bail!("{subject:?} is not an address");
    }
    let runtime = runtime()?;
    let connected = target.connect(&runtime)?;
    let erasure = runtime.block_on(connected.operator.erase(
        connected.forget.as_ref(),
        subject,
        by,
        dry_run,
        now(),
    ))?;
    let local = connected.state.is_some();
    // Every handle on the store closes before the file is rewritten.
    drop(connected);
    if local && !dry_run {
        DiskState::rewrite(&target.state).map_err(anyhow::Error::msg)?;
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if let Format::Jsonl = format {
        writeln!(out, "{}", serde_json::to_string(&erasure)?)?;
        return Ok(());
    }
    let verb = if dry_run { "would erase" } else { "erased" };
    if erasure.messages.is_empty() {
        writeln!(out, "no message names {subject}: nothing to erase")?;
    }
    for m in &erasure.messages {
        let raw = match (&m.raw, m.raw_erased) {
            (Some(raw), true) => format!("raw mail {}: every version erased", raw.key),
            (Some(raw), false) if local => format!("raw mail: {}", raw.key),
            (Some(raw), false) => format!("raw mail {}", raw.key),
            (None, _) => "finishing an interrupted erasure".into(),
        };
        writeln!(
            out,
            "{verb} {} ({})",
            m.id,
            crate::operate::shown(&raw, 200)
        )?;
        for key in &m.objects {
            writeln!(out, "  copy    {}", crate::operate::shown(key, 200))?;
        }
        for went in &m.went {
            writeln!(
                out,
                "  already {} (cannot be recalled)",
                crate::operate::shown(went, 200)
            )?;
        }
    }
    if let Some(r) = &erasure.record {
        writeln!(
            out,
            "erasure record {}: {} messages, {} copies, {} records, {} rate-limit slots, {} allow-list entries, by {}",
            &r.subject[..16],
            r.messages,
            r.objects,
            r.records,
            r.slots,
            r.allowed,
            r.by
        )?;
    }
    if local && !erasure.messages.is_empty() {
        writeln!(
            out,
            "the raw mail named above is your own input; remove it from your archive (and what \
             queues/ and the outbox already hold, listed as already sent or delivered)"
        )?;
    }
    Ok(())
}

/// The access-request bundle of `address`: every message naming it as `.eml`, with its
/// summary and audit records as JSON, and `request.json` listing them. Returns the zip
/// file's bytes and how many messages it holds.
pub async fn bundle(
    operator: &Operator,
    forget: &dyn Forget,
    address: &str,
) -> Result<(Vec<u8>, usize)> {
    let address = address.trim().to_ascii_lowercase();
    let messages = operator.export(forget, &address).await?;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    let mut ids = Vec::new();
    for m in &messages {
        let id = &m.view.summary.id;
        zip.start_file(format!("messages/{id}.eml"), options)?;
        zip.write_all(&m.bytes)?;
        zip.start_file(format!("messages/{id}.json"), options)?;
        let record = serde_json::json!({ "summary": m.view.summary, "audit": m.view.audit });
        zip.write_all(serde_json::to_string_pretty(&record)?.as_bytes())?;
        ids.push(id.clone());
    }
    zip.start_file("request.json", options)?;
    let request = serde_json::json!({
        "subject": address,
        "generated_at": now(),
        "messages": ids,
    });
    zip.write_all(serde_json::to_string_pretty(&request)?.as_bytes())?;
    Ok((zip.finish()?.into_inner(), ids.len()))
}

/// `mailroom export --subject ADDRESS --out FILE.zip`.
pub fn export(target: &Target, subject: &str, out: &std::path::Path) -> Result<()> {
    let runtime = runtime()?;
    let connected = target.connect(&runtime)?;
    let (bytes, n) = runtime.block_on(bundle(
        &connected.operator,
        connected.forget.as_ref(),
        subject,
    ))?;
    std::fs::write(out, bytes).with_context(|| format!("writing {}", out.display()))?;
    println!(
        "wrote {} with {n} messages naming {}",
        out.display(),
        subject.trim().to_ascii_lowercase()
    );
    Ok(())
}
