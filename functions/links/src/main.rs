//! The digests' release links as an AWS Lambda function behind a function URL.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    mailroom_aws::digest::run_links().await
}
