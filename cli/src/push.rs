//! `mailroom push-config`: validate a config and the models it names, then upload them
//! where the functions read them. Nothing invalid is ever uploaded.

use std::path::Path;

use anyhow::{Context, Result};
use mailroom_core::Config;
use mailroom_learn::Slot;

pub fn push_config(file: &Path, bucket: &str, key: &str) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let sdk = mailroom_aws::app::operator_sdk_config()
            .await
            .map_err(anyhow::Error::msg)?;
        push_async(&sdk, file, bucket, key).await
    })
}

/// Validates and uploads, on a runtime the caller runs (the console's).
pub async fn push_async(
    sdk: &aws_config::SdkConfig,
    file: &Path,
    bucket: &str,
    key: &str,
) -> Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    // Model paths are relative to the config file here, and to the config key in S3.
    let config = Config::from_toml(&text, &file.display().to_string())?;
    let base = file.parent().unwrap_or(Path::new(""));
    let mut models = Vec::new();
    for slot in Slot::ALL {
        if let Some(path) = slot.path(&config) {
            let local = base.join(path);
            let bytes = std::fs::read(&local)
                .with_context(|| format!("{}: reading {}", slot.option(), local.display()))?;
            models.push((path.to_string(), bytes));
        }
    }
    let s3 = mailroom_aws::app::s3_client(sdk);
    let uploaded = mailroom_aws::config_source::push_config(
        &s3,
        bucket,
        key,
        &text,
        &file.display().to_string(),
        &models,
    )
    .await;
    for (key, etag) in uploaded.map_err(anyhow::Error::msg)? {
        println!("uploaded s3://{bucket}/{key} (ETag {etag})");
    }
    println!("{}: valid, pushed", file.display());
    Ok(())
}
