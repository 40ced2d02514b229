//! The spam model's retrain as an AWS Lambda function, run on the template's EventBridge
//! schedule: the training set in the bucket plus the operators' corrections, behind the
//! gate that keeps the served model when the new one would be worse.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    mailroom_aws::retrain::run_retrain().await
}
