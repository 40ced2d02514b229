//! The config in S3, and the models it names: loaded at cold start, re-read when the ETag of
//! the config or of one of this stage's models changes (checked at most once per refresh
//! interval), so rules and models change without a redeploy. A new config or model that
//! fails to load is refused with an error log line and a `ConfigRejected` metric, and the
//! last good engine keeps serving.
//!
//! Model paths in the config are relative to the config key's folder, as they are to the
//! config file's folder locally: with the config at `config/mailroom.toml`,
//! `spam_model = "models/spam.mrm"` is read from `config/models/spam.mrm`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::error::DisplayErrorContext;
use mailroom_core::Config;
use mailroom_core::model::Stage;
use mailroom_core::pipeline::{Engine, Ports};
use mailroom_learn::{Model, Models, Slot};
use tokio::sync::Mutex;

use crate::metrics::{CONFIG_REJECTED, Metrics};

/// Where a function's config lives and how it is turned into an engine.
pub struct ConfigLocation {
    pub bucket: String,
    pub key: String,
    /// Overrides `[mailroom] from_address`.
    pub from_address: Option<String>,
    /// The function's stage, whose models alone are loaded; `None` loads every stage's (a
    /// release runs filter and classify again before route).
    pub models: Option<Stage>,
    /// How long an attempt holds a claimed effect.
    pub effect_lease: std::time::Duration,
}

pub struct ConfigSource {
    s3: Client,
    location: ConfigLocation,
    ports: Ports,
    refresh: Duration,
    metrics: Metrics,
    current: Mutex<Current>,
}

struct Current {
    engine: Arc<Engine>,
    /// The key and ETag of every object the engine was built from, config first.
    versions: Vec<(String, Option<String>)>,
    checked: Instant,
}

impl ConfigSource {
    /// Loads the config and this stage's models at cold start. Without them the function
    /// cannot start.
    pub async fn load(
        s3: Client,
        location: ConfigLocation,
        ports: Ports,
        refresh: Duration,
        metrics: Metrics,
    ) -> Result<ConfigSource, String> {
        let (engine, versions) = build(&s3, &location, &ports, location.models).await?;
        let current = Mutex::new(Current {
            engine: Arc::new(engine),
            versions,
            checked: Instant::now(),
        });
        Ok(ConfigSource {
            s3,
            location,
            ports,
            refresh,
            metrics,
            current,
        })
    }

    /// The engine to use now, re-checking S3 when the refresh interval has passed.
    pub async fn engine(&self) -> Arc<Engine> {
        let mut cur = self.current.lock().await;
        if cur.checked.elapsed() < self.refresh {
            return cur.engine.clone();
        }
        cur.checked = Instant::now();
        // A config that names other models has another ETag itself, so the known keys
        // suffice to see any change.
        let now = match self.heads(&cur.versions).await {
            Ok(now) => now,
            Err(e) => {
                tracing::warn!(error = %e, "could not check the config for changes; keeping the current one");
                return cur.engine.clone();
            }
        };
        let changed = now
            .iter()
            .zip(&cur.versions)
            .any(|((_, new), (_, old))| new.is_none() || new != old);
        if !changed {
            return cur.engine.clone();
        }
        match build(&self.s3, &self.location, &self.ports, self.location.models).await {
            Ok((engine, versions)) => {
                tracing::info!(versions = ?versions, "loaded a new config");
                cur.engine = Arc::new(engine);
                cur.versions = versions;
            }
            Err(e) => {
                let e = crate::hidden(self.ports.state.as_ref(), &e).await;
                tracing::error!(error = %e, "new config refused; the last good config keeps serving");
                // Remember the bad versions so they are reported once, not on every check.
                cur.versions = now;
                self.metrics.count(CONFIG_REJECTED);
            }
        }
        cur.engine.clone()
    }

    /// The current ETag of each known key; `None` for a key that is gone.
    async fn heads(
        &self,
        known: &[(String, Option<String>)],
    ) -> Result<Vec<(String, Option<String>)>, String> {
        let mut out = Vec::with_capacity(known.len());
        for (key, _) in known {
            let head = self
                .s3
                .head_object()
                .bucket(&self.location.bucket)
                .key(key)
                .send()
                .await;
            match head {
                Ok(h) => out.push((key.clone(), h.e_tag)),
                // A vanished model is a change: the rebuild reports it.
                Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => {
                    out.push((key.clone(), None))
                }
                Err(e) => {
                    return Err(format!(
                        "s3://{}/{key}: {}",
                        self.location.bucket,
                        DisplayErrorContext(&e)
                    ));
                }
            }
        }
        Ok(out)
    }
}

/// Reads the config and the models it names for `stage` (every stage's with `None`, as an
/// operator's release runs them all), and builds the engine.
pub(crate) async fn build(
    s3: &Client,
    at: &ConfigLocation,
    ports: &Ports,
    stage: Option<Stage>,
) -> Result<(Engine, Vec<(String, Option<String>)>), String> {
    let (bytes, etag) = fetch(s3, &at.bucket, &at.key, "config").await?;
    let text = String::from_utf8(bytes)
        .map_err(|_| format!("the config s3://{}/{} is not UTF-8", at.bucket, at.key))?;
    let config = parse(&text, &at.bucket, &at.key, at.from_address.as_deref())?;
    let mut versions = vec![(at.key.clone(), etag)];
    let mut models = Models::default();
    for slot in Slot::ALL
        .into_iter()
        .filter(|s| stage.is_none_or(|x| s.stage() == x))
    {
        let Some(path) = slot.path(&config) else {
            continue;
        };
        let key = model_key(&at.key, path).map_err(|e| format!("{}: {e}", slot.option()))?;
        let (bytes, etag) = fetch(s3, &at.bucket, &key, "model")
            .await
            .map_err(|e| format!("{}: {e}", slot.option()))?;
        let model = Model::from_bytes(&bytes)
            .map_err(|e| format!("{}: s3://{}/{key}: {e}", slot.option(), at.bucket))?;
        models.set(slot, model);
        versions.push((key, etag));
    }
    let (filter, classifier) = models.into_stages()?;
    let engine = Engine::new(Arc::new(config), filter, classifier, ports.clone())
        .with_effect_lease(at.effect_lease);
    Ok((engine, versions))
}

/// The S3 key of a model path from the config: relative to the config key's folder, `.`
/// and `..` resolved; a leading `/` means the bucket root.
pub fn model_key(config_key: &str, path: &str) -> Result<String, String> {
    if matches!(path.rsplit('/').next(), Some("" | "." | "..")) {
        return Err(format!("{path:?} names a folder, not a model file"));
    }
    let mut parts: Vec<&str> = Vec::new();
    let start = if let Some(abs) = path.strip_prefix('/') {
        abs
    } else {
        if let Some((dir, _)) = config_key.rsplit_once('/') {
            parts.extend(dir.split('/').filter(|p| !p.is_empty()));
        }
        path
    };
    for part in start.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts
                    .pop()
                    .ok_or_else(|| format!("{path:?} leads above the bucket root"))?;
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

/// An object's bytes and ETag; the error names what it is and where.
pub(crate) async fn fetch(
    s3: &Client,
    bucket: &str,
    key: &str,
    what: &str,
) -> Result<(Vec<u8>, Option<String>), String> {
    let out = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| {
            format!(
                "cannot read the {what} s3://{bucket}/{key}: {}",
                DisplayErrorContext(&e)
            )
        })?;
    let etag = out.e_tag.clone();
    let bytes = out
        .body
        .collect()
        .await
        .map_err(|e| format!("cannot read the {what} s3://{bucket}/{key}: {e}"))?
        .to_vec();
    Ok((bytes, etag))
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

/// Validates a config and the models it names, then uploads them where the functions read
/// them: each model (given as its path in the config and its bytes) at [`model_key`], the
/// config last, so a function never sees a config whose models are not there yet. Nothing
/// is uploaded unless everything is valid. Returns each uploaded key with its ETag.
pub async fn push_config(
    s3: &Client,
    bucket: &str,
    key: &str,
    text: &str,
    origin: &str,
    models: &[(String, Vec<u8>)],
) -> Result<Vec<(String, String)>, String> {
    let config = Config::from_toml(text, origin).map_err(|e| e.to_string())?;
    let mut uploads = Vec::new();
    let mut loaded = Models::default();
    for slot in Slot::ALL {
        let Some(path) = slot.path(&config) else {
            continue;
        };
        let (_, bytes) = models
            .iter()
            .find(|(p, _)| p == path)
            .ok_or_else(|| format!("{}: no file given for {path:?}", slot.option()))?;
        let model =
            Model::from_bytes(bytes).map_err(|e| format!("{}: {path}: {e}", slot.option()))?;
        loaded.set(slot, model);
        let model_key = model_key(key, path).map_err(|e| format!("{}: {e}", slot.option()))?;
        uploads.push((model_key, bytes.clone(), "application/octet-stream"));
    }
    loaded.into_stages()?;
    uploads.push((
        key.to_string(),
        text.as_bytes().to_vec(),
        "application/toml",
    ));
    let mut etags = Vec::new();
    for (key, body, content_type) in uploads {
        let out = s3
            .put_object()
            .bucket(bucket)
            .key(&key)
            .content_type(content_type)
            .body(aws_sdk_s3::primitives::ByteStream::from(body))
            .send()
            .await
            .map_err(|e| {
                format!(
                    "uploading to s3://{bucket}/{key}: {}",
                    DisplayErrorContext(&e)
                )
            })?;
        etags.push((key, out.e_tag.unwrap_or_default()));
    }
    Ok(etags)
}

/// `mailroom allow/block` on a stack without a local config: adds `sender` to the list in
/// the stack's own config, keeping its comments, validates the result with its models as
/// the functions load them, and writes it back only if nobody changed it since it was read
/// (a conditional write on its ETag). Returns what was done, for people.
pub async fn edit_senders(
    s3: &Client,
    bucket: &str,
    key: &str,
    list: mailroom_core::config::SenderList,
    sender: &str,
) -> Result<String, String> {
    let (bytes, etag) = fetch(s3, bucket, key, "config").await?;
    let origin = format!("s3://{bucket}/{key}");
    let text = String::from_utf8(bytes).map_err(|_| format!("the config {origin} is not UTF-8"))?;
    let edited = mailroom_core::config::add_sender(&text, &origin, list, sender)
        .map_err(|e| e.to_string())?;
    if edited.already {
        return Ok(format!(
            "{} is already in [filter] {} of {origin}: nothing changed",
            sender.trim(),
            list.key()
        ));
    }
    write_checked(s3, bucket, key, edited.text, etag).await?;
    let mut done = format!(
        "added {} to [filter] {} of {origin}",
        sender.trim().to_ascii_lowercase(),
        list.key()
    );
    if edited.moved_from_other {
        done.push_str(" (and took it off the other list)");
    }
    Ok(done)
}

/// Validates an edited config `text` of `s3://bucket/key` with the models it names, as the
/// functions load them, and writes it back only if the object's ETag is still `etag` (no
/// one changed it since it was read).
async fn write_checked(
    s3: &Client,
    bucket: &str,
    key: &str,
    text: String,
    etag: Option<String>,
) -> Result<(), String> {
    let origin = format!("s3://{bucket}/{key}");
    let config = Config::from_toml(&text, &origin).map_err(|e| e.to_string())?;
    let mut models = Models::default();
    for slot in Slot::ALL {
        let Some(path) = slot.path(&config) else {
            continue;
        };
        let model_key = model_key(key, path).map_err(|e| format!("{}: {e}", slot.option()))?;
        let (bytes, _) = fetch(s3, bucket, &model_key, "model")
            .await
            .map_err(|e| format!("{}: {e}", slot.option()))?;
        let model = Model::from_bytes(&bytes)
            .map_err(|e| format!("{}: s3://{bucket}/{model_key}: {e}", slot.option()))?;
        models.set(slot, model);
    }
    models.into_stages()?;
    let mut put = s3
        .put_object()
        .bucket(bucket)
        .key(key)
        .content_type("application/toml")
        .body(aws_sdk_s3::primitives::ByteStream::from(text.into_bytes()));
    if let Some(etag) = etag {
        put = put.if_match(etag);
    }
    put.send().await.map_err(|e| {
        format!(
            "writing {origin} (it may have changed since it was read; try again): {}",
            DisplayErrorContext(&e)
        )
    })?;
    Ok(())
}

/// What `mailroom erase --from-config` did to a stack's config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErased {
    /// The sender lists the address came off (none: it was on none).
    pub lists: Vec<&'static str>,
    /// The current config still names it elsewhere (a route, a digest address, a comment).
    pub named_elsewhere: bool,
    /// Earlier versions of the config object that held the address, deleted.
    pub versions_deleted: usize,
}

/// `mailroom erase --from-config` on a stack: takes `address` off the sender lists of the
/// stack's own config (`edit` true; validated with its models and written back only if
/// nobody changed it since it was read), then deletes every earlier version of the config
/// object that holds the address: the bucket is versioned, and the old versions would keep
/// it until the lifecycle rule expires them.
pub async fn erase_from_config(
    s3: &Client,
    bucket: &str,
    key: &str,
    address: &str,
    edit: bool,
) -> Result<ConfigErased, String> {
    let address = address.trim().to_ascii_lowercase();
    let origin = format!("s3://{bucket}/{key}");
    let (lists, named_elsewhere) = if edit {
        let (bytes, etag) = fetch(s3, bucket, key, "config").await?;
        let text =
            String::from_utf8(bytes).map_err(|_| format!("the config {origin} is not UTF-8"))?;
        let removed = mailroom_core::config::remove_address(&text, &origin, &address)
            .map_err(|e| e.to_string())?;
        if !removed.lists.is_empty() {
            write_checked(s3, bucket, key, removed.text, etag).await?;
        }
        (removed.lists, removed.named_elsewhere)
    } else {
        (Vec::new(), false)
    };
    let what = |e: &dyn std::fmt::Display| format!("the earlier versions of {origin}: {e}");
    let mut versions_deleted = 0;
    let mut key_marker = None;
    let mut version_marker = None;
    loop {
        let page = s3
            .list_object_versions()
            .bucket(bucket)
            .prefix(key)
            .set_key_marker(key_marker.take())
            .set_version_id_marker(version_marker.take())
            .send()
            .await
            .map_err(|e| what(&DisplayErrorContext(&e)))?;
        for v in page.versions() {
            let (Some(k), Some(id)) = (v.key(), v.version_id()) else {
                continue;
            };
            if k != key || v.is_latest() == Some(true) {
                continue;
            }
            let body = s3
                .get_object()
                .bucket(bucket)
                .key(key)
                .version_id(id)
                .send()
                .await
                .map_err(|e| what(&DisplayErrorContext(&e)))?
                .body
                .collect()
                .await
                .map_err(|e| what(&e))?
                .into_bytes();
            if !String::from_utf8_lossy(&body)
                .to_ascii_lowercase()
                .contains(&address)
            {
                continue;
            }
            s3.delete_object()
                .bucket(bucket)
                .key(key)
                .version_id(id)
                .send()
                .await
                .map_err(|e| what(&DisplayErrorContext(&e)))?;
            versions_deleted += 1;
        }
        if page.is_truncated() != Some(true) {
            break;
        }
        key_marker = page.next_key_marker().map(str::to_string);
        version_marker = page.next_version_id_marker().map(str::to_string);
    }
    Ok(ConfigErased {
        lists,
        named_elsewhere,
        versions_deleted,
    })
}

#[cfg(test)]
mod tests {
    use super::model_key;

    #[test]
    fn model_keys_are_relative_to_the_config_folder() {
        let k = |c, p| model_key(c, p);
        assert_eq!(
            k("config/mailroom.toml", "models/spam.mrm").unwrap(),
            "config/models/spam.mrm"
        );
        assert_eq!(
            k("config/mailroom.toml", "./spam.mrm").unwrap(),
            "config/spam.mrm"
        );
        assert_eq!(
            k("config/mailroom.toml", "../models/spam.mrm").unwrap(),
            "models/spam.mrm"
        );
        assert_eq!(k("mailroom.toml", "spam.mrm").unwrap(), "spam.mrm");
        assert_eq!(
            k("config/mailroom.toml", "/shared/spam.mrm").unwrap(),
            "shared/spam.mrm"
        );
        assert!(
            k("mailroom.toml", "../spam.mrm")
                .unwrap_err()
                .contains("above")
        );
        for folder in [".", "models/", "..", ""] {
            let e = k("config/mailroom.toml", folder).unwrap_err();
            assert!(e.contains("names a folder"), "{folder:?}: {e}");
        }
    }
}
