//! The `[assist]` model on a stack: Amazon Bedrock's Converse API, called by the classify
//! stage when the config asks for it (the template allows `bedrock:InvokeModel` on the
//! `AssistModelId` model only). A throttle is retryable (the stage goes on without the
//! answer, counted as `throttled`); every other failure is an error, likewise.

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_bedrockruntime::error::ProvideErrorMetadata;
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ConversationRole, ConverseOutput, InferenceConfiguration, Message,
    SystemContentBlock,
};
use mailroom_core::ports::{AssistRequest, Assistant, PortError, PortResult};

use crate::errors::{describe, is_throttling};

pub struct BedrockAssistant {
    client: aws_sdk_bedrockruntime::Client,
}

impl BedrockAssistant {
    pub fn new(sdk: &SdkConfig) -> BedrockAssistant {
        // No SDK retries: a throttled call falls back at once rather than hold the batch.
        let conf = aws_sdk_bedrockruntime::config::Builder::from(sdk)
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .build();
        BedrockAssistant {
            client: aws_sdk_bedrockruntime::Client::from_conf(conf),
        }
    }
}

#[async_trait]
impl Assistant for BedrockAssistant {
    async fn complete(&self, r: &AssistRequest) -> PortResult<String> {
        let what = format!("Bedrock Converse with {}", r.model);
        let message = Message::builder()
            .role(ConversationRole::User)
            .content(ContentBlock::Text(r.user.clone()))
            .build()
            .map_err(|e| PortError::Permanent(format!("{what}: {e}")))?;
        let out = self
            .client
            .converse()
            .model_id(&r.model)
            .system(SystemContentBlock::Text(r.system.clone()))
            .messages(message)
            .inference_config(
                InferenceConfiguration::builder()
                    .max_tokens(r.max_tokens as i32)
                    .temperature(0.0)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| {
                let detail = format!("{what}: {}", describe(&e));
                match e.code() {
                    Some(code) if is_throttling(code) => PortError::Retryable(detail),
                    _ => PortError::Permanent(detail),
                }
            })?;
        let text: String = match out.output {
            Some(ConverseOutput::Message(m)) => m
                .content
                .into_iter()
                .filter_map(|c| match c {
                    ContentBlock::Text(t) => Some(t),
                    _ => None,
                })
                .collect(),
            _ => String::new(),
        };
        if text.is_empty() {
            return Err(PortError::Permanent(format!(
                "{what}: no text in the answer"
            )));
        }
        Ok(text)
    }
}
