//! `mailroom gc`, and the retention pass at the end of `mailroom run`: the config's
//! `[retention]` applied to the embedded store.

use std::sync::Arc;

use anyhow::{Result, bail};
use mailroom_core::embedded::disk::DiskState;
use mailroom_core::operate::{Collected, Operator};
use mailroom_core::pipeline::Engine;

use crate::target::{Target, open_state, runtime};

/// Applies the engine's config's retention to its embedded store as of `now`.
pub fn collect(
    runtime: &tokio::runtime::Runtime,
    engine: Arc<Engine>,
    state: &DiskState,
    now: u64,
    dry_run: bool,
) -> Result<Collected> {
    let retention = engine.config().retention.clone();
    let operator = Operator::new(engine, "the embedded store");
    Ok(runtime.block_on(operator.collect(state, &retention, now, dry_run))?)
}

pub fn describe(c: &Collected) -> String {
    format!(
        "{} quarantined copies, {} stored copies, the records of {} messages, {} erasure records",
        c.quarantined, c.stored, c.messages, c.erasures
    )
}

/// `mailroom gc [--as-of WHEN] [--dry-run]`.
pub fn gc(target: &Target, as_of: Option<&str>, dry_run: bool) -> Result<()> {
    if target.is_aws() {
        bail!(
            "a stack's bucket lifecycle rules and table TTLs apply its retention; gc is for the embedded store"
        );
    }
    open_state(&target.state)?;
    let now = match as_of {
        Some(t) => crate::operate::parse_time(t)?,
        None => crate::target::now(),
    };
    let (engine, state) =
        crate::local_engine(target.config.as_deref(), &target.state, &target.outbox)?;
    let runtime = runtime()?;
    let collected = collect(&runtime, Arc::new(engine), &state, now, dry_run)?;
    drop(state);
    if !dry_run && collected != Collected::default() {
        // Removed records leave no bytes behind in free pages.
        DiskState::rewrite(&target.state).map_err(anyhow::Error::msg)?;
    }
    let verb = if dry_run { "would remove" } else { "removed" };
    println!("{verb} {}", describe(&collected));
    Ok(())
}
