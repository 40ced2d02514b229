//! The hostile corpus through all four stages (memory adapters, one core): every message of
//! `tests/fixtures/hostile` and the ones too big to commit (10,000 zip entry names of 1,024
//! bytes sharing a prefix, attached messages nested 100,000 deep), each the best of three
//! runs. Prints every time and, last, the slowest message: `hostile worst: NAME MS ms`.
//!
//!     cargo bench -p mailroom-core --bench hostile

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use mailroom_core::Config;
use mailroom_core::embedded::memory::memory_ports;
use mailroom_core::model::{Envelope, RawRef};
use mailroom_core::pipeline::{Engine, content_id};

/// A stored zip of empty entries with these names.
fn zip(names: &[String]) -> Vec<u8> {
    let (mut out, mut central) = (Vec::new(), Vec::new());
    for name in names {
        let offset = out.len() as u32;
        let mut common = vec![0u8; 20];
        common.extend_from_slice(&(name.len() as u16).to_le_bytes());
        common.extend_from_slice(&[0, 0]);
        out.extend_from_slice(b"PK\x03\x04\x14\x00");
        out.extend_from_slice(&common);
        out.extend_from_slice(name.as_bytes());
        central.extend_from_slice(b"PK\x01\x02\x14\x00\x14\x00");
        central.extend_from_slice(&common);
        central.extend_from_slice(&[0; 10]);
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let cd = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(b"PK\x05\x06\0\0\0\0");
    let n = (names.len() as u16).to_le_bytes();
    out.extend_from_slice(&n);
    out.extend_from_slice(&n);
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out
}

fn generated() -> Vec<(String, Vec<u8>)> {
    let names: Vec<String> = (0..10_000)
        .map(|i| format!("{}{i:05}.txt", "a".repeat(1024 - 9)))
        .collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(zip(&names));
    let mut body = String::new();
    for line in b64.as_bytes().chunks(76) {
        body.push_str(std::str::from_utf8(line).unwrap());
        body.push_str("\r\n");
    }
    let names_msg = format!(
        "From: ann@customer.example\r\nTo: support@example.com\r\nSubject: names\r\n\
         MIME-Version: 1.0\r\nContent-Type: application/zip; name=\"names.zip\"\r\n\
         Content-Disposition: attachment; filename=\"names.zip\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{body}"
    );
    let mut nested = String::from("From: ann@customer.example\r\nSubject: Fwd\r\n");
    nested.push_str(&"Content-Type: message/rfc822\r\n\r\n".repeat(100_000));
    nested.push_str("From: b@example.org\r\n\r\nx\r\n");
    vec![
        (
            "generated: 10,000 zip names of 1,024 bytes".into(),
            names_msg.into_bytes(),
        ),
        (
            "generated: attached messages 100,000 deep".into(),
            nested.into_bytes(),
        ),
    ]
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
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
}
