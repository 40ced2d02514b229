//! Retention on a store the pipeline does not expire by itself (the embedded store; in AWS
//! lifecycle rules and TTLs do it): quarantined and stored copies, the records of a
//! message, and erasure records each go when their class's retention has run out, counted
//! from when the pipeline decided the message.

use serde::Serialize;

use super::{Forget, Operator, Query};
use crate::config::RetentionConfig;
use crate::pipeline::release::OperatorError;

/// What a collection removed (or, on a dry run, would remove).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Collected {
    pub quarantined: usize,
    pub stored: usize,
    /// Messages whose records went (their audit retention ran out).
    pub messages: usize,
    pub erasures: usize,
}

fn store(e: impl std::fmt::Display) -> OperatorError {
    OperatorError::Store {
        id: "retention".into(),
        detail: e.to_string(),
    }
}

impl Operator {
    /// Applies `retention` as of `now` (seconds since the epoch).
    pub async fn collect(
        &self,
        forget: &dyn Forget,
        retention: &RetentionConfig,
        now: u64,
        dry_run: bool,
    ) -> Result<Collected, OperatorError> {
        let cutoff = |d| now.saturating_sub(RetentionConfig::secs(d));
        let (quarantine, stored, audit) = (
            cutoff(&retention.quarantine),
            cutoff(&retention.stored),
            cutoff(&retention.audit),
        );
        let ports = self.engine().ports();
        let mut done = Collected::default();
        let mut query = Query {
            until: Some(quarantine.max(stored).max(audit)),
            limit: 500,
            ..Query::default()
        };
        loop {
            let page = self.list(&query).await?;
            for mut row in page.rows {
                let expired = row.at < audit;
                let mut keys = Vec::new();
                if row.quarantined.is_some() && (expired || row.at < quarantine) {
                    keys.extend(row.quarantined.take());
                    done.quarantined += 1;
                }
                if !row.stored.is_empty() && (expired || row.at < stored) {
                    done.stored += row.stored.len();
                    keys.append(&mut row.stored);
                }
                if expired {
                    done.messages += 1;
                }
                if dry_run || (keys.is_empty() && !expired) {
                    continue;
                }
                for key in &keys {
                    ports.objects.delete_object(key).await.map_err(store)?;
                }
                if expired {
                    forget.forget_message(&row.id).await.map_err(store)?;
                } else {
                    ports.index.record(&row).await.map_err(store)?;
                }
            }
            match page.next {
                Some(next) => query.before = Some(next),
                None => break,
            }
        }
        let erasures = cutoff(&retention.erasures);
        if !dry_run {
            done.erasures = forget
                .forget_erasures_before(erasures)
                .await
                .map_err(store)?;
        }
        Ok(done)
    }
}
