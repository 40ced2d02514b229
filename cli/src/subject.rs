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

/// What `mailroom erase` is asked to do besides erasing.
#[derive(Debug, Clone, Copy, Default)]
pub struct EraseOptions {
    /// Print what would go, and remove nothing.
    pub dry_run: bool,
    /// Take the address off the config's sender lists too.
    pub from_config: bool,
}

/// What `--from-config` did to the config.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ConfigErasure {
    /// The config edited (a file, or the stack's `s3://` object).
    pub config: String,
    /// The lists the address came off.
    pub lists: Vec<String>,
    /// The config still names the address elsewhere (a route, a digest address, a comment).
    pub named_elsewhere: bool,
    /// Earlier versions of the stack's config object that held the address, deleted.
    pub versions_deleted: usize,
}

/// Takes `subject` off the sender lists of the local config file `path`, keeping its
/// comments and layout; the edited file must pass `mailroom check`, models included.
fn erase_from_file(path: &std::path::Path, subject: &str) -> Result<ConfigErasure> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let origin = path.display().to_string();
    let removed = mailroom_core::config::remove_address(&text, &origin, subject)?;
    if !removed.lists.is_empty() {
        let config = mailroom_core::Config::from_toml(&removed.text, &origin)?;
        mailroom_learn::load_for_config(&config, crate::config_dir(path))
            .map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        let tmp = path.with_extension("toml.edit");
        std::fs::write(&tmp, &removed.text)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("replacing {origin}"))?;
    }
    Ok(ConfigErasure {
        config: origin,
        lists: removed.lists.iter().map(|l| l.to_string()).collect(),
        named_elsewhere: removed.named_elsewhere,
        versions_deleted: 0,
    })
}

/// `--from-config`: the local file when there is one (pushed to the stack too), else the
/// stack's own config; on a stack, the config object's earlier versions holding the
/// address are deleted.
fn erase_from_config(
    target: &Target,
    runtime: &tokio::runtime::Runtime,
    subject: &str,
) -> Result<ConfigErasure> {
    let mut done = match &target.config {
        Some(path) => {
            let done = erase_from_file(path, subject)?;
            if target.is_aws() && !done.lists.is_empty() {
                push(target, runtime, path)?;
            }
            done
        }
        None => ConfigErasure::default(),
    };
    if target.is_aws() {
        let stack = runtime.block_on(on_stack(target, subject, target.config.is_none()))?;
        if target.config.is_none() {
            done = ConfigErasure {
                versions_deleted: stack.versions_deleted,
                ..stack
            };
        } else {
            done.versions_deleted = stack.versions_deleted;
        }
    }
    Ok(done)
}

#[cfg(feature = "aws")]
fn push(target: &Target, runtime: &tokio::runtime::Runtime, path: &std::path::Path) -> Result<()> {
    let connected = target.connect(runtime)?;
    let stack = connected.stack.expect("an AWS target");
    crate::push::push_config(path, &stack.names.bucket, &stack.names.config_key)
}

#[cfg(not(feature = "aws"))]
fn push(_: &Target, _: &tokio::runtime::Runtime, _: &std::path::Path) -> Result<()> {
    bail!(crate::target::NO_AWS)
}

#[cfg(feature = "aws")]
async fn on_stack(target: &Target, subject: &str, edit: bool) -> Result<ConfigErasure> {
    let sdk = mailroom_aws::app::operator_sdk_config()
        .await
        .map_err(anyhow::Error::msg)?;
    let names = crate::target::stack_names(target, &sdk).await?;
    let done = mailroom_aws::config_source::erase_from_config(
        &mailroom_aws::app::s3_client(&sdk),
        &names.bucket,
        &names.config_key,
        subject,
        edit,
    )
    .await
    .map_err(anyhow::Error::msg)?;
    Ok(ConfigErasure {
        config: format!("s3://{}/{}", names.bucket, names.config_key),
        lists: done.lists.iter().map(|l| l.to_string()).collect(),
        named_elsewhere: done.named_elsewhere,
        versions_deleted: done.versions_deleted,
    })
}

#[cfg(not(feature = "aws"))]
async fn on_stack(_: &Target, _: &str, _: bool) -> Result<ConfigErasure> {
    bail!(crate::target::NO_AWS)
}

/// `mailroom erase --subject ADDRESS`.
pub fn erase(
    target: &Target,
    subject: &str,
    by: &str,
    options: EraseOptions,
    format: Format,
) -> Result<()> {
    let EraseOptions {
        dry_run,
        from_config,
    } = options;
    if !subject.contains('@') {
        bail!("{subject:?} is not an address");
    }
    if from_config && !target.is_aws() && target.config.is_none() {
        bail!(
            "--from-config takes the address off a config file's sender lists: pass --config FILE \
             (the one `mailroom run` uses)"
        );
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
    let config = if from_config && !dry_run {
        Some(erase_from_config(target, &runtime, subject)?)
    } else {
        None
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if let Format::Jsonl = format {
        let mut line = serde_json::to_value(&erasure)?;
        line["config"] = serde_json::to_value(&config)?;
        writeln!(out, "{line}")?;
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
    let address = subject.trim().to_ascii_lowercase();
    match &config {
        Some(c) => {
            if c.lists.is_empty() {
                writeln!(
                    out,
                    "the config {} names {address} in no sender list",
                    c.config
                )?;
            } else {
                writeln!(
                    out,
                    "took {address} off [filter] {} of {}",
                    c.lists.join(" and "),
                    c.config
                )?;
            }
            if c.versions_deleted > 0 {
                writeln!(
                    out,
                    "deleted {} earlier version{} of {} that held it",
                    c.versions_deleted,
                    if c.versions_deleted == 1 { "" } else { "s" },
                    c.config
                )?;
            }
            if c.named_elsewhere {
                writeln!(
                    out,
                    "{} still names {address} elsewhere (a route, a digest address or a \
                     comment): that is yours to change",
                    c.config
                )?;
            }
        }
        None if !erasure.sender_lists.is_empty() => {
            writeln!(
                out,
                "the config names {address} in [filter] {}: {} with --from-config",
                erasure.sender_lists.join(" and "),
                if dry_run {
                    "it would come off"
                } else {
                    "run again"
                }
            )?;
        }
        None => {}
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
