"""bench.py's aws-setup, aws-put and aws-drain subcommands: the stack on moto, objects put in
its bucket, a queue's messages read. boto3 (the repo's .venv) is imported here only, in
these separate processes, never in the measuring one."""

import json
import sys
import time

from .common import REGION


# ------------------------------------------------------------------ AWS helpers (boto3)


def boto(endpoint, service):
    import boto3  # the repo's .venv (infra/setup-venv.sh)

    return boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION).client(
        service, endpoint_url=endpoint
    )


def cmd_aws_setup(args):
    import tomllib

    r = json.load(open(args.resources))
    qs = r["queue_settings"]
    stack = args.stack
    sqs = boto(args.endpoint, "sqs")
    account = boto(args.endpoint, "sts").get_caller_identity()["Account"]

    def queue(name, attrs):
        url = sqs.create_queue(QueueName=name, Attributes=attrs)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        return url, arn

    queues = {}
    for q in r["queues"]:
        _, dlq_arn = queue(stack + q["dlq_name_suffix"], {"MessageRetentionPeriod": str(qs["dlq_retention_seconds"])})
        url, arn = queue(
            stack + q["name_suffix"],
            {
                "VisibilityTimeout": str(qs["visibility_timeout_seconds"]),
                "ReceiveMessageWaitTimeSeconds": str(qs["receive_wait_seconds"]),
                "MessageRetentionPeriod": str(qs["message_retention_seconds"]),
                "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": qs["max_receive_count"]}),
            },
        )
        queues[q["key"]] = {"url": url, "arn": arn}
    config_text = open(args.config).read()
    config = tomllib.loads(config_text)
    deliver = set()
    for rule in config.get("route", []) + [{"actions": config.get("routing", {}).get("default_actions", [])}]:
        for a in rule.get("actions", []):
            if isinstance(a, dict) and "deliver" in a:
                deliver.add(a["deliver"])
    for name in sorted(deliver):
        queue(stack + r["deliver_queue_name_prefix"] + name, {})
    t = r["table"]
    table = stack + t["name_suffix"]
    ddb = boto(args.endpoint, "dynamodb")
    index_attrs = sorted({a for i in t["indexes"] for a in (i["partition_key"], i["sort_key"])})
    ddb.create_table(
        TableName=table,
        AttributeDefinitions=[
            {"AttributeName": t["partition_key"]["name"], "AttributeType": t["partition_key"]["type"]},
            {"AttributeName": t["sort_key"]["name"], "AttributeType": t["sort_key"]["type"]},
        ]
        + [{"AttributeName": a, "AttributeType": "S"} for a in index_attrs],
        KeySchema=[
            {"AttributeName": t["partition_key"]["name"], "KeyType": "HASH"},
            {"AttributeName": t["sort_key"]["name"], "KeyType": "RANGE"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": i["name"],
                "KeySchema": [
                    {"AttributeName": i["partition_key"], "KeyType": "HASH"},
                    {"AttributeName": i["sort_key"], "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
            for i in t["indexes"]
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    ddb.update_time_to_live(TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": t["ttl_attribute"]})
    bucket = r["bucket"]["name_format"].replace("{stack}", stack).replace("{account}", account)
    s3 = boto(args.endpoint, "s3")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key=r["bucket"]["config_key"], Body=config_text.encode(), ContentType="application/toml")
    from_address = config.get("mailroom", {}).get("from_address", "mailroom@example.com")
    boto(args.endpoint, "sesv2").create_email_identity(EmailIdentity=from_address.rsplit("@", 1)[1])
    json.dump({"account": account, "bucket": bucket, "table": table, "queues": queues, "from_address": from_address, "deliver_queues": sorted(deliver)}, sys.stdout)


def cmd_aws_put(args):
    s3 = boto(args.endpoint, "s3")
    for pair in args.objects:
        key, path = pair.split("=", 1)
        with open(path, "rb") as f:
            s3.put_object(Bucket=args.bucket, Key=key, Body=f.read(), ContentType="message/rfc822")
    json.dump({"put": len(args.objects)}, sys.stdout)


def cmd_aws_drain(args):
    sqs = boto(args.endpoint, "sqs")
    bodies = []
    deadline = time.monotonic() + args.timeout
    for _ in range(1000):
        if len(bodies) >= args.count or time.monotonic() > deadline:
            break
        out = sqs.receive_message(QueueUrl=args.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=600)
        for m in out.get("Messages", []):
            bodies.append(m["Body"])
            sqs.delete_message(QueueUrl=args.queue_url, ReceiptHandle=m["ReceiptHandle"])
    json.dump(bodies, sys.stdout)
