//! `mailroom digest`: the quarantine digests of the last period, written into the outbox
//! as the digest function sends them on a stack, with links that `mailroom console`
//! answers at `/link`.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use async_trait::async_trait;
use mailroom_core::config::SenderList;
use mailroom_core::operate::digest;
use mailroom_core::operate::links::SenderLists;

use crate::target::{Target, runtime};

/// The console's link endpoint at its default address.
pub const DEFAULT_LINK_BASE: &str = "http://127.0.0.1:8025/link";

/// `mailroom digest [--link-base URL] [--as-of WHEN]`.
pub fn command(target: &Target, link_base: &str, as_of: Option<&str>) -> Result<()> {
    if target.is_aws() {
        bail!(
            "on a stack the digest function sends the digests on its schedule; run it now with `aws lambda invoke --function-name STACK-digest out.json`"
        );
    }
    let now = match as_of {
        Some(t) => crate::operate::parse_time(t)?,
        None => crate::target::now(),
    };
    let runtime = runtime()?;
    let connected = target.connect(&runtime)?;
    let state = connected.state.context("the embedded store")?;
    let key = state.link_key()?;
    let sent = runtime.block_on(digest::send(&connected.operator, link_base, &key, now))?;
    state.flush()?;
    if sent.is_empty() {
        println!("no quarantined mail in the period: no digest to send");
    }
    for d in sent {
        let verb = if d.before {
            "already sent this period"
        } else {
            "sent"
        };
        println!(
            "digest to {} ({} message{}): {verb} ({})",
            d.to,
            d.entries,
            if d.entries == 1 { "" } else { "s" },
            d.note
        );
    }
    Ok(())
}

/// "Always allow" from a link edits the config file the console was started with.
pub struct ConfigFile(pub Option<std::path::PathBuf>);

#[async_trait]
impl SenderLists for ConfigFile {
    async fn allow(&self, sender: &str) -> Result<String, String> {
        let path = self.0.as_deref().ok_or_else(|| {
            "no config file to add the sender to: start the console with --config FILE".to_string()
        })?;
        crate::senders::edit(path, SenderList::Allow, sender).map_err(|e| format!("{e:#}"))
    }
}

/// The link endpoint over the console's embedded store (whose subject key hashes the
/// recipient of an expired link).
pub fn desk(
    operator: mailroom_core::operate::Operator,
    state: Arc<mailroom_core::embedded::disk::DiskState>,
    config: Option<std::path::PathBuf>,
) -> Result<mailroom_core::operate::links::LinkDesk> {
    Ok(mailroom_core::operate::links::LinkDesk {
        operator,
        keys: vec![state.link_key()?],
        senders: Arc::new(ConfigFile(config)),
        subject_key: state,
    })
}
