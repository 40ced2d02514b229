//! Golden fixtures: each `tests/fixtures/golden/NAME.eml` runs through all four stages with
//! `tests/fixtures/golden/mailroom.toml`; the result must equal `NAME.json`. A mismatch writes
//! `NAME.json.failed` beside it (diff the two; `UPDATE_GOLDEN=1` rewrites the expectations).

use std::fs;

use mailroom_core::Config;
use mailroom_core::report;
use mailroom_tests::{Harness, describe_sent, repo_root};
use serde_json::{Value, json};

fn observe(config: &Config, raw: &[u8], name: &str) -> Value {
    let h = Harness::new(config.clone());
    let outcome = h.run(raw, name);
    let mut record =
        serde_json::to_value(report::Report::of(name, &outcome)).expect("a report is JSON");
    let obj = record.as_object_mut().expect("record is an object");
    obj.remove("id");
    obj.remove("source");
    let sent: Vec<Value> = h
        .world
        .sent
        .lock()
        .unwrap()
        .iter()
        .map(|m| describe_sent(&m.from, &m.to, &m.raw.to_vec()))
        .collect();
    obj.insert("sent".into(), json!(sent));
    obj.insert(
        "objects".into(),
        json!(h.world.objects.lock().unwrap().keys().collect::<Vec<_>>()),
    );
    obj.insert(
        "delivered".into(),
        json!(
            h.world
                .delivered
                .lock()
                .unwrap()
                .iter()
                .map(|(q, _)| q.clone())
                .collect::<Vec<_>>()
        ),
    );
    obj.insert(
        "audit_stages".into(),
        json!(
            h.state
                .audit_records()
                .iter()
                .map(|a| a.stage.as_str())
                .collect::<Vec<_>>()
        ),
    );
    // At-least-once: running the same message again must repeat no effect.
    let before = h.world.sent.lock().unwrap().len();
    h.run(raw, name);
    obj.insert(
        "rerun_sends".into(),
        json!(h.world.sent.lock().unwrap().len() - before),
    );
    record
}

#[test]
fn golden_fixtures() {
    let dir = repo_root().join("tests/fixtures/golden");
    let config = Config::load(&dir.join("mailroom.toml")).unwrap_or_else(|e| panic!("{e}"));
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .collect();
    names.sort();
    let (mut ran, mut failed) = (0, Vec::new());
    for eml in names {
        let name = eml.file_name().unwrap().to_string_lossy().to_string();
        let raw = fs::read(&eml).unwrap();
        let observed = observe(&config, &raw, &name);
        let pretty = serde_json::to_string_pretty(&observed).unwrap() + "\n";
        let expected_path = eml.with_extension("json");
        let failed_path = eml.with_extension("json.failed");
        ran += 1;
        if update {
            fs::write(&expected_path, &pretty).unwrap();
            let _ = fs::remove_file(&failed_path);
            continue;
        }
        match fs::read_to_string(&expected_path) {
            Ok(expected) if serde_json::from_str::<Value>(&expected).ok() == Some(observed) => {
                let _ = fs::remove_file(&failed_path);
            }
            _ => {
                fs::write(&failed_path, &pretty).unwrap();
                failed.push(name);
            }
        }
    }
    assert!(ran > 0, "no golden fixtures found in {}", dir.display());
    assert!(
        failed.is_empty(),
        "{} of {ran} golden fixtures differ (see the .json.failed files): {failed:?}",
        failed.len()
    );
    println!("golden: {ran} fixtures matched");
}
