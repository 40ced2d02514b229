//! The hostile corpus: each `tests/fixtures/hostile/NAME.eml` is one attack (a bypass of the
//! attachment policy, a forged sender fishing for backscatter, …) and `NAME.json` beside it
//! says what the pipeline must do with it, run through all four stages with
//! `tests/fixtures/golden/mailroom.toml`:
//!
//! ```json
//! { "attack": "what the message tries",
//!   "verdict": "quarantine",            // the filter's verdict
//!   "findings": ["EXECUTABLE"],         // tags that must all be among the reasons
//!   "auto_reply": "suppressed",         // optional: "sent" or "suppressed"
//!   "auto_reply_reason": "SPF",         // optional: a part of the suppression reason
//!   "never_released": true }            // optional: a finding keeps it in quarantine
//! ```
//!
//! A mismatch writes `NAME.json.failed` with what was observed beside the expectation.

use std::fs;

use mailroom_core::Config;
use mailroom_core::model::RespondResult;
use mailroom_core::pipeline::release::never_released;
use mailroom_tests::{Harness, repo_root};
use serde_json::{Value, json};

/// What the pipeline did with one message, in the terms of the expectation.
fn observe(config: &Config, raw: &[u8], name: &str) -> Value {
    let h = Harness::new(config.clone());
    let outcome = h.run(raw, name);
    let results = &outcome.envelope.results;
    let filter = results.filter.as_ref();
    let tags: Vec<String> = filter
        .map(|f| f.reasons.iter().map(|r| r.tag.clone()).collect())
        .unwrap_or_default();
    let (reply, reason) = match results.respond.as_ref() {
        Some(RespondResult::Suppressed { reason }) => ("suppressed", reason.clone()),
        Some(_) => ("sent", String::new()),
        None => ("none", String::new()),
    };
    json!({
        "verdict": filter.map(|f| f.verdict.as_str()),
        "findings": tags,
        "auto_reply": reply,
        "auto_reply_reason": reason,
        "never_released": never_released(&tags).is_some(),
        "parse_error": outcome.parse_error.clone(),
    })
}

/// Where the observation breaks the expectation, one line each.
fn mismatches(expected: &Value, observed: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if expected["verdict"] != observed["verdict"] {
        out.push(format!(
            "verdict {} (expected {})",
            observed["verdict"], expected["verdict"]
        ));
    }
    let seen: Vec<&Value> = observed["findings"].as_array().unwrap().iter().collect();
    for tag in expected["findings"].as_array().into_iter().flatten() {
        if !seen.contains(&tag) {
            out.push(format!("finding {tag} missing"));
        }
    }
    if let Some(reply) = expected.get("auto_reply")
        && reply != &observed["auto_reply"]
    {
        out.push(format!(
            "auto_reply {} (expected {reply})",
            observed["auto_reply"]
        ));
    }
    if let Some(part) = expected.get("auto_reply_reason").and_then(Value::as_str)
        && !observed["auto_reply_reason"]
            .as_str()
            .unwrap_or_default()
            .contains(part)
    {
        out.push(format!(
            "auto_reply_reason {} does not contain {part:?}",
            observed["auto_reply_reason"]
        ));
    }
    if let Some(never) = expected.get("never_released")
        && never != &observed["never_released"]
    {
        out.push(format!(
            "never_released {} (expected {never})",
            observed["never_released"]
        ));
    }
    out
}

#[test]
fn hostile_corpus() {
    let root = repo_root().join("tests/fixtures");
    let dir = root.join("hostile");
    let config = Config::load(&root.join("golden/mailroom.toml")).unwrap_or_else(|e| panic!("{e}"));
    let mut names: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .collect();
    names.sort();
    let (mut ran, mut failed) = (0, Vec::new());
    for eml in names {
        let name = eml.file_name().unwrap().to_string_lossy().to_string();
        let raw = fs::read(&eml).unwrap();
        let expected_path = eml.with_extension("json");
        let expected: Value = serde_json::from_str(
            &fs::read_to_string(&expected_path)
                .unwrap_or_else(|e| panic!("{}: {e}", expected_path.display())),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", expected_path.display()));
        let observed = observe(&config, &raw, &name);
        let failed_path = eml.with_extension("json.failed");
        ran += 1;
        let wrong = mismatches(&expected, &observed);
        if wrong.is_empty() {
            let _ = fs::remove_file(&failed_path);
        } else {
            let pretty = serde_json::to_string_pretty(&observed).unwrap() + "\n";
            fs::write(&failed_path, pretty).unwrap();
            failed.push(format!("{name}: {}", wrong.join("; ")));
        }
    }
    assert!(ran > 0, "no hostile messages found in {}", dir.display());
    assert!(
        failed.is_empty(),
        "{} of {ran} hostile messages were not handled as expected:\n{}",
        failed.len(),
        failed.join("\n")
    );
    println!("hostile: {ran} messages handled as expected");
}

/// The cases too big to commit, generated here: each must be held, with its finding.
#[test]
fn generated_hostile_messages() {
    let root = repo_root().join("tests/fixtures");
    let config = Config::load(&root.join("golden/mailroom.toml")).unwrap_or_else(|e| panic!("{e}"));
    for (name, raw, tag) in [
        (
            "10,000 zip entry names of 1,024 bytes sharing a prefix",
            mailroom_tests::zip::many_long_names(),
            "SCAN_LIMIT",
        ),
        (
            "attached messages nested 100,000 deep",
            mailroom_tests::zip::nested_messages(100_000),
            "SCAN_LIMIT",
        ),
    ] {
        let observed = observe(&config, &raw, "generated.eml");
        assert_eq!(observed["verdict"], "quarantine", "{name}: {observed}");
        assert!(
            observed["findings"]
                .as_array()
                .unwrap()
                .contains(&json!(tag)),
            "{name}: {observed}"
        );
        assert_eq!(observed["never_released"], true, "{name}");
    }
}
