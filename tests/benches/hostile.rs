//! The hostile corpus through all four stages (memory adapters, one core): every message of
//! `tests/fixtures/hostile` and the ones too big to commit (10,000 zip entry names of 1,024
//! bytes sharing a prefix, attached messages nested 100,000 deep), each the best of three
//! runs. Prints every time and, last, the slowest message: `hostile worst: NAME MS ms`.
//!
//! The last line is one JSON object with the same figures, for infra/bench's `hostile` part.
//!
//!     cargo bench -p mailroom-tests --bench hostile

use std::sync::Arc;
use std::time::{Duration, Instant};

use mailroom_core::Config;
use mailroom_core::embedded::memory::memory_ports;
use mailroom_core::model::{Envelope, RawRef};
use mailroom_core::pipeline::{Engine, content_id};

/// The messages too big to commit, as the hostile tests generate them.
fn generated() -> Vec<(String, Vec<u8>)> {
    vec![
        (
            "generated: 10,000 zip names of 1,024 bytes".into(),
            mailroom_tests::zip::many_long_names(),
        ),
        (
            "generated: attached messages 100,000 deep".into(),
            mailroom_tests::zip::nested_messages(100_000),
        ),
    ]
}

fn main() {
    let root = mailroom_tests::repo_root().join("tests/fixtures");
    let config = Arc::new(Config::load(&root.join("golden/mailroom.toml")).expect("the config"));
    let mut messages: Vec<(String, Vec<u8>)> = std::fs::read_dir(root.join("hostile"))
        .expect("the hostile corpus")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    messages.sort();
    messages.extend(generated());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    let mut worst = (Duration::ZERO, String::new());
    for (name, raw) in &messages {
        let mut best = Duration::MAX;
        for _ in 0..3 {
            let (ports, _, _) = memory_ports();
            let engine = Engine::with_rules(config.clone(), ports);
            let env = Envelope::new(
                content_id(raw),
                RawRef {
                    bucket: "local".into(),
                    key: name.clone(),
                },
            );
            let started = Instant::now();
            let outcome = rt.block_on(engine.run_all(env, raw)).expect("a verdict");
            best = best.min(started.elapsed());
            assert!(outcome.envelope.results.respond.is_some());
        }
        println!(
            "{:>9.2} ms  {} bytes  {name}",
            best.as_secs_f64() * 1e3,
            raw.len()
        );
        if best > worst.0 {
            worst = (best, name.clone());
        }
    }
    println!(
        "hostile worst: {} {:.2} ms ({} messages)",
        worst.1,
        worst.0.as_secs_f64() * 1e3,
        messages.len()
    );
    println!(
        "{}",
        serde_json::json!({
            "messages": messages.len(),
            "worst": worst.1,
            "worst_ms": (worst.0.as_secs_f64() * 1e5).round() / 100.0,
        })
    );
}
