//! `mailroom train` and `mailroom eval` on a tiny synthetic corpus written here, then
//! `mailroom run` and `mailroom check` with the trained models in the config.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn mailroom(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("mailroom runs")
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mailroom-learn-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn message(i: usize, subject: &str, body: &str) -> String {
    format!(
        "From: sender{i}@customer{}.example\nTo: help@example.com\nSubject: {subject}\nDate: Mon, 1 Jan 2024 10:00:00 +0000\nMessage-ID: <{i}@customer.example>\n\n{body}\n",
        i % 5
    )
}

const SHIPPING: &[&str] = &[
    "my parcel has not arrived and the tracking number shows no delivery",
    "mein Paket ist nicht angekommen, die Sendungsverfolgung zeigt nichts",
    "the delivery is late and the courier lost the parcel",
    "mi paquete no ha llegado y el seguimiento no cambia",
];
const BILLING: &[&str] = &[
    "I was charged twice on my invoice, please refund the payment",
    "meine Rechnung ist falsch, bitte erstatten Sie die Zahlung",
    "the invoice amount is wrong and I need a refund to my card",
    "me cobraron dos veces la factura, quiero un reembolso",
];
const HAM: &[&str] = &[
    "the meeting notes from yesterday are attached, see you on Friday",
    "thanks for the patch, I left two comments on the review",
    "the nightly build failed in the network tests again",
    "can we move the release planning to next Tuesday",
];
const SPAM: &[&str] = &[
    "CONGRATULATIONS you won the lottery click here to claim your prize now",
    "cheap pills online no prescription needed limited offer act now",
    "earn $5000 a week from home, click here, free money, act now",
    "you have been selected as our winner, claim your free prize today",
];

/// DIR/<label>/NN.eml: eight variations of each template line.
fn write_corpus(dir: &Path, labels: &[(&str, &[&str])]) {
    for (label, lines) in labels {
        let d = dir.join(label);
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..16 {
            let body = format!(
                "Hello,\n\n{}. Order {}.\n\nRegards",
                lines[i % lines.len()],
                1000 + i
            );
            let subject = lines[(i + 1) % lines.len()]
                .split_whitespace()
                .take(4)
                .collect::<Vec<_>>()
                .join(" ");
            std::fs::write(d.join(format!("{i:02}.eml")), message(i, &subject, &body)).unwrap();
        }
    }
}

#[test]
fn train_eval_and_run_with_models() {
    let dir = temp("flow");
    write_corpus(
        &dir.join("categories"),
        &[("billing", BILLING), ("shipping", SHIPPING)],
    );
    write_corpus(&dir.join("spamdata"), &[("ham", HAM), ("spam", SPAM)]);

    let out = mailroom(
        &[
            "train",
            "--out",
            "models/category.mrm",
            "--name",
            "category",
            "categories",
        ],
        &dir,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("trained svm model \"category\""),
        "{}",
        stderr(&out)
    );
    let out = mailroom(&["train", "--out", "models/spam.mrm", "spamdata"], &dir);
    assert!(out.status.success(), "{}", stderr(&out));
    let bytes = std::fs::read(dir.join("models/spam.mrm")).unwrap();
    assert_eq!(&bytes[..8], b"MAILRMDL");

    // eval --model: JSON on stdout, a table on stderr.
    let out = mailroom(&["eval", "--model", "models/spam.mrm", "spamdata"], &dir);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["evaluation"]["messages"], 32);
    assert!(report["evaluation"]["accuracy"].as_f64().unwrap() > 0.9);
    assert_eq!(
        report["evaluation"]["spam"]["at_fpr"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert!(stderr(&out).contains("recall"), "{}", stderr(&out));

    // eval --folds: every learner compared, per-learner results.
    let out = mailroom(
        &["eval", "--folds", "2", "--learner", "all", "categories"],
        &dir,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 5);
    for r in results {
        let acc = r["summary"]["accuracy"]["mean"].as_f64().unwrap();
        assert!(acc > 0.8, "{}: {acc}", r["learner"]);
    }
    assert!(stderr(&out).contains("confusion"), "{}", stderr(&out));

    // run with both models, paths relative to the config file.
    std::fs::write(
        dir.join("models/mailroom.toml"),
        "[filter]\nspam_model = \"spam.mrm\"\nspam_threshold = 0.5\n\n[classify]\ncategory_model = \"category.mrm\"\ncategory_min_confidence = 0.0\n",
    )
    .unwrap();
    let inbox = dir.join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::write(
        inbox.join("a.eml"),
        message(
            99,
            "parcel missing",
            "Hello, my parcel never arrived and the tracking shows nothing.",
        ),
    )
    .unwrap();
    let out = mailroom(
        &[
            "run",
            "--config",
            "models/mailroom.toml",
            "--format",
            "jsonl",
            "--state",
            "state",
            "--outbox",
            "outbox",
            "inbox",
        ],
        &dir,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let line: Value = serde_json::from_slice(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap()
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(line["category"], "shipping", "{line}");
    assert_eq!(line["category_by"]["kind"], "model", "{line}");
    assert_eq!(line["category_by"]["name"], "category", "{line}");
    assert!(
        line["category_confidence"].as_f64().unwrap() > 0.5,
        "{line}"
    );
    assert_eq!(line["scorer"], "rules+model:spam", "{line}");

    // check validates the models too: a damaged file is an error naming it.
    let out = mailroom(&["check", "models/mailroom.toml"], &dir);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut old = bytes.clone();
    old[8] = 7;
    std::fs::write(dir.join("models/spam.mrm"), old).unwrap();
    for args in [
        vec!["check", "models/mailroom.toml"],
        vec!["run", "--config", "models/mailroom.toml", "inbox"],
    ] {
        let out = mailroom(&args, &dir);
        assert!(!out.status.success());
        let e = stderr(&out);
        assert!(
            e.contains("spam_model") && e.contains("spam.mrm") && e.contains("version 7"),
            "{e}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn train_needs_label_folders() {
    let dir = temp("nolabels");
    std::fs::create_dir_all(dir.join("only")).unwrap();
    let out = mailroom(&["train", "--out", "m.mrm", "."], &dir);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("at least two label folders"),
        "{}",
        stderr(&out)
    );
    let out = mailroom(&["eval", "."], &dir);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--folds"), "{}", stderr(&out));
    std::fs::remove_dir_all(&dir).unwrap();
}

const SCAM: &[&str] = &[
    "following our meeting kindly send the wire transfer to the beneficiary account",
    "as agreed at the review the barrister needs the fund transfer today",
    "please confirm the wire details for the beneficiary before Friday",
    "the attorney asks for the transfer fee so the fund can be released",
];

/// `mailroom run` over `inbox` on the store `state`: the rows.
fn run_rows(dir: &Path, config: &str, state: &str, inbox: &str) -> Vec<Value> {
    let out = mailroom(
        &[
            "run", "--config", config, "--format", "jsonl", "--state", state, "--outbox", "outbox",
            inbox,
        ],
        dir,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn train_with_feedback(dir: &Path, state: &str) -> Output {
    let out = mailroom(
        &[
            "train",
            "--out",
            "models/spam.mrm",
            "--feedback",
            "--fpr",
            "0.05",
            "--gate-folds",
            "3",
            "--state",
            state,
            "--config",
            "models/mailroom.toml",
            "spamdata",
        ],
        dir,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    out
}

#[test]
fn train_with_feedback_learns_corrections_and_refuses_ones_that_make_it_worse() {
    let dir = temp("feedback");
    write_corpus(&dir.join("spamdata"), &[("ham", HAM), ("spam", SPAM)]);
    let out = mailroom(&["train", "--out", "models/spam.mrm", "spamdata"], &dir);
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::write(
        dir.join("models/mailroom.toml"),
        "[filter]\nspam_model = \"spam.mrm\"\nspam_threshold = 0.5\nquarantine_score = 5.0\n",
    )
    .unwrap();
    // A kind of spam the base set has never seen: the model lets it through.
    write_corpus(&dir.join("arrived"), &[("scam", SCAM)]);
    let rows = run_rows(&dir, "models/mailroom.toml", "state", "arrived/scam");
    assert_eq!(rows.len(), 16);
    let accepted: Vec<&str> = rows
        .iter()
        .filter(|r| r["verdict"] == "accept")
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert!(accepted.len() >= 8, "{rows:#?}");

    // The operator marks them; each is recorded and audited.
    for id in &accepted {
        let out = mailroom(
            &[
                "mark",
                id,
                "spam",
                "--by",
                "ops-ann",
                "--state",
                "state",
                "--config",
                "models/mailroom.toml",
            ],
            &dir,
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            said.contains("as spam") && said.contains("a correction"),
            "{said}"
        );
    }
    let out = mailroom(&["show", accepted[0], "--state", "state"], &dir);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("operator:ops-ann"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = mailroom(&["mark", accepted[0], "maybe", "--state", "state"], &dir);
    assert!(!out.status.success());

    let before = std::fs::read(dir.join("models/spam.mrm")).unwrap();
    let out = train_with_feedback(&dir, "state");
    let said = stderr(&out);
    assert!(
        said.contains(&format!(
            "{} corrections in state folder state: {} read",
            accepted.len(),
            accepted.len()
        )),
        "{said}"
    );
    assert!(
        said.contains("accepted: the corrections go into the model"),
        "{said}"
    );
    let after = std::fs::read(dir.join("models/spam.mrm")).unwrap();
    assert_ne!(before, after);
    // Scam mail it has not seen is now held.
    write_corpus(&dir.join("later"), &[("scam", &SCAM[1..])]);
    let rows = run_rows(&dir, "models/mailroom.toml", "state-later", "later/scam");
    let held = rows.iter().filter(|r| r["verdict"] != "accept").count();
    assert!(held > accepted.len().min(16) / 2, "{held} of {rows:#?}");

    // Recipients release the prize spam they liked: the gate refuses, the model stays.
    write_corpus(&dir.join("prizes"), &[("spam", SPAM)]);
    let rows = run_rows(&dir, "models/mailroom.toml", "state-prizes", "prizes/spam");
    let held: Vec<&str> = rows
        .iter()
        .filter(|r| r["verdict"] == "quarantine")
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert!(held.len() >= 12, "{rows:#?}");
    for id in &held {
        let out = mailroom(
            &[
                "quarantine",
                "release",
                id,
                "--by",
                "digest",
                "--state",
                "state-prizes",
                "--config",
                "models/mailroom.toml",
                "--outbox",
                "outbox",
            ],
            &dir,
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let kept = std::fs::read(dir.join("models/spam.mrm")).unwrap();
    let out = train_with_feedback(&dir, "state-prizes");
    let said = stderr(&out);
    assert!(
        said.contains("refused:") && said.contains("stays as it is"),
        "{said}"
    );
    assert_eq!(kept, std::fs::read(dir.join("models/spam.mrm")).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}
