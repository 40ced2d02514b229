//! `mailroom digest`: the quarantine digests of the last period, written into the outbox
//! as the digest function sends them on a stack, with links that `mailroom console`
//! answers at `/link`.

use anyhow::{Context, Result, bail};
use mailroom_core::operate::digest;

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

/// The link endpoint over the console's embedded store. "Always allow" writes the
/// digest recipient's own allow-list entry into `state.redb`; the config file (and its
/// `allow_senders`, the operator's) is left as it is.
pub fn desk(
    operator: mailroom_core::operate::Operator,
    state: &mailroom_core::embedded::disk::DiskState,
) -> Result<mailroom_core::operate::links::LinkDesk> {
    Ok(mailroom_core::operate::links::LinkDesk {
        operator,
        keys: vec![state.link_key()?],
    })
}
