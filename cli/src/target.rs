//! Where the operator commands and the console work: the embedded store of `mailroom run`
//! (`--state`), or a deployed stack (`--stack`, or `--bucket` with `--table`) with the
//! operator's own AWS credentials. Both give the same core operator functions.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use mailroom_core::operate::Operator;

#[derive(Args, Clone, Debug)]
pub struct Target {
    /// The state folder `mailroom run` wrote.
    #[arg(long, default_value = "mailroom-out/state")]
    pub state: PathBuf,
    /// A deployed stack by name: its bucket, table and queues follow from it (AWS
    /// credentials from the environment, as for the AWS CLI).
    #[arg(long, conflicts_with_all = ["bucket", "table"])]
    pub stack: Option<String>,
    /// A deployed stack's mail bucket (with --table).
    #[arg(long, requires = "table")]
    pub bucket: Option<String>,
    /// A deployed stack's state table (with --bucket).
    #[arg(long, requires = "bucket")]
    pub table: Option<String>,
    /// The config to route released mail with, and that allow/block edit (default: the
    /// built-in defaults locally; the stack's own config in AWS).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Where a released message's forwards and auto-reply are written (embedded store).
    #[arg(long, default_value = "mailroom-out/outbox")]
    pub outbox: PathBuf,
}

/// What a build without the `aws` feature says when asked for a stack.
#[cfg(not(feature = "aws"))]
pub const NO_AWS: &str = "this mailroom was built without AWS support; build it with \
                          `cargo build --release -p mailroom-cli --features aws`";

/// The operator functions on the chosen store, and (on a stack) its queues.
pub struct Connected {
    pub operator: Operator,
    /// The embedded store itself (what only it does: rewriting `state.redb`).
    pub state: Option<Arc<mailroom_core::embedded::disk::DiskState>>,
    /// Erasure and export on the store.
    pub forget: Arc<dyn mailroom_core::operate::Forget>,
    #[cfg(feature = "aws")]
    pub stack: Option<Stack>,
}

#[cfg(feature = "aws")]
pub struct Stack {
    pub names: mailroom_aws::operator::StackNames,
    pub sdk: aws_config::SdkConfig,
}

#[cfg(feature = "aws")]
impl Stack {
    /// The stack's dead-letter queues, with the operator's credentials.
    pub fn dlqs(&self) -> mailroom_aws::dlq::Dlqs<'_> {
        mailroom_aws::dlq::Dlqs {
            client: aws_sdk_sqs::Client::new(&self.sdk),
            names: &self.names,
        }
    }
}

impl Target {
    pub fn is_aws(&self) -> bool {
        self.stack.is_some() || self.bucket.is_some()
    }

    pub fn connect(&self, runtime: &tokio::runtime::Runtime) -> Result<Connected> {
        if self.is_aws() {
            return self.connect_aws(runtime);
        }
        open_state(&self.state)?;
        let (engine, state) =
            crate::local_engine(self.config.as_deref(), &self.state, &self.outbox)?;
        Ok(Connected {
            operator: Operator::new(
                Arc::new(engine),
                format!("state folder {}", self.state.display()),
            ),
            forget: state.clone(),
            state: Some(state),
            #[cfg(feature = "aws")]
            stack: None,
        })
    }

    #[cfg(not(feature = "aws"))]
    fn connect_aws(&self, _runtime: &tokio::runtime::Runtime) -> Result<Connected> {
        bail!("{NO_AWS}")
    }

    #[cfg(feature = "aws")]
    fn connect_aws(&self, runtime: &tokio::runtime::Runtime) -> Result<Connected> {
        use mailroom_aws::operator::connect;
        runtime.block_on(async {
            let sdk = mailroom_aws::app::operator_sdk_config()
                .await
                .map_err(anyhow::Error::msg)?;
            let names = stack_names(self, &sdk).await?;
            let local = match &self.config {
                Some(path) => Some(crate::load_config(path)?),
                None => None,
            };
            let operator = connect(&sdk, &names, local)
                .await
                .map_err(anyhow::Error::msg)?;
            let forget = Arc::new(mailroom_aws::erase::StackForget::on(&sdk, &names));
            Ok(Connected {
                operator,
                state: None,
                forget,
                stack: Some(Stack { names, sdk }),
            })
        })
    }
}

/// The names of the stack a target names: from `--stack` (the account from STS), or from
/// `--bucket` and `--table`.
#[cfg(feature = "aws")]
pub async fn stack_names(
    target: &Target,
    sdk: &aws_config::SdkConfig,
) -> Result<mailroom_aws::operator::StackNames> {
    use mailroom_aws::operator::StackNames;
    Ok(match (&target.stack, &target.bucket, &target.table) {
        (Some(stack), _, _) => {
            let account = aws_sdk_sts::Client::new(sdk)
                .get_caller_identity()
                .send()
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "finding the AWS account of stack {stack}: {}",
                        aws_sdk_sts::error::DisplayErrorContext(e)
                    )
                })?
                .account
                .context("STS named no account")?;
            StackNames::of_stack(stack, &account)
        }
        (None, Some(bucket), Some(table)) => StackNames {
            bucket: bucket.clone(),
            table: table.clone(),
            queue_prefix: None,
            deliver_prefix: String::new(),
            config_key: "config/mailroom.toml".into(),
        },
        _ => bail!("pass --stack NAME, or --bucket and --table"),
    })
}

/// Checks that a previous `mailroom run` left a state store there.
pub fn open_state(state: &Path) -> Result<()> {
    if !state.join("state.redb").is_file() {
        bail!(
            "no state store at {} (run `mailroom run --state {}` first, or pass --state)",
            state.join("state.redb").display(),
            state.display()
        );
    }
    Ok(())
}

/// Now, in seconds since the epoch (the commands' clock for times and retention).
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The runtime the commands block on (timers for backoff, I/O for AWS).
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}
