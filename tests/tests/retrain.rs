//! The retrain function on a stack: the training set under `training/`, the operators'
//! corrections under `feedback/` (written by the operator's own adapter, as `mailroom mark`
//! and releases write them), and the served model under `config/models/`. It skips without
//! corrections, replaces the model when corrections teach it a new kind of spam, and keeps
//! it when released spam would make it worse. Every call is checked against its role and
//! the operator policy.

use mailroom_core::Mail;
use mailroom_core::model::{RawRef, Verdict};
use mailroom_core::operate::{Correction, Judgement};
use mailroom_core::ports::FeedbackLog;
use mailroom_learn::{Learner, Model, Task, TrainOptions, features, train};
use mailroom_tests::aws::{MetricLines, OPERATOR, Stack};
use serde_json::Value;

const HAM: [&str; 10] = [
    "agenda", "release", "plan", "review", "budget", "design", "notes", "team", "patch", "deadline",
];
const SPAM: [&str; 10] = [
    "prize", "winner", "casino", "bonus", "free", "cash", "claim", "offer", "loan", "click",
];
const SCAM: [&str; 6] = [
    "wire",
    "transfer",
    "beneficiary",
    "barrister",
    "fund",
    "kindly",
];

/// A message of 24 words, `share`% from `primary` and the rest from `other`, in a
/// deterministic order.
fn message(i: usize, primary: &[&str], other: &[&str], share: usize) -> Vec<u8> {
    let words: Vec<&str> = (0..24)
        .map(|j| {
            let k = (i * 31 + j * 17) % 100;
            let v = if k < share { primary } else { other };
            v[(i * 7 + j * 3) % v.len()]
        })
        .collect();
    format!(
        "From: s{i}@sender{}.example\r\nTo: team@example.com\r\nSubject: {}\r\nMessage-ID: <{i}@sender.example>\r\nDate: Mon, 30 Nov 2026 10:00:00 +0000\r\n\r\n{}\r\n",
        i % 9,
        words[..4].join(" "),
        words[4..].join(" ")
    )
    .into_bytes()
}

fn training_set() -> Vec<(usize, Vec<u8>)> {
    (0..40)
        .flat_map(|i| {
            [
                (0, message(i, &HAM, &SPAM, 85)),
                (1, message(1000 + i, &SPAM, &HAM, 70)),
            ]
        })
        .collect()
}

/// The model `mailroom train` makes of the training set.
fn first_model(set: &[(usize, Vec<u8>)]) -> Vec<u8> {
    let cfg = mailroom_learn::FeatureConfig {
        bits: 14,
        ..Task::Spam.features()
    };
    let (x, y): (Vec<_>, Vec<_>) = set
        .iter()
        .map(|(l, raw)| (features::extract(&Mail::parse(raw).unwrap(), &cfg), *l))
        .unzip();
    let rows: Vec<usize> = (0..y.len()).collect();
    let labels = ["ham".to_string(), "spam".to_string()];
    let opts = TrainOptions::for_task(Task::Spam, Learner::Svm);
    train::train("spam", &labels, cfg, &x, &y, &rows, &opts).to_bytes()
}

fn outcomes(lines: &MetricLines, outcome: &str) -> usize {
    lines
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|d| d["Outcome"] == outcome && d["Retrains"] == 1.0)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retrain_function_learns_corrections_and_keeps_the_model_they_would_spoil() {
    let Some(stack) = Stack::create("retrain").await else {
        return;
    };
    let set = training_set();
    for (n, (label, raw)) in set.iter().enumerate() {
        let folder = ["ham", "spam"][*label];
        stack
            .put_object(&format!("training/{folder}/{n:03}.eml"), raw.clone())
            .await;
    }
    let operator = stack.sdk_as(OPERATOR).await;
    let s3 = mailroom_aws::app::s3_client(&operator);
    let config = "[filter]\nspam_model = \"models/spam.mrm\"\nspam_threshold = 0.5\n";
    mailroom_aws::config_source::push_config(
        &s3,
        &stack.bucket,
        "config/mailroom.toml",
        config,
        "mailroom.toml",
        &[("models/spam.mrm".into(), first_model(&set))],
    )
    .await
    .expect("push-config");
    let served = || async {
        let out = stack
            .s3
            .get_object()
            .bucket(&stack.bucket)
            .key("config/models/spam.mrm")
            .send()
            .await
            .unwrap();
        let etag = out.e_tag.clone().unwrap();
        let bytes = out.body.collect().await.unwrap().to_vec();
        (etag, Model::from_bytes(&bytes).unwrap())
    };
    let (retrainer, metrics) = stack.retrainer().await;

    // No corrections yet: nothing to learn, nothing written.
    let (etag, first) = served().await;
    let done = retrainer.run().await.expect("a run");
    assert_eq!(done.outcome, "skipped", "{done:?}");
    assert_eq!(served().await.0, etag);

    // The operator marks scam mail that got through; its raw mail is where SES put it.
    let feedback = mailroom_aws::s3::S3Mail {
        client: s3.clone(),
        bucket: stack.bucket.clone(),
    };
    let correct = |id: String, label: Judgement, verdict: Verdict| Correction {
        raw: RawRef {
            bucket: stack.bucket.clone(),
            key: format!("raw/{id}"),
        },
        id,
        label,
        verdict,
        by: "ops-ann".into(),
        at: 1_790_000_000,
        via: "mark".into(),
    };
    for i in 0..16 {
        let id = format!("scam-{i}");
        stack
            .put_object(&format!("raw/{id}"), message(2000 + i, &SCAM, &HAM, 60))
            .await;
        feedback
            .correct(&correct(id, Judgement::Spam, Verdict::Accept))
            .await
            .expect("the operator records a correction");
    }
    // One whose raw mail has expired: counted, not fatal.
    feedback
        .correct(&correct("gone".into(), Judgement::Spam, Verdict::Accept))
        .await
        .unwrap();
    let unseen_raw = message(3000, &SCAM, &HAM, 60);
    let unseen = Mail::parse(&unseen_raw).unwrap();
    let before = first.spam_probability(&unseen);
    let done = retrainer.run().await.expect("a run");
    assert_eq!(done.outcome, "replaced", "{done:#?}");
    assert_eq!((done.corrections, done.unreadable), (16, 1), "{done:?}");
    let (etag2, second) = served().await;
    assert_ne!(etag2, etag);
    let after = second.spam_probability(&unseen);
    assert!(after > 0.5 && after > before, "P(spam) {before} → {after}");

    // Recipients release the prize spam they liked: the gate refuses, the model stays.
    for i in 0..40 {
        let id = format!("prize-{i}");
        stack
            .put_object(&format!("raw/{id}"), message(4000 + i, &SPAM, &HAM, 70))
            .await;
        feedback
            .correct(&correct(id, Judgement::Ham, Verdict::Quarantine))
            .await
            .unwrap();
    }
    let done = retrainer.run().await.expect("a run");
    assert_eq!(done.outcome, "refused", "{done:#?}");
    assert!(done.why.contains("the served model stays"), "{}", done.why);
    assert_eq!(served().await.0, etag2);

    for (outcome, n) in [("skipped", 1), ("replaced", 1), ("refused", 1)] {
        assert_eq!(outcomes(&metrics, outcome), n, "Retrains {outcome}");
    }
    stack.assert_calls_allowed();
}
