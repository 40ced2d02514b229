//! In-process throughput of each stage and of the whole pipeline (parse → filter →
//! classify → route → respond, with memory adapters: no I/O), on one core.
//!
//! The corpus is the SpamAssassin corpus in `../shared/data/spam` when present, else a
//! generated one. `MAILROOM_BENCH_CORPUS=DIR` uses the files of DIR instead (sorted by
//! name; `MAILROOM_BENCH_NAME` names it), which is how `infra/bench/run.sh` makes this
//! bench and its `mailroom run` timing read the same messages (a subset with `--quick`, a
//! generated corpus when the SpamAssassin one is missing). `MAILROOM_BENCH_CONFIG=FILE`
//! runs FILE's config with the models it names (the script trains a spam model for it)
//! instead of the example config's rules alone. The script runs this and reads criterion's
//! estimates; the `corpus ...` line below gives it the bytes for MB/s.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use mailroom_core::classify::Classifier;
use mailroom_core::embedded::memory::memory_ports;
use mailroom_core::filter::Filter;
use mailroom_core::model::{Envelope, RawRef, StageResults};
use mailroom_core::pipeline::{Engine, content_id};
use mailroom_core::{Config, Mail, respond, route};

fn corpus() -> (String, Vec<Vec<u8>>) {
    if let Some(dir) = std::env::var_os("MAILROOM_BENCH_CORPUS") {
        let dir = Path::new(&dir);
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("MAILROOM_BENCH_CORPUS {}: {e}", dir.display()))
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        paths.sort();
        let out: Vec<Vec<u8>> = paths.iter().filter_map(|p| std::fs::read(p).ok()).collect();
        assert!(
            !out.is_empty(),
            "MAILROOM_BENCH_CORPUS {} has no files",
            dir.display()
        );
        let name = std::env::var("MAILROOM_BENCH_NAME").unwrap_or_else(|_| "custom".into());
        return (name.replace('/', "-"), out);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/spam");
    let mut out = Vec::new();
    for sub in ["ham", "spam"] {
        if let Ok(dir) = std::fs::read_dir(root.join(sub)) {
            let mut paths: Vec<_> = dir.flatten().map(|e| e.path()).collect();
            paths.sort();
            out.extend(paths.iter().filter_map(|p| std::fs::read(p).ok()));
        }
    }
    if !out.is_empty() {
        return ("spamassassin".into(), out);
    }
    ("generated".into(), (0..2000).map(generated).collect())
}

/// A deterministic message of a few KB in the shape SES stores.
fn generated(i: usize) -> Vec<u8> {
    let words = [
        "invoice", "meeting", "server", "refund", "password", "offer", "urgent", "report", "order",
        "delivery",
    ];
    let body: String = (0..200)
        .map(|j| words[(i * 7 + j * 13) % words.len()])
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "Return-Path: <user{i}@customer{m}.example>\r\nX-SES-Spam-Verdict: PASS\r\nX-SES-Virus-Verdict: PASS\r\n\
         Authentication-Results: amazonses.com; spf=pass smtp.mailfrom=customer{m}.example; dkim=pass header.i=@customer{m}.example; dmarc=pass header.from=customer{m}.example;\r\n\
         From: User {i} <user{i}@customer{m}.example>\r\nTo: {to}@example.com\r\nSubject: {s} number {i}\r\n\
         Date: Mon, 02 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{i}@customer{m}.example>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n",
        m = i % 17,
        to = ["support", "billing", "sales", "info"][i % 4],
        s = words[i % words.len()],
    )
    .into_bytes()
}

fn config_path() -> PathBuf {
    std::env::var_os("MAILROOM_BENCH_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/mailroom.toml")
        })
}

fn config() -> Config {
    let path = config_path();
    Config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The filter and classifier with the config's models.
fn stages_for(config: &Config) -> (Filter, Classifier) {
    let path = config_path();
    let base = path.parent().unwrap_or(Path::new("."));
    mailroom_learn::load_for_config(config, base)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn engine(config: &Arc<Config>) -> Engine {
    let (filter, classifier) = stages_for(config);
    Engine::new(config.clone(), filter, classifier, memory_ports().0)
}

fn stages(c: &mut Criterion) {
    let (name, raw) = corpus();
    let bytes: u64 = raw.iter().map(|r| r.len() as u64).sum();
    let config = Arc::new(config());
    let (filter, classifier) = stages_for(&config);
    let mails: Vec<Mail> = raw.iter().filter_map(|r| Mail::parse(r).ok()).collect();
    let parsed_bytes: u64 = mails.iter().map(|m| m.raw.len() as u64).sum();
    // MB/s = messages/s × bytes / messages; printed so the bench script can convert. The
    // parse and pipeline benches count every message, the others the ones that parsed.
    println!(
        "corpus {name}: {} messages, {bytes} bytes, {} bytes on average; {} parsed, {parsed_bytes} bytes",
        raw.len(),
        bytes / raw.len().max(1) as u64,
        mails.len(),
    );
    let filtered: Vec<_> = mails.iter().map(|m| filter.run(m, &config)).collect();
    let classified: Vec<_> = mails
        .iter()
        .zip(&filtered)
        .map(|(m, f)| classifier.run(m, f, &config))
        .collect();
    let routed: Vec<_> = mails
        .iter()
        .zip(&filtered)
        .zip(&classified)
        .map(|((m, f), c)| route::decide(m, f, c, &config))
        .collect();

    let mut g = c.benchmark_group(format!("stage/{name}"));
    g.sample_size(10);
    g.throughput(Throughput::Elements(raw.len() as u64));
    g.bench_function("parse", |b| {
        b.iter(|| raw.iter().filter_map(|r| Mail::parse(r).ok()).count())
    });
    g.throughput(Throughput::Elements(mails.len() as u64));
    g.bench_function("filter", |b| {
        b.iter(|| {
            mails
                .iter()
                .map(|m| filter.run(m, &config).spam_score)
                .sum::<f32>()
        })
    });
    g.bench_function("classify", |b| {
        b.iter(|| {
            mails
                .iter()
                .zip(&filtered)
                .map(|(m, f)| classifier.run(m, f, &config).category_confidence)
                .sum::<f32>()
        })
    });
    g.bench_function("route", |b| {
        b.iter(|| {
            mails
                .iter()
                .zip(&filtered)
                .zip(&classified)
                .map(|((m, f), c)| route::decide(m, f, c, &config).actions.len())
                .sum::<usize>()
        })
    });
    g.bench_function("respond", |b| {
        b.iter(|| {
            let mut n = 0;
            for (((m, f), c), r) in mails.iter().zip(&filtered).zip(&classified).zip(&routed) {
                let results = StageResults {
                    filter: Some(f.clone()),
                    classify: Some(c.clone()),
                    route: Some(r.clone()),
                    respond: None,
                };
                if let Ok(plan) = respond::plan(m, &results, &config) {
                    n += respond::render(m, &plan, &results, &config, "MR-BENCH")
                        .map(|o| o.raw.len())
                        .unwrap_or(0);
                }
            }
            n
        })
    });
    g.finish();

    let mut g = c.benchmark_group(format!("pipeline/{name}"));
    g.sample_size(10);
    g.throughput(Throughput::Elements(raw.len() as u64));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    g.bench_function("messages", |b| {
        b.iter_batched(
            || engine(&config),
            |engine| {
                rt.block_on(async {
                    for r in &raw {
                        let env = Envelope::new(
                            content_id(r),
                            RawRef {
                                bucket: "bench".into(),
                                key: String::new(),
                            },
                        );
                        engine.run_all(env, r).await.expect("pipeline runs");
                    }
                })
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, stages);
criterion_main!(benches);
