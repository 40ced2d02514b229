//! The fault matrix: for every AWS call each stage makes for one message, each fault class
//! injected at that call (see `mailroom_tests::proxy`), with the event source mapping
//! redelivering what failed. Every cell asserts that the message ends processed (no message
//! is lost or left in a dead-letter queue by a passing fault), that each stage wrote its audit
//! record, and that the forward, delivery and auto-reply counts are the README's
//! semantics for an effect whose outcome is unknown:
//!
//! - a forward or a delivery is never lost; it is repeated only when a send's answer was
//!   lost after it took effect;
//! - an auto-reply is sent at most once; when its outcome is unknown it is recorded as
//!   unconfirmed and not repeated.
//!
//! A probe message first lists the calls (operation and occurrence per stage). Each cell
//! uses fresh apps (so cold-start lookups such as a delivery queue's URL happen again) and a
//! sender of its own (so the reply rate limit does not carry over).

use mailroom_core::model::{Envelope, RespondResult, Stage};
use mailroom_tests::aws::{Stack, every_effect_config, fixture, ses_message_id};
use mailroom_tests::proxy::Fault;

/// The support fixture from a sender of its own.
fn support_mail(n: usize) -> Vec<u8> {
    let raw = String::from_utf8(fixture("support.eml")).expect("fixture is UTF-8");
    let changed = raw
        .replace("nora@client.example", &format!("nora.{n}@client.example"))
        .replace("<ticket-42@", &format!("<ticket-42-{n}@"));
    assert_ne!(raw, changed, "support.eml changed shape; update this test");
    changed.into_bytes()
}

#[derive(Debug, Clone)]
struct Cell {
    stage: Stage,
    operation: String,
    /// Which call of that operation in the stage (0: the first).
    occurrence: usize,
    fault: Fault,
}

impl std::fmt::Display for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}#{} {}",
            self.stage,
            self.operation,
            self.occurrence,
            self.fault.label()
        )
    }
}

/// What one message led to.
#[derive(Debug, Default, PartialEq, Eq)]
struct Counts {
    forwards: usize,
    deliveries: usize,
    replies: usize,
}

async fn counts(stack: &Stack, id: &str, n: usize) -> Counts {
    let sender = format!("nora.{n}@client.example");
    let sent = stack.sent_mail().await;
    let forwards = sent
        .iter()
        .filter(|m| m.sent_to("desk@corp.example") && m.raw.contains(&sender))
        .count();
    let replies = sent
        .iter()
        .filter(|m| m.is_auto_reply() && m.sent_to(&sender))
        .count();
    let deliveries = stack
        .drain_bodies(&stack.tickets_url)
        .await
        .iter()
        .filter(|b| serde_json::from_str::<Envelope>(b).is_ok_and(|e| e.id == id))
        .count();
    Counts {
        forwards,
        deliveries,
        replies,
    }
}

/// The calls one stage makes for one message, as (operation, occurrence), in order.
async fn probe(stack: &Stack, stage: Stage) -> Vec<(String, usize)> {
    // Apps are built (config loaded) before the count starts: cold start is not per message.
    let pipeline = stack.pipeline().await;
    let before = stack.calls_of(stage.as_str()).len();
    let id = stack
        .receive_mail(&ses_message_id(), support_mail(0), None)
        .await;
    stack.run_until_idle(&pipeline).await;
    assert_eq!(
        counts(stack, &id, 0).await,
        Counts {
            forwards: 1,
            deliveries: 1,
            replies: 1
        },
        "the probe message"
    );
    let mut seen: Vec<(String, usize)> = Vec::new();
    for call in &stack.calls_of(stage.as_str())[before..] {
        let occurrence = seen.iter().filter(|(op, _)| *op == call.operation).count();
        seen.push((call.operation.clone(), occurrence));
    }
    seen
}

/// How many consecutive calls a fault covers: every attempt the SDK makes of the call, so
/// that the fault reaches the stage and the queue has to redeliver. SES sends are made
/// without the SDK's retries; only throttling is retried there (three attempts).
fn attempts(stage: Stage, operation: &str, fault: Fault) -> usize {
    let ses_send = operation == "SendEmail" && matches!(stage, Stage::Route | Stage::Respond);
    if ses_send && fault != Fault::Throttle {
        1
    } else {
        3
    }
}

/// The counts the README's semantics allow for a cell: `(at least, at most)` each.
fn allowed(cell: &Cell) -> ([usize; 3], [usize; 3]) {
    let lost = cell.fault == Fault::LostResponse;
    // [forwards, deliveries, replies]
    let (mut low, mut high) = ([1, 1, 1], [1, 1, 1]);
    match (cell.stage, cell.operation.as_str()) {
        // The forward's send took effect but its answer was lost: sent again.
        (Stage::Route, "SendEmail") if lost => high[0] = 2,
        // A delivery whose answer was lost: the SDK's retries and the queue's redelivery
        // each deliver again, up to the three attempts the fault covers plus the last.
        (Stage::Route, "SendMessage") if lost && cell.occurrence == 0 => high[1] = 4,
        // An auto-reply whose outcome is unknown: never repeated. It reached SES only when
        // the answer, not the request, was lost.
        (Stage::Respond, "SendEmail") if cell.fault != Fault::Throttle => {
            low[2] = usize::from(lost);
            high[2] = usize::from(lost);
        }
        _ => {}
    }
    (low, high)
}

async fn run_cell(stack: &Stack, cell: &Cell, n: usize) -> Result<String, String> {
    let pipeline = stack.pipeline().await;
    let rule = stack.arm(
        cell.stage.as_str(),
        &cell.operation,
        cell.occurrence,
        attempts(cell.stage, &cell.operation, cell.fault),
        cell.fault,
    );
    let id = stack
        .receive_mail(&ses_message_id(), support_mail(n), None)
        .await;
    stack.run_until_idle(&pipeline).await;
    let faulted = stack.disarm(rule);
    if faulted == 0 {
        return Err("the fault was never injected: the call did not happen".into());
    }
    let keys = stack.sort_keys(&id).await;
    for stage in Stage::ALL {
        if !keys.contains(&format!("audit#{stage}")) {
            let dead = stack.dead_letters().await;
            return Err(format!(
                "not processed: no audit#{stage}; items {keys:?}; dead letters {dead:?}"
            ));
        }
    }
    let c = counts(stack, &id, n).await;
    let got = [c.forwards, c.deliveries, c.replies];
    let (low, high) = allowed(cell);
    if (0..3).any(|i| got[i] < low[i] || got[i] > high[i]) {
        return Err(format!(
            "forwards, deliveries, replies {got:?}; allowed {low:?} to {high:?}"
        ));
    }
    let reply = stack
        .audit_decision(&id, Stage::Respond)
        .await
        .unwrap_or_default();
    if c.replies == 0 && reply != "unconfirmed" {
        return Err(format!("no reply, and respond recorded {reply:?}"));
    }
    Ok(format!(
        "{faulted} faulted, counts {got:?}, respond {reply}"
    ))
}

/// Runs every cell of one stage; returns how many ran.
async fn matrix_for(stage: Stage) -> Option<usize> {
    let mut stack = Stack::create(&format!("faults-{stage}")).await?;
    stack.upload_config(&every_effect_config()).await;
    // The deployed relation, scaled down: a redelivery comes after the lease has run out
    // (the visibility timeout, 240 s, is above the lease, 60 s).
    stack.effect_lease_ms = Some(400);
    stack.redelivery_delay = std::time::Duration::from_millis(600);
    let calls = probe(&stack, stage).await;
    assert!(!calls.is_empty(), "{stage} made no calls");
    let mut failures = Vec::new();
    let mut ran = 0;
    for (i, (operation, occurrence)) in calls.iter().enumerate() {
        for (j, fault) in Fault::MATRIX.into_iter().enumerate() {
            let cell = Cell {
                stage,
                operation: operation.clone(),
                occurrence: *occurrence,
                fault,
            };
            let n = 1 + i * Fault::MATRIX.len() + j;
            let result = run_cell(&stack, &cell, n).await;
            ran += 1;
            match result {
                Ok(note) => eprintln!("fault cell {cell}: ok ({note})"),
                Err(why) => {
                    eprintln!("fault cell {cell}: FAILED: {why}");
                    failures.push(format!("{cell}: {why}"));
                }
            }
        }
    }
    stack.assert_no_dead_letters().await;
    stack.assert_calls_allowed();
    assert!(
        failures.is_empty(),
        "{} of {ran} {stage} cells failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("fault matrix, {stage}: {ran} cells passed");
    Some(ran)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_matrix_filter() {
    matrix_for(Stage::Filter).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_matrix_classify() {
    matrix_for(Stage::Classify).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_matrix_route() {
    matrix_for(Stage::Route).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_matrix_respond() {
    matrix_for(Stage::Respond).await;
}

/// The reply's answer lost after SES accepted it: recorded as unconfirmed, never repeated,
/// and a redelivered copy of the respond message does not send it either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconfirmed_reply_is_never_repeated() {
    let Some(stack) = Stack::create("unconfirmed").await else {
        return;
    };
    let pipeline = stack.pipeline().await;
    let rule = stack.arm("respond", "SendEmail", 0, 1, Fault::LostResponse);
    let id = stack
        .receive_mail(&ses_message_id(), support_mail(7), None)
        .await;
    stack.run_until_idle(&pipeline).await;
    assert_eq!(stack.disarm(rule), 1);
    assert_eq!(
        stack.audit_decision(&id, Stage::Respond).await.as_deref(),
        Some("unconfirmed")
    );
    // The same respond message again, as SQS may deliver it.
    let env = stack
        .items(&id)
        .await
        .get("effect#respond/reply")
        .and_then(|item| item.get("note").cloned());
    assert!(
        matches!(env, Some(aws_sdk_dynamodb::types::AttributeValue::S(ref n)) if n.starts_with("unconfirmed: ")),
        "{env:?}"
    );
    let sender = "nora.7@client.example";
    let replies = |sent: &[mailroom_tests::aws::SentMail]| {
        sent.iter()
            .filter(|m| m.is_auto_reply() && m.sent_to(sender))
            .count()
    };
    assert_eq!(replies(&stack.sent_mail().await), 1, "SES got it once");
    let mut again = Envelope::new(
        id.clone(),
        mailroom_core::model::RawRef {
            bucket: stack.bucket.clone(),
            key: format!("raw/{id}"),
        },
    );
    for stage in [Stage::Filter, Stage::Classify, Stage::Route] {
        again = pipeline
            .app(stage)
            .engine()
            .await
            .run_stage(stage, again)
            .await
            .expect("earlier stages run again");
    }
    stack.run_until_idle(&pipeline).await;
    assert!(matches!(
        again.results.respond,
        None | Some(RespondResult::Unconfirmed { .. })
    ));
    assert_eq!(replies(&stack.sent_mail().await), 1, "not repeated");
    stack.assert_no_dead_letters().await;
    stack.assert_calls_allowed();
}
