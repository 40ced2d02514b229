//! The operator's view of a deployed stack: the core's operator functions over the stack's
//! bucket, table and queues, called with the operator's own credentials (the template's
//! `OperatorPolicy` says what they need).

use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use mailroom_core::Config;
use mailroom_core::classify::Classifier;
use mailroom_core::filter::Filter;
use mailroom_core::model::Stage;
use mailroom_core::operate::{Operator, ReleaseVia};
use mailroom_core::pipeline::Engine;

use crate::app::s3_client;
use crate::config_source::{ConfigLocation, build};

/// The names of a stack's resources. The template derives every one from the stack's name
/// (and the account, for the bucket), so a stack name is enough to find them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackNames {
    pub bucket: String,
    pub table: String,
    /// `<stack>-` before the stage queues' names; unknown when only bucket and table were
    /// given.
    pub queue_prefix: Option<String>,
    /// Named delivery queues are `<deliver_prefix><name>`.
    pub deliver_prefix: String,
    pub config_key: String,
}

impl StackNames {
    pub fn of_stack(stack: &str, account: &str) -> StackNames {
        StackNames {
            bucket: format!("{stack}-{account}-mail"),
            table: format!("{stack}-state"),
            queue_prefix: Some(format!("{stack}-")),
            deliver_prefix: format!("{stack}-deliver-"),
            config_key: "config/mailroom.toml".into(),
        }
    }

    /// The queue a stage reads (`dlq` false) or its dead-letter queue.
    pub fn queue(&self, stage: Stage, dlq: bool) -> Option<String> {
        let prefix = self.queue_prefix.as_ref()?;
        let name = match stage {
            Stage::Filter => "inbound",
            Stage::Classify => "classify",
            Stage::Route => "route",
            Stage::Respond => "respond",
        };
        Some(format!("{prefix}{name}{}", if dlq { "-dlq" } else { "" }))
    }
}

/// A config given on the operator's machine (with its models), instead of the stack's.
pub type LocalConfig = (Config, Filter, Classifier);

/// The operator functions on a stack: with the config the functions read from the bucket
/// (and every stage's models), or with `local` when the operator gives one.
pub async fn connect(
    sdk: &SdkConfig,
    names: &StackNames,
    local: Option<LocalConfig>,
) -> Result<Operator, String> {
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let route_queue_url = match names.queue(Stage::Route, false) {
        Some(name) => Some(
            sqs.get_queue_url()
                .queue_name(&name)
                .send()
                .await
                .map_err(|e| {
                    format!(
                        "looking up the route queue {name}: {}",
                        aws_sdk_sqs::error::DisplayErrorContext(e)
                    )
                })?
                .queue_url
                .ok_or_else(|| format!("SQS gave no URL for {name}"))?,
        ),
        None => None,
    };
    let via = match &route_queue_url {
        Some(_) => ReleaseVia::Queue,
        None => ReleaseVia::Unavailable(
            "releasing on a stack hands the message to its route queue: pass --stack NAME".into(),
        ),
    };
    // A release goes to the route stage's queue: the functions send, with their own
    // identity and permissions.
    let ports = crate::app::ports(
        sdk,
        &names.bucket,
        &names.table,
        Duration::from_secs(crate::settings::DEFAULT_RETENTION_DAYS * 86_400),
        route_queue_url,
        &names.deliver_prefix,
    );
    let store = format!("table {} and bucket {}", names.table, names.bucket);
    let engine = match local {
        Some((config, filter, classifier)) => {
            Engine::new(Arc::new(config), filter, classifier, ports)
        }
        None => {
            let location = ConfigLocation {
                bucket: names.bucket.clone(),
                key: names.config_key.clone(),
                from_address: None,
                models: None,
                effect_lease: mailroom_core::pipeline::EFFECT_LEASE,
            };
            build(&s3_client(sdk), &location, &ports, None)
                .await
                .map_err(|e| format!("loading the stack's config: {e}"))?
                .0
        }
    };
    Ok(Operator::new(Arc::new(engine), store).with_release_via(via))
}
