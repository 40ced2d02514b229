//! The `[assist]` model on a stack: the classify function calls Bedrock's Converse API
//! (answered by the proxy with scripted answers, moto having no Bedrock runtime) under the
//! template's IAM, which allows the `AssistModelId` model only. A valid answer decides the
//! unsure message, an injected label and a throttle leave the default, a draft rides to
//! the ticket queue and is never sent.

use mailroom_core::model::Stage;
use mailroom_tests::aws::{Stack, config_text, fixture, ses_message_id};
use mailroom_tests::proxy::Fault;

const MODEL: &str = "amazon.nova-micro-v1:0";

/// The support fixture, sent to info@ (which no rule decides) with another subject.
fn unsure(subject: &str) -> Vec<u8> {
    String::from_utf8(fixture("support.eml"))
        .unwrap()
        .replace("To: support@example.com", "To: info@example.com")
        .replace("for support@example.com", "for info@example.com")
        .replace(
            "Subject: Export button does nothing",
            &format!("Subject: {subject}"),
        )
        .replace("<ticket-42@", &format!("<{}@", ses_message_id()))
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_classify_function_asks_bedrock_about_the_unsure_under_its_iam() {
    let Some(mut stack) = Stack::create("assist").await else {
        return;
    };
    stack.assist_model = MODEL.to_string();
    stack
        .upload_config(&format!(
            "{}\n[assist]\nprovider = \"bedrock\"\nmodel = \"{MODEL}\"\ntimeout = \"5s\"\n\
             tasks = [\"classify\", \"draft\"]\ndraft_categories = [\"support\"]\n",
            config_text()
        ))
        .await;
    let proxy = mailroom_tests::proxy::proxy(&stack.moto);
    let classify = stack.principal("classify");
    proxy.script_converse(
        &classify,
        vec![
            r#"{"category":"billing","priority":"high"}"#.into(),
            r#"{"category":"refund-everything","priority":"high"}"#.into(),
            "Hello Nora,\n\nthanks for the report; we are looking into the export.".into(),
        ],
    );
    let pipeline = stack.pipeline().await;

    let decided = stack
        .put_raw(&ses_message_id(), unsure("Question about our plan"))
        .await;
    stack.run_until_idle(&pipeline).await;
    assert_eq!(
        stack
            .audit_decision(&decided, Stage::Classify)
            .await
            .as_deref(),
        Some("category=billing priority=high")
    );
    let by = stack
        .audit_list(&decided, Stage::Classify, "decided_by")
        .await;
    assert!(by.contains(&format!("assist:{MODEL}")), "{by:?}");
    assert!(
        stack
            .sent_mail()
            .await
            .iter()
            .any(|m| m.sent_to("ledger@corp.example")),
        "routed as billing mail"
    );

    let injected = stack
        .put_raw(&ses_message_id(), unsure("Another question"))
        .await;
    stack.run_until_idle(&pipeline).await;
    assert_eq!(
        stack
            .audit_decision(&injected, Stage::Classify)
            .await
            .as_deref(),
        Some("category=general priority=medium")
    );
    let reasons = stack
        .audit_list(&injected, Stage::Classify, "reasons")
        .await;
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("answer ignored") && r.contains("refund-everything")),
        "{reasons:?}"
    );

    let rule = stack.arm("classify", "Converse", 0, 1, Fault::Throttle);
    let throttled = stack
        .put_raw(&ses_message_id(), unsure("A third question"))
        .await;
    stack.run_until_idle(&pipeline).await;
    assert_eq!(stack.disarm(rule), 1);
    let reasons = stack
        .audit_list(&throttled, Stage::Classify, "reasons")
        .await;
    assert!(
        reasons.iter().any(|r| r.contains("assist: throttled")),
        "{reasons:?}"
    );
    assert_eq!(
        stack
            .audit_decision(&throttled, Stage::Route)
            .await
            .as_deref(),
        Some("store"),
        "the default route, all the same"
    );

    // Rule-decided support mail: no classify call, a draft in the delivered envelope.
    let support = stack.put_mail("support.eml").await;
    stack.run_until_idle(&pipeline).await;
    let tickets: Vec<serde_json::Value> = stack
        .drain_bodies(&stack.tickets_url)
        .await
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect();
    let ticket = tickets
        .iter()
        .find(|t| t["id"] == support.as_str())
        .expect("the ticket");
    let draft = ticket["assist"]["draft"].as_str().expect("a draft");
    assert!(draft.starts_with("Hello Nora"), "{draft}");
    assert!(
        !stack
            .sent_mail()
            .await
            .iter()
            .any(|m| m.raw.contains("looking into the export")),
        "a draft is never sent"
    );

    let converse: Vec<_> = stack
        .calls_of("classify")
        .into_iter()
        .filter(|c| c.operation == "Converse")
        .collect();
    assert_eq!(converse.len(), 4, "three classifications and one draft");
    stack.assert_no_dead_letters().await;
    stack.assert_calls_allowed();
    // Deployed without AssistModelId, the same calls are denied.
    stack.assist_model = String::new();
    let denied = stack.denied_calls();
    assert!(!denied.is_empty());
    assert!(
        denied
            .iter()
            .all(|d| d.contains("bedrock:InvokeModel") && d.contains(MODEL)),
        "{denied:#?}"
    );
}

/// A spam model of two messages: whatever it says of other mail is inside the band the
/// test config asks about.
fn tiny_spam_model() -> Vec<u8> {
    use mailroom_learn::{Learner, Task, TrainOptions, features, train};
    let cfg = mailroom_learn::FeatureConfig {
        bits: 12,
        ..Task::Spam.features()
    };
    let (x, y): (Vec<_>, Vec<_>) = [("support.eml", 0), ("spam-fail.eml", 1)]
        .iter()
        .map(|(name, label)| {
            let raw = fixture(name);
            let mail = mailroom_core::Mail::parse(&raw).unwrap();
            (features::extract(&mail, &cfg), *label)
        })
        .unzip();
    let labels = ["ham".to_string(), "spam".to_string()];
    let opts = TrainOptions::for_task(Task::Spam, Learner::Svm);
    train::train("tiny", &labels, cfg, &x, &y, &[0, 1], &opts).to_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_filter_function_asks_bedrock_about_the_band_and_only_holds_mail() {
    let Some(mut stack) = Stack::create("assist-spam").await else {
        return;
    };
    stack.assist_model = MODEL.to_string();
    stack
        .put_object("config/models/spam.mrm", tiny_spam_model())
        .await;
    // A threshold of 1 keeps the model's own points out: the verdict is the rules' and the
    // assistant's.
    let config = config_text().replacen(
        "[filter]\n",
        "[filter]\nspam_model = \"models/spam.mrm\"\nspam_threshold = 1.0\n",
        1,
    );
    stack
        .upload_config(&format!(
            "{config}\n[assist]\nprovider = \"bedrock\"\nmodel = \"{MODEL}\"\ntimeout = \"5s\"\n\
             tasks = [\"spam\"]\nspam_band = [0.0, 1.0]\n"
        ))
        .await;
    let proxy = mailroom_tests::proxy::proxy(&stack.moto);
    proxy.script_converse(
        &stack.principal("filter"),
        vec![r#"{"spam": true}"#.into(), r#"{"spam": false}"#.into()],
    );
    let pipeline = stack.pipeline().await;

    let held = stack.put_mail("sales.eml").await;
    stack.run_until_idle(&pipeline).await;
    assert_eq!(
        stack.audit_decision(&held, Stage::Filter).await.as_deref(),
        Some("quarantine")
    );
    let by = stack.audit_list(&held, Stage::Filter, "decided_by").await;
    assert!(by.contains(&format!("assist:{MODEL}")), "{by:?}");

    let passed = stack.put_mail("billing.eml").await;
    stack.run_until_idle(&pipeline).await;
    assert_eq!(
        stack
            .audit_decision(&passed, Stage::Filter)
            .await
            .as_deref(),
        Some("accept")
    );
    assert!(
        stack
            .sent_mail()
            .await
            .iter()
            .any(|m| m.sent_to("ledger@corp.example")),
        "the billing mail goes on"
    );
    let converse = stack
        .calls_of("filter")
        .into_iter()
        .filter(|c| c.operation == "Converse")
        .count();
    assert_eq!(converse, 2);
    stack.assert_no_dead_letters().await;
    stack.assert_calls_allowed();
    stack.assist_model = String::new();
    let denied = stack.denied_calls();
    assert!(
        !denied.is_empty() && denied.iter().all(|d| d.contains("bedrock:InvokeModel")),
        "{denied:#?}"
    );
}
