//! One function's process: settings, clients and ports built once per cold start, and the
//! engine rebuilt only when the config or its models change.

use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use mailroom_core::model::Stage;
use mailroom_core::pipeline::{Engine, Ports};
use mailroom_core::ports::{Assistant, MailSender};
#[cfg(not(feature = "send"))]
use mailroom_core::ports::{PortError, PortResult};

use crate::config_source::{ConfigLocation, ConfigSource};
use crate::dynamo::DynamoState;
use crate::metrics::Metrics;
use crate::s3::S3Mail;
use crate::settings::Settings;
use crate::sqs::{SqsDelivery, SqsPublisher};
use crate::tls::Roots;

pub struct App {
    pub settings: Settings,
    pub ports: Ports,
    pub metrics: Metrics,
    config: ConfigSource,
}

/// The SDK config from the environment, its HTTPS client trusting `roots`.
/// `AWS_ENDPOINT_URL` (honoured by the SDK) points every client at an emulator.
pub async fn sdk_config(roots: Roots) -> SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(crate::tls::http_client(roots))
        .load()
        .await
}

/// The functions' SDK config: Amazon's embedded roots unless `MAILROOM_TLS_ROOTS` says
/// otherwise (see [`crate::tls`]).
pub async fn function_sdk_config() -> Result<SdkConfig, String> {
    Ok(sdk_config(Roots::from_env(Roots::Amazon)?).await)
}

/// The CLI's SDK config, on an operator's machine: the system's store unless
/// `MAILROOM_TLS_ROOTS` says otherwise.
pub async fn operator_sdk_config() -> Result<SdkConfig, String> {
    Ok(sdk_config(Roots::from_env(Roots::Native)?).await)
}

/// An S3 client; path-style addressing when an endpoint is set, as emulators need.
pub fn s3_client(sdk: &SdkConfig) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::from(sdk)
        .force_path_style(sdk.endpoint_url().is_some())
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// The SESv2 client, without the SDK's automatic retries (see [`crate::ses::SesSender`]).
#[cfg(feature = "send")]
pub fn ses_client(sdk: &SdkConfig) -> aws_sdk_sesv2::Client {
    let conf = aws_sdk_sesv2::config::Builder::from(sdk)
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .build();
    aws_sdk_sesv2::Client::from_conf(conf)
}

/// The ports on a stack's bucket, table and queues: `next_queue_url` is the queue envelopes
/// are published to, `deliver_prefix` names the delivery queues. State items expire after
/// `retention`.
pub fn ports(
    sdk: &SdkConfig,
    bucket: &str,
    table: &str,
    retention: Duration,
    next_queue_url: Option<String>,
    deliver_prefix: &str,
) -> Ports {
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let mail = Arc::new(S3Mail {
        client: s3_client(sdk),
        bucket: bucket.to_string(),
    });
    let state = Arc::new(DynamoState::new(
        aws_sdk_dynamodb::Client::new(sdk),
        table,
        retention,
    ));
    Ports {
        raw: mail.clone(),
        objects: mail.clone(),
        feedback: mail,
        state: state.clone(),
        audit: state.clone(),
        allow_list: state.clone(),
        index: state,
        publisher: Arc::new(SqsPublisher {
            client: sqs.clone(),
            next_queue_url,
        }),
        queues: Arc::new(SqsDelivery::new(sqs, deliver_prefix.to_string())),
        sender: sender(sdk),
        assistant: assistant(sdk),
    }
}

/// SESv2, in a build with the `send` feature (route, respond, digest and the CLI).
#[cfg(feature = "send")]
fn sender(sdk: &SdkConfig) -> Arc<dyn MailSender> {
    Arc::new(crate::ses::SesSender {
        client: ses_client(sdk),
    })
}

/// Without the `send` feature the function carries no SESv2 client: [`check_build`] keeps
/// a stage that sends from starting on such a build, so a send here is never reached.
#[cfg(not(feature = "send"))]
fn sender(_sdk: &SdkConfig) -> Arc<dyn MailSender> {
    Arc::new(NotLinked(WITHOUT_SES))
}

/// Bedrock, in a build with the `assist` feature (classify, links and the CLI).
#[cfg(feature = "assist")]
fn assistant(sdk: &SdkConfig) -> Arc<dyn Assistant> {
    Arc::new(crate::assist::BedrockAssistant::new(sdk))
}

#[cfg(not(feature = "assist"))]
fn assistant(_sdk: &SdkConfig) -> Arc<dyn Assistant> {
    Arc::new(mailroom_core::assist::NoAssistant(WITHOUT_BEDROCK))
}

/// What a build without the `send` feature lacks, in its errors.
pub(crate) const WITHOUT_SES: &str =
    "this function is built without an SESv2 client (mailroom-aws feature `send`)";
const WITHOUT_BEDROCK: &str =
    "this function is built without a Bedrock client (mailroom-aws feature `assist`)";

/// The port a build leaves out: every call fails, saying which feature would carry it.
#[cfg(not(feature = "send"))]
struct NotLinked(&'static str);

#[cfg(not(feature = "send"))]
#[async_trait::async_trait]
impl MailSender for NotLinked {
    async fn send(&self, _mail: mailroom_core::ports::OutgoingMail) -> PortResult<String> {
        Err(PortError::Permanent(self.0.into()))
    }
}

/// Whether this build carries the clients `stage` calls: each function crate turns on only
/// its own stage's features, so a binary started as another stage stops at once rather
/// than failing on its first message.
pub fn check_build(stage: Stage) -> Result<(), String> {
    let sends = matches!(stage, Stage::Route | Stage::Respond);
    if sends && !cfg!(feature = "send") {
        return Err(format!("the {stage} stage sends mail, and {WITHOUT_SES}"));
    }
    if stage == Stage::Classify && !cfg!(feature = "assist") {
        return Err(format!(
            "the classify stage may call the [assist] model, and {WITHOUT_BEDROCK}"
        ));
    }
    Ok(())
}

impl App {
    pub async fn new(settings: Settings, sdk: &SdkConfig) -> Result<App, String> {
        App::with_metrics(settings, sdk, Metrics::stdout()).await
    }

    /// The same, with its metrics written where `metrics` says (tests keep them in memory).
    pub async fn with_metrics(
        settings: Settings,
        sdk: &SdkConfig,
        metrics: Metrics,
    ) -> Result<App, String> {
        let s3 = s3_client(sdk);
        let ports = ports(
            sdk,
            &settings.bucket,
            &settings.table,
            Duration::from_secs(settings.retention_days * 86_400),
            settings.next_queue_url.clone(),
            &settings.deliver_queue_prefix,
        );

        let location = ConfigLocation {
            bucket: settings.bucket.clone(),
            key: settings.config_key.clone(),
            from_address: settings.from_address.clone(),
            models: Some(settings.stage),
            effect_lease: settings.effect_lease,
        };
        let config = ConfigSource::load(
            s3,
            location,
            ports.clone(),
            Duration::from_secs(settings.config_refresh_seconds),
            metrics.clone(),
        )
        .await?;
        Ok(App {
            settings,
            ports,
            metrics,
            config,
        })
    }

    pub fn stage(&self) -> Stage {
        self.settings.stage
    }

    /// The engine for the current config and models.
    pub async fn engine(&self) -> Arc<Engine> {
        self.config.engine().await
    }
}
