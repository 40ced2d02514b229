//! SESv2: sending forwards and auto-replies as raw MIME.

use std::sync::Mutex;

use async_trait::async_trait;
use aws_sdk_sesv2::Client;
use aws_sdk_sesv2::config::interceptors::BeforeTransmitInterceptorContextMut;
use aws_sdk_sesv2::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_sesv2::error::BoxError;
use aws_sdk_sesv2::primitives::Blob;
use aws_sdk_sesv2::types::{Destination, EmailContent, RawMessage};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use mailroom_core::ports::{MailSender, OutgoingMail, PortError, PortResult};

use crate::errors::port_error;

/// Stands in for the message in the serialised request until [`RawBody`] writes it.
const MARKER: &[u8] = b"mailroom: the raw message goes here";

pub struct SesSender {
    pub client: Client,
}

#[async_trait]
impl MailSender for SesSender {
    async fn send(&self, mail: OutgoingMail) -> PortResult<String> {
        let what = format!("sending mail from {} to {}", mail.from, mail.to.join(" "));
        let raw = RawMessage::builder()
            .data(Blob::new(MARKER))
            .build()
            .map_err(|e| PortError::Permanent(format!("{what}: {e}")))?;
        let out = self
            .client
            .send_email()
            .from_email_address(&mail.from)
            .destination(
                Destination::builder()
                    .set_to_addresses(Some(mail.to))
                    .build(),
            )
            .content(EmailContent::builder().raw(raw).build())
            .customize()
            .interceptor(RawBody {
                raw: Mutex::new(Some(mail.raw)),
            })
            .send()
            .await
            // A message SES refuses will be refused again: quarantine it instead of retrying.
            .map_err(|e| {
                port_error(
                    &what,
                    &e,
                    &[
                        "MessageRejected",
                        "BadRequestException",
                        "MailFromDomainNotVerifiedException",
                    ],
                )
            })?;
        Ok(out.message_id.unwrap_or_default())
    }
}

/// Writes the raw message into the SendEmail request body itself. The SDK would base64 it
/// into a temporary string and then copy that into the JSON body: for a 40 MB forward, the
/// message plus two 53 MB copies at once, more than a 128 MB Lambda has. Instead the request
/// is serialised with [`MARKER`] as the message; before the retry loop (whose checkpoint
/// then shares this body between attempts) the marker is replaced by the message, encoded
/// straight into a body buffer of the final size, and this send's share of the message is
/// released: at most the message and one encoding are held.
#[derive(Debug)]
struct RawBody {
    raw: Mutex<Option<Bytes>>,
}

impl Intercept for RawBody {
    fn name(&self) -> &'static str {
        "mailroom::RawBody"
    }

    fn modify_before_retry_loop(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let raw = self
            .raw
            .lock()
            .map_err(|_| "the raw message's lock is poisoned")?
            .take()
            .ok_or("the raw message was already written into a request")?;
        let body = splice_message(context.request().body().bytes(), raw)?;
        let length = body.len().to_string();
        let request = context.request_mut();
        *request.body_mut() = body.into();
        request.headers_mut().insert("Content-Length", length);
        Ok(())
    }
}

/// The serialised SendEmail body with the base64 of `raw` where the marker's is.
fn splice_message(body: Option<&[u8]>, raw: Bytes) -> Result<Vec<u8>, BoxError> {
    let body = body.ok_or("the SendEmail request body is not in memory")?;
    let marker = STANDARD.encode(MARKER);
    let at = body
        .windows(marker.len())
        .position(|w| w == marker.as_bytes())
        .ok_or("the SendEmail request body has no message marker")?;
    let encoded = base64::encoded_len(raw.len(), true).ok_or("the message is too large")?;
    let mut out = Vec::with_capacity(body.len() - marker.len() + encoded);
    out.extend_from_slice(&body[..at]);
    let start = out.len();
    out.resize(start + encoded, 0);
    STANDARD.encode_slice(&raw, &mut out[start..])?;
    drop(raw);
    out.extend_from_slice(&body[at + marker.len()..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_replaces_the_marker() {
        let marker = STANDARD.encode(MARKER);
        let body = format!(
            r#"{{"Content":{{"Raw":{{"Data":"{marker}"}}}},"FromEmailAddress":"a@example.com"}}"#
        );
        let raw = Bytes::from_static(b"From: a@example.com\r\n\r\nbody \xff\x00");
        let out = splice_message(Some(body.as_bytes()), raw.clone()).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let data = json["Content"]["Raw"]["Data"].as_str().unwrap();
        assert_eq!(STANDARD.decode(data).unwrap(), raw);
        assert_eq!(json["FromEmailAddress"], "a@example.com");
        assert_eq!(out.capacity(), out.len(), "the body was sized up front");
        assert!(splice_message(Some(b"{}"), raw).is_err());
    }
}
