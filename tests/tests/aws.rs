//! The pipeline on AWS, emulated: real S3, SQS, DynamoDB, SESv2 and CloudWatch APIs (moto
//! server, started by `infra/test.sh`), the resources named and configured from
//! `infra/resources.json`, and the four stages run either in process through the shared SQS
//! handler (the harness plays the event source mapping) or as the compiled Lambda binaries
//! against a Runtime API. Without `MAILROOM_TEST_ENDPOINT` these tests say they skipped.
//!
//! Every test makes its own stack, so they run concurrently on one emulator.

use std::time::Duration;

use mailroom_core::model::{Envelope, Stage};
use mailroom_tests::aws::{
    OPERATOR, RETENTION_DAYS, Reported, RuntimeApi, SentMail, Stack, config_text, fixture,
    function_binary, resources, ses_message_id, source_queue,
};

const STAGE_KEYS: [&str; 4] = [
    "audit#classify",
    "audit#filter",
    "audit#respond",
    "audit#route",
];

/// Asserts that a message went through all four stages: one audit record each, which is
/// also the stage's record of having finished (no other write per stage).
async fn assert_all_stages(stack: &Stack, id: &str) {
    let keys = stack.sort_keys(id).await;
    for want in STAGE_KEYS {
        assert!(
            keys.iter().any(|k| k == want),
            "message {id}: no {want} item; items: {keys:?}"
        );
    }
}

fn forwards(sent: &[SentMail]) -> Vec<&SentMail> {
    sent.iter().filter(|m| !m.is_auto_reply()).collect()
}

fn replies(sent: &[SentMail]) -> Vec<&SentMail> {
    sent.iter().filter(|m| m.is_auto_reply()).collect()
}

fn describe(sent: &[SentMail]) -> String {
    sent.iter()
        .map(|m| format!("to {:?}: {:?}", m.destinations, m.header("Subject")))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn resources_json_names_what_the_functions_read() {
    use mailroom_aws::settings;
    let r = resources();
    for (key, var) in [
        ("bucket", settings::BUCKET),
        ("table", settings::TABLE),
        ("config_key", settings::CONFIG_KEY),
        ("next_queue_url", settings::NEXT_QUEUE_URL),
        ("from_address", settings::FROM_ADDRESS),
        ("deliver_queue_prefix", settings::DELIVER_QUEUE_PREFIX),
        ("retention_days", settings::RETENTION_DAYS),
        ("tls_roots", mailroom_aws::tls::ROOTS_VAR),
    ] {
        assert_eq!(r.env_name(key), var, "infra/resources.json env.{key}");
    }
    assert_eq!(r.metrics.namespace, mailroom_aws::metrics::NAMESPACE);
    assert_eq!(
        r.metrics.config_rejected,
        mailroom_aws::metrics::CONFIG_REJECTED
    );
    // A live attempt is never overtaken (the lease outlasts an invocation), and the
    // redelivery after a killed one finds the lease run out (the visibility timeout is
    // longer), so it decides by the effect's semantics instead of waiting.
    let lease = mailroom_core::pipeline::EFFECT_LEASE.as_secs();
    let timeout = r.function_settings.timeout_seconds;
    let visibility = u64::from(r.queue_settings.visibility_timeout_seconds);
    assert!(
        timeout < lease && lease < visibility,
        "function timeout {timeout} s < effect lease {lease} s < visibility timeout {visibility} s"
    );
    assert!(mailroom_aws::handler::START_RESERVE.as_secs() < timeout);
    for stage in Stage::ALL {
        let f = r.function(stage);
        assert_eq!(f.binary, format!("mailroom-{stage}"));
        assert_eq!(
            f.next_queue.is_some(),
            stage.next().is_some(),
            "{stage} next queue"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_path_through_all_four_stages() {
    let Some(stack) = Stack::create("happy").await else {
        return;
    };
    let support = stack.put_mail("support.eml").await;
    let sales = stack.put_mail("sales.eml").await;
    let billing = stack.put_mail("billing.eml").await;
    let spam = stack.put_mail("spam-fail.eml").await;
    let virus = stack.put_mail("virus.eml").await;

    let pipeline = stack.pipeline().await;
    stack.run_until_idle(&pipeline).await;

    for id in [&support, &sales, &billing, &spam, &virus] {
        assert_all_stages(&stack, id).await;
    }
    stack.assert_no_dead_letters().await;

    // The functions' EMF lines: every document is well formed, and the counts are the
    // pipeline's. (SES's spam FAIL quarantines one message, the virus is rejected.)
    let docs = pipeline.metric_docs();
    assert!(!docs.is_empty());
    for d in &docs {
        let cw = &d["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(cw["Namespace"], "mailroom", "{d}");
        assert!(d["_aws"]["Timestamp"].as_u64().is_some(), "{d}");
        for dim in cw["Dimensions"][0].as_array().unwrap() {
            assert!(
                d[dim.as_str().unwrap()].is_string(),
                "dimension {dim} in {d}"
            );
        }
        for m in cw["Metrics"].as_array().unwrap() {
            assert!(
                d[m["Name"].as_str().unwrap()].is_number(),
                "metric {m} in {d}"
            );
            assert!(["Count", "Milliseconds"].contains(&m["Unit"].as_str().unwrap()));
        }
    }
    for stage in ["filter", "classify", "route", "respond"] {
        assert_eq!(
            pipeline.metric("Messages", &[("Stage", stage)]),
            5.0,
            "{stage}"
        );
    }
    assert_eq!(pipeline.metric("Verdicts", &[("Verdict", "accept")]), 3.0);
    assert_eq!(
        pipeline.metric("Verdicts", &[("Verdict", "quarantine")]),
        1.0
    );
    assert_eq!(pipeline.metric("Verdicts", &[("Verdict", "reject")]), 1.0);
    assert_eq!(
        pipeline.metric("Categories", &[("Category", "support")]),
        1.0
    );
    assert!(pipeline.metric("Actions", &[("Action", "forward")]) >= 2.0);
    let replies_counted = pipeline.metric("Replies", &[("Reply", "sent")]);
    let replies_sent = replies(&stack.sent_mail().await).len() as f64;
    assert_eq!(replies_counted, replies_sent);
    assert!(docs.iter().all(|d| d.get("Faults").is_none()), "no faults");
    // What the lines add to the logs (the cost model's CloudWatch Logs line).
    let bytes: usize = docs.iter().map(|d| d.to_string().len() + 1).sum();
    eprintln!(
        "EMF: {} lines, {bytes} bytes for 5 messages ({} bytes per message)",
        docs.len(),
        bytes / 5
    );

    // Items expire (DynamoDB TTL) after MAILROOM_RETENTION_DAYS.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expires = stack
        .item_number(&support, "audit#filter", "expires_at")
        .await;
    let want = now + RETENTION_DAYS * 86_400;
    assert!(
        expires.is_some_and(|e| e.abs_diff(want) < 3_600),
        "expires_at {expires:?}, want about {want}"
    );

    let sent = stack.sent_mail().await;
    let (fwd, rep) = (forwards(&sent), replies(&sent));
    assert_eq!((fwd.len(), rep.len()), (2, 2), "sent:\n{}", describe(&sent));

    // The forward of the sales mail, rewritten the way SES requires.
    let f = fwd
        .iter()
        .find(|m| m.sent_to("sales-team@corp.example"))
        .expect("a forward to sales-team");
    assert_eq!(
        f.header("From").as_deref(),
        Some(format!("\"Omar Reyes via mailroom\" <{}>", stack.from_address).as_str())
    );
    assert!(
        f.header("Reply-To")
            .is_some_and(|r| r.contains("omar@buyer.example")),
        "{:?}",
        f.headers()
    );
    for gone in ["DKIM-Signature", "Return-Path", "Sender"] {
        assert!(!f.has_header(gone), "the forward still has {gone}");
    }
    assert_eq!(f.header("Subject").as_deref(), Some("Quote for 12 seats"));
    // The body as SES received it (through the request body ses.rs writes itself) is the
    // original's, byte for byte.
    let original = String::from_utf8(fixture("sales.eml")).expect("fixture is UTF-8");
    let body_of = |m: &str| {
        m.split_once("\r\n\r\n")
            .or_else(|| m.split_once("\n\n"))
            .map(|(_, body)| body.to_string())
    };
    assert!(f.raw.contains("we would like a quote for 12 seats"));
    let want = body_of(&original).expect("the fixture has a body");
    assert!(want.contains("quote for 12 seats"), "{want:?}");
    assert_eq!(
        body_of(&f.raw).as_deref(),
        Some(want.as_str()),
        "the forwarded body changed"
    );

    // The billing mail: forwarded and stored below the store root.
    assert!(
        fwd.iter().any(|m| m.sent_to("ledger@corp.example")),
        "no billing forward"
    );
    assert_eq!(
        stack.objects("store/billing/").await,
        vec![format!("store/billing/{billing}.eml")]
    );

    // Auto-replies to the support and sales senders, marked as such.
    let r = rep
        .iter()
        .find(|m| m.sent_to("nora@client.example"))
        .expect("a reply to the support sender");
    assert_eq!(r.header("Auto-Submitted").as_deref(), Some("auto-replied"));
    assert_eq!(
        r.header("In-Reply-To").as_deref(),
        Some("<ticket-42@client.example>")
    );
    assert!(
        r.header("Subject")
            .is_some_and(|s| s.starts_with("Re: Export button does nothing"))
    );
    assert!(
        rep.iter().any(|m| m.sent_to("omar@buyer.example")),
        "no reply to the sales sender"
    );

    // The virus: rejected, never forwarded although a forward rule matches its recipient.
    assert_eq!(
        stack.audit_decision(&virus, Stage::Filter).await.as_deref(),
        Some("reject")
    );
    assert!(
        !sent
            .iter()
            .any(|m| m.raw.contains("prices-9@agency.example")),
        "something was sent for the virus"
    );

    // The SES spam FAIL: quarantined, not forwarded.
    assert_eq!(
        stack.audit_decision(&spam, Stage::Filter).await.as_deref(),
        Some("quarantine")
    );
    assert_eq!(
        stack.objects("quarantine/").await,
        vec![format!("quarantine/{spam}.eml")]
    );
    assert_eq!(
        stack.get_object(&format!("quarantine/{spam}.eml")).await,
        fixture("spam-fail.eml")
    );
    assert!(
        !sent
            .iter()
            .any(|m| m.raw.contains("reward-77@prizes.example")),
        "the spam was forwarded"
    );

    // `deliver = "tickets"`: the envelope, with every result so far, on <stack>-deliver-tickets.
    let delivered = stack.drain_bodies(&stack.tickets_url).await;
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    let env: Envelope = serde_json::from_str(&delivered[0]).expect("an envelope");
    assert_eq!(env.id, support);
    assert!(env.results.filter.is_some() && env.results.classify.is_some());
    assert_eq!(
        env.results.classify.as_ref().map(|c| c.category.as_str()),
        Some("support")
    );

    // Raw mail reads, by function: classify works from the copy without attachment
    // contents filter hands it, respond from the header section route hands it; neither
    // reads the raw mail.
    let raw_object = format!("/{}", resources().prefix("raw"));
    let raw_gets = |who: &str| {
        mailroom_tests::proxy::proxy(&stack.moto)
            .calls(&stack.principal(who))
            .iter()
            .filter(|c| {
                c.operation == "GetObject"
                    && c.needs.iter().any(|n| n.resource.contains(&raw_object))
            })
            .count()
    };
    for (stage, gets) in [("filter", 5), ("classify", 0), ("route", 5), ("respond", 0)] {
        assert_eq!(raw_gets(stage), gets, "raw mail GETs by {stage}");
    }
    stack.assert_calls_allowed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_deliveries_send_nothing_twice() {
    let Some(stack) = Stack::create("dupes").await else {
        return;
    };
    let ids = [
        stack.put_mail("support.eml").await,
        stack.put_mail("sales.eml").await,
        stack.put_mail("billing.eml").await,
    ];
    let pipeline = stack.pipeline().await;
    // Every S3 notification and every stage message arrives twice, in shuffled order.
    for stage in Stage::ALL {
        let queue = source_queue(stage);
        let sent = stack.duplicate_messages(queue, 2).await;
        assert!(
            sent >= 2 * ids.len(),
            "{queue}: only {sent} messages after duplicating"
        );
        stack.pump_until_empty(queue, &pipeline.app(stage)).await;
    }
    stack.run_until_idle(&pipeline).await;

    for id in &ids {
        assert_all_stages(&stack, id).await;
    }
    stack.assert_no_dead_letters().await;
    let sent = stack.sent_mail().await;
    let (fwd, rep) = (forwards(&sent), replies(&sent));
    assert_eq!(
        fwd.iter()
            .filter(|m| m.sent_to("sales-team@corp.example"))
            .count(),
        1,
        "sent:\n{}",
        describe(&sent)
    );
    assert_eq!(
        fwd.iter()
            .filter(|m| m.sent_to("ledger@corp.example"))
            .count(),
        1,
        "sent:\n{}",
        describe(&sent)
    );
    assert_eq!(fwd.len(), 2, "sent:\n{}", describe(&sent));
    assert_eq!(
        rep.iter()
            .filter(|m| m.sent_to("nora@client.example"))
            .count(),
        1,
        "sent:\n{}",
        describe(&sent)
    );
    assert_eq!(
        rep.iter()
            .filter(|m| m.sent_to("omar@buyer.example"))
            .count(),
        1,
        "sent:\n{}",
        describe(&sent)
    );
    assert_eq!(rep.len(), 2, "sent:\n{}", describe(&sent));
    assert_eq!(
        stack.drain_bodies(&stack.tickets_url).await.len(),
        1,
        "the delivery was repeated"
    );
    stack.assert_calls_allowed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_record_ends_in_the_dlq_alone() {
    let Some(stack) = Stack::create("poison").await else {
        return;
    };
    let inbound = stack.queue("inbound").url.clone();
    let poison = r#"{"notificationType": "Received", "mail": {"messageId": "#;
    stack.send(&inbound, poison).await;
    let good = [
        stack.put_mail("support.eml").await,
        stack.put_mail("billing.eml").await,
    ];

    let pipeline = stack.pipeline().await;
    let filter = pipeline.app(Stage::Filter);
    let first = stack.pump("inbound", &filter).await;
    assert_eq!(
        first.received.len(),
        3,
        "one batch holds the poison and both mails: {:?}",
        first.bodies
    );
    let poison_id = first
        .bodies
        .iter()
        .position(|b| b == poison)
        .map(|i| first.received[i].clone())
        .expect("the poison was in the batch");
    assert_eq!(
        first.failed(),
        vec![poison_id.clone()],
        "only the poison fails"
    );

    // Failed records come back at once; the redrive policy moves the poison to the DLQ
    // after maxReceiveCount receives (checked on the next receive).
    let mut failures = first.failed().len() as u32;
    for _ in 0..20 {
        let report = stack.pump("inbound", &filter).await;
        if report.received.is_empty() {
            break;
        }
        assert_eq!(report.received, vec![poison_id.clone()]);
        failures += report.failed().len() as u32;
    }
    assert_eq!(failures, resources().queue_settings.max_receive_count);

    stack.run_until_idle(&pipeline).await;
    for id in &good {
        assert_all_stages(&stack, id).await;
    }
    let mut dead = stack.dead_letters().await;
    assert_eq!(
        dead.remove("inbound").unwrap_or_default(),
        vec![poison.to_string()]
    );
    assert!(
        dead.values().all(Vec::is_empty),
        "other dead letters: {dead:?}"
    );
    stack.assert_calls_allowed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparseable_input_is_quarantined_and_acknowledged() {
    let Some(stack) = Stack::create("notmail").await else {
        return;
    };
    let png = fixture("not-mail.png");
    let id = stack.put_raw(&ses_message_id(), png.clone()).await;
    let pipeline = stack.pipeline().await;
    stack.run_until_idle(&pipeline).await;

    assert_eq!(
        stack.audit_decision(&id, Stage::Filter).await.as_deref(),
        Some("quarantine")
    );
    assert_all_stages(&stack, &id).await;
    let key = format!("quarantine/{id}.eml");
    assert_eq!(stack.objects("quarantine/").await, vec![key.clone()]);
    assert_eq!(stack.get_object(&key).await, png);
    stack.assert_no_dead_letters().await;
    assert!(
        stack
            .receive_all(&stack.queue("inbound").url)
            .await
            .is_empty(),
        "the inbound queue is not empty"
    );
    assert!(stack.sent_mail().await.is_empty());
    stack.assert_calls_allowed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_changes_apply_and_bad_configs_are_refused() {
    let Some(mut stack) = Stack::create("reload").await else {
        return;
    };
    stack.config_refresh_seconds = Some(0);
    let pipeline = stack.pipeline().await;
    let metric = &resources().metrics.config_rejected;

    // The config the stack started with: support mail goes to the tickets queue.
    let first = stack.put_mail("support.eml").await;
    stack.run_until_idle(&pipeline).await;
    assert_eq!(stack.drain_bodies(&stack.tickets_url).await.len(), 1);

    // An invalid config is refused; the running functions keep the last good one.
    let rejected_before = pipeline.metric(metric, &[]);
    stack
        .upload_config(&format!("{}\n[no_such_table]\nkey = 1\n", config_text()))
        .await;
    let second = stack.put_mail("support.eml").await;
    stack.run_until_idle(&pipeline).await;
    assert_all_stages(&stack, &second).await;
    assert_eq!(
        stack.drain_bodies(&stack.tickets_url).await.len(),
        1,
        "the old config stopped serving"
    );
    // Each function that saw the bad config logged its EMF count.
    let rejected = pipeline.metric(metric, &[]) - rejected_before;
    assert!(rejected >= 1.0, "{metric}: {rejected}");

    // A valid new config is picked up by the next message.
    let changed = config_text().replace(
        r#"actions = [{ deliver = "tickets" }]"#,
        r#"actions = [{ store = "support-v2/" }]"#,
    );
    assert_ne!(
        changed,
        config_text(),
        "the test config changed shape; update this test"
    );
    stack.upload_config(&changed).await;
    let third = stack.put_mail("support.eml").await;
    stack.run_until_idle(&pipeline).await;
    assert_eq!(
        stack.objects("store/support-v2/").await,
        vec![format!("store/support-v2/{third}.eml")]
    );
    assert!(stack.drain_bodies(&stack.tickets_url).await.is_empty());
    for id in [&first, &second, &third] {
        assert_all_stages(&stack, id).await;
    }
    stack.assert_no_dead_letters().await;
    stack.assert_calls_allowed();
}

/// Runs one stage's compiled binary for one invocation: a genuine record of its queue (the
/// message brought there by running the earlier stages in process) plus a poison record.
async fn function_binary_serves_one_batch(stage: Stage) {
    let Some(stack) = Stack::create(&format!("bin-{stage}")).await else {
        return;
    };
    let Some(binary) = function_binary(stage) else {
        return;
    };
    let id = stack.put_mail("support.eml").await;
    let pipeline = stack.pipeline().await;
    for earlier in Stage::ALL.into_iter().take_while(|s| *s != stage) {
        stack
            .pump_until_empty(source_queue(earlier), &pipeline.app(earlier))
            .await;
    }
    let queue = source_queue(stage);
    let url = stack.queue(queue).url.clone();
    stack.send(&url, "{\"version\": 1, \"id\": ").await;
    let records = stack.receive_all(&url).await;
    let poison = records
        .iter()
        .find(|r| r.body.starts_with("{\"version\": 1, \"id\": "))
        .expect("the poison record");
    assert!(records.len() >= 2, "{queue}: {records:?}");

    let api = RuntimeApi::start(&stack.function_arn(stage)).await;
    let request_id = api.push_event(&stack.sqs_event(queue, &records));
    let mut process = stack.start_function(stage, &binary, &api, &[]);
    let report = api.wait_report(&mut process, Duration::from_secs(60)).await;
    let output = process.stop().await;
    let Some(Reported::Response {
        request_id: answered,
        body,
    }) = report
    else {
        panic!(
            "{stage}: no response (got {report:?}); requests {:?}\n{output}",
            api.requests()
        );
    };
    assert_eq!(answered, request_id);
    let response: serde_json::Value = serde_json::from_str(&body).expect("a JSON response");
    assert_eq!(
        response["batchItemFailures"],
        serde_json::json!([{ "itemIdentifier": poison.message_id }]),
        "{stage}: {body}\n{output}"
    );
    assert!(
        stack
            .sort_keys(&id)
            .await
            .contains(&format!("audit#{stage}")),
        "{stage} did not record the good message\n{output}"
    );
    // Its log (standard output) carries the EMF lines: the good message, and the poison
    // record as a fault.
    let docs: Vec<serde_json::Value> = output
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|d| d.get("_aws").is_some())
        .collect();
    let counted = |name: &str, dims: &[(&str, &str)]| {
        docs.iter()
            .filter(|d| dims.iter().all(|(k, v)| d[*k] == *v) && d[name].is_number())
            .count()
    };
    assert_eq!(
        counted("Messages", &[("Stage", stage.as_str())]),
        1,
        "{output}"
    );
    assert_eq!(
        counted("Faults", &[("Stage", stage.as_str()), ("Fault", "poison")]),
        1,
        "{output}"
    );
    if let Some(next) = &resources().function(stage).next_queue {
        let published = stack.drain_bodies(&stack.queue(next).url).await;
        assert_eq!(published.len(), 1, "{stage} -> {next}: {published:?}");
        let env: Envelope = serde_json::from_str(&published[0]).expect("an envelope");
        assert_eq!(env.id, id);
    }
    stack.assert_calls_allowed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_binary_on_the_runtime_api() {
    function_binary_serves_one_batch(Stage::Filter).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classify_binary_on_the_runtime_api() {
    function_binary_serves_one_batch(Stage::Classify).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_binary_on_the_runtime_api() {
    function_binary_serves_one_batch(Stage::Route).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn respond_binary_on_the_runtime_api() {
    function_binary_serves_one_batch(Stage::Respond).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_without_its_bucket_refuses_to_start() {
    let Some(stack) = Stack::create("noenv").await else {
        return;
    };
    let Some(binary) = function_binary(Stage::Filter) else {
        return;
    };
    let api = RuntimeApi::start(&stack.function_arn(Stage::Filter)).await;
    let var = mailroom_aws::settings::BUCKET;
    let mut process = stack.start_function(Stage::Filter, &binary, &api, &[var]);
    let report = api.wait_report(&mut process, Duration::from_secs(30)).await;
    let output = process.finish(Duration::from_secs(30)).await;
    let init_error = match &report {
        Some(Reported::InitError { body }) => Some(body.clone()),
        None => None,
        Some(other) => panic!("the function ran without {var}: {other:?}\n{output}"),
    };
    let failed = init_error.is_some() || output.status.is_some_and(|s| !s.success());
    assert!(
        failed,
        "the function neither exited nonzero nor posted /init/error\n{output}"
    );
    let said = format!(
        "{}{}{}",
        init_error.unwrap_or_default(),
        output.stdout,
        output.stderr
    );
    assert!(
        said.contains(var),
        "the output does not name {var}\n{output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_raw_object_is_audited_not_retried() {
    let Some(stack) = Stack::create("vanished").await else {
        return;
    };
    let id = stack.put_mail("support.eml").await;
    let key = format!("{}{id}", resources().prefix("raw"));
    stack
        .s3
        .delete_object()
        .bucket(&stack.bucket)
        .key(&key)
        .send()
        .await
        .expect("deleting the raw mail");
    let pipeline = stack.pipeline().await;
    stack.run_until_idle(&pipeline).await;

    // NoSuchKey is permanent: audited once and acknowledged, not retried into the DLQ.
    let decision = stack
        .audit_decision(&id, Stage::Filter)
        .await
        .unwrap_or_default();
    assert!(
        decision.starts_with("failed: raw mail unavailable"),
        "{decision}"
    );
    assert!(decision.contains("NoSuchKey"), "{decision}");
    // One line, not the SDK's dump of the raw HTTP response (headers, S3's XML error).
    assert!(
        !decision.contains("<Error>") && !decision.contains("SdkBody"),
        "{decision}"
    );
    // That failure is the filter's one record, and no later stage ran.
    let keys = stack.sort_keys(&id).await;
    assert_eq!(
        keys.iter().filter(|k| k.starts_with("audit#")).count(),
        1,
        "{keys:?}"
    );
    stack.assert_no_dead_letters().await;
    assert!(
        stack
            .receive_all(&stack.queue("inbound").url)
            .await
            .is_empty()
    );
    stack.assert_calls_allowed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_sender_identity_waits_in_the_dlq_not_the_quarantine() {
    let Some(mut stack) = Stack::create("refused").await else {
        return;
    };
    // An address of a domain with no SES identity: SES refuses the sender. That is a
    // configuration error (as the sandbox refusing a recipient is): nothing about the
    // message is wrong, so it is retried and ends in the route DLQ, whose alarm fires,
    // ready to be redriven once the identity is verified.
    stack.from_address = format!("mailroom-{}@unverified.example", stack.name);
    let id = stack.put_mail("sales.eml").await;
    let pipeline = stack.pipeline().await;
    stack.run_until_idle(&pipeline).await;

    assert!(stack.objects("quarantine/").await.is_empty());
    assert_eq!(stack.audit_decision(&id, Stage::Route).await, None);
    assert!(stack.sent_mail().await.is_empty());
    let mut dead = stack.dead_letters().await;
    let route = dead.remove("route").unwrap_or_default();
    assert_eq!(route.len(), 1, "{route:?}");
    let env: Envelope = serde_json::from_str(&route[0]).expect("an envelope");
    assert_eq!(env.id, id);
    assert!(dead.values().all(Vec::is_empty), "{dead:?}");
    stack.assert_calls_allowed();
}

/// A tiny category model, trained here on mail written for the test: quotes and seat
/// counts are sales, invoices and refunds are billing.
fn sales_or_billing_model() -> Vec<u8> {
    let docs = [
        (
            "sales",
            "Quote for 40 seats",
            "Could you send a quote for 40 seats and volume pricing?",
        ),
        (
            "sales",
            "Pricing for our team",
            "We want to buy licences for our team; what does the enterprise plan cost?",
        ),
        (
            "sales",
            "Angebot für Lizenzen",
            "Bitte schicken Sie ein Angebot für 25 Lizenzen mit Mengenrabatt.",
        ),
        (
            "sales",
            "Demo and quote",
            "We would like a demo and a quote before we purchase seats.",
        ),
        (
            "sales",
            "Volume discount",
            "Is there a volume discount if we buy 100 seats this quarter?",
        ),
        (
            "billing",
            "Invoice is wrong",
            "Our invoice charged us twice; please refund the duplicate payment.",
        ),
        (
            "billing",
            "Refund request",
            "Please refund the payment taken from our card after we cancelled.",
        ),
        (
            "billing",
            "Rechnung doppelt",
            "Die Rechnung wurde doppelt abgebucht, bitte erstatten Sie die Zahlung.",
        ),
        (
            "billing",
            "Payment failed",
            "The card payment for the last invoice failed; how do we pay it?",
        ),
        (
            "billing",
            "VAT on invoice",
            "The VAT number on our invoice is wrong, please correct the invoice.",
        ),
    ];
    mailroom_tests::tiny_model("sales-or-billing", &["billing", "sales"], &docs)
}

/// Mail to an address no classify rule knows, so only a model can call it sales.
fn quote_to_info() -> Vec<u8> {
    let raw = String::from_utf8(fixture("sales.eml")).expect("fixture is UTF-8");
    let changed = raw.replace("sales+spring@example.com", "info@example.com");
    assert_ne!(raw, changed, "sales.eml changed shape; update this test");
    changed.into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_load_from_s3_beside_the_config() {
    let Some(mut stack) = Stack::create("models").await else {
        return;
    };
    stack.config_refresh_seconds = Some(0);
    let config_key = &resources().bucket.config_key;
    let with_model = config_text().replace(
        "default_category = \"general\"",
        "default_category = \"general\"\ncategory_model = \"models/category.mrm\"",
    );
    assert_ne!(with_model, config_text(), "the test config changed shape");

    // A config naming a model that is not there: the classify function cannot start, and
    // says which option and which object; the filter function does not need it.
    stack.upload_config(&with_model).await;
    let err = mailroom_aws::app::App::new(stack.settings(Stage::Classify), &stack.sdk)
        .await
        .err()
        .expect("classify started without its model");
    assert!(
        err.contains("[classify] category_model") && err.contains("config/models/category.mrm"),
        "{err}"
    );
    stack.app(Stage::Filter).await;

    // push-config uploads the model beside the config, the config last.
    let model = sales_or_billing_model();
    let operator = mailroom_aws::app::s3_client(&stack.sdk_as(OPERATOR).await);
    let pushed = mailroom_aws::config_source::push_config(
        &operator,
        &stack.bucket,
        config_key,
        &with_model,
        "test config",
        &[("models/category.mrm".to_string(), model.clone())],
    )
    .await
    .expect("push-config");
    let keys: Vec<&str> = pushed.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["config/models/category.mrm", config_key.as_str()]);

    let pipeline = stack.pipeline().await;
    let id = stack.put_raw(&ses_message_id(), quote_to_info()).await;
    stack.run_until_idle(&pipeline).await;
    assert_all_stages(&stack, &id).await;
    // decided_by: what chose the category, then what chose the priority.
    assert_eq!(
        stack.audit_list(&id, Stage::Classify, "decided_by").await[0],
        "model:sales-or-billing"
    );
    let sent = stack.sent_mail().await;
    assert!(
        forwards(&sent)
            .iter()
            .any(|m| m.sent_to("sales-team@corp.example")),
        "the model's sales category did not route to sales:\n{}",
        describe(&sent)
    );

    // A damaged model is refused on reload; the last good one keeps classifying.
    let mut damaged = model.clone();
    let mid = damaged.len() / 2;
    damaged[mid] ^= 0xff;
    assert!(mailroom_learn::Model::from_bytes(&damaged).is_err());
    stack
        .put_object("config/models/category.mrm", damaged)
        .await;
    let again = stack.put_raw(&ses_message_id(), quote_to_info()).await;
    stack.run_until_idle(&pipeline).await;
    assert_eq!(
        stack
            .audit_list(&again, Stage::Classify, "decided_by")
            .await[0],
        "model:sales-or-billing",
        "the damaged model replaced the good one"
    );

    // A config without the model: the default category applies again.
    stack.upload_config(&config_text()).await;
    let last = stack.put_raw(&ses_message_id(), quote_to_info()).await;
    stack.run_until_idle(&pipeline).await;
    assert_eq!(
        stack.objects("store/unrouted/").await,
        vec![format!("store/unrouted/{last}.eml")]
    );
    stack.assert_no_dead_letters().await;
    stack.assert_calls_allowed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipient_rules_follow_the_envelope_not_the_headers() {
    let Some(stack) = Stack::create("envelope").await else {
        return;
    };
    // A blind copy: To names another company; SES's receipt names billing@.
    let raw = String::from_utf8(fixture("billing.eml")).expect("fixture is UTF-8");
    let bcc = raw.replace("To: billing@example.com", "To: accounts@partner.example");
    assert_ne!(raw, bcc, "billing.eml changed shape; update this test");
    let blind = stack
        .receive_mail(
            &ses_message_id(),
            bcc.into_bytes(),
            Some(vec!["billing@example.com".into()]),
        )
        .await;
    // A sender who writes `To: billing@` on mail SES received for support@ does not steer it.
    let steered = raw.replace(
        "To: billing@example.com",
        "To: billing@example.com, support@example.com",
    );
    let forged = stack
        .receive_mail(
            &ses_message_id(),
            steered.into_bytes(),
            Some(vec!["support@example.com".into()]),
        )
        .await;
    let pipeline = stack.pipeline().await;
    stack.run_until_idle(&pipeline).await;

    assert_eq!(
        stack
            .audit_decision(&blind, Stage::Classify)
            .await
            .as_deref(),
        Some("category=billing priority=medium")
    );
    assert_eq!(
        stack
            .audit_decision(&forged, Stage::Classify)
            .await
            .as_deref(),
        Some("category=support priority=medium")
    );
    let sent = stack.sent_mail().await;
    assert_eq!(
        forwards(&sent)
            .iter()
            .filter(|m| m.sent_to("ledger@corp.example"))
            .count(),
        1,
        "only the blind copy goes to billing's ledger:\n{}",
        describe(&sent)
    );
    stack.assert_no_dead_letters().await;
    stack.assert_calls_allowed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_that_cannot_be_rendered_quarantines_the_message_from_respond() {
    let Some(stack) = Stack::create("respond-q").await else {
        return;
    };
    // A template that compiles but names a value the reply context does not have: every
    // attempt fails the same way, so respond takes the failure path (its role may write the
    // quarantine, as the IAM check below proves).
    let broken = config_text().replace(
        "we received your message and opened ticket {{ reference }}.",
        "we received your message about {{ no_such_value.field }}.",
    );
    assert_ne!(broken, config_text(), "the test config changed shape");
    stack.upload_config(&broken).await;
    let id = stack.put_mail("support.eml").await;
    let pipeline = stack.pipeline().await;
    stack.run_until_idle(&pipeline).await;

    let quarantined = format!("quarantine/{id}.eml");
    assert_eq!(
        stack.audit_decision(&id, Stage::Respond).await,
        Some(format!("quarantined as {quarantined}"))
    );
    assert_eq!(stack.objects("quarantine/").await, vec![quarantined]);
    assert!(replies(&stack.sent_mail().await).is_empty());
    stack.assert_no_dead_letters().await;
    stack.assert_calls_allowed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_list_the_quarantine_and_search_by_sender_and_recipient() {
    use mailroom_core::operate::Query;
    use mailroom_core::ports::MessageIndex;
    let Some(stack) = Stack::create("index").await else {
        return;
    };
    let spam = stack.put_mail("spam-fail.eml").await;
    let support = stack.put_mail("support.eml").await;
    let sales = stack.put_mail("sales.eml").await;
    let pipeline = stack.pipeline().await;
    stack.run_until_idle(&pipeline).await;

    // The operator reads the index with its own credentials, as `mailroom` does.
    let index = mailroom_aws::dynamo::DynamoState::new(
        aws_sdk_dynamodb::Client::new(&stack.sdk_as(OPERATOR).await),
        stack.table.clone(),
        Duration::from_secs(RETENTION_DAYS * 86_400),
    );
    let ids = |page: mailroom_core::operate::Page| -> Vec<String> {
        page.rows.into_iter().map(|r| r.id).collect()
    };
    let quarantine = index
        .query(&Query {
            quarantined_only: true,
            ..Query::default()
        })
        .await
        .expect("the quarantine");
    assert_eq!(quarantine.rows.len(), 1, "{quarantine:?}");
    let row = &quarantine.rows[0];
    assert_eq!(row.id, spam);
    assert_eq!(row.quarantined, Some(format!("quarantine/{spam}.eml")));
    assert!(
        row.reasons.contains(&"SES_SPAM_FAIL".to_string()),
        "{row:?}"
    );
    let by_sender = index
        .query(&Query {
            sender: Some("Nora@Client.example".into()),
            ..Query::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(by_sender), std::slice::from_ref(&support));
    let by_recipient = index
        .query(&Query {
            recipient: Some("sales+spring@example.com".into()),
            ..Query::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(by_recipient), std::slice::from_ref(&sales));
    // Everything, newest first, two to a page.
    let first = index
        .query(&Query {
            limit: 2,
            ..Query::default()
        })
        .await
        .unwrap();
    assert_eq!(first.rows.len(), 2);
    let rest = index
        .query(&Query {
            limit: 2,
            before: first.next.clone(),
            ..Query::default()
        })
        .await
        .unwrap();
    let mut all: Vec<String> = ids(first).into_iter().chain(ids(rest)).collect();
    all.sort();
    let mut want = vec![spam.clone(), support, sales];
    want.sort();
    assert_eq!(all, want);
    // What `show` reads besides the message: every stage's audit record.
    use mailroom_core::ports::AuditLog;
    let audit = index.records(&spam).await.expect("the audit records");
    let stages: Vec<Stage> = audit.iter().map(|r| r.stage).collect();
    assert_eq!(stages, Stage::ALL);
    assert_eq!(audit[2].decision, "quarantine");
    assert_eq!(
        audit[2].reasons,
        [format!("quarantined as quarantine/{spam}.eml")]
    );
    stack.assert_calls_allowed();
}
