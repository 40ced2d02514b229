//! What happens to a message when its function runs out of time, is killed, races another
//! invocation, or sees the config change between two attempts. Each test checks the effect
//! counts against the README's table: forwards and deliveries at least once (repeated only
//! when an attempt's outcome is unknown), auto-replies at most once.

use std::time::Duration;

use mailroom_core::model::{Envelope, Stage};
use mailroom_tests::aws::{
    EVERY_EFFECT, Received, Reported, RuntimeApi, SentMail, Stack, every_effect_config,
    function_binary, source_queue,
};
use mailroom_tests::proxy::Fault;

fn forwards(sent: &[SentMail]) -> usize {
    sent.iter()
        .filter(|m| m.sent_to("desk@corp.example"))
        .count()
}

fn replies(sent: &[SentMail]) -> usize {
    sent.iter()
        .filter(|m| m.is_auto_reply() && m.sent_to("nora@client.example"))
        .count()
}

async fn deliveries(stack: &Stack, id: &str) -> usize {
    stack
        .drain_bodies(&stack.tickets_url)
        .await
        .iter()
        .filter(|b| serde_json::from_str::<Envelope>(b).is_ok_and(|e| e.id == id))
        .count()
}

/// A stack with the every-effect config and the lease and redelivery delay scaled down in
/// their deployed relation (the visibility timeout above the lease).
async fn stack(label: &str) -> Option<Stack> {
    let mut stack = Stack::create(label).await?;
    stack.upload_config(&every_effect_config()).await;
    stack.effect_lease_ms = Some(400);
    stack.redelivery_delay = Duration::from_millis(600);
    Some(stack)
}

/// Brings one support message to `stage`'s queue; returns its id and the record there.
async fn to_stage(stack: &Stack, stage: Stage) -> (String, Received) {
    let id = stack.put_mail("support.eml").await;
    for earlier in Stage::ALL.into_iter().take_while(|s| *s != stage) {
        let app = stack.app(earlier).await;
        stack.pump_until_empty(source_queue(earlier), &app).await;
    }
    let url = stack.queue(source_queue(stage)).url.clone();
    let mut records = stack.receive_all(&url).await;
    assert_eq!(records.len(), 1, "{stage}: {records:?}");
    (id, records.remove(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_near_its_deadline_returns_what_it_did_not_finish() {
    let Some(stack) = stack("deadline").await else {
        return;
    };
    let Some(binary) = function_binary(Stage::Filter) else {
        return;
    };
    let ids = [
        stack.put_mail("support.eml").await,
        stack.put_mail("sales.eml").await,
        stack.put_mail("billing.eml").await,
    ];
    let url = stack.queue("inbound").url.clone();
    let records = stack.receive_all(&url).await;
    assert_eq!(records.len(), 3, "{records:?}");
    // The function reads its config (GetObject 1), then the first record's mail (2); the
    // second record's mail (3) takes longer than the invocation has left.
    let rule = stack.arm(
        "filter",
        "GetObject",
        2,
        1,
        Fault::Delay(Duration::from_secs(6)),
    );
    let api = RuntimeApi::start(&stack.function_arn(Stage::Filter)).await;
    api.set_deadline(Duration::from_secs(4));
    api.push_event(&stack.sqs_event("inbound", &records));
    let mut process = stack.start_function(Stage::Filter, &binary, &api, &[]);
    let report = api.wait_report(&mut process, Duration::from_secs(20)).await;
    let margin = api.reported_before_deadline();
    let output = process.stop().await;
    stack.disarm(rule);
    let Some(Reported::Response { body, .. }) = report else {
        panic!("no response: {report:?}\n{output}");
    };
    let margin = margin.expect("the report's time");
    assert!(
        margin > 0.0,
        "answered {:.2} s after the deadline\n{output}",
        -margin
    );
    let response: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let failed: Vec<&str> = response["batchItemFailures"]
        .as_array()
        .expect("failures")
        .iter()
        .filter_map(|f| f["itemIdentifier"].as_str())
        .collect();
    assert_eq!(
        failed,
        [
            records[1].message_id.as_str(),
            records[2].message_id.as_str()
        ],
        "{body}\n{output}"
    );
    let done = stack.sort_keys(&ids[0]).await;
    assert!(done.contains(&"audit#filter".to_string()), "{done:?}");
    for id in &ids[1..] {
        assert!(
            !stack
                .sort_keys(id)
                .await
                .contains(&"audit#filter".to_string())
        );
    }
    assert!(
        output.stderr.contains("deadline") || output.stdout.contains("deadline"),
        "{output}"
    );
    stack.assert_calls_allowed();
}

/// Kills `stage`'s function binary while the completion of its send hangs (SES has
/// accepted the send; the record of it never arrives), then lets the queue redeliver.
async fn killed_after_a_send(stack: &Stack, stage: Stage, completion: usize) -> String {
    let binary = function_binary(stage).expect("the function binary");
    let (id, record) = to_stage(stack, stage).await;
    let rule = stack.arm(stage.as_str(), "PutItem", completion, 1, Fault::Hang);
    let api = RuntimeApi::start(&stack.function_arn(stage)).await;
    api.push_event(&stack.sqs_event(source_queue(stage), std::slice::from_ref(&record)));
    let mut process = stack.start_function(stage, &binary, &api, &[]);
    let sends_before = stack.sent_mail().await.len();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while stack.sent_mail().await.len() == sends_before {
        assert!(
            std::time::Instant::now() < deadline && !process.exited(),
            "{stage} never sent"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The send is done and its completion hangs: kill it there.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let output = process.stop().await;
    assert_eq!(stack.disarm(rule), 1, "the completion never hung\n{output}");
    assert!(
        api.reported().is_empty(),
        "it answered before the kill: {:?}",
        api.reported()
    );
    // The record comes back once its visibility timeout (here: now) is over, after the lease.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stack
        .make_visible(&stack.queue(source_queue(stage)).url, &record)
        .await;
    let pipeline = stack.pipeline().await;
    stack.run_until_idle(&pipeline).await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_killed_before_its_completion_is_sent_again() {
    let Some(stack) = stack("kill-route").await else {
        return;
    };
    if function_binary(Stage::Route).is_none() {
        return;
    }
    // Route's PutItems: the delivery's claim and completion, the forward's claim (2) and
    // completion (3).
    let id = killed_after_a_send(&stack, Stage::Route, 3).await;
    let sent = stack.sent_mail().await;
    assert_eq!(
        forwards(&sent),
        2,
        "a forward whose outcome is unknown is repeated"
    );
    assert_eq!(
        deliveries(&stack, &id).await,
        1,
        "the delivery was completed before"
    );
    assert_eq!(replies(&sent), 1);
    for stage in Stage::ALL {
        assert!(
            stack
                .sort_keys(&id)
                .await
                .contains(&format!("audit#{stage}"))
        );
    }
    stack.assert_no_dead_letters().await;
    stack.assert_calls_allowed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_killed_before_its_completion_is_not_sent_again() {
    let Some(stack) = stack("kill-respond").await else {
        return;
    };
    if function_binary(Stage::Respond).is_none() {
        return;
    }
    // Respond's PutItems: the rate-limit slot, the reply's claim (1) and completion (2).
    let id = killed_after_a_send(&stack, Stage::Respond, 2).await;
    let sent = stack.sent_mail().await;
    assert_eq!(replies(&sent), 1, "an auto-reply is never repeated");
    assert_eq!(forwards(&sent), 1);
    assert_eq!(
        stack.audit_decision(&id, Stage::Respond).await.as_deref(),
        Some("unconfirmed")
    );
    stack.assert_no_dead_letters().await;
    stack.assert_calls_allowed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_invocations_of_one_message_at_once_carry_out_each_effect_once() {
    let Some(stack) = stack("race").await else {
        return;
    };
    let (id, record) = to_stage(&stack, Stage::Route).await;
    // The same message twice on the route queue, handled by two warm functions at once;
    // the first send is slowed so that the two overlap.
    let url = stack.queue("route").url.clone();
    stack.send(&url, &record.body).await;
    let mut twins = stack.receive_all(&url).await;
    twins.push(record);
    assert_eq!(twins.len(), 2);
    let rule = stack.arm(
        "route",
        "SendEmail",
        0,
        1,
        Fault::Delay(Duration::from_millis(300)),
    );
    let (a, b) = (stack.app(Stage::Route).await, stack.app(Stage::Route).await);
    let event = |r: &Received| -> aws_lambda_events::sqs::SqsEvent {
        serde_json::from_value(stack.sqs_event("route", std::slice::from_ref(r))).unwrap()
    };
    let (ra, rb) = tokio::join!(
        mailroom_aws::handler::handle_batch(a, event(&twins[0]), None),
        mailroom_aws::handler::handle_batch(b, event(&twins[1]), None),
    );
    stack.disarm(rule);
    let failed = ra.batch_item_failures.len() + rb.batch_item_failures.len();
    // The failed one (it found the other holding an effect) comes back later.
    for (r, resp) in twins.iter().zip([&ra, &rb]) {
        if resp.batch_item_failures.is_empty() {
            stack.delete(&url, r).await;
        } else {
            stack.make_visible(&url, r).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pipeline = stack.pipeline().await;
    stack.run_until_idle(&pipeline).await;
    let sent = stack.sent_mail().await;
    assert_eq!(forwards(&sent), 1, "{failed} twin(s) failed");
    assert_eq!(deliveries(&stack, &id).await, 1);
    assert_eq!(replies(&sent), 1);
    assert_eq!(
        stack.objects("store/support/").await,
        vec![format!("store/support/{id}.eml")]
    );
    stack.assert_no_dead_letters().await;
    stack.assert_calls_allowed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_reload_between_two_attempts_neither_skips_nor_repeats_an_effect() {
    let Some(mut stack) = stack("reload-fx").await else {
        return;
    };
    stack.config_refresh_seconds = Some(0);
    let pipeline = stack.pipeline().await;
    let id = stack.put_mail("support.eml").await;
    for stage in [Stage::Filter, Stage::Classify] {
        stack
            .pump_until_empty(source_queue(stage), &pipeline.app(stage))
            .await;
    }
    // The first route attempt delivers and forwards, then cannot write its audit record
    // (route's PutItems: two per effect, then the audit at 4).
    let rule = stack.arm("route", "PutItem", 4, 3, Fault::Throttle);
    let first = stack.pump("route", &pipeline.app(Stage::Route)).await;
    assert_eq!(first.failed().len(), 1, "the first attempt must fail");
    assert_eq!(stack.disarm(rule), 3);
    // Before the retry the config changes: a rule in front that tags, and the support
    // rule's actions in another order, so every action has another position.
    let reordered = every_effect_config()
        .replace(
            EVERY_EFFECT,
            r#"actions = [{ store = "support/" }, { deliver = "tickets" }, { forward = ["desk@corp.example"] }]"#,
        )
        .replace(
            "[[route]]\nname = \"sales-forward\"",
            "[[route]]\nname = \"tag-all\"\ncontinue = true\nactions = [{ tag = { header = \"X-Seen\", value = \"1\" } }]\n\n[[route]]\nname = \"sales-forward\"",
        );
    assert!(reordered.contains("tag-all") && reordered.contains(r#"[{ store = "support/" }"#));
    stack.upload_config(&reordered).await;
    stack.run_until_idle(&pipeline).await;

    let sent = stack.sent_mail().await;
    assert_eq!(forwards(&sent), 1, "the forward was repeated or skipped");
    assert_eq!(
        deliveries(&stack, &id).await,
        1,
        "the delivery was repeated or skipped"
    );
    assert_eq!(replies(&sent), 1);
    let route = stack.audit_list(&id, Stage::Route, "decided_by").await;
    assert_eq!(
        route,
        ["tag-all", "support"],
        "the retry ran under the new config"
    );
    stack.assert_no_dead_letters().await;
    stack.assert_calls_allowed();
}
