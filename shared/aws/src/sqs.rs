//! SQS: handing envelopes to the next stage, and `deliver` actions onto named queues.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use mailroom_core::model::{Envelope, Stage};
use mailroom_core::ports::{PortError, PortResult, QueueDelivery, StagePublisher};
use tokio::sync::Mutex;

use crate::errors::port_error;

pub struct SqsPublisher {
    pub client: Client,
    pub next_queue_url: Option<String>,
}

#[async_trait]
impl StagePublisher for SqsPublisher {
    async fn publish(&self, next: Stage, envelope: &Envelope) -> PortResult<()> {
        let url = self.next_queue_url.as_deref().ok_or_else(|| {
            PortError::Permanent(format!("no queue configured for the {next} stage"))
        })?;
        let body = serde_json::to_string(envelope).expect("envelopes serialise");
        self.client
            .send_message()
            .queue_url(url)
            .message_body(body)
            .send()
            .await
            .map_err(|e| {
                port_error(
                    &format!("sending message {} to the {next} queue", envelope.id),
                    &e,
                    &[],
                )
            })?;
        Ok(())
    }
}

/// Delivers to `<prefix><name>` queues, looking each URL up once.
pub struct SqsDelivery {
    pub client: Client,
    pub prefix: String,
    urls: Mutex<HashMap<String, String>>,
}

impl SqsDelivery {
    pub fn new(client: Client, prefix: String) -> SqsDelivery {
        SqsDelivery {
            client,
            prefix,
            urls: Mutex::new(HashMap::new()),
        }
    }

    async fn url(&self, queue: &str) -> PortResult<String> {
        if let Some(u) = self.urls.lock().await.get(queue) {
            return Ok(u.clone());
        }
        let name = format!("{}{queue}", self.prefix);
        let out = self
            .client
            .get_queue_url()
            .queue_name(&name)
            .send()
            .await
            .map_err(|e| port_error(&format!("looking up delivery queue {name}"), &e, &[]))?;
        let url = out
            .queue_url
            .ok_or_else(|| PortError::Retryable(format!("SQS returned no URL for queue {name}")))?;
        self.urls
            .lock()
            .await
            .insert(queue.to_string(), url.clone());
        Ok(url)
    }
}

#[async_trait]
impl QueueDelivery for SqsDelivery {
    async fn deliver(&self, queue: &str, body: &str) -> PortResult<()> {
        let url = self.url(queue).await?;
        self.client
            .send_message()
            .queue_url(url)
            .message_body(body)
            .send()
            .await
            .map_err(|e| {
                port_error(
                    &format!("delivering to queue {}{queue}", self.prefix),
                    &e,
                    &[],
                )
            })?;
        Ok(())
    }
}
