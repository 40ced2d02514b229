//! The AWS harness: the pipeline's real resources on an AWS emulator (moto server, started by
//! `infra/test.sh`), named and configured from `infra/resources.json` so the tests cannot
//! drift from the template, plus the parts of Lambda the tests stand in for:
//!
//! - [`Stack`]: one stack's bucket, table, queues with their dead-letter queues and redrive
//!   policies, a delivery queue, the inbound topic with the inbound queue subscribed (raw
//!   message delivery), the SES identity and the uploaded config. Every test makes its own,
//!   with a unique name.
//! - [`Stack::put_raw`] plays SES receiving a message: it stores the object under `raw/`
//!   and publishes the receipt notification to the inbound topic.
//! - [`Stack::pump`]: the SQS event source mapping, one batch: receive, build a genuine
//!   `SqsEvent`, call the shared handler, delete what succeeded, make failures visible again.
//! - [`RuntimeApi`] and [`FunctionProcess`]: the Lambda Runtime API over plain HTTP/1.1, to run
//!   the compiled function binaries as Lambda would.
//!
//! The emulator's address comes from `MAILROOM_TEST_ENDPOINT`; without it the tests skip,
//! unless `MAILROOM_REQUIRE_EMULATOR=1` (set by `infra/test.sh`) makes that a failure.
//! Every loop here is bounded in rounds and time.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use mail_parser::MessageParser;
use mailroom_aws::app::App;
use mailroom_aws::handler;
use mailroom_aws::settings::Settings;
use mailroom_core::model::Stage;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::repo_root;

pub const REGION: &str = "us-east-1";
/// `MAILROOM_RETENTION_DAYS` of the test stacks; not the default (30), so a test can tell
/// that the functions read it.
pub const RETENTION_DAYS: u64 = 14;
pub const SKIP: &str = "no AWS emulator (MAILROOM_TEST_ENDPOINT unset; run bash infra/test.sh)";

// ------------------------------------------------------------------ the emulator

/// The emulator's URL, from `MAILROOM_TEST_ENDPOINT`.
pub fn endpoint() -> Option<String> {
    std::env::var("MAILROOM_TEST_ENDPOINT")
        .ok()
        .map(|e| e.trim().trim_end_matches('/').to_string())
        .filter(|e| !e.is_empty())
}

/// Whether a missing emulator (or function binary) fails the test instead of skipping it.
pub fn emulator_required() -> bool {
    std::env::var("MAILROOM_REQUIRE_EMULATOR").is_ok_and(|v| v.trim() == "1")
}

/// The endpoint, or `None` after saying why the test is skipped. Panics instead when
/// `MAILROOM_REQUIRE_EMULATOR=1`.
pub fn endpoint_or_skip() -> Option<String> {
    let e = endpoint();
    if e.is_none() {
        assert!(
            !emulator_required(),
            "MAILROOM_REQUIRE_EMULATOR=1 but MAILROOM_TEST_ENDPOINT is unset (run bash infra/test.sh)"
        );
        mailroom_core::skip::skipped(SKIP);
    }
    e
}

/// An SDK config for the emulator with dummy credentials, built explicitly rather than
/// through the process environment (tests run on parallel threads). The access key id
/// names who calls: the proxy records it with every call, and the IAM check evaluates each
/// principal's calls against its policy.
pub async fn sdk_config(endpoint: &str, access_key_id: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        // The functions' HTTP client: the workspace builds the SDK without a default one.
        .http_client(mailroom_aws::tls::http_client(
            mailroom_aws::tls::Roots::Amazon,
        ))
        .endpoint_url(endpoint)
        .region(Region::new(REGION))
        // The SDK's three attempts, as deployed, without its second-long pauses: the fault
        // tests make them fail on purpose.
        .retry_config(
            aws_config::retry::RetryConfig::standard()
                .with_initial_backoff(Duration::from_millis(5))
                .with_max_backoff(Duration::from_millis(50)),
        )
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            access_key_id,
            "testing",
            None,
            None,
            "mailroom-tests",
        ))
        .load()
        .await
}

/// Who a stack's calls are evaluated as: a function's role, or the operator policy.
pub const OPERATOR: &str = "operator";

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------- infra/resources.json

/// `infra/resources.json`, the names and settings template.yaml is checked against.
#[derive(Debug, Deserialize)]
pub struct Resources {
    pub bucket: BucketSpec,
    pub topic: TopicSpec,
    pub table: TableSpec,
    pub queue_settings: QueueSettings,
    pub function_settings: FunctionSettings,
    pub queues: Vec<QueueSpec>,
    pub deliver_queue_name_prefix: String,
    /// Setting key (`bucket`, `table`, ...) to environment variable name.
    pub env: BTreeMap<String, String>,
    pub functions: Vec<FunctionSpec>,
    /// The digest and links functions (no source queue).
    pub digest_functions: Vec<DigestFunctionSpec>,
    /// The scheduled retrain of the spam model.
    pub retrain_function: DigestFunctionSpec,
    pub metrics: MetricsSpec,
}

#[derive(Debug, Deserialize)]
pub struct DigestFunctionSpec {
    pub key: String,
    pub logical_id: String,
    pub name_suffix: String,
    pub env: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct BucketSpec {
    pub name_format: String,
    pub prefixes: BTreeMap<String, String>,
    pub config_key: String,
}

#[derive(Debug, Deserialize)]
pub struct TopicSpec {
    pub name_suffix: String,
    pub raw_message_delivery: bool,
}

#[derive(Debug, Deserialize)]
pub struct KeySpec {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Deserialize)]
pub struct TableSpec {
    pub name_suffix: String,
    pub partition_key: KeySpec,
    pub sort_key: KeySpec,
    pub ttl_attribute: String,
    pub indexes: Vec<IndexSpec>,
}

#[derive(Debug, Deserialize)]
pub struct IndexSpec {
    pub name: String,
    pub partition_key: String,
    pub sort_key: String,
}

#[derive(Debug, Deserialize)]
pub struct QueueSettings {
    pub max_receive_count: u32,
    pub visibility_timeout_seconds: u32,
    pub receive_wait_seconds: u32,
    pub message_retention_seconds: u32,
    pub dlq_retention_seconds: u32,
}

#[derive(Debug, Deserialize)]
pub struct FunctionSettings {
    pub timeout_seconds: u64,
}

#[derive(Debug, Deserialize)]
pub struct QueueSpec {
    pub key: String,
    pub logical_id: String,
    pub name_suffix: String,
    pub dlq_logical_id: String,
    pub dlq_name_suffix: String,
}

#[derive(Debug, Deserialize)]
pub struct FunctionSpec {
    pub key: String,
    pub logical_id: String,
    pub name_suffix: String,
    pub binary: String,
    pub source_queue: String,
    pub next_queue: Option<String>,
    pub env: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct MetricsSpec {
    pub namespace: String,
    pub config_rejected: String,
}

pub fn resources() -> &'static Resources {
    static R: OnceLock<Resources> = OnceLock::new();
    R.get_or_init(|| {
        let path = repo_root().join("infra/resources.json");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    })
}

impl Resources {
    pub fn function(&self, stage: Stage) -> &FunctionSpec {
        self.functions
            .iter()
            .find(|f| f.key == stage.as_str())
            .unwrap_or_else(|| panic!("infra/resources.json has no function {stage}"))
    }

    /// The environment variable of a setting key (`bucket`, `next_queue_url`, ...).
    pub fn env_name(&self, key: &str) -> &str {
        self.env
            .get(key)
            .unwrap_or_else(|| panic!("infra/resources.json env has no {key}"))
    }

    pub fn prefix(&self, key: &str) -> &str {
        self.bucket
            .prefixes
            .get(key)
            .unwrap_or_else(|| panic!("infra/resources.json has no prefix {key}"))
    }
}

/// The queue a stage's function reads.
pub fn source_queue(stage: Stage) -> &'static str {
    &resources().function(stage).source_queue
}

fn fixtures() -> PathBuf {
    repo_root().join("tests/fixtures/aws")
}

/// A file of `tests/fixtures/aws/`.
pub fn fixture(name: &str) -> Vec<u8> {
    let p = fixtures().join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The test config, `tests/fixtures/aws/mailroom.toml`.
pub fn config_text() -> String {
    String::from_utf8(fixture("mailroom.toml")).expect("the config is UTF-8")
}

/// The support rule's actions in [`every_effect_config`].
pub const EVERY_EFFECT: &str = r#"actions = [{ forward = ["desk@corp.example"] }, { deliver = "tickets" }, { store = "support/" }]"#;

/// The test config with a support rule that forwards to desk@, delivers to tickets and
/// stores, so that one support message (which also gets an auto-reply) exercises every
/// effect.
pub fn every_effect_config() -> String {
    let config = config_text();
    let changed = config.replace(r#"actions = [{ deliver = "tickets" }]"#, EVERY_EFFECT);
    assert_ne!(
        changed, config,
        "the test config changed shape; update this helper"
    );
    changed
}

// ------------------------------------------------------------------ randomness

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh pseudo-random number (splitmix64 over time, pid and a counter): unique names
/// for concurrent tests and shuffles, without a rand dependency.
pub fn random_u64() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut z = nanos
        ^ (u64::from(std::process::id()) << 32)
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Shuffles in place (Fisher-Yates).
pub fn shuffle<T>(items: &mut [T]) {
    for i in (1..items.len()).rev() {
        let j = (random_u64() % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

/// A message id shaped like SES's: 40 lower-case letters and digits.
pub fn ses_message_id() -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut id = String::with_capacity(40);
    while id.len() < 40 {
        let mut r = random_u64();
        for _ in 0..12 {
            id.push(ALPHABET[(r % 36) as usize] as char);
            r /= 36;
        }
    }
    id.truncate(40);
    id
}

// ------------------------------------------------------------------ the stack

/// One queue and its dead-letter queue.
#[derive(Debug, Clone)]
pub struct QueuePair {
    pub name: String,
    pub url: String,
    pub arn: String,
    pub dlq_url: String,
    pub dlq_arn: String,
}

/// A stack's resources on the emulator, with clients to inspect them.
pub struct Stack {
    pub name: String,
    /// The proxy every client of this stack goes through (see [`crate::proxy`]).
    pub endpoint: String,
    /// The emulator itself, for its own API (sent mail).
    pub moto: String,
    pub sdk: SdkConfig,
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub dynamo: aws_sdk_dynamodb::Client,
    pub sns: aws_sdk_sns::Client,
    pub account: String,
    /// The inbound topic SES publishes receipt notifications to.
    pub topic_arn: String,
    pub bucket: String,
    pub table: String,
    /// By resources.json key: inbound, classify, route, respond.
    pub queues: BTreeMap<String, QueuePair>,
    /// `<stack>-deliver-tickets`, the queue the test config's `deliver = "tickets"` uses.
    pub tickets_url: String,
    /// The verified From address, unique to the stack so its sends can be told apart.
    pub from_address: String,
    /// The template's `AssistModelId` (empty, as deployed by default).
    pub assist_model: String,
    /// The ARN of the stack's link key in Secrets Manager.
    pub link_key_arn: String,
    /// Sets `MAILROOM_CONFIG_REFRESH_SECONDS` for apps and functions built afterwards.
    pub config_refresh_seconds: Option<u64>,
    /// Sets `MAILROOM_EFFECT_LEASE_MS` for apps and functions built afterwards.
    pub effect_lease_ms: Option<u64>,
    /// How long a failed record waits before the event source mapping receives it again
    /// (SQS's visibility timeout, scaled down; none by default). Tests that shorten the
    /// effect lease keep it above the lease, as the template keeps the visibility timeout
    /// above the lease.
    pub redelivery_delay: Duration,
}

/// The EMF lines an app wrote.
pub type MetricLines = Arc<std::sync::Mutex<Vec<String>>>;

/// The four stages' apps, built once like four warm Lambda functions.
pub struct Pipeline {
    apps: Vec<(Stage, Arc<App>)>,
    metrics: Vec<MetricLines>,
}

impl Pipeline {
    /// Every EMF document the apps logged so far, parsed.
    pub fn metric_docs(&self) -> Vec<Value> {
        self.metrics
            .iter()
            .flat_map(|l| l.lock().expect("metrics lock").clone())
            .map(|l| serde_json::from_str(&l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    /// The sum of metric `name` over the documents whose dimensions equal `dims`.
    pub fn metric(&self, name: &str, dims: &[(&str, &str)]) -> f64 {
        self.metric_docs()
            .iter()
            .filter(|d| {
                let names = d["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                names.len() == dims.len()
                    && dims
                        .iter()
                        .all(|(k, v)| names.iter().any(|n| n == k) && d[*k] == *v)
            })
            .filter_map(|d| d[name].as_f64())
            .sum()
    }

    pub fn app(&self, stage: Stage) -> Arc<App> {
        self.apps
            .iter()
            .find(|(s, _)| *s == stage)
            .map(|(_, a)| a.clone())
            .expect("every stage has an app")
    }
}

/// What one [`Stack::pump`] did.
#[derive(Debug, Default)]
pub struct PumpReport {
    /// SQS message ids of the records handed to the handler.
    pub received: Vec<String>,
    /// The bodies of those records.
    pub bodies: Vec<String>,
    /// The handler's answer.
    pub response: SqsBatchResponse,
}

impl PumpReport {
    pub fn failed(&self) -> Vec<String> {
        self.response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.clone())
            .collect()
    }
}

/// A message received from a queue (not deleted).
#[derive(Debug, Clone)]
pub struct Received {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    pub md5_of_body: Option<String>,
    pub attributes: BTreeMap<String, String>,
}

impl Stack {
    /// Creates a stack named after the test, or returns `None` (skip) without an emulator.
    pub async fn create(label: &str) -> Option<Stack> {
        let moto = endpoint_or_skip()?;
        let endpoint = crate::proxy::proxy(&moto).endpoint.clone();
        let label: String = label
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(14)
            .collect();
        let name = format!("mr-{label}-{:08x}", random_u64() as u32);
        let sdk = sdk_config(&endpoint, &format!("{name}:harness")).await;
        let r = resources();
        let qs = &r.queue_settings;
        let sqs = aws_sdk_sqs::Client::new(&sdk);

        let mut queues = BTreeMap::new();
        for q in &r.queues {
            let dlq_name = format!("{name}{}", q.dlq_name_suffix);
            let dlq_url = create_queue(
                &sqs,
                &dlq_name,
                &[(
                    QueueAttributeName::MessageRetentionPeriod,
                    qs.dlq_retention_seconds.to_string(),
                )],
            )
            .await;
            let dlq_arn = queue_arn(&sqs, &dlq_url).await;
            let queue_name = format!("{name}{}", q.name_suffix);
            let redrive =
                json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": qs.max_receive_count })
                    .to_string();
            let url = create_queue(
                &sqs,
                &queue_name,
                &[
                    (
                        QueueAttributeName::VisibilityTimeout,
                        qs.visibility_timeout_seconds.to_string(),
                    ),
                    (
                        QueueAttributeName::ReceiveMessageWaitTimeSeconds,
                        qs.receive_wait_seconds.to_string(),
                    ),
                    (
                        QueueAttributeName::MessageRetentionPeriod,
                        qs.message_retention_seconds.to_string(),
                    ),
                    (QueueAttributeName::RedrivePolicy, redrive),
                ],
            )
            .await;
            let arn = queue_arn(&sqs, &url).await;
            queues.insert(
                q.key.clone(),
                QueuePair {
                    name: queue_name,
                    url,
                    arn,
                    dlq_url,
                    dlq_arn,
                },
            );
        }
        let tickets_url = create_queue(
            &sqs,
            &format!("{name}{}tickets", r.deliver_queue_name_prefix),
            &[],
        )
        .await;
        // arn:aws:sqs:<region>:<account>:<name>
        let account = queues["inbound"]
            .arn
            .split(':')
            .nth(4)
            .expect("queue ARNs name the account")
            .to_string();

        let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
        let t = &r.table;
        let table = format!("{name}{}", t.name_suffix);
        let attr = |k: &KeySpec| {
            AttributeDefinition::builder()
                .attribute_name(&k.name)
                .attribute_type(ScalarAttributeType::from(k.kind.as_str()))
                .build()
                .expect("attribute definition")
        };
        let key = |k: &KeySpec, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(&k.name)
                .key_type(kind)
                .build()
                .expect("key schema")
        };
        let string_key = |name: &str| KeySpec {
            name: name.to_string(),
            kind: "S".to_string(),
        };
        let mut create = dynamo
            .create_table()
            .table_name(&table)
            .attribute_definitions(attr(&t.partition_key))
            .attribute_definitions(attr(&t.sort_key))
            .key_schema(key(&t.partition_key, KeyType::Hash))
            .key_schema(key(&t.sort_key, KeyType::Range))
            .billing_mode(BillingMode::PayPerRequest);
        let mut defined: Vec<String> = Vec::new();
        for i in &t.indexes {
            for a in [&i.partition_key, &i.sort_key] {
                if !defined.contains(a) {
                    create = create.attribute_definitions(attr(&string_key(a)));
                    defined.push(a.clone());
                }
            }
            create = create.global_secondary_indexes(
                aws_sdk_dynamodb::types::GlobalSecondaryIndex::builder()
                    .index_name(&i.name)
                    .key_schema(key(&string_key(&i.partition_key), KeyType::Hash))
                    .key_schema(key(&string_key(&i.sort_key), KeyType::Range))
                    .projection(
                        aws_sdk_dynamodb::types::Projection::builder()
                            .projection_type(aws_sdk_dynamodb::types::ProjectionType::All)
                            .build(),
                    )
                    .build()
                    .expect("an index"),
            );
        }
        create.send().await.unwrap_or_else(|e| {
            panic!(
                "creating table {table}: {}",
                aws_sdk_dynamodb::error::DisplayErrorContext(&e)
            )
        });
        dynamo
            .update_time_to_live()
            .table_name(&table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(&t.ttl_attribute)
                    .enabled(true)
                    .build()
                    .expect("ttl"),
            )
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "enabling TTL on {table}: {}",
                    aws_sdk_dynamodb::error::DisplayErrorContext(&e)
                )
            });

        let s3 = mailroom_aws::app::s3_client(&sdk);
        let bucket = r
            .bucket
            .name_format
            .replace("{stack}", &name)
            .replace("{account}", &account);
        s3.create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "creating bucket {bucket}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                )
            });
        // Versioned, as the template's MailBucket is.
        s3.put_bucket_versioning()
            .bucket(&bucket)
            .versioning_configuration(
                aws_sdk_s3::types::VersioningConfiguration::builder()
                    .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                    .build(),
            )
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "versioning bucket {bucket}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                )
            });
        // The receipt rule's S3 action publishes to the inbound topic; the inbound queue is
        // subscribed to it as the template subscribes it.
        let sns = aws_sdk_sns::Client::new(&sdk);
        let topic_arn = sns
            .create_topic()
            .name(format!("{name}{}", r.topic.name_suffix))
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "creating the inbound topic: {}",
                    aws_sdk_sns::error::DisplayErrorContext(&e)
                )
            })
            .topic_arn
            .expect("a topic ARN");
        sns.subscribe()
            .topic_arn(&topic_arn)
            .protocol("sqs")
            .endpoint(&queues["inbound"].arn)
            .attributes(
                "RawMessageDelivery",
                r.topic.raw_message_delivery.to_string(),
            )
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "subscribing the inbound queue: {}",
                    aws_sdk_sns::error::DisplayErrorContext(&e)
                )
            });

        let from_address = format!("mailroom-{name}@example.com");
        let domain = from_address
            .rsplit('@')
            .next()
            .expect("an address")
            .to_string();
        aws_sdk_sesv2::Client::new(&sdk)
            .create_email_identity()
            .email_identity(&domain)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "creating SES identity {domain}: {}",
                    aws_sdk_sesv2::error::DisplayErrorContext(&e)
                )
            });

        // The stack's generated link key, as the template's LinkKeySecret makes it.
        let link_key_arn = aws_sdk_secretsmanager::Client::new(&sdk)
            .create_secret()
            .name(format!("{name}-link-key"))
            .secret_string(format!(
                "{:016x}{:016x}{:016x}{:016x}",
                random_u64(),
                random_u64(),
                random_u64(),
                random_u64()
            ))
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "creating the link key: {}",
                    aws_sdk_secretsmanager::error::DisplayErrorContext(&e)
                )
            })
            .arn
            .expect("a secret ARN");

        let stack = Stack {
            name,
            endpoint,
            moto,
            s3,
            sqs,
            dynamo,
            sns,
            sdk,
            account,
            topic_arn,
            bucket,
            table,
            queues,
            tickets_url,
            from_address,
            assist_model: String::new(),
            link_key_arn,
            config_refresh_seconds: None,
            effect_lease_ms: None,
            redelivery_delay: Duration::ZERO,
        };
        stack.upload_config(&config_text()).await;
        // The key of address hashes, as a stack in use has it: made by the first function
        // that needed it. With it in place every function only reads it, so the calls a
        // stage makes for a message are the same for the first message and the next.
        let state = mailroom_aws::dynamo::DynamoState::new(
            stack.dynamo.clone(),
            stack.table.clone(),
            Duration::from_secs(86_400),
        );
        mailroom_core::ports::StateStore::subject_key(&state)
            .await
            .expect("the subject key");
        Some(stack)
    }

    pub fn queue(&self, key: &str) -> &QueuePair {
        self.queues
            .get(key)
            .unwrap_or_else(|| panic!("no queue {key}"))
    }

    /// A function's environment, exactly the variables resources.json gives it (plus the
    /// config refresh interval when the test sets one).
    pub fn env(&self, stage: Stage) -> Vec<(String, String)> {
        let r = resources();
        let f = r.function(stage);
        let mut values: BTreeMap<&str, String> = BTreeMap::from([
            (r.env_name("bucket"), self.bucket.clone()),
            (r.env_name("table"), self.table.clone()),
            (r.env_name("config_key"), r.bucket.config_key.clone()),
            (r.env_name("from_address"), self.from_address.clone()),
            (
                r.env_name("deliver_queue_prefix"),
                format!("{}{}", self.name, r.deliver_queue_name_prefix),
            ),
            (r.env_name("retention_days"), RETENTION_DAYS.to_string()),
            (r.env_name("raw_retention_days"), RETENTION_DAYS.to_string()),
            (r.env_name("log"), "info".to_string()),
            (r.env_name("tls_roots"), "amazon".to_string()),
        ]);
        if let Some(next) = &f.next_queue {
            values.insert(r.env_name("next_queue_url"), self.queue(next).url.clone());
        }
        let mut env: Vec<(String, String)> = f
            .env
            .iter()
            .map(|name| {
                let v = values
                    .get(name.as_str())
                    .unwrap_or_else(|| panic!("the harness has no value for {name}"));
                (name.clone(), v.clone())
            })
            .collect();
        if let Some(s) = self.config_refresh_seconds {
            env.push((
                mailroom_aws::settings::CONFIG_REFRESH_SECONDS.to_string(),
                s.to_string(),
            ));
        }
        if let Some(ms) = self.effect_lease_ms {
            env.push((
                mailroom_aws::settings::EFFECT_LEASE_MS.to_string(),
                ms.to_string(),
            ));
        }
        env
    }

    /// The settings a function of this stack reads from [`Stack::env`].
    pub fn settings(&self, stage: Stage) -> Settings {
        let env: HashMap<String, String> = self.env(stage).into_iter().collect();
        Settings::from_lookup(stage, |k| env.get(k).cloned())
            .unwrap_or_else(|e| panic!("settings of {stage}: {e}"))
    }

    /// One stage's app, as a cold start builds it, calling as that function.
    pub async fn app(&self, stage: Stage) -> Arc<App> {
        self.app_with_metrics(stage).await.0
    }

    /// A stage's app whose EMF metric lines are kept in memory (the second value).
    pub async fn app_with_metrics(&self, stage: Stage) -> (Arc<App>, MetricLines) {
        let (metrics, lines) = mailroom_aws::metrics::Metrics::memory();
        let app = App::with_metrics(
            self.settings(stage),
            &self.sdk_as(stage.as_str()).await,
            metrics,
        )
        .await
        .unwrap_or_else(|e| panic!("starting the {stage} app: {e}"));
        (Arc::new(app), lines)
    }

    /// The retrain function as a cold start builds it from exactly the variables
    /// resources.json gives it, calling as that function, with its EMF lines in memory.
    pub async fn retrainer(&self) -> (mailroom_aws::retrain::Retrainer, MetricLines) {
        use mailroom_aws::retrain::{RETRAIN_FPR, RetrainSettings, TRAINING_PREFIX};
        let r = resources();
        let spec = &r.retrain_function;
        let mut values: HashMap<String, String> = self.env(Stage::Respond).into_iter().collect();
        values.insert(TRAINING_PREFIX.into(), r.prefix("training").to_string());
        values.insert(RETRAIN_FPR.into(), "0.02".into());
        let env = only_declared(&spec.env, &values);
        let settings = RetrainSettings::from_lookup(|k| env.get(k).cloned())
            .unwrap_or_else(|e| panic!("settings of retrain: {e}"));
        let (metrics, lines) = mailroom_aws::metrics::Metrics::memory();
        let sdk = self.sdk_as(&spec.key).await;
        (
            mailroom_aws::retrain::Retrainer::new(settings, &sdk, metrics),
            lines,
        )
    }

    /// The digest or links function as a cold start builds it from exactly the variables
    /// resources.json gives it, calling as that function, with its EMF lines kept in
    /// memory. Links point at `link_url`.
    pub async fn desk(
        &self,
        function: mailroom_aws::digest::Function,
        link_url: &str,
    ) -> (mailroom_aws::digest::Desk, MetricLines) {
        let env = self.desk_env(function, link_url);
        let settings =
            mailroom_aws::digest::DeskSettings::from_lookup(function, |k| env.get(k).cloned())
                .unwrap_or_else(|e| panic!("settings of {}: {e}", function.name()));
        let (metrics, lines) = mailroom_aws::metrics::Metrics::memory();
        let desk =
            mailroom_aws::digest::Desk::new(settings, &self.sdk_as(function.name()).await, metrics)
                .await
                .unwrap_or_else(|e| panic!("starting the {} function: {e}", function.name()));
        (desk, lines)
    }

    /// The digest or links function's environment: exactly its variables in resources.json.
    pub fn desk_env(
        &self,
        function: mailroom_aws::digest::Function,
        link_url: &str,
    ) -> HashMap<String, String> {
        use mailroom_aws::digest::{LINK_KEY_SECRET, LINK_URL, ROUTE_QUEUE_URL};
        let r = resources();
        let spec = r
            .digest_functions
            .iter()
            .find(|f| f.key == function.name())
            .unwrap_or_else(|| panic!("infra/resources.json has no {}", function.name()));
        let mut values: HashMap<String, String> = self.env(Stage::Respond).into_iter().collect();
        values.insert(LINK_KEY_SECRET.into(), self.link_key_arn.clone());
        values.insert(LINK_URL.into(), link_url.to_string());
        values.insert(ROUTE_QUEUE_URL.into(), self.queue("route").url.clone());
        only_declared(&spec.env, &values)
    }

    /// The access key id of a principal of this stack (`filter`, ..., [`OPERATOR`]).
    pub fn principal(&self, who: &str) -> String {
        format!("{}:{who}", self.name)
    }

    /// An SDK config whose calls are made (and evaluated) as `who`.
    pub async fn sdk_as(&self, who: &str) -> SdkConfig {
        sdk_config(&self.endpoint, &self.principal(who)).await
    }

    pub async fn pipeline(&self) -> Pipeline {
        let mut apps = Vec::new();
        let mut metrics = Vec::new();
        for stage in Stage::ALL {
            let (app, lines) = self.app_with_metrics(stage).await;
            apps.push((stage, app));
            metrics.push(lines);
        }
        Pipeline { apps, metrics }
    }

    // -------------------------------------------------------------- writing

    pub async fn put_object(&self, key: &str, bytes: Vec<u8>) {
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "putting s3://{}/{key}: {}",
                    self.bucket,
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                )
            });
    }

    /// Receives a message the way SES does: stores it under `raw/<id>` and publishes the
    /// receipt notification, with the `To` and `Cc` addresses as the envelope recipients.
    /// Returns the message id.
    pub async fn put_raw(&self, id: &str, bytes: Vec<u8>) -> String {
        self.receive_mail(id, bytes, None).await
    }

    /// As [`Stack::put_raw`], with the envelope recipients given (Bcc'd mail, aliases).
    pub async fn receive_mail(
        &self,
        id: &str,
        bytes: Vec<u8>,
        recipients: Option<Vec<String>>,
    ) -> String {
        let key = format!("{}{id}", resources().prefix("raw"));
        let notification = ses_notification(id, &self.bucket, &key, &bytes, recipients);
        self.put_object(&key, bytes).await;
        self.publish_notification(&notification).await;
        id.to_string()
    }

    /// Publishes a receipt notification to the inbound topic, as SES does.
    pub async fn publish_notification(&self, notification: &Value) {
        self.sns
            .publish()
            .topic_arn(&self.topic_arn)
            .message(notification.to_string())
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "publishing to {}: {}",
                    self.topic_arn,
                    aws_sdk_sns::error::DisplayErrorContext(&e)
                )
            });
    }

    /// Stores a fixture under a fresh SES-style message id; returns the id.
    pub async fn put_mail(&self, fixture_name: &str) -> String {
        self.put_raw(&ses_message_id(), fixture(fixture_name)).await
    }

    pub async fn upload_config(&self, text: &str) {
        self.put_object(&resources().bucket.config_key, text.as_bytes().to_vec())
            .await;
    }

    pub async fn send(&self, queue_url: &str, body: &str) {
        self.sqs
            .send_message()
            .queue_url(queue_url)
            .message_body(body)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "sending to {queue_url}: {}",
                    aws_sdk_sqs::error::DisplayErrorContext(&e)
                )
            });
    }

    // -------------------------------------------------------------- the event source mapping

    /// Receives up to `max` visible messages without waiting, leaving them in flight.
    pub async fn receive(
        &self,
        queue_url: &str,
        max: i32,
        visibility_timeout: Option<i32>,
    ) -> Vec<Received> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(max)
            .wait_time_seconds(0)
            .set_visibility_timeout(visibility_timeout)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "receiving from {queue_url}: {}",
                    aws_sdk_sqs::error::DisplayErrorContext(&e)
                )
            });
        out.messages
            .unwrap_or_default()
            .into_iter()
            .map(|m| Received {
                message_id: m.message_id.unwrap_or_default(),
                receipt_handle: m.receipt_handle.unwrap_or_default(),
                body: m.body.unwrap_or_default(),
                md5_of_body: m.md5_of_body,
                attributes: m
                    .attributes
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k.as_str().to_string(), v))
                    .collect(),
            })
            .collect()
    }

    /// Every message visible in a queue now, received (in flight, not deleted). Bounded.
    pub async fn receive_all(&self, queue_url: &str) -> Vec<Received> {
        let mut all = Vec::new();
        for _ in 0..100 {
            let batch = self.receive(queue_url, 10, None).await;
            if batch.is_empty() {
                break;
            }
            all.extend(batch);
        }
        all
    }

    /// Makes a received message visible again at once (its visibility timeout is over).
    pub async fn make_visible(&self, queue_url: &str, m: &Received) {
        self.sqs
            .change_message_visibility()
            .queue_url(queue_url)
            .receipt_handle(&m.receipt_handle)
            .visibility_timeout(0)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "making a message of {queue_url} visible: {}",
                    aws_sdk_sqs::error::DisplayErrorContext(&e)
                )
            });
    }

    pub async fn delete(&self, queue_url: &str, m: &Received) {
        self.sqs
            .delete_message()
            .queue_url(queue_url)
            .receipt_handle(&m.receipt_handle)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "deleting from {queue_url}: {}",
                    aws_sdk_sqs::error::DisplayErrorContext(&e)
                )
            });
    }

    /// Takes every message off a queue and returns the bodies.
    pub async fn drain_bodies(&self, queue_url: &str) -> Vec<String> {
        let mut bodies = Vec::new();
        for m in self.receive_all(queue_url).await {
            self.delete(queue_url, &m).await;
            bodies.push(m.body);
        }
        bodies
    }

    /// The bodies in a queue, left there (visible again after 30 s): for DLQs.
    pub async fn peek_bodies(&self, queue_url: &str) -> Vec<String> {
        let mut bodies = Vec::new();
        for _ in 0..100 {
            let batch = self.receive(queue_url, 10, Some(30)).await;
            if batch.is_empty() {
                break;
            }
            bodies.extend(batch.into_iter().map(|m| m.body));
        }
        bodies
    }

    /// The SQS event Lambda would pass for these records of a queue.
    pub fn sqs_event(&self, queue_key: &str, records: &[Received]) -> Value {
        let arn = &self.queue(queue_key).arn;
        let records: Vec<Value> = records
            .iter()
            .map(|m| {
                json!({
                    "messageId": m.message_id,
                    "receiptHandle": m.receipt_handle,
                    "body": m.body,
                    "attributes": m.attributes,
                    "messageAttributes": {},
                    "md5OfBody": m.md5_of_body,
                    "eventSource": "aws:sqs",
                    "eventSourceARN": arn,
                    "awsRegion": REGION,
                })
            })
            .collect();
        json!({ "Records": records })
    }

    /// One batch of the event source mapping: receive up to 10 records, hand them to the
    /// stage's handler as a genuine `SqsEvent`, delete the ones it did not report as failed,
    /// and make the failed ones visible again at once (the redrive policy moves a record to
    /// the DLQ when it is received more than maxReceiveCount times).
    pub async fn pump(&self, queue_key: &str, app: &Arc<App>) -> PumpReport {
        let url = self.queue(queue_key).url.clone();
        let records = self.receive(&url, 10, None).await;
        if records.is_empty() {
            return PumpReport::default();
        }
        let event: SqsEvent =
            serde_json::from_value(self.sqs_event(queue_key, &records)).expect("a valid SQS event");
        let response = handler::handle_batch(app.clone(), event, None).await;
        let failed: Vec<&str> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        for m in &records {
            if failed.contains(&m.message_id.as_str()) {
                self.make_visible(&url, m).await;
            } else {
                self.delete(&url, m).await;
            }
        }
        if !failed.is_empty() && !self.redelivery_delay.is_zero() {
            tokio::time::sleep(self.redelivery_delay).await;
        }
        PumpReport {
            received: records.iter().map(|m| m.message_id.clone()).collect(),
            bodies: records.into_iter().map(|m| m.body).collect(),
            response,
        }
    }

    /// Pumps one queue until it is empty; returns how many records were handled.
    pub async fn pump_until_empty(&self, queue_key: &str, app: &Arc<App>) -> usize {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut handled = 0;
        for _ in 0..500 {
            let report = self.pump(queue_key, app).await;
            if report.received.is_empty() {
                return handled;
            }
            handled += report.received.len();
            assert!(
                Instant::now() < deadline,
                "queue {queue_key} did not empty within 120 s"
            );
        }
        panic!("queue {queue_key} did not empty within 500 batches");
    }

    /// Pumps all four queues in pipeline order until a whole pass finds them empty.
    pub async fn run_until_idle(&self, pipeline: &Pipeline) -> usize {
        let deadline = Instant::now() + Duration::from_secs(180);
        let mut handled = 0;
        for _ in 0..50 {
            let mut pass = 0;
            for stage in Stage::ALL {
                pass += self
                    .pump_until_empty(source_queue(stage), &pipeline.app(stage))
                    .await;
            }
            if pass == 0 {
                return handled;
            }
            handled += pass;
            assert!(
                Instant::now() < deadline,
                "the pipeline did not go idle within 180 s"
            );
        }
        panic!("the pipeline did not go idle within 50 passes");
    }

    /// At-least-once delivery, exaggerated: takes every message off a queue and sends each
    /// body back `copies` times, in shuffled order.
    pub async fn duplicate_messages(&self, queue_key: &str, copies: usize) -> usize {
        let url = self.queue(queue_key).url.clone();
        let mut bodies = Vec::new();
        for body in self.drain_bodies(&url).await {
            bodies.extend(std::iter::repeat_n(body, copies));
        }
        shuffle(&mut bodies);
        for body in &bodies {
            self.send(&url, body).await;
        }
        bodies.len()
    }

    // -------------------------------------------------------------- reading

    /// Every item of the state table (a scan: for checks that no item is left behind).
    pub async fn all_items(&self) -> Vec<HashMap<String, AttributeValue>> {
        let mut all = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .dynamo
                .scan()
                .table_name(&self.table)
                .set_exclusive_start_key(start)
                .send()
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "scanning the state table: {}",
                        aws_sdk_dynamodb::error::DisplayErrorContext(&e)
                    )
                });
            all.extend(page.items.unwrap_or_default());
            start = page.last_evaluated_key;
            if start.is_none() {
                return all;
            }
        }
    }

    /// Every DynamoDB item of a message (pk `msg#<id>`), by sort key.
    pub async fn items(&self, id: &str) -> BTreeMap<String, HashMap<String, AttributeValue>> {
        let mut items = BTreeMap::new();
        let mut start = None;
        for _ in 0..100 {
            let out = self
                .dynamo
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", AttributeValue::S(format!("msg#{id}")))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "querying {id}: {}",
                        aws_sdk_dynamodb::error::DisplayErrorContext(&e)
                    )
                });
            for item in out.items.unwrap_or_default() {
                let sk = match item.get("sk") {
                    Some(AttributeValue::S(sk)) => sk.clone(),
                    other => panic!("item without a string sk: {other:?}"),
                };
                assert!(
                    items.insert(sk.clone(), item).is_none(),
                    "two items with sk {sk} for {id}"
                );
            }
            start = out.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        items
    }

    /// The sort keys of a message's items (`audit#filter`, `effect#...`).
    pub async fn sort_keys(&self, id: &str) -> Vec<String> {
        self.items(id).await.into_keys().collect()
    }

    /// The `decision` of a message's audit record for a stage.
    pub async fn audit_decision(&self, id: &str, stage: Stage) -> Option<String> {
        match self
            .items(id)
            .await
            .get(&format!("audit#{stage}"))?
            .get("decision")?
        {
            AttributeValue::S(s) => Some(s.clone()),
            _ => None,
        }
    }

    /// A string-list attribute of a message's audit record for a stage.
    pub async fn audit_list(&self, id: &str, stage: Stage, attribute: &str) -> Vec<String> {
        match self
            .items(id)
            .await
            .get(&format!("audit#{stage}"))
            .and_then(|item| item.get(attribute))
        {
            Some(AttributeValue::L(list)) => list
                .iter()
                .map(|v| match v {
                    AttributeValue::S(s) => s.clone(),
                    other => panic!("{id} audit#{stage} {attribute}: {other:?}"),
                })
                .collect(),
            other => panic!("{id} audit#{stage} {attribute}: {other:?}"),
        }
    }

    /// A number attribute of one of a message's items.
    pub async fn item_number(&self, id: &str, sk: &str, attribute: &str) -> Option<u64> {
        match self.items(id).await.get(sk)?.get(attribute)? {
            AttributeValue::N(n) => n.parse().ok(),
            _ => None,
        }
    }

    /// Object keys under a prefix.
    pub async fn objects(&self, prefix: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token = None;
        for _ in 0..100 {
            let out = self
                .s3
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token)
                .send()
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "listing {prefix}: {}",
                        aws_sdk_s3::error::DisplayErrorContext(&e)
                    )
                });
            keys.extend(
                out.contents
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|o| o.key),
            );
            token = out.next_continuation_token;
            if token.is_none() {
                break;
            }
        }
        keys.sort();
        keys
    }

    pub async fn get_object(&self, key: &str) -> Vec<u8> {
        let out = self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "getting {key}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                )
            });
        out.body.collect().await.expect("object body").to_vec()
    }

    /// Everything this stack's functions sent through SES and the emulator accepted (as the
    /// proxy saw it), oldest first.
    pub async fn sent_mail(&self) -> Vec<SentMail> {
        crate::proxy::proxy(&self.moto)
            .sent(&format!("{}:", self.name))
            .into_iter()
            .enumerate()
            .map(|(i, m)| SentMail {
                id: i.to_string(),
                source: m.from,
                destinations: m.to,
                raw: String::from_utf8_lossy(&m.raw).into_owned(),
            })
            .collect()
    }

    /// The bodies in every dead-letter queue, by queue key.
    pub async fn dead_letters(&self) -> BTreeMap<String, Vec<String>> {
        let mut out = BTreeMap::new();
        for (key, q) in &self.queues {
            out.insert(key.clone(), self.peek_bodies(&q.dlq_url).await);
        }
        out
    }

    /// Asserts that no dead-letter queue holds anything.
    pub async fn assert_no_dead_letters(&self) {
        let dead = self.dead_letters().await;
        assert!(dead.values().all(Vec::is_empty), "dead letters: {dead:#?}");
    }

    /// Runs a compiled function binary against a Runtime API, as Lambda would, with this
    /// stack's environment minus `unset`.
    pub fn start_function(
        &self,
        stage: Stage,
        binary: &std::path::Path,
        api: &RuntimeApi,
        unset: &[&str],
    ) -> FunctionProcess {
        let f = resources().function(stage);
        let name = format!("{}{}", self.name, f.name_suffix);
        self.spawn_function(stage.as_str(), &name, self.env(stage), binary, api, unset)
    }

    /// The digest or links function's binary on the Runtime API `api`.
    pub fn start_desk_function(
        &self,
        function: mailroom_aws::digest::Function,
        link_url: &str,
        binary: &std::path::Path,
        api: &RuntimeApi,
    ) -> FunctionProcess {
        let name = format!("{}-{}", self.name, function.name());
        let env = self.desk_env(function, link_url).into_iter().collect();
        self.spawn_function(function.name(), &name, env, binary, api, &[])
    }

    fn spawn_function(
        &self,
        who: &str,
        function_name: &str,
        env: Vec<(String, String)>,
        binary: &std::path::Path,
        api: &RuntimeApi,
        unset: &[&str],
    ) -> FunctionProcess {
        let mut cmd = tokio::process::Command::new(binary);
        cmd.env_clear()
            .env("AWS_LAMBDA_RUNTIME_API", api.addr())
            .env("AWS_LAMBDA_FUNCTION_NAME", function_name)
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_ACCESS_KEY_ID", self.principal(who))
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", REGION)
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_EC2_METADATA_DISABLED", "true");
        for (k, v) in env {
            if !unset.contains(&k.as_str()) {
                cmd.env(k, v);
            }
        }
        FunctionProcess::spawn(cmd, binary)
    }

    /// The ARN Lambda passes as the invoked function.
    pub fn function_arn(&self, stage: Stage) -> String {
        format!(
            "arn:aws:lambda:{REGION}:{}:function:{}{}",
            self.account,
            self.name,
            resources().function(stage).name_suffix
        )
    }
}

impl Stack {
    /// What the template's references resolve to for this stack.
    pub fn bindings(&self) -> crate::iam::Bindings {
        let r = resources();
        let mut b = crate::iam::Bindings::default();
        let domain = self
            .from_address
            .rsplit('@')
            .next()
            .unwrap_or_default()
            .to_string();
        for (k, v) in [
            ("AWS::Partition", "aws".to_string()),
            ("AWS::Region", REGION.to_string()),
            ("AWS::AccountId", self.account.clone()),
            ("AWS::StackName", self.name.clone()),
            ("AWS::URLSuffix", "amazonaws.com".to_string()),
            ("DomainName", domain.clone()),
            ("FromAddress", self.from_address.clone()),
            ("ConfigKey", r.bucket.config_key.clone()),
            ("RetentionDays", RETENTION_DAYS.to_string()),
            ("LogLevel", "info".to_string()),
            ("AssistModelId", self.assist_model.clone()),
            ("MailBucket", self.bucket.clone()),
            ("StateTable", self.table.clone()),
            ("InboundTopic", self.topic_arn.clone()),
            ("EmailIdentity", domain),
            ("ReceiptRuleSet", format!("{}{}", self.name, "-rules")),
        ] {
            b.refs.insert(k.to_string(), v);
        }
        let mut att = |res: &str, attr: &str, v: String| {
            b.attrs.insert((res.to_string(), attr.to_string()), v);
        };
        att("MailBucket", "Arn", format!("arn:aws:s3:::{}", self.bucket));
        att(
            "StateTable",
            "Arn",
            format!(
                "arn:aws:dynamodb:{REGION}:{}:table/{}",
                self.account, self.table
            ),
        );
        for q in &r.queues {
            let pair = self.queue(&q.key);
            let dlq_name = pair
                .dlq_arn
                .rsplit(':')
                .next()
                .unwrap_or_default()
                .to_string();
            att(&q.logical_id, "Arn", pair.arn.clone());
            att(&q.logical_id, "QueueName", pair.name.clone());
            att(&q.dlq_logical_id, "Arn", pair.dlq_arn.clone());
            att(&q.dlq_logical_id, "QueueName", dlq_name);
            b.refs.insert(q.logical_id.clone(), pair.url.clone());
            b.refs
                .insert(q.dlq_logical_id.clone(), pair.dlq_url.clone());
        }
        b.refs
            .insert("LinkKeySecret".into(), self.link_key_arn.clone());
        let suffixes = r.functions.iter().map(|f| (&f.logical_id, &f.name_suffix));
        let more = r
            .digest_functions
            .iter()
            .chain([&r.retrain_function])
            .map(|f| (&f.logical_id, &f.name_suffix));
        for (logical_id, name_suffix) in suffixes.chain(more) {
            let group = format!("/aws/lambda/{}{}", self.name, name_suffix);
            let lid = logical_id.replace("Function", "LogGroup");
            att(
                &lid,
                "Arn",
                format!("arn:aws:logs:{REGION}:{}:log-group:{group}:*", self.account),
            );
            b.refs.insert(lid, group);
        }
        b
    }

    /// Every AWS call this stack's functions (and its operator) made so far, each need
    /// evaluated against the template: the function's role, or the operator policy.
    /// Returns the calls IAM would deny, one line each.
    pub fn denied_calls(&self) -> Vec<String> {
        let template = crate::iam::template();
        let bindings = self.bindings();
        let r = resources();
        let mut policies = BTreeMap::new();
        let functions = r.functions.iter().map(|f| (&f.key, &f.logical_id));
        let more = r
            .digest_functions
            .iter()
            .chain([&r.retrain_function])
            .map(|f| (&f.key, &f.logical_id));
        for (key, logical_id) in functions.chain(more) {
            let role = crate::iam::role_of_function(&template, logical_id);
            policies.insert(
                self.principal(key),
                (
                    role.clone(),
                    crate::iam::policy_of(&template, &role, &bindings),
                ),
            );
        }
        policies.insert(
            self.principal(OPERATOR),
            (
                OPERATOR_POLICY.to_string(),
                crate::iam::policy_of(&template, OPERATOR_POLICY, &bindings),
            ),
        );
        let mut denied = Vec::new();
        for call in crate::proxy::proxy(&self.moto).calls(&format!("{}:", self.name)) {
            let Some((policy, statements)) = policies.get(&call.principal) else {
                continue;
            };
            for need in &call.needs {
                if let Err(why) = crate::iam::evaluate(statements, need) {
                    denied.push(format!(
                        "{} {} ({} on {} {:?} {:?}): {why} in {policy}",
                        call.principal.rsplit(':').next().unwrap_or_default(),
                        call.operation,
                        need.action,
                        need.resource,
                        need.context,
                        need.sets
                    ));
                }
            }
        }
        denied.sort();
        denied.dedup();
        denied
    }

    /// Arms a fault for `who`'s calls of `operation`: the `skip + 1`th to `skip + times`th
    /// from now. Returns the rule's id for [`Stack::disarm`].
    pub fn arm(
        &self,
        who: &str,
        operation: &str,
        skip: usize,
        times: usize,
        fault: crate::proxy::Fault,
    ) -> u64 {
        crate::proxy::proxy(&self.moto).arm(crate::proxy::FaultRule {
            principal: self.principal(who),
            operation: operation.to_string(),
            skip,
            times,
            fault,
        })
    }

    /// Disarms a fault rule; returns how many calls it faulted.
    pub fn disarm(&self, rule: u64) -> usize {
        crate::proxy::proxy(&self.moto).disarm(rule)
    }

    /// Every call `who` made through the proxy so far.
    pub fn calls_of(&self, who: &str) -> Vec<crate::proxy::Call> {
        let principal = self.principal(who);
        crate::proxy::proxy(&self.moto)
            .calls(&principal)
            .into_iter()
            .filter(|c| c.principal == principal)
            .collect()
    }

    /// Asserts that IAM would allow every call made so far (and that there were some).
    pub fn assert_calls_allowed(&self) {
        let calls = crate::proxy::proxy(&self.moto).calls(&format!("{}:", self.name));
        assert!(
            calls.iter().any(|c| !c.principal.ends_with(":harness")),
            "no function made a call through the proxy"
        );
        let denied = self.denied_calls();
        assert!(
            denied.is_empty(),
            "calls IAM would deny:\n{}",
            denied.join("\n")
        );
    }
}

/// The variables a function declares in resources.json, with the harness's values: a
/// function that reads one it does not declare fails in the test as it would deployed.
fn only_declared(declared: &[String], values: &HashMap<String, String>) -> HashMap<String, String> {
    declared
        .iter()
        .map(|name| {
            let v = values
                .get(name)
                .unwrap_or_else(|| panic!("the harness has no value for {name}"));
            (name.clone(), v.clone())
        })
        .collect()
}

/// The managed policy the README tells operators to attach (push-config, and the operator
/// commands).
pub const OPERATOR_POLICY: &str = "OperatorPolicy";

async fn create_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    attributes: &[(QueueAttributeName, String)],
) -> String {
    let mut req = sqs.create_queue().queue_name(name);
    for (k, v) in attributes {
        req = req.attributes(k.clone(), v);
    }
    req.send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "creating queue {name}: {}",
                aws_sdk_sqs::error::DisplayErrorContext(&e)
            )
        })
        .queue_url
        .expect("a queue URL")
}

async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> String {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "attributes of {url}: {}",
                aws_sdk_sqs::error::DisplayErrorContext(&e)
            )
        });
    out.attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .expect("a queue ARN")
}

// ------------------------------------------------------------------ SES receipt

/// The receipt notification SES publishes for a message its S3 action stored: the
/// envelope (`mail.source` from `Return-Path`, `receipt.recipients` as given or from `To`
/// and `Cc`), and the verdicts read back from the headers SES writes into the stored mail,
/// so that a fixture's headers and its notification agree.
pub fn ses_notification(
    id: &str,
    bucket: &str,
    key: &str,
    raw: &[u8],
    recipients: Option<Vec<String>>,
) -> Value {
    let parsed = MessageParser::default().parse(raw);
    let header = |name: &str| {
        parsed.as_ref().and_then(|m| {
            m.headers_raw()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.replace(['\r', '\n'], " ").trim().to_string())
        })
    };
    let addresses = |a: Option<&mail_parser::Address>| -> Vec<String> {
        a.into_iter()
            .flat_map(|a| a.iter())
            .filter_map(|a| a.address().map(str::to_string))
            .collect()
    };
    let recipients = recipients.unwrap_or_else(|| {
        parsed
            .as_ref()
            .map(|m| [addresses(m.to()), addresses(m.cc())].concat())
            .unwrap_or_default()
    });
    let token = |v: Option<String>| {
        v.and_then(|v| v.split_whitespace().next().map(str::to_ascii_uppercase))
    };
    let auth = header("Authentication-Results")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let method = |m: &str| {
        auth.split(';')
            .filter_map(|item| item.trim().strip_prefix(&format!("{m}=")))
            .map(|r| {
                r.split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_ascii_uppercase()
            })
            .next()
            .unwrap_or_else(|| "GRAY".to_string())
    };
    let status = |s: String| json!({ "status": s });
    let mut receipt = json!({
        "timestamp": "2026-11-03T09:15:00.000Z",
        "processingTimeMillis": 320,
        "recipients": recipients,
        "spamVerdict": status(token(header("X-SES-Spam-Verdict")).unwrap_or("PASS".into())),
        "virusVerdict": status(token(header("X-SES-Virus-Verdict")).unwrap_or("PASS".into())),
        "spfVerdict": status(method("spf")),
        "dkimVerdict": status(method("dkim")),
        "dmarcVerdict": status(method("dmarc")),
        "action": {
            "type": "S3",
            "topicArn": "arn:aws:sns:us-east-1:123456789012:inbound",
            "bucketName": bucket,
            "objectKeyPrefix": resources().prefix("raw"),
            "objectKey": key,
        },
    });
    if method("dmarc") == "FAIL" {
        let policy = auth
            .split("p=")
            .nth(1)
            .and_then(|p| p.split([' ', ')', ';']).next())
            .unwrap_or("none")
            .to_string();
        receipt["dmarcPolicy"] = json!(policy);
    }
    let source = header("Return-Path")
        .map(|r| r.trim_matches(['<', '>', ' ']).to_string())
        .unwrap_or_default();
    json!({
        "notificationType": "Received",
        "mail": {
            "timestamp": "2026-11-03T09:15:00.000Z",
            "source": source,
            "messageId": id,
            "destination": receipt["recipients"].clone(),
            "headersTruncated": false,
            "headers": [],
            "commonHeaders": {},
        },
        "receipt": receipt,
    })
}

// ------------------------------------------------------------------ SES sent mail

/// One message the emulator's SES accepted for sending.
#[derive(Debug, Clone)]
pub struct SentMail {
    pub id: String,
    pub source: String,
    /// The envelope recipients of the send.
    pub destinations: Vec<String>,
    pub raw: String,
}

impl SentMail {
    /// The message's header fields, in order, values unfolded and trimmed.
    pub fn headers(&self) -> Vec<(String, String)> {
        let msg = MessageParser::default()
            .parse(self.raw.as_bytes())
            .expect("sent mail parses");
        msg.headers_raw()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    v.replace("\r\n", "").replace('\n', "").trim().to_string(),
                )
            })
            .collect()
    }

    /// The first value of a header field.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers()
            .into_iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    pub fn is_auto_reply(&self) -> bool {
        self.header("Auto-Submitted").is_some()
    }

    pub fn sent_to(&self, address: &str) -> bool {
        self.destinations.iter().any(|d| d.contains(address))
    }
}

// ------------------------------------------------------------------ function binaries

/// A function's compiled binary beside the test executable (`target/<profile>/<binary>`).
/// `None` (skip) when it is missing; a failure instead when the emulator is required.
pub fn function_binary(stage: Stage) -> Option<PathBuf> {
    binary_named(&resources().function(stage).binary)
}

/// A binary of the workspace beside the test executable; `None` (skip) when it was not
/// built, unless the emulator is required.
pub fn binary_named(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().expect("the test executable");
    // target/<profile>/deps/suite-<hash> -> target/<profile>/<name>
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join(name))
        .expect("target layout");
    if path.is_file() {
        return Some(path);
    }
    assert!(
        !emulator_required(),
        "{} is missing: run cargo build --workspace --bins",
        path.display()
    );
    mailroom_core::skip::skipped(&format!(
        "{} is missing (run cargo build --workspace --bins)",
        path.display()
    ));
    None
}

/// What a function process printed, and how it ended.
#[derive(Debug)]
pub struct FunctionOutput {
    /// `None` when it was still running and was killed.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Display for FunctionOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "status: {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// A running function binary; killed when dropped.
pub struct FunctionProcess {
    child: tokio::process::Child,
    stdout: tokio::task::JoinHandle<String>,
    stderr: tokio::task::JoinHandle<String>,
}

impl FunctionProcess {
    fn spawn(mut cmd: tokio::process::Command, binary: &std::path::Path) -> FunctionProcess {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let read = |r: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>>| {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                if let Some(mut r) = r {
                    let _ = r.read_to_end(&mut buf).await;
                }
                String::from_utf8_lossy(&buf).into_owned()
            })
        };
        let stdout = read(child.stdout.take().map(|s| Box::new(s) as _));
        let stderr = read(child.stderr.take().map(|s| Box::new(s) as _));
        FunctionProcess {
            child,
            stdout,
            stderr,
        }
    }

    /// Whether it has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Waits up to `timeout` for it to exit, kills it if it has not, and collects its output.
    pub async fn finish(mut self, timeout: Duration) -> FunctionOutput {
        let status = match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => status.ok(),
            Err(_) => {
                let _ = self.child.kill().await;
                None
            }
        };
        let collect = |h: tokio::task::JoinHandle<String>| async move {
            tokio::time::timeout(Duration::from_secs(10), h)
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default()
        };
        FunctionOutput {
            status,
            stdout: collect(self.stdout).await,
            stderr: collect(self.stderr).await,
        }
    }

    /// Kills it and collects its output.
    pub async fn stop(self) -> FunctionOutput {
        self.finish(Duration::ZERO).await
    }
}

// ------------------------------------------------------------------ the Runtime API

/// What a function told the Runtime API.
#[derive(Debug, Clone, PartialEq)]
pub enum Reported {
    Response { request_id: String, body: String },
    InvocationError { request_id: String, body: String },
    InitError { body: String },
}

#[derive(Default)]
struct ApiState {
    events: VecDeque<(String, String)>,
    reported: Vec<Reported>,
    requests: Vec<String>,
    /// How long each invocation may run (Lambda-Runtime-Deadline-Ms); 30 s unless set.
    deadline: Option<Duration>,
    /// When the last invocation was handed out, and its deadline.
    handed_out: Option<(Instant, Instant)>,
    /// When each report arrived.
    reported_at: Vec<Instant>,
}

/// The Lambda Runtime API (`/2018-06-01/runtime/...`) on 127.0.0.1, over hand-parsed
/// HTTP/1.1 with keep-alive: hands out queued events on `invocation/next` (and holds the
/// request open when there are none, as Lambda does), and records responses and errors.
pub struct RuntimeApi {
    addr: String,
    state: Arc<Mutex<ApiState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Invocation headers besides the request id.
#[derive(Clone)]
struct InvocationHeaders {
    function_arn: String,
}

impl RuntimeApi {
    /// Starts the server; `function_arn` goes into every invocation's headers.
    pub async fn start(function_arn: &str) -> RuntimeApi {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the Runtime API");
        let addr = listener.local_addr().expect("local address").to_string();
        let state = Arc::new(Mutex::new(ApiState::default()));
        let headers = InvocationHeaders {
            function_arn: function_arn.to_string(),
        };
        let task = tokio::spawn({
            let state = state.clone();
            async move {
                loop {
                    let Ok((sock, _)) = listener.accept().await else {
                        return;
                    };
                    tokio::spawn(serve_connection(sock, state.clone(), headers.clone()));
                }
            }
        });
        RuntimeApi { addr, state, task }
    }

    /// `host:port`, for `AWS_LAMBDA_RUNTIME_API`.
    pub fn addr(&self) -> String {
        self.addr.clone()
    }

    /// Queues an invocation; returns its request id.
    pub fn push_event(&self, event: &Value) -> String {
        let id = format!(
            "{:08x}-{:04x}-4000-8000-{:012x}",
            random_u64() as u32,
            random_u64() as u16,
            random_u64() & 0xffff_ffff_ffff
        );
        self.state
            .lock()
            .unwrap()
            .events
            .push_back((id.clone(), event.to_string()));
        id
    }

    /// Gives the next invocations `deadline` to run, instead of 30 s.
    pub fn set_deadline(&self, deadline: Duration) {
        self.state.lock().unwrap().deadline = Some(deadline);
    }

    /// How long before the last invocation's deadline its first report arrived (negative
    /// seconds: after it). `None` before a report.
    pub fn reported_before_deadline(&self) -> Option<f64> {
        let s = self.state.lock().unwrap();
        let (_, deadline) = s.handed_out?;
        let at = *s.reported_at.first()?;
        Some(if at <= deadline {
            (deadline - at).as_secs_f64()
        } else {
            -(at - deadline).as_secs_f64()
        })
    }

    /// Everything reported so far.
    pub fn reported(&self) -> Vec<Reported> {
        self.state.lock().unwrap().reported.clone()
    }

    /// The request lines received so far, for failure messages.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Waits until the function reports something or exits, at most `timeout`.
    pub async fn wait_report(
        &self,
        process: &mut FunctionProcess,
        timeout: Duration,
    ) -> Option<Reported> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(r) = self.reported().into_iter().next() {
                return Some(r);
            }
            if process.exited() || Instant::now() >= deadline {
                // A report may have raced the exit.
                return self.reported().into_iter().next();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
}

/// Reads one request from a keep-alive connection; `None` at EOF or on garbage.
async fn read_request(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Request> {
    let head_end = loop {
        if let Some(p) = find(buf, b"\r\n\r\n") {
            break p;
        }
        if buf.len() > 1 << 20 || sock.read_buf(buf).await.ok()? == 0 {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    buf.drain(..head_end + 4);
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split_whitespace();
    let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
    let mut length = 0usize;
    let mut chunked = false;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        if name == "content-length" {
            length = value.parse().ok()?;
        } else if name == "transfer-encoding" && value.to_ascii_lowercase().contains("chunked") {
            chunked = true;
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let line_end = loop {
                if let Some(p) = find(buf, b"\r\n") {
                    break p;
                }
                if sock.read_buf(buf).await.ok()? == 0 {
                    return None;
                }
            };
            let size_text = String::from_utf8_lossy(&buf[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            buf.drain(..line_end + 2);
            while buf.len() < size + 2 {
                if sock.read_buf(buf).await.ok()? == 0 {
                    return None;
                }
            }
            body.extend_from_slice(&buf[..size]);
            buf.drain(..size + 2);
            if size == 0 {
                break;
            }
        }
    } else {
        while buf.len() < length {
            if sock.read_buf(buf).await.ok()? == 0 {
                return None;
            }
        }
        body = buf.drain(..length).collect();
    }
    Some(Request { method, path, body })
}

async fn respond(
    sock: &mut TcpStream,
    status: &str,
    headers: &[(&str, String)],
    body: &str,
) -> bool {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(body);
    sock.write_all(out.as_bytes()).await.is_ok()
}

async fn serve_connection(
    mut sock: TcpStream,
    state: Arc<Mutex<ApiState>>,
    inv: InvocationHeaders,
) {
    const PREFIX: &str = "/2018-06-01/runtime/";
    let mut buf = Vec::new();
    while let Some(req) = read_request(&mut sock, &mut buf).await {
        state
            .lock()
            .unwrap()
            .requests
            .push(format!("{} {}", req.method, req.path));
        let body = String::from_utf8_lossy(&req.body).into_owned();
        let route = req.path.strip_prefix(PREFIX).unwrap_or("").to_string();
        let parts: Vec<&str> = route.split('/').collect();
        let accepted = r#"{"status":"OK"}"#;
        let ok = match (req.method.as_str(), parts.as_slice()) {
            ("GET", ["invocation", "next"]) => {
                let next = state.lock().unwrap().events.pop_front();
                let Some((id, event)) = next else {
                    // No more work: hold the long poll open, as Lambda does between events.
                    std::future::pending::<()>().await;
                    return;
                };
                let budget = state
                    .lock()
                    .unwrap()
                    .deadline
                    .unwrap_or(Duration::from_secs(30));
                state.lock().unwrap().handed_out = Some((Instant::now(), Instant::now() + budget));
                let deadline = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .expect("time")
                    .as_millis()
                    + budget.as_millis();
                let headers = [
                    ("Lambda-Runtime-Aws-Request-Id", id),
                    ("Lambda-Runtime-Deadline-Ms", deadline.to_string()),
                    ("Lambda-Runtime-Invoked-Function-Arn", inv.function_arn.clone()),
                    ("Lambda-Runtime-Trace-Id", "Root=1-6745a3c0-0123456789abcdef01234567;Parent=0123456789abcdef;Sampled=0".to_string()),
                ];
                respond(&mut sock, "200 OK", &headers, &event).await
            }
            ("POST", ["invocation", id, "response"]) => {
                {
                    let mut s = state.lock().unwrap();
                    s.reported_at.push(Instant::now());
                    s.reported.push(Reported::Response {
                        request_id: id.to_string(),
                        body,
                    });
                }
                respond(&mut sock, "202 Accepted", &[], accepted).await
            }
            ("POST", ["invocation", id, "error"]) => {
                state
                    .lock()
                    .unwrap()
                    .reported
                    .push(Reported::InvocationError {
                        request_id: id.to_string(),
                        body,
                    });
                respond(&mut sock, "202 Accepted", &[], accepted).await
            }
            ("POST", ["init", "error"]) => {
                state
                    .lock()
                    .unwrap()
                    .reported
                    .push(Reported::InitError { body });
                respond(&mut sock, "202 Accepted", &[], accepted).await
            }
            _ => {
                respond(
                    &mut sock,
                    "404 Not Found",
                    &[],
                    r#"{"errorMessage":"unknown path"}"#,
                )
                .await
            }
        };
        if !ok {
            return;
        }
    }
}
