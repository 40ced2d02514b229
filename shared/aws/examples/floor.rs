//! A Lambda function that does nothing but answer: the cold-start floor that
//! `infra/bench/run.sh --only coldstart` prints beside the stage functions' (the same
//! runtime crate and tokio setup, no config, no SDK).

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::run(lambda_runtime::service_fn(
        |_: lambda_runtime::LambdaEvent<serde_json::Value>| async {
            Ok::<_, lambda_runtime::Error>(serde_json::json!({ "batchItemFailures": [] }))
        },
    ))
    .await
}
