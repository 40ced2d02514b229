//! mailroom's AWS adapters: the core's ports implemented with S3, SQS, DynamoDB, SESv2 and
//! CloudWatch, the config loader, and the SQS batch handler the four Lambda functions share.

pub mod app;
#[cfg(feature = "assist")]
pub mod assist;
pub mod config_source;
#[cfg(feature = "digest")]
pub mod digest;
pub mod dlq;
pub mod dynamo;
pub mod erase;
mod errors;
pub mod events;
pub mod handler;
pub mod index;
pub mod metrics;
pub mod operator;
pub mod retrain;
pub mod s3;
#[cfg(feature = "send")]
pub mod ses;
pub mod settings;
pub mod sqs;
pub mod tls;

use std::sync::Arc;

use mailroom_core::model::Stage;

/// JSON logs for CloudWatch; every line inside a record carries its span fields
/// (stage, SQS message id, and the mail's message id).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_current_span(true)
        .with_span_list(true)
        .with_target(false)
        .init();
}

/// `text` as a log line may carry it: every address in it as `addr:` and the start of its
/// keyed hash with the table's subject key (what `mailroom erase` prints of its record),
/// so that no log line holds an address.
pub async fn hidden(state: &dyn mailroom_core::ports::StateStore, text: &str) -> String {
    if !text.contains('@') {
        return text.to_string();
    }
    let key = mailroom_core::operate::log_key(state).await;
    mailroom_core::operate::hide_addresses(key.as_deref(), text)
}

/// The whole of a function's `main`: read settings, build clients once, serve SQS batches.
pub async fn run(stage: Stage) -> Result<(), lambda_runtime::Error> {
    let started = std::time::Instant::now();
    init_logging();
    app::check_build(stage)?;
    // Display, not Debug: the log line should read "environment variable X is not set".
    let settings = settings::Settings::from_env(stage).map_err(|e| e.to_string())?;
    let sdk = app::function_sdk_config().await?;
    let sdk_ready = started.elapsed();
    let app = Arc::new(app::App::new(settings, &sdk).await?);
    // Where a cold start's init time went, once per process (`infra/bench` reads it).
    let ms = |d: std::time::Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
    tracing::info!(
        settings_and_sdk_ms = ms(sdk_ready),
        config_and_models_ms = ms(started.elapsed() - sdk_ready),
        "ready"
    );
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: lambda_runtime::LambdaEvent<aws_lambda_events::sqs::SqsEvent>| {
            let app = app.clone();
            let deadline = deadline_instant(event.context.deadline);
            async move {
                Ok::<_, lambda_runtime::Error>(
                    handler::handle_batch(app, event.payload, Some(deadline)).await,
                )
            }
        },
    ))
    .await
}

/// The invocation deadline (milliseconds since the epoch, as Lambda gives it) as an
/// instant on this process's clock.
fn deadline_instant(deadline_ms: u64) -> std::time::Instant {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    std::time::Instant::now() + std::time::Duration::from_millis(deadline_ms.saturating_sub(now_ms))
}
