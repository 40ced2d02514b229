//! SESv2: sending forwards and auto-replies as raw MIME.

use async_trait::async_trait;
use aws_sdk_sesv2::Client;
use aws_sdk_sesv2::primitives::Blob;
use aws_sdk_sesv2::types::{Destination, EmailContent, RawMessage};
use mailroom_core::ports::{MailSender, OutgoingMail, PortError, PortResult};

use crate::errors::port_error;

pub struct SesSender {
    pub client: Client,
}

#[async_trait]
impl MailSender for SesSender {
    async fn send(&self, mail: OutgoingMail) -> PortResult<String> {
        let what = format!("sending mail from {} to {}", mail.from, mail.to.join(" "));
        let raw = RawMessage::builder()
            .data(Blob::new(mail.raw))
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
