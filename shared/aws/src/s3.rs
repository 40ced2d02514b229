//! S3: the raw mail SES stored, and the objects the pipeline writes (quarantine, store).

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use mailroom_core::model::RawRef;
use mailroom_core::operate::Correction;
use mailroom_core::ports::{FeedbackLog, ObjectStore, PortError, PortResult, RawMailSource};

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

/// Where corrections are kept in the bucket: one small JSON object per message, naming
/// the raw mail's key (never a copy of the mail).
pub const FEEDBACK_PREFIX: &str = "feedback/";

#[async_trait]
impl FeedbackLog for S3Mail {
    async fn correct(&self, correction: &Correction) -> PortResult<()> {
        if correction.id.is_empty() || correction.id.contains(['/', '\\']) {
            return Err(PortError::Permanent(format!(
                "message id {:?} cannot name a correction object",
                correction.id
            )));
        }
        let key = format!("{FEEDBACK_PREFIX}{}.json", correction.id);
        let what = format!("writing s3://{}/{key}", self.bucket);
        let body = serde_json::to_vec(correction).expect("corrections serialise");
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .content_type("application/json")
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| port_error(&what, &e, &[]))?;
        Ok(())
    }

    async fn corrections(&self) -> PortResult<Vec<Correction>> {
        let what = format!("listing s3://{}/{FEEDBACK_PREFIX}", self.bucket);
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(FEEDBACK_PREFIX)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| port_error(&what, &e, &[]))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key())
                    .filter(|k| k.ends_with(".json"))
                    .map(str::to_string),
            );
        }
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let bytes = self.get_object(&key).await?;
            out.push(serde_json::from_slice::<Correction>(&bytes).map_err(|e| {
                PortError::Permanent(format!(
                    "s3://{}/{key} is not a correction: {e}",
                    self.bucket
                ))
            })?);
        }
        out.sort_by(|a, b| (a.at, &a.id).cmp(&(b.at, &b.id)));
        Ok(out)
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
