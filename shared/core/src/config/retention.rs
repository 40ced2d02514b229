//! How long each kind of data is kept. In AWS the template's parameters set the bucket's
//! lifecycle rules and the table's TTLs (and the functions check them at start); locally
//! `mailroom run` and `mailroom gc` apply these to the embedded store.

use serde::Deserialize;
use toml::Spanned;

use super::HumanDuration;

const DAY: u64 = 86_400;

/// A message may lie 14 days in a dead-letter queue and needs a week to be redriven: its
/// raw mail must outlast both.
pub const DLQ_RETENTION_DAYS: u64 = 14;
pub const REDRIVE_WINDOW_DAYS: u64 = 7;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Raw mail as SES stored it (AWS: `raw/`; locally it is your own input files).
    #[serde(default = "days30")]
    pub raw: Spanned<HumanDuration>,
    /// Quarantined copies (`quarantine/`).
    #[serde(default = "days30")]
    pub quarantine: Spanned<HumanDuration>,
    /// Stored copies (`store` actions, `store/`).
    #[serde(default = "days365")]
    pub stored: Spanned<HumanDuration>,
    /// Stage, effect and audit records, summaries and the index.
    #[serde(default = "days400")]
    pub audit: Spanned<HumanDuration>,
    /// Erasure records.
    #[serde(default = "days1827")]
    pub erasures: Spanned<HumanDuration>,
}

fn days(n: u64) -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration(std::time::Duration::from_secs(n * DAY)))
}
fn days30() -> Spanned<HumanDuration> {
    days(30)
}
fn days365() -> Spanned<HumanDuration> {
    days(365)
}
fn days400() -> Spanned<HumanDuration> {
    days(400)
}
fn days1827() -> Spanned<HumanDuration> {
    days(1827)
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            raw: days30(),
            quarantine: days30(),
            stored: days365(),
            audit: days400(),
            erasures: days1827(),
        }
    }
}

impl RetentionConfig {
    pub fn secs(d: &Spanned<HumanDuration>) -> u64 {
        d.get_ref().0.as_secs()
    }

    /// The constraints between the classes: the span to report and why, for the first one
    /// broken.
    pub fn problem(&self) -> Option<(std::ops::Range<usize>, String)> {
        let floor = (DLQ_RETENTION_DAYS + REDRIVE_WINDOW_DAYS) * DAY;
        if Self::secs(&self.raw) < floor {
            return Some((
                self.raw.span(),
                format!(
                    "retention.raw must be at least {} days: a message may lie {DLQ_RETENTION_DAYS} days in a dead-letter queue and needs {REDRIVE_WINDOW_DAYS} more to be redriven",
                    DLQ_RETENTION_DAYS + REDRIVE_WINDOW_DAYS
                ),
            ));
        }
        if Self::secs(&self.audit) < Self::secs(&self.raw) {
            return Some((
                self.audit.span(),
                "retention.audit must be at least retention.raw: a message's record must outlast its mail".into(),
            ));
        }
        for (name, d) in [
            ("quarantine", &self.quarantine),
            ("stored", &self.stored),
            ("erasures", &self.erasures),
        ] {
            if Self::secs(d) < DAY {
                return Some((d.span(), format!("retention.{name} must be at least a day")));
            }
        }
        None
    }
}
