//! The route stage as an AWS Lambda function: SQS batches in, the shared handler does the rest.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    mailroom_aws::run(mailroom_core::model::Stage::Route).await
}
