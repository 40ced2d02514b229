//! Quarantine digests as an AWS Lambda function, run on the template's EventBridge schedule.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    mailroom_aws::digest::run_digest().await
}
