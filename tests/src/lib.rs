//! The shared harness of mailroom's integration tests.

pub mod aws;
pub mod iam;
pub mod proxy;
pub mod zip;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mail_parser::MessageParser;
use mailroom_core::Config;
use mailroom_core::embedded::memory::{MemoryState, MemoryWorld, memory_ports};
use mailroom_core::model::{Envelope, RawRef};
use mailroom_core::pipeline::{Engine, Outcome, content_id};
use serde_json::{Value, json};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The team's data kit beside the repository, when present.
pub fn shared_data() -> Option<PathBuf> {
    let p = repo_root().join("../shared/data");
    p.is_dir().then_some(p)
}

/// An engine over memory adapters, with handles to inspect what it did.
pub struct Harness {
    pub engine: Engine,
    pub world: Arc<MemoryWorld>,
    pub state: Arc<MemoryState>,
}

impl Harness {
    pub fn new(config: Config) -> Harness {
        let (ports, world, state) = memory_ports();
        Harness {
            engine: Engine::with_rules(Arc::new(config), ports),
            world,
            state,
        }
    }

    /// Runs all stages over one raw message, as `mailroom run` does.
    pub fn run(&self, raw: &[u8], source: &str) -> Outcome {
        let env = Envelope::new(
            content_id(raw),
            RawRef {
                bucket: "local".into(),
                key: source.into(),
            },
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        rt.block_on(self.engine.run_all(env, raw))
            .unwrap_or_else(|e| panic!("{source}: {e}"))
    }
}

/// A small text model trained on `docs` (label, subject, body), as `mailroom train` would
/// train one on labelled folders: the bytes of its model file.
pub fn tiny_model(name: &str, labels: &[&str], docs: &[(&str, &str, &str)]) -> Vec<u8> {
    use mailroom_core::Mail;
    use mailroom_learn::{FeatureConfig, Learner, TrainOptions, features, train};
    let labels: Vec<String> = labels.iter().map(|l| l.to_string()).collect();
    let config = FeatureConfig {
        bits: 12,
        ..FeatureConfig::default()
    };
    let (x, y): (Vec<_>, Vec<_>) = docs
        .iter()
        .enumerate()
        .map(|(i, (label, subject, body))| {
            let raw = format!(
                "From: sender{i}@customer.example\r\nTo: info@example.com\r\nSubject: {subject}\r\nMessage-ID: <{i}@customer.example>\r\n\r\n{body}\r\n"
            );
            let mail = Mail::parse(raw.as_bytes()).expect("test mail parses");
            let label = labels
                .iter()
                .position(|l| l == label)
                .unwrap_or_else(|| panic!("{label} is not one of the labels"));
            (features::extract(&mail, &config), label)
        })
        .unzip();
    let rows: Vec<usize> = (0..x.len()).collect();
    train::train(
        name,
        &labels,
        config,
        &x,
        &y,
        &rows,
        &TrainOptions::for_learner(Learner::Svm),
    )
    .to_bytes()
}

/// Headers whose values are generated per send (replies' Date and Message-ID), masked so
/// golden files stay stable.
fn masked(name: &str, auto_reply: bool) -> bool {
    auto_reply && (name.eq_ignore_ascii_case("date") || name.eq_ignore_ascii_case("message-id"))
}

/// An outgoing message as golden files record it: envelope, every header in order, body text.
pub fn describe_sent(from: &str, to: &[String], raw: &[u8]) -> Value {
    let Some(msg) = MessageParser::default().parse(raw) else {
        return json!({ "from": from, "to": to, "error": "outgoing message does not parse" });
    };
    let auto = msg
        .headers()
        .iter()
        .any(|h| h.name().eq_ignore_ascii_case("auto-submitted"));
    let headers: Vec<String> = msg
        .headers_raw()
        .map(|(n, v)| {
            if masked(n, auto) {
                format!("{n}: <generated>")
            } else {
                format!("{n}: {}", v.trim().replace("\r\n", "\n"))
            }
        })
        .collect();
    json!({
        "from": from,
        "to": to,
        "headers": headers,
        "body": msg.body_text(0).map(|b| b.replace("\r\n", "\n")),
    })
}
