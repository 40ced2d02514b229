//! A Lambda function that carries what every mailroom function carries and nothing of the
//! pipeline: the functions' SDK config and HTTPS client, the S3, SQS and DynamoDB clients,
//! and one call on each per event (GetObject, SendMessage, GetItem), so that the linker
//! keeps those operations. `infra/bench/run.sh --only size` prints its size beside the
//! stage functions': the part of each bootstrap that is the SDK's, not mailroom's.

use aws_sdk_dynamodb::types::AttributeValue;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let sdk = mailroom_aws::app::function_sdk_config().await?;
    let s3 = mailroom_aws::app::s3_client(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let env = |name: &str| std::env::var(name).unwrap_or_default();
    let (bucket, queue, table) = (env("BUCKET"), env("NEXT_QUEUE_URL"), env("TABLE"));
    lambda_runtime::run(lambda_runtime::service_fn(
        |_: lambda_runtime::LambdaEvent<serde_json::Value>| async {
            let object = s3.get_object().bucket(&bucket).key("config/mailroom.toml");
            let body = object.send().await?.body.collect().await?.into_bytes();
            sqs.send_message()
                .queue_url(&queue)
                .message_body(body.len().to_string())
                .send()
                .await?;
            dynamo
                .get_item()
                .table_name(&table)
                .key("pk", AttributeValue::S("floor".into()))
                .send()
                .await?;
            Ok::<_, lambda_runtime::Error>(serde_json::json!({ "batchItemFailures": [] }))
        },
    ))
    .await
}
