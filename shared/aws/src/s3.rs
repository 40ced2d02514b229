//! S3: the raw mail SES stored, and the objects the pipeline writes (quarantine, store).

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use mailroom_core::model::RawRef;
use mailroom_core::ports::{ObjectStore, PortError, PortResult, RawMailSource};

use crate::errors::port_error;

pub struct S3Mail {
    pub client: Client,
    /// The bucket objects are written to (the mail bucket).
    pub bucket: String,
}

#[async_trait]
impl RawMailSource for S3Mail {
    async fn get_raw(&self, raw: &RawRef) -> PortResult<Vec<u8>> {
        let what = format!("reading s3://{}/{}", raw.bucket, raw.key);
        let out = self
            .client
            .get_object()
            .bucket(&raw.bucket)
            .key(&raw.key)
            .send()
            .await
            .map_err(|e| port_error(&what, &e, &["NoSuchKey"]))?;
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| PortError::Retryable(format!("{what}: {e}")))?;
        Ok(body.to_vec())
    }
}

#[async_trait]
impl ObjectStore for S3Mail {
    async fn put_object(&self, key: &str, bytes: &[u8]) -> PortResult<()> {
        let what = format!("writing s3://{}/{key}", self.bucket);
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("message/rfc822")
            .body(ByteStream::from(bytes.to_vec()))
            .send()
            .await
            .map_err(|e| port_error(&what, &e, &[]))?;
        Ok(())
    }
}
