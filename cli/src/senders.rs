//! `mailroom allow` and `mailroom block`: add a sender to the config's allow or block list,
//! keeping the file's comments and layout, after the same validation as `mailroom check`.
//! On a deployed stack the edited config is then pushed as `push-config` pushes it.

use std::path::Path;

use anyhow::{Context, Result};
use mailroom_core::config::{SenderList, add_sender};

use crate::target::Target;

/// Edits the config file; returns what was done, for people.
pub fn edit(path: &Path, list: SenderList, sender: &str) -> Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let origin = path.display().to_string();
    let edited = add_sender(&text, &origin, list, sender)?;
    let key = list.key();
    if edited.already {
        return Ok(format!(
            "{} is already in [filter] {key} of {origin}: nothing changed",
            sender.trim()
        ));
    }
    // The models it names must load too, as `check` requires.
    let config = mailroom_core::Config::from_toml(&edited.text, &origin)?;
    mailroom_learn::load_for_config(&config, crate::config_dir(path))
        .map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
    // Written beside and renamed over: a crash leaves the old file or the new, never half.
    let tmp = path.with_extension("toml.edit");
    std::fs::write(&tmp, &edited.text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {origin}"))?;
    let mut done = format!(
        "added {} to [filter] {key} of {origin}",
        sender.trim().to_ascii_lowercase()
    );
    if edited.moved_from_other {
        done.push_str(" (and took it off the other list)");
    }
    Ok(done)
}

/// `mailroom allow SENDER` / `mailroom block SENDER`.
pub fn command(target: &Target, list: SenderList, sender: &str) -> Result<()> {
    if target.is_aws() && target.config.is_none() {
        let runtime = crate::target::runtime()?;
        let done = runtime.block_on(on_stack(target, list, sender))?;
        println!("{done}");
        return Ok(());
    }
    let path = target.config.as_deref().context(
        "allow and block edit a config file: pass --config FILE (the one `run` or push-config uses)",
    )?;
    println!("{}", edit(path, list, sender)?);
    if target.is_aws() {
        push(target, path)?;
    }
    Ok(())
}

#[cfg(feature = "aws")]
fn push(target: &Target, path: &Path) -> Result<()> {
    let runtime = crate::target::runtime()?;
    let connected = target.connect(&runtime)?;
    let stack = connected.stack.expect("an AWS target");
    crate::push::push_config(path, &stack.names.bucket, &stack.names.config_key)
}

#[cfg(not(feature = "aws"))]
fn push(target: &Target, _path: &Path) -> Result<()> {
    target.connect(&crate::target::runtime()?).map(|_| ())
}

/// Edits the stack's own config in its bucket (no local file given).
#[cfg(feature = "aws")]
pub async fn on_stack(target: &Target, list: SenderList, sender: &str) -> Result<String> {
    let sdk = mailroom_aws::app::operator_sdk_config()
        .await
        .map_err(anyhow::Error::msg)?;
    let names = crate::target::stack_names(target, &sdk).await?;
    mailroom_aws::config_source::edit_senders(
        &mailroom_aws::app::s3_client(&sdk),
        &names.bucket,
        &names.config_key,
        list,
        sender,
    )
    .await
    .map_err(anyhow::Error::msg)
}

#[cfg(not(feature = "aws"))]
pub async fn on_stack(_target: &Target, _list: SenderList, _sender: &str) -> Result<String> {
    anyhow::bail!(crate::target::NO_AWS)
}
