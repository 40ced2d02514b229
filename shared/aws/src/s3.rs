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
        // Straight into one buffer of the announced size: collecting the chunks and then
        // flattening them would hold a large message twice.
        let mut raw = Vec::with_capacity(out.content_length.unwrap_or(0).max(0) as usize);
        let mut body = out.body;
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| PortError::Retryable(format!("{what}: {e}")))?
        {
            raw.extend_from_slice(&chunk);
        }
        Ok(raw)
    }
}

#[async_trait]
impl ObjectStore for S3Mail {
    async fn put_object(&self, key: &str, bytes: Vec<u8>) -> PortResult<()> {
        let what = format!("writing s3://{}/{key}", self.bucket);
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("message/rfc822")
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| port_error(&what, &e, &[]))?;
        Ok(())
    }

    /// A server-side copy: a 40 MB message is quarantined or stored without passing
    /// through the function's memory.
    async fn copy_raw(&self, raw: &RawRef, key: &str, _bytes: &[u8]) -> PortResult<()> {
        let what = format!(
            "copying s3://{}/{} to s3://{}/{key}",
            raw.bucket, raw.key, self.bucket
        );
        self.client
            .copy_object()
            .bucket(&self.bucket)
            .key(key)
            .copy_source(format!("{}/{}", raw.bucket, encode_key(&raw.key)))
            .send()
            .await
            .map_err(|e| port_error(&what, &e, &["NoSuchKey"]))?;
        Ok(())
    }

    async fn delete_object(&self, key: &str) -> PortResult<()> {
        self.delete(key).await
    }

    async fn get_object(&self, key: &str) -> PortResult<Vec<u8>> {
        self.get_raw(&self.object_ref(key)).await
    }

    fn object_ref(&self, key: &str) -> RawRef {
        RawRef {
            bucket: self.bucket.clone(),
            key: key.into(),
        }
    }
}

impl S3Mail {
    /// Deletes an object's current version (the bucket keeps the old one as a noncurrent
    /// version until its lifecycle rule removes it).
    async fn delete(&self, key: &str) -> PortResult<()> {
        let what = format!("deleting s3://{}/{key}", self.bucket);
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| port_error(&what, &e, &[]))?;
        Ok(())
    }
}

/// URL-encodes a key for `x-amz-copy-source`, keeping `/`.
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn copy_source_keys_are_encoded() {
        assert_eq!(super::encode_key("raw/a b+c"), "raw/a%20b%2Bc");
    }
}
