//! The config in S3: loaded at cold start, re-read when its ETag changes (checked at most
//! once per refresh interval), so rules change without a redeploy. A new config that fails
//! validation is refused with an error log line and a `ConfigRejected` metric, and the last
//! good one keeps serving.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::error::DisplayErrorContext;
use mailroom_core::Config;
use tokio::sync::Mutex;

use crate::metrics::{CONFIG_REJECTED, Metrics};

pub struct ConfigSource {
    s3: Client,
    bucket: String,
    key: String,
    from_address: Option<String>,
    refresh: Duration,
    metrics: Metrics,
    current: Mutex<Current>,
}

struct Current {
    config: Arc<Config>,
    etag: Option<String>,
    checked: Instant,
}

impl ConfigSource {
    /// Loads the config at cold start. Without a valid config the function cannot start.
    pub async fn load(
        s3: Client,
        bucket: String,
        key: String,
        from_address: Option<String>,
        refresh: Duration,
        metrics: Metrics,
    ) -> Result<ConfigSource, String> {
        let (text, etag) = fetch(&s3, &bucket, &key).await?;
        let config = parse(&text, &bucket, &key, from_address.as_deref())?;
        let current = Mutex::new(Current {
            config: Arc::new(config),
            etag,
            checked: Instant::now(),
        });
        Ok(ConfigSource {
            s3,
            bucket,
            key,
            from_address,
            refresh,
            metrics,
            current,
        })
    }

    /// The config to use now, re-checking S3 when the refresh interval has passed.
    pub async fn config(&self) -> Arc<Config> {
        let mut cur = self.current.lock().await;
        if cur.checked.elapsed() < self.refresh {
            return cur.config.clone();
        }
        cur.checked = Instant::now();
        let head = self
            .s3
            .head_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .send()
            .await;
        let etag = match head {
            Ok(h) => h.e_tag,
            Err(e) => {
                tracing::warn!(error = %DisplayErrorContext(&e), "could not check the config for changes; keeping the current one");
                return cur.config.clone();
            }
        };
        if etag.is_some() && etag == cur.etag {
            return cur.config.clone();
        }
        let loaded = match fetch(&self.s3, &self.bucket, &self.key).await {
            Ok((text, etag)) => parse(&text, &self.bucket, &self.key, self.from_address.as_deref())
                .map(|c| (c, etag)),
            Err(e) => Err(e),
        };
        match loaded {
            Ok((config, etag)) => {
                tracing::info!(etag = etag.as_deref().unwrap_or(""), "loaded a new config");
                cur.config = Arc::new(config);
                cur.etag = etag;
            }
            Err(e) => {
                tracing::error!(error = %e, "new config refused; the last good config keeps serving");
                // Remember the bad ETag so it is reported once, not on every check.
                cur.etag = etag;
                self.metrics.count(CONFIG_REJECTED).await;
            }
        }
        cur.config.clone()
    }
}

async fn fetch(s3: &Client, bucket: &str, key: &str) -> Result<(String, Option<String>), String> {
    let out = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| {
            format!(
                "cannot read the config s3://{bucket}/{key}: {}",
                DisplayErrorContext(&e)
            )
        })?;
    let etag = out.e_tag.clone();
    let bytes = out
        .body
        .collect()
        .await
        .map_err(|e| format!("cannot read the config s3://{bucket}/{key}: {e}"))?
        .to_vec();
    let text = String::from_utf8(bytes)
        .map_err(|_| format!("the config s3://{bucket}/{key} is not UTF-8"))?;
    Ok((text, etag))
}

fn parse(
    text: &str,
    bucket: &str,
    key: &str,
    from_address: Option<&str>,
) -> Result<Config, String> {
    let mut config =
        Config::from_toml(text, &format!("s3://{bucket}/{key}")).map_err(|e| e.to_string())?;
    if let Some(from) = from_address {
        config.mailroom.from_address = from.to_string();
    }
    Ok(config)
}

/// Validates a config and uploads it where the functions read it. An invalid config is
/// never uploaded. Returns the new object's ETag.
pub async fn push_config(
    s3: &Client,
    bucket: &str,
    key: &str,
    text: &str,
    origin: &str,
) -> Result<String, String> {
    Config::from_toml(text, origin).map_err(|e| e.to_string())?;
    let out = s3
        .put_object()
        .bucket(bucket)
        .key(key)
        .content_type("application/toml")
        .body(aws_sdk_s3::primitives::ByteStream::from(
            text.as_bytes().to_vec(),
        ))
        .send()
        .await
        .map_err(|e| {
            format!(
                "uploading to s3://{bucket}/{key}: {}",
                DisplayErrorContext(&e)
            )
        })?;
    Ok(out.e_tag.unwrap_or_default())
}
