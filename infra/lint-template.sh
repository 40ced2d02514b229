#!/usr/bin/env bash
# Lint template.yaml offline and check it against infra/resources.json.
# Runs cfn-lint, `sam validate --lint`, and a drift check; exits nonzero if any fails.
# Dummy credentials and a fixed region keep boto from looking for real ones;
# nothing here needs an AWS account or the network.
set -uo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

bash infra/setup-venv.sh || { echo "lint-template: infra/setup-venv.sh failed" >&2; exit 1; }
bin="${repo_root}/.venv/bin"

export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_SESSION_TOKEN=testing
export AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true
export SAM_CLI_TELEMETRY=0

failed=0
run() {
    echo "== $*"
    if ! "$@"; then
        echo "FAILED: $*" >&2
        failed=1
    fi
}

run "${bin}/cfn-lint" template.yaml
run "${bin}/sam" validate --lint --template template.yaml
run "${bin}/python" - <<'EOF'
"""Drift check: every name and setting in infra/resources.json must match template.yaml."""
import json
import re
import sys
from pathlib import Path

try:
    import tomllib  # Python 3.11+
except ImportError:  # older Pythons: the two names we need, read with a regex
    tomllib = None

from cfnlint.decode import decode

spec = json.loads(Path("infra/resources.json").read_text())
tpl, errs = decode("template.yaml")
if errs:
    sys.exit(f"cannot parse template.yaml: {errs}")
res = tpl["Resources"]
text = Path("template.yaml").read_text()
problems = []


def check(cond, msg):
    if not cond:
        problems.append(msg)


def props(lid, rtype):
    r = res.get(lid)
    if r is None or r.get("Type") != rtype:
        problems.append(f"{lid}: missing or not {rtype}")
        return {}
    return r.get("Properties", {})


def stack_name(suffix):
    return {"Fn::Sub": "${AWS::StackName}" + suffix}


qs, fs = spec["queue_settings"], spec["function_settings"]

# Bucket, prefixes and config key.
b = spec["bucket"]
bucket_sub = b["name_format"].replace("{stack}", "${AWS::StackName}").replace("{account}", "${AWS::AccountId}")
bp = props(b["logical_id"], "AWS::S3::Bucket")
check(bp.get("BucketName") == {"Fn::Sub": bucket_sub}, f"bucket name should be !Sub {bucket_sub}")
for key, prefix in b["prefixes"].items():
    check(f"/{prefix}*" in text, f"prefix {prefix} ({key}) not used in any policy")
lifecycle = {r.get("Prefix") for r in bp.get("LifecycleConfiguration", {}).get("Rules", [])}
for key in ("raw", "quarantine"):
    check(b["prefixes"][key] in lifecycle, f"no lifecycle rule for {b['prefixes'][key]}")
check("NotificationConfiguration" not in bp, "the bucket must not notify: SES's receipt notification is the inbound event")
check(tpl["Parameters"]["ConfigKey"]["Default"] == b["config_key"], "ConfigKey default != bucket.config_key")
check(b["config_key"].startswith(b["prefixes"]["config"]), "config_key is outside the config prefix")

# Table.
t = spec["table"]
tp = props(t["logical_id"], "AWS::DynamoDB::Table")
check(tp.get("TableName") == stack_name(t["name_suffix"]), "table name")
pk, sk = t["partition_key"], t["sort_key"]
check(tp.get("KeySchema") == [{"AttributeName": pk["name"], "KeyType": "HASH"},
                              {"AttributeName": sk["name"], "KeyType": "RANGE"}], "table key schema")
index_attrs = sorted({a for i in t["indexes"] for a in (i["partition_key"], i["sort_key"])})
check(sorted(tp.get("AttributeDefinitions", []), key=str) == sorted(
    [{"AttributeName": k["name"], "AttributeType": k["type"]} for k in (pk, sk)]
    + [{"AttributeName": a, "AttributeType": "S"} for a in index_attrs], key=str), "table attributes")
gsis = {g["IndexName"]: g for g in tp.get("GlobalSecondaryIndexes", [])}
check(set(gsis) == {i["name"] for i in t["indexes"]}, f"table indexes {sorted(gsis)}")
for i in t["indexes"]:
    g = gsis.get(i["name"], {})
    check(g.get("KeySchema") == [{"AttributeName": i["partition_key"], "KeyType": "HASH"},
                                 {"AttributeName": i["sort_key"], "KeyType": "RANGE"}], f"index {i['name']} keys")
    check(g.get("Projection") == {"ProjectionType": "ALL"}, f"index {i['name']} projection")
check(tp.get("TimeToLiveSpecification") == {"AttributeName": t["ttl_attribute"], "Enabled": True}, "table TTL")

# SES rule set and rule (the rule name is also spelled out in the bucket policy).
ses = spec["ses"]
check(props("ReceiptRuleSet", "AWS::SES::ReceiptRuleSet").get("RuleSetName") == stack_name(ses["rule_set_suffix"]), "rule set name")
rule = props("ReceiptRule", "AWS::SES::ReceiptRule").get("Rule", {})
check(rule.get("Name") == stack_name(ses["rule_suffix"]), "receipt rule name")
check(f"receipt-rule/${{AWS::StackName}}{ses['rule_suffix']}" in text, "bucket policy SourceArn does not name the receipt rule")
check(json.dumps(rule.get("Actions", [])).count(f'"ObjectKeyPrefix": "{b["prefixes"]["raw"]}"') == 1, "receipt rule S3 prefix")

# The receipt notification: the rule's S3 action publishes to the inbound topic, which
# delivers to the inbound queue with raw message delivery.
tp_spec = spec["topic"]
check(props(tp_spec["logical_id"], "AWS::SNS::Topic").get("TopicName") == stack_name(tp_spec["name_suffix"]), "inbound topic name")
s3_actions = [a.get("S3Action", {}) for a in rule.get("Actions", [])]
check(any(a.get("TopicArn") == {"Ref": tp_spec["logical_id"]} for a in s3_actions), "the receipt rule's S3 action must publish to the inbound topic")
sub = props(tp_spec["subscription_logical_id"], "AWS::SNS::Subscription")
check(sub.get("TopicArn") == {"Ref": tp_spec["logical_id"]} and sub.get("Protocol") == "sqs", "inbound subscription")
check(sub.get("Endpoint") == {"Fn::GetAtt": ["InboundQueue", "Arn"]}, "the inbound subscription must deliver to the inbound queue")
check(sub.get("RawMessageDelivery") is tp_spec["raw_message_delivery"], "inbound subscription RawMessageDelivery")

# Queues and DLQs.
queues = {q["key"]: q for q in spec["queues"]}
for q in spec["queues"]:
    p = props(q["logical_id"], "AWS::SQS::Queue")
    d = props(q["dlq_logical_id"], "AWS::SQS::Queue")
    check(p.get("QueueName") == stack_name(q["name_suffix"]), f"{q['logical_id']} name")
    check(d.get("QueueName") == stack_name(q["dlq_name_suffix"]), f"{q['dlq_logical_id']} name")
    check(p.get("VisibilityTimeout") == qs["visibility_timeout_seconds"], f"{q['logical_id']} VisibilityTimeout")
    check(p.get("ReceiveMessageWaitTimeSeconds") == qs["receive_wait_seconds"], f"{q['logical_id']} wait time")
    check(p.get("MessageRetentionPeriod") == qs["message_retention_seconds"], f"{q['logical_id']} retention")
    check(d.get("MessageRetentionPeriod") == qs["dlq_retention_seconds"], f"{q['dlq_logical_id']} retention")
    check(p.get("RedrivePolicy") == {"deadLetterTargetArn": {"Fn::GetAtt": [q["dlq_logical_id"], "Arn"]},
                                     "maxReceiveCount": qs["max_receive_count"]}, f"{q['logical_id']} RedrivePolicy")
    check(p.get("SqsManagedSseEnabled") is True and d.get("SqsManagedSseEnabled") is True, f"{q['key']} queues: SSE")
    age = props(q["logical_id"].replace("Queue", "QueueAgeAlarm"), "AWS::CloudWatch::Alarm")
    check(age.get("Threshold") == qs["oldest_message_alarm_seconds"], f"{q['logical_id']} age alarm threshold")
declared = {q[k] for q in spec["queues"] for k in ("logical_id", "dlq_logical_id")}
for lid, r in res.items():
    if r["Type"] == "AWS::SQS::Queue":
        check(lid in declared, f"queue {lid} is not declared in resources.json")
check(f"${{AWS::StackName}}{spec['deliver_queue_name_prefix']}*" in text, "delivery queue prefix not granted")
window = tpl["Parameters"]["BatchingWindowSeconds"]
check(window.get("Default") == fs["batching_window_seconds"] and window.get("MaxValue") == fs["batching_window_max_seconds"],
      "BatchingWindowSeconds: default and maximum as resources.json says")
check(qs["visibility_timeout_seconds"] >= 6 * fs["timeout_seconds"] + fs["batching_window_max_seconds"],
      "visibility timeout must be >= 6 x function timeout + batching window")
# Raw mail must outlast a message's time in a DLQ plus the window to redrive it.
floor = qs["dlq_retention_seconds"] // 86400 + qs["redrive_window_days"]
retention = tpl["Parameters"]["RetentionDays"]
check(min(retention["AllowedValues"]) >= floor and retention["Default"] >= floor,
      f"RetentionDays must be at least the DLQ retention plus the redrive window ({floor} days)")
for f in spec["functions"]:
    alarm = props(f["logical_id"].replace("Function", "DurationAlarm"), "AWS::CloudWatch::Alarm")
    check(alarm.get("Threshold", 0) < 1000 * fs["timeout_seconds"], f"{f['logical_id']} duration alarm must fire below the timeout")

# Functions.
glob = tpl.get("Globals", {}).get("Function", {})
declared = {f["logical_id"] for f in spec["functions"] + spec["digest_functions"] + [spec["retrain_function"]]}
for lid, r in res.items():
    if r["Type"] == "AWS::Serverless::Function":
        check(lid in declared, f"function {lid} is not declared in resources.json")
for f in spec["functions"]:
    lid = f["logical_id"]
    p = props(lid, "AWS::Serverless::Function")
    setting = lambda k: p.get(k, glob.get(k))
    check(p.get("FunctionName") == stack_name(f["name_suffix"]), f"{lid} FunctionName")
    check(p.get("CodeUri") == f["code_uri"], f"{lid} CodeUri")
    meta = res.get(lid, {}).get("Metadata", {})
    check(meta.get("BuildMethod") == "rust-cargolambda", f"{lid} BuildMethod")
    check(meta.get("BuildProperties", {}).get("Binary") == f["binary"], f"{lid} BuildProperties.Binary should be {f['binary']}")
    check(setting("Timeout") == fs["timeout_seconds"], f"{lid} Timeout")
    check(setting("MemorySize") == fs["memory_mb"], f"{lid} MemorySize")
    env = {**glob.get("Environment", {}).get("Variables", {}), **p.get("Environment", {}).get("Variables", {})}
    check(set(env) == set(f["env"]), f"{lid} env vars {sorted(env)} != {sorted(f['env'])}")
    if f["next_queue"]:
        check(env.get(spec["env"]["next_queue_url"]) == {"Ref": queues[f["next_queue"]]["logical_id"]}, f"{lid} next queue")
    if spec["env"]["deliver_queue_prefix"] in f["env"]:
        check(env.get(spec["env"]["deliver_queue_prefix"]) == stack_name(spec["deliver_queue_name_prefix"]),
              f"{lid} {spec['env']['deliver_queue_prefix']} should be !Sub ${{AWS::StackName}}{spec['deliver_queue_name_prefix']}")
    if spec["env"]["retention_days"] in f["env"]:
        check(env.get(spec["env"]["retention_days"]) == {"Ref": "AuditRetentionDays"}, f"{lid} {spec['env']['retention_days']} should be !Ref AuditRetentionDays")
    check(env.get(spec["env"]["tls_roots"]) == {"Ref": "TlsRoots"}, f"{lid} {spec['env']['tls_roots']} should be !Ref TlsRoots")
    if spec["env"]["raw_retention_days"] in f["env"]:
        check(env.get(spec["env"]["raw_retention_days"]) == {"Ref": "RetentionDays"}, f"{lid} {spec['env']['raw_retention_days']} should be !Ref RetentionDays")
    events = list(p.get("Events", {}).values())
    check(len(events) == 1 and events[0].get("Type") == "SQS", f"{lid}: expected exactly one SQS event")
    ev = events[0].get("Properties", {}) if events else {}
    check(ev.get("Queue") == {"Fn::GetAtt": [queues[f["source_queue"]]["logical_id"], "Arn"]}, f"{lid} source queue")
    check(ev.get("BatchSize") == fs["batch_size"], f"{lid} BatchSize")
    check(ev.get("MaximumBatchingWindowInSeconds") == {"Ref": "BatchingWindowSeconds"}, f"{lid} batching window should be !Ref BatchingWindowSeconds")
    check(ev.get("ScalingConfig") == {"MaximumConcurrency": fs["max_concurrency"]}, f"{lid} MaximumConcurrency")
    check(ev.get("FunctionResponseTypes") == ["ReportBatchItemFailures"], f"{lid} ReportBatchItemFailures")
    # The crate may not exist yet; when it does, its package and bin names must match.
    cargo = Path(f["code_uri"]) / "Cargo.toml"
    if cargo.exists():
        if tomllib:
            manifest = tomllib.loads(cargo.read_text())
            package = manifest.get("package", {}).get("name")
            bins = [b.get("name") for b in manifest.get("bin", [])] or [package]
        else:
            names = re.findall(r'^name\s*=\s*"([^"]+)"', cargo.read_text(), re.M)
            package, bins = (names[0] if names else None), names
        check(package == f["package"], f"{cargo}: package is not {f['package']}")
        check(f["binary"] in bins, f"{cargo}: no bin named {f['binary']} (BuildProperties.Binary)")

# The digest and links functions: scheduled, and behind a function URL.
for f in spec["digest_functions"]:
    lid = f["logical_id"]
    p = props(lid, "AWS::Serverless::Function")
    check(p.get("FunctionName") == stack_name(f["name_suffix"]), f"{lid} FunctionName")
    check(p.get("CodeUri") == f["code_uri"], f"{lid} CodeUri")
    check(res.get(lid, {}).get("Metadata", {}).get("BuildProperties", {}).get("Binary") == f["binary"], f"{lid} Binary")
    env = {**glob.get("Environment", {}).get("Variables", {}), **p.get("Environment", {}).get("Variables", {})}
    check(set(env) == set(f["env"]), f"{lid} env vars {sorted(env)} != {sorted(f['env'])}")
    check(env.get("MAILROOM_LINK_KEY_SECRET") == {"Ref": spec["link_key_secret"]["logical_id"]}, f"{lid} link key secret")
    check(env.get(spec["env"]["tls_roots"]) == {"Ref": "TlsRoots"}, f"{lid} {spec['env']['tls_roots']} should be !Ref TlsRoots")
    cargo = Path(f["code_uri"]) / "Cargo.toml"
    check(cargo.exists() and f'name = "{f["binary"]}"' in cargo.read_text(), f"{cargo}: no bin {f['binary']}")
    alarm = props(lid.replace("Function", "ErrorsAlarm"), "AWS::CloudWatch::Alarm")
    check(alarm.get("Dimensions") == [{"Name": "FunctionName", "Value": {"Ref": lid}}], f"{lid} errors alarm")
    if f["event"] == "Schedule":
        events = list(p.get("Events", {}).values())
        check(len(events) == 1 and events[0].get("Type") == "Schedule", f"{lid}: expected one Schedule event")
        check(env.get("MAILROOM_LINK_URL") == {"Fn::GetAtt": ["LinksFunctionUrl", "FunctionUrl"]}, f"{lid} link URL")
    else:
        check(not p.get("Events"), f"{lid}: no events besides its URL")
        check(p.get("FunctionUrlConfig", {}).get("AuthType") == "NONE", f"{lid}: a public function URL")
        check(env.get("MAILROOM_ROUTE_QUEUE_URL") == {"Ref": queues["route"]["logical_id"]}, f"{lid} route queue")
        # A public URL: its concurrency is capped unless the parameter says 0, for
        # accounts that cannot reserve any.
        param = tpl["Parameters"].get("LinksReservedConcurrency", {})
        check(param.get("Type") == "Number" and param.get("Default") == f["reserved_concurrency_default"]
              and param.get("MinValue") == 0,
              f"LinksReservedConcurrency: a Number, default {f['reserved_concurrency_default']}, at least 0")
        check(tpl.get("Conditions", {}).get("ReservesLinksConcurrency")
              == {"Fn::Not": [{"Fn::Equals": [{"Ref": "LinksReservedConcurrency"}, "0"]}]},
              "condition ReservesLinksConcurrency should be LinksReservedConcurrency != 0")
        check(p.get("ReservedConcurrentExecutions") == {"Fn::If": ["ReservesLinksConcurrency",
              {"Ref": "LinksReservedConcurrency"}, {"Ref": "AWS::NoValue"}]},
              f"{lid} ReservedConcurrentExecutions should be !If [ReservesLinksConcurrency, !Ref LinksReservedConcurrency, !Ref AWS::NoValue]")
        # Anyone a digest goes to uses this role: it writes corrections, never the config.
        links_role = props(p.get("Role", {}).get("Fn::GetAtt", [""])[0], "AWS::IAM::Role")
        writes = [r for pol in links_role.get("Policies", []) for st in pol["PolicyDocument"]["Statement"]
                  if any(a.startswith("s3:Put") or a.startswith("s3:Delete") or a == "s3:*"
                         for a in (st["Action"] if isinstance(st["Action"], list) else [st["Action"]]))
                  for r in (st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]])]
        check(writes == [{"Fn::Sub": "${MailBucket.Arn}/" + w} for w in f["writes"]],
              f"{lid} may write only {f['writes']} in the bucket (never the config), not {writes}")
# The retrain function: scheduled, with the memory and time training takes, and a role
# that may replace models but not the config.
f = spec["retrain_function"]
lid = f["logical_id"]
p = props(lid, "AWS::Serverless::Function")
check(p.get("FunctionName") == stack_name(f["name_suffix"]), f"{lid} FunctionName")
check(p.get("CodeUri") == f["code_uri"], f"{lid} CodeUri")
check(res.get(lid, {}).get("Metadata", {}).get("BuildProperties", {}).get("Binary") == f["binary"], f"{lid} Binary")
check((p.get("MemorySize"), p.get("Timeout")) == (f["memory_mb"], f["timeout_seconds"]), f"{lid} MemorySize/Timeout")
env = {**glob.get("Environment", {}).get("Variables", {}), **p.get("Environment", {}).get("Variables", {})}
check(set(env) == set(f["env"]), f"{lid} env vars {sorted(env)} != {sorted(f['env'])}")
check(env.get("MAILROOM_TRAINING_PREFIX") == spec["bucket"]["prefixes"]["training"], f"{lid} training prefix")
check(env.get("MAILROOM_RETRAIN_FPR") == {"Ref": "RetrainFpr"}, f"{lid} MAILROOM_RETRAIN_FPR should be !Ref RetrainFpr")
events = list(p.get("Events", {}).values())
check(len(events) == 1 and events[0].get("Type") == "Schedule"
      and events[0].get("Properties", {}).get("Schedule") == {"Ref": "RetrainSchedule"}, f"{lid}: one Schedule event on RetrainSchedule")
cargo = Path(f["code_uri"]) / "Cargo.toml"
check(cargo.exists() and f'name = "{f["binary"]}"' in cargo.read_text(), f"{cargo}: no bin {f['binary']}")
alarm = props(lid.replace("Function", "ErrorsAlarm"), "AWS::CloudWatch::Alarm")
check(alarm.get("Dimensions") == [{"Name": "FunctionName", "Value": {"Ref": lid}}], f"{lid} errors alarm")
role = props(p.get("Role", {}).get("Fn::GetAtt", [""])[0], "AWS::IAM::Role")
puts = [r for pol in role.get("Policies", []) for st in pol["PolicyDocument"]["Statement"]
        if "s3:PutObject" in (st["Action"] if isinstance(st["Action"], list) else [st["Action"]])
        for r in (st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]])]
check(puts == [{"Fn::Sub": "${MailBucket.Arn}/config/models/*"}], f"{lid} may write models only, not {puts}")

# The config (allow_senders included) is the operator's: no function's role may write it,
# whatever a digest link asks for (the retrain function writes models only, above).
for lid, r in res.items():
    if r.get("Type") != "AWS::IAM::Role":
        continue
    for pol in r.get("Properties", {}).get("Policies", []):
        for st in pol["PolicyDocument"]["Statement"]:
            actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
            if not any(a in ("s3:PutObject", "s3:*", "*") for a in actions):
                continue
            for r_ in (st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]):
                sub = r_.get("Fn::Sub", "") if isinstance(r_, dict) else str(r_)
                sub = sub if isinstance(sub, str) else sub[0]
                writes_config = "${ConfigKey}" in sub or (
                    "/config/" in sub and not sub.endswith("/config/models/*"))
                check(not writes_config, f"{lid} {st.get('Sid')} writes the config ({sub}): only operators may")

# sam build runs cargo lambda in each function's CodeUri, and cargo reads the functions'
# release profile (no LTO) from functions/.cargo/config.toml only below functions/: a
# function elsewhere would quietly get the CLI's fat-LTO profile.
for lid, r in res.items():
    if r.get("Type") == "AWS::Serverless::Function":
        uri = r.get("Properties", {}).get("CodeUri", "")
        check(isinstance(uri, str) and uri.startswith("functions/"), f"{lid} CodeUri {uri!r} is not under functions/")
profile = Path("functions/.cargo/config.toml")
if tomllib and profile.exists():
    release = tomllib.loads(profile.read_text()).get("profile", {}).get("release", {})
    check(release.get("lto") is False, f"{profile}: [profile.release] lto should be false")
else:
    check(profile.exists() and re.search(r"^lto\s*=\s*false", profile.read_text(), re.M), f"{profile}: no lto = false")

secret = props(spec["link_key_secret"]["logical_id"], "AWS::SecretsManager::Secret")
check(secret.get("Name") == stack_name(spec["link_key_secret"]["name_suffix"]), "LinkKeySecret Name")
check(secret.get("GenerateSecretString", {}).get("PasswordLength", 0) >= 32, "LinkKeySecret: at least 32 characters")

# Custom metric alarm, on the functions' EMF count; metrics travel in the logs, so no role
# may call PutMetricData (it takes no resource, only "*").
m = spec["metrics"]
alarm = props("ConfigRejectedAlarm", "AWS::CloudWatch::Alarm")
check((alarm.get("Namespace"), alarm.get("MetricName")) == (m["namespace"], m["config_rejected"]), "ConfigRejected alarm")
check("cloudwatch:PutMetricData" not in text, "a role still calls cloudwatch:PutMetricData")
check(f'"{m["namespace"]}", "Messages", "Stage"' in text, "the dashboard reads the EMF namespace")

for p in problems:
    print(f"drift: {p}", file=sys.stderr)
if problems:
    sys.exit(1)
print("template.yaml matches infra/resources.json")
EOF

if [[ $failed -ne 0 ]]; then
    echo "lint-template: FAILED" >&2
    exit 1
fi
echo "lint-template: OK"
