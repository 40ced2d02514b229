//! `mailroom push-config`: validate a config, then upload it where the functions read it.
//! An invalid file is never uploaded.

use std::path::Path;

use anyhow::{Context, Result};

pub fn push_config(file: &Path, bucket: &str, key: &str) -> Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let etag = runtime.block_on(async {
        let sdk = mailroom_aws::app::sdk_config().await;
        let s3 = mailroom_aws::app::s3_client(&sdk);
        mailroom_aws::config_source::push_config(
            &s3,
            bucket,
            key,
            &text,
            &file.display().to_string(),
        )
        .await
    });
    let etag = etag.map_err(anyhow::Error::msg)?;
    println!(
        "{}: valid, uploaded to s3://{bucket}/{key} (ETag {etag})",
        file.display()
    );
    Ok(())
}
