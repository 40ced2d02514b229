//! Robustness on real mail: every message of mail-parser's edge-case collection (in the
//! team's data kit beside the repository) must get a verdict through all four stages.

use std::path::{Path, PathBuf};

use mailroom_core::Config;
use mailroom_tests::{Harness, repo_root, shared_data};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn every_mime_edge_case_gets_a_verdict() {
    let Some(data) = shared_data() else {
        mailroom_core::skip::skipped("../shared/data is not present beside the repository");
        return;
    };
    let config = Config::load(&repo_root().join("examples/mailroom.toml")).unwrap();
    let harness = Harness::new(config);
    let mut all = Vec::new();
    files(&data.join("mime-edge-cases"), &mut all);
    all.sort();
    let mut parsed = 0;
    for path in &all {
        let raw = std::fs::read(path).unwrap();
        let outcome = harness.run(&raw, &path.display().to_string());
        let r = &outcome.envelope.results;
        assert!(
            r.filter.is_some() && r.classify.is_some() && r.route.is_some() && r.respond.is_some(),
            "{}",
            path.display()
        );
        if outcome.parse_error.is_none() {
            parsed += 1;
        }
    }
    assert!(
        all.len() > 50,
        "expected the edge-case collection, found {} files",
        all.len()
    );
    println!(
        "edge cases: {} messages, {parsed} parsed as mail, all got a verdict",
        all.len()
    );
}
