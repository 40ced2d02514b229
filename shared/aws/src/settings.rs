//! What a function reads from its environment, once per cold start. A missing or bad value
//! is an error naming the variable: the function refuses to start rather than guess.

use mailroom_core::model::Stage;

pub const BUCKET: &str = "MAILROOM_BUCKET";
pub const TABLE: &str = "MAILROOM_TABLE";
pub const CONFIG_KEY: &str = "MAILROOM_CONFIG_KEY";
pub const NEXT_QUEUE_URL: &str = "MAILROOM_NEXT_QUEUE_URL";
pub const FROM_ADDRESS: &str = "MAILROOM_FROM_ADDRESS";
pub const DELIVER_QUEUE_PREFIX: &str = "MAILROOM_DELIVER_QUEUE_PREFIX";
pub const RETENTION_DAYS: &str = "MAILROOM_RETENTION_DAYS";
/// How long raw mail is kept (the bucket's lifecycle), to check the records outlast it.
pub const RAW_RETENTION_DAYS: &str = "MAILROOM_RAW_RETENTION_DAYS";
pub const CONFIG_REFRESH_SECONDS: &str = "MAILROOM_CONFIG_REFRESH_SECONDS";
/// How long state items live when `MAILROOM_RETENTION_DAYS` is not set.
pub const DEFAULT_RETENTION_DAYS: u64 = 30;
/// How long an attempt holds a claimed effect, in milliseconds (default: the core's
/// `EFFECT_LEASE`). Must stay above the function timeout and below the queue's visibility
/// timeout; tests shorten it together with their redelivery delay.
pub const EFFECT_LEASE_MS: &str = "MAILROOM_EFFECT_LEASE_MS";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("environment variable {0} is not set (the {1} function needs it)")]
    Missing(&'static str, &'static str),
    #[error("environment variable {name} is invalid: {why}")]
    Invalid { name: &'static str, why: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub stage: Stage,
    pub bucket: String,
    pub table: String,
    pub config_key: String,
    /// The queue of the next stage; none for `respond`.
    pub next_queue_url: Option<String>,
    /// Overrides `[mailroom] from_address` with the template's verified address.
    pub from_address: Option<String>,
    /// Name prefix of the queues `deliver` actions send to (`<stack>-deliver-`).
    pub deliver_queue_prefix: String,
    /// How long audit records, state and rate-limit items are kept (DynamoDB TTL).
    pub retention_days: u64,
    /// How often the config's ETag is checked for a change (default 60 s).
    pub config_refresh_seconds: u64,
    /// How long an attempt holds a claimed effect.
    pub effect_lease: std::time::Duration,
}

/// A variable that must be set and not blank, trimmed.
pub fn required(
    function: &'static str,
    get: impl Fn(&str) -> Option<String>,
    name: &'static str,
) -> Result<String, SettingsError> {
    match get(name) {
        Some(v) if !v.trim().is_empty() => Ok(v.trim().to_string()),
        _ => Err(SettingsError::Missing(name, function)),
    }
}

/// A required variable that must hold an http(s) URL (`kind` says which, in the error).
pub fn required_url(
    function: &'static str,
    get: impl Fn(&str) -> Option<String>,
    name: &'static str,
    kind: &str,
) -> Result<String, SettingsError> {
    let url = required(function, get, name)?;
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(url)
    } else {
        Err(SettingsError::Invalid {
            name,
            why: format!("{url:?} is not a {kind}"),
        })
    }
}

impl Settings {
    pub fn from_env(stage: Stage) -> Result<Settings, SettingsError> {
        Settings::from_lookup(stage, |name| std::env::var(name).ok())
    }

    pub fn from_lookup(
        stage: Stage,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Settings, SettingsError> {
        Settings::for_function(stage.as_str(), stage, get)
    }

    /// The settings of the function `function`, which works as `stage` does (the digest and
    /// links functions read what respond reads, and name themselves in errors).
    pub fn for_function(
        function: &'static str,
        stage: Stage,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Settings, SettingsError> {
        let required = |name: &'static str| required(function, &get, name);
        let next_queue_url = match stage {
            Stage::Respond => None,
            _ => Some(required_url(function, &get, NEXT_QUEUE_URL, "queue URL")?),
        };
        let from_address = get(FROM_ADDRESS)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty());
        if let Some(a) = &from_address
            && !a.contains('@')
        {
            return Err(SettingsError::Invalid {
                name: FROM_ADDRESS,
                why: format!("{a:?} is not an e-mail address"),
            });
        }
        let days =
            |name: &'static str| -> Result<Option<u64>, SettingsError> {
                get(name)
                    .map(|v| {
                        v.trim().parse().ok().filter(|d| *d > 0).ok_or_else(|| {
                            SettingsError::Invalid {
                                name,
                                why: format!("{v:?} is not a positive number of days"),
                            }
                        })
                    })
                    .transpose()
            };
        let retention_days = days(RETENTION_DAYS)?.unwrap_or(DEFAULT_RETENTION_DAYS);
        // A message's records must outlast its raw mail, or a redrive finds mail without
        // the records that keep its effects once-only.
        if let Some(raw) = days(RAW_RETENTION_DAYS)?
            && retention_days < raw
        {
            return Err(SettingsError::Invalid {
                name: RETENTION_DAYS,
                why: format!(
                    "{retention_days} days of records is less than the {raw} days raw mail is kept ({RAW_RETENTION_DAYS}); records must outlast the mail"
                ),
            });
        }
        let config_refresh_seconds = match get(CONFIG_REFRESH_SECONDS) {
            None => 60,
            Some(v) => v.trim().parse().map_err(|_| SettingsError::Invalid {
                name: CONFIG_REFRESH_SECONDS,
                why: format!("{v:?} is not a number of seconds"),
            })?,
        };
        let effect_lease = match get(EFFECT_LEASE_MS) {
            None => mailroom_core::pipeline::EFFECT_LEASE,
            Some(v) => v
                .trim()
                .parse()
                .ok()
                .filter(|ms| *ms > 0)
                .map(std::time::Duration::from_millis)
                .ok_or_else(|| SettingsError::Invalid {
                    name: EFFECT_LEASE_MS,
                    why: format!("{v:?} is not a positive number of milliseconds"),
                })?,
        };
        Ok(Settings {
            stage,
            effect_lease,
            bucket: required(BUCKET)?,
            table: required(TABLE)?,
            config_key: get(CONFIG_KEY)
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| "config/mailroom.toml".into()),
            next_queue_url,
            from_address,
            deliver_queue_prefix: get(DELIVER_QUEUE_PREFIX)
                .unwrap_or_else(|| "mailroom-deliver-".into()),
            retention_days,
            config_refresh_seconds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn missing_variables_are_named() {
        let e = Settings::from_lookup(
            Stage::Filter,
            lookup(&[(TABLE, "t"), (NEXT_QUEUE_URL, "http://q")]),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "environment variable MAILROOM_BUCKET is not set (the filter function needs it)"
        );
        let e = Settings::from_lookup(Stage::Classify, lookup(&[(BUCKET, "b"), (TABLE, "t")]))
            .unwrap_err();
        assert!(e.to_string().contains("MAILROOM_NEXT_QUEUE_URL"), "{e}");
        let e = Settings::from_lookup(
            Stage::Route,
            lookup(&[(BUCKET, "b"), (TABLE, "t"), (NEXT_QUEUE_URL, "queue")]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("is not a queue URL"), "{e}");
    }

    #[test]
    fn respond_needs_no_next_queue() {
        let s = Settings::from_lookup(
            Stage::Respond,
            lookup(&[(BUCKET, "b"), (TABLE, "t"), (RETENTION_DAYS, "14")]),
        )
        .unwrap();
        assert_eq!(s.next_queue_url, None);
        assert_eq!(s.retention_days, 14);
        assert_eq!(s.config_key, "config/mailroom.toml");
    }

    #[test]
    fn records_must_outlast_the_raw_mail() {
        let base = [(BUCKET, "b"), (TABLE, "t")];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut all = base.to_vec();
            all.extend_from_slice(extra);
            Settings::from_lookup(Stage::Respond, lookup(&all))
        };
        let e = with(&[(RETENTION_DAYS, "20"), (RAW_RETENTION_DAYS, "30")]).unwrap_err();
        assert!(
            e.to_string().contains("MAILROOM_RETENTION_DAYS")
                && e.to_string().contains("less than the 30 days"),
            "{e}"
        );
        assert!(with(&[(RETENTION_DAYS, "400"), (RAW_RETENTION_DAYS, "30")]).is_ok());
        assert!(with(&[(RAW_RETENTION_DAYS, "zero")]).is_err());
    }
}
