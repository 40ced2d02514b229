//! SESv2: sending forwards and auto-replies as raw MIME.

use std::io::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sesv2::Client;
use aws_sdk_sesv2::config::interceptors::BeforeTransmitInterceptorContextMut;
use aws_sdk_sesv2::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_sesv2::error::{BoxError, ProvideErrorMetadata, SdkError};
use aws_sdk_sesv2::operation::send_email::SendEmailError;
use aws_sdk_sesv2::primitives::Blob;
use aws_sdk_sesv2::types::{Destination, EmailContent, RawMessage};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use base64::write::EncoderWriter;
use mailroom_core::ports::{MailBytes, MailSender, OutgoingMail, PortError, PortResult};

type HttpResponse = aws_sdk_sesv2::config::http::HttpResponse;

use crate::errors::{describe, is_throttling, port_error};

/// Stands in for the message in the serialised request until [`RawBody`] writes it.
const MARKER: &[u8] = b"mailroom: the raw message goes here";

/// Sends through SESv2. The client is built without the SDK's automatic retries: a send
/// that failed after the request went out may have been sent, and only the pipeline knows
/// whether such a send may be repeated (see `pipeline::effects`). Throttling, which means
/// nothing was sent, is retried here.
pub struct SesSender {
    pub client: Client,
}

/// Attempts at a throttled send, and the pause before each retry.
const THROTTLE_BACKOFF: [Duration; 2] = [Duration::from_millis(100), Duration::from_millis(400)];

#[async_trait]
impl MailSender for SesSender {
    async fn send(&self, mail: OutgoingMail) -> PortResult<String> {
        let what = format!("sending mail from {} to {}", mail.from, mail.to.join(" "));
        let mut pauses = THROTTLE_BACKOFF.iter();
        loop {
            match self.send_once(&mail).await {
                Ok(id) => return Ok(id),
                Err(e) => {
                    let throttled = matches!(&e, SdkError::ServiceError(se)
                        if se.err().code().is_some_and(is_throttling));
                    match pauses.next() {
                        Some(pause) if throttled => tokio::time::sleep(*pause).await,
                        _ => return Err(classify(&what, &e)),
                    }
                }
            }
        }
    }
}

impl SesSender {
    async fn send_once(
        &self,
        mail: &OutgoingMail,
    ) -> Result<String, SdkError<SendEmailError, HttpResponse>> {
        let raw = RawMessage::builder()
            .data(Blob::new(MARKER))
            .build()
            .map_err(SdkError::construction_failure)?;
        let out = self
            .client
            .send_email()
            .from_email_address(&mail.from)
            .destination(
                Destination::builder()
                    .set_to_addresses(Some(mail.to.clone()))
                    .build(),
            )
            .content(EmailContent::builder().raw(raw).build())
            .customize()
            .interceptor(RawBody {
                raw: Mutex::new(Some(mail.raw.clone())),
            })
            .send()
            .await?;
        Ok(out.message_id.unwrap_or_default())
    }
}

/// A message SES refuses for its content will be refused again: it is quarantined. A
/// refused identity (an unverified sender, or a recipient while the account is in the SES
/// sandbox) is a configuration error: retried, so the message waits in the dead-letter
/// queue (whose alarm fires) until the identity is fixed, instead of being quarantined.
fn classify(what: &str, e: &SdkError<SendEmailError, HttpResponse>) -> PortError {
    if let SdkError::ServiceError(se) = e {
        let message = se.err().meta().message().unwrap_or_default();
        let identity = message.contains("not verified")
            || message.starts_with("Did not have authority to send from");
        let code = se.err().code().unwrap_or_default();
        if (code == "MessageRejected" && identity) || code == "MailFromDomainNotVerifiedException" {
            return PortError::Retryable(format!(
                "{what}: SES refused an identity, a configuration error (verify the sender's \
                 identity in SES, or request production access to leave the sandbox): {}",
                describe(e)
            ));
        }
    }
    port_error(what, e, &["MessageRejected", "BadRequestException"])
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
    raw: Mutex<Option<MailBytes>>,
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

/// The serialised SendEmail body with the base64 of `raw` where the marker's is, encoded
/// chunk by chunk (a forward's rewritten header section, then the shared body).
fn splice_message(body: Option<&[u8]>, raw: MailBytes) -> Result<Vec<u8>, BoxError> {
    let body = body.ok_or("the SendEmail request body is not in memory")?;
    let marker = STANDARD.encode(MARKER);
    let at = body
        .windows(marker.len())
        .position(|w| w == marker.as_bytes())
        .ok_or("the SendEmail request body has no message marker")?;
    let encoded = base64::encoded_len(raw.len(), true).ok_or("the message is too large")?;
    let mut out = Vec::with_capacity(body.len() - marker.len() + encoded);
    out.extend_from_slice(&body[..at]);
    {
        let mut encoder = EncoderWriter::new(&mut out, &STANDARD);
        for chunk in raw.chunks() {
            encoder.write_all(chunk)?;
        }
        encoder.finish()?;
    }
    drop(raw);
    out.extend_from_slice(&body[at + marker.len()..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn the_message_replaces_the_marker() {
        let marker = STANDARD.encode(MARKER);
        let body = format!(
            r#"{{"Content":{{"Raw":{{"Data":"{marker}"}}}},"FromEmailAddress":"a@example.com"}}"#
        );
        // Chunk lengths that are not multiples of 3, as a rewritten header section's are.
        let raw = MailBytes::from_chunks(
            [
                &b"From: a@example.com\r\n"[..],
                b"\r\nbody \xff",
                b"\x00",
                b"!!",
            ]
            .map(Bytes::from_static),
        );
        let out = splice_message(Some(body.as_bytes()), raw.clone()).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let data = json["Content"]["Raw"]["Data"].as_str().unwrap();
        assert_eq!(STANDARD.decode(data).unwrap(), raw.to_vec());
        assert_eq!(json["FromEmailAddress"], "a@example.com");
        assert_eq!(out.capacity(), out.len(), "the body was sized up front");
        assert!(splice_message(Some(b"{}"), raw).is_err());
    }
}
