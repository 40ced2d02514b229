//! `mailroom erase` and `mailroom export`: one data subject's mail, on the embedded store of
//! `mailroom run` (GDPR Art. 17 and 15). Erasure leaves one record with a keyed hash of the
//! address, then rewrites `state.redb` so that the erased bytes are gone from the file.

use std::io::Write;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use mailroom_core::embedded::disk::DiskState;
use mailroom_core::operate::{Forget, Operator};

use crate::Format;
use crate::target::{Target, now, open_state, runtime};

fn local(target: &Target, what: &str) -> Result<(Operator, Arc<DiskState>)> {
    if target.is_aws() {
        bail!(
            "{what} works on the embedded store of `mailroom run` (--state DIR); not yet on a stack"
        );
    }
    open_state(&target.state)?;
    let (engine, state) =
        crate::local_engine(target.config.as_deref(), &target.state, &target.outbox)?;
    let store = format!("state folder {}", target.state.display());
    Ok((Operator::new(Arc::new(engine), store), state))
}

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
    let (operator, state) = local(target, "erase")?;
    let erasure = runtime.block_on(operator.erase(state.as_ref(), subject, by, dry_run, now()))?;
    // Every handle on the store closes before the file is rewritten.
    drop(operator);
    drop(state);
    if !dry_run {
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
        writeln!(
            out,
            "{verb} {} (raw mail: {})",
            m.id,
            crate::operate::shown(&m.raw.key, 200)
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
            "erasure record {}: {} messages, {} copies, {} records, {} rate-limit slots, by {}",
            &r.subject[..16],
            r.messages,
            r.objects,
            r.records,
            r.slots,
            r.by
        )?;
    }
    if !erasure.messages.is_empty() {
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
    state: &DiskState,
    address: &str,
) -> Result<(Vec<u8>, usize)> {
    let address = address.trim().to_ascii_lowercase();
    let ids = state
        .messages_naming(&address)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for id in &ids {
        let view = operator.show(id).await?;
        let bytes = operator
            .bytes(&view.summary)
            .await
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("reading message {id}"))?;
        zip.start_file(format!("messages/{id}.eml"), options)?;
        zip.write_all(&bytes)?;
        zip.start_file(format!("messages/{id}.json"), options)?;
        let record = serde_json::json!({ "summary": view.summary, "audit": view.audit });
        zip.write_all(serde_json::to_string_pretty(&record)?.as_bytes())?;
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
    let (operator, state) = local(target, "export")?;
    let (bytes, n) = runtime.block_on(bundle(&operator, &state, subject))?;
    std::fs::write(out, bytes).with_context(|| format!("writing {}", out.display()))?;
    println!(
        "wrote {} with {n} messages naming {}",
        out.display(),
        subject.trim().to_ascii_lowercase()
    );
    Ok(())
}
