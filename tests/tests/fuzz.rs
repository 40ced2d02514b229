//! Property-based fuzzing on the stable toolchain (proptest): arbitrary and mutated input
//! against the invariants that must hold for any message.
//!
//! - any bytes through all four stages: no panic, every stage's result, no effect repeated
//!   by a second run;
//! - the forward rewrite: the body is unchanged byte for byte, and the only header fields
//!   that appear are the ones the rewrite adds, each once;
//! - SES notifications, SQS events and envelopes: decoding gives a value or an error;
//! - model files, damaged: an error, never a model or a panic;
//! - an executable header in zips (stored, deflated, nested), attached messages and
//!   multiparts to a random depth: never accepted;
//! - generated MIME trees (binary, text and HTML parts in every transfer encoding) and
//!   mutated fixtures: classify on filter's copy without attachment contents decides as on
//!   the whole message.
//!
//! The test command runs a bounded number of cases (`MAILROOM_FUZZ_CASES`, default 256 per
//! property). `MAILROOM_FUZZ_SECONDS=N` keeps each property running for N seconds instead,
//! in fresh batches; the README gives the hour-long command.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mailroom_core::Config;
use mailroom_core::config::General;
use mailroom_core::embedded::memory::memory_ports;
use mailroom_core::mail::Mail;
use mailroom_core::model::{Envelope, RawRef};
use mailroom_core::pipeline::{Engine, content_id};
use mailroom_core::route::forward::{FORWARDED_FOR, ForwardPlan};
use mailroom_core::route::headers;
use mailroom_tests::repo_root;
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};

/// Runs a property for the configured cases (or seconds); returns how many cases ran.
fn run_property<S, F>(name: &str, strategy: S, test: F) -> u64
where
    S: Strategy,
    S::Value: std::fmt::Debug,
    F: Fn(S::Value) -> Result<(), TestCaseError>,
{
    let env = |k: &str| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let seconds = env("MAILROOM_FUZZ_SECONDS").map(Duration::from_secs);
    let cases = env("MAILROOM_FUZZ_CASES").unwrap_or(256) as u32;
    let started = Instant::now();
    let mut total = 0u64;
    loop {
        let mut runner = TestRunner::new(RunnerConfig {
            cases,
            failure_persistence: None,
            ..RunnerConfig::default()
        });
        if let Err(e) = runner.run(&strategy, &test) {
            panic!("fuzz {name}: {e}");
        }
        total += u64::from(cases);
        if seconds.is_none_or(|s| started.elapsed() >= s) {
            break;
        }
    }
    eprintln!(
        "fuzz {name}: {total} cases in {:.1} s, no failure",
        started.elapsed().as_secs_f64()
    );
    total
}

fn golden_dir() -> std::path::PathBuf {
    repo_root().join("tests/fixtures/golden")
}

/// The golden fixtures: real-looking mail to mutate.
fn seeds() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(golden_dir())
        .expect("the golden fixtures")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .map(|p| std::fs::read(p).expect("a fixture"))
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no golden fixtures to mutate");
    out
}

/// One edit of a message.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
    /// Repeats the line starting at (or after) the offset: duplicate headers.
    RepeatLine(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let interesting = prop::sample::select(vec![
        b"\r\n".to_vec(),
        b"\n\n".to_vec(),
        b"\r\n\r\n".to_vec(),
        b"From: \"a\r\nBcc: x@y\" <e@x>\r\n".to_vec(),
        b"Content-Type: multipart/mixed; boundary=\"\"\r\n".to_vec(),
        b"=?utf-8?B?AAAA?=".to_vec(),
        b"--".to_vec(),
        vec![0],
        vec![0xff, 0xfe],
        b"\t \t".to_vec(),
    ]);
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (
            any::<usize>(),
            prop_oneof![interesting, prop::collection::vec(any::<u8>(), 0..40)]
        )
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), 0usize..200).prop_map(|(i, n)| Mutation::Delete(i, n)),
        any::<usize>().prop_map(Mutation::Truncate),
        any::<usize>().prop_map(Mutation::RepeatLine),
    ]
}

fn mutate(mut raw: Vec<u8>, edits: &[Mutation]) -> Vec<u8> {
    for m in edits {
        let len = raw.len().max(1);
        match m {
            Mutation::Flip(i, b) => {
                if !raw.is_empty() {
                    let at = i % raw.len();
                    raw[at] ^= b | 1;
                }
            }
            Mutation::Insert(i, bytes) => {
                let at = i % (raw.len() + 1);
                raw.splice(at..at, bytes.iter().copied());
            }
            Mutation::Delete(i, n) => {
                let at = i % len;
                let end = (at + n).min(raw.len());
                if at < end {
                    raw.drain(at..end);
                }
            }
            Mutation::Truncate(i) => raw.truncate(i % len),
            Mutation::RepeatLine(i) => {
                let start = raw[..(i % len).min(raw.len())]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |p| p + 1);
                if let Some(end) = raw[start..].iter().position(|&b| b == b'\n') {
                    let line = raw[start..start + end + 1].to_vec();
                    raw.splice(start..start, line);
                }
            }
        }
    }
    raw
}

/// Arbitrary bytes, or a golden fixture with a few edits.
fn message(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let n = seeds.len();
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..600),
        4 => (0..n, prop::collection::vec(mutation(), 0..6))
            .prop_map(move |(i, edits)| mutate(seeds[i].clone(), &edits)),
    ]
}

/// The golden config, and a runtime to run the engine's stages on.
fn golden_config_and_runtime() -> (Arc<Config>, tokio::runtime::Runtime) {
    let config = Config::load(&golden_dir().join("mailroom.toml")).expect("the golden config");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    (Arc::new(config), rt)
}

/// The envelope of a fuzzed message, read from `fuzz.eml` in the memory ports.
fn fuzz_envelope(raw: &[u8]) -> Envelope {
    Envelope::new(
        content_id(raw),
        RawRef {
            bucket: "local".into(),
            key: "fuzz.eml".into(),
        },
    )
}

#[test]
fn any_bytes_through_all_four_stages() {
    let (config, rt) = golden_config_and_runtime();
    run_property("all stages", message(seeds()), |raw| {
        let (ports, world, _) = memory_ports();
        let engine = Engine::with_rules(config.clone(), ports);
        let env = fuzz_envelope(&raw);
        let outcome = rt
            .block_on(engine.run_all(env.clone(), &raw))
            .map_err(|e| TestCaseError::fail(format!("no verdict: {e}")))?;
        let r = &outcome.envelope.results;
        prop_assert!(r.filter.is_some() && r.classify.is_some());
        prop_assert!(r.route.is_some() && r.respond.is_some());
        let sent = world.sent.lock().unwrap().len();
        let delivered = world.delivered.lock().unwrap().len();
        rt.block_on(engine.run_all(env, &raw))
            .map_err(|e| TestCaseError::fail(format!("second run: {e}")))?;
        prop_assert_eq!(
            world.sent.lock().unwrap().len(),
            sent,
            "a send was repeated"
        );
        prop_assert_eq!(
            world.delivered.lock().unwrap().len(),
            delivered,
            "a delivery was repeated"
        );
        Ok(())
    });
}

/// A MIME part for [`generated_message`]: text, HTML or binary contents in one of the
/// transfer encodings, or a multipart of parts.
#[derive(Debug, Clone)]
enum Part {
    Leaf {
        content_type: &'static str,
        encoding: &'static str,
        disposition: Option<&'static str>,
        contents: Vec<u8>,
    },
    Multi(&'static str, Vec<Part>),
}

fn part() -> impl Strategy<Value = Part> {
    let leaf = (
        prop::sample::select(vec![
            "text/plain; charset=utf-8",
            "text/html",
            "image/png",
            "application/pdf; name=\"a.pdf\"",
            "application/octet-stream",
            "application/json",
        ]),
        prop::sample::select(vec!["base64", "quoted-printable", "7bit", "8bit", "binary"]),
        prop::option::of(prop::sample::select(vec![
            "attachment; filename=\"x.bin\"",
            "inline",
        ])),
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..300),
            "[a-z <>/=\n]{0,200}".prop_map(String::into_bytes),
        ],
    )
        .prop_map(
            |(content_type, encoding, disposition, contents)| Part::Leaf {
                content_type,
                encoding,
                disposition,
                contents,
            },
        );
    leaf.prop_recursive(3, 12, 4, |inner| {
        (
            prop::sample::select(vec!["mixed", "alternative", "related"]),
            prop::collection::vec(inner, 1..4),
        )
            .prop_map(|(kind, parts)| Part::Multi(kind, parts))
    })
}

/// Writes `part` (its header fields, a blank line, its body) with `eol`; `level` names
/// each multipart's own boundary.
fn write_part(part: &Part, eol: &str, level: &mut usize, out: &mut Vec<u8>) {
    use base64::Engine as _;
    match part {
        Part::Leaf {
            content_type,
            encoding,
            disposition,
            contents,
        } => {
            out.extend(format!("Content-Type: {content_type}{eol}").bytes());
            out.extend(format!("Content-Transfer-Encoding: {encoding}{eol}").bytes());
            if let Some(d) = disposition {
                out.extend(format!("Content-Disposition: {d}{eol}").bytes());
            }
            out.extend(eol.bytes());
            match *encoding {
                "base64" => {
                    let text = base64::engine::general_purpose::STANDARD.encode(contents);
                    for line in text.as_bytes().chunks(76) {
                        out.extend_from_slice(line);
                        out.extend(eol.bytes());
                    }
                }
                "quoted-printable" => {
                    for (i, b) in contents.iter().enumerate() {
                        if i > 0 && i % 70 == 0 {
                            out.extend(format!("={eol}").bytes());
                        }
                        match b {
                            b'!'..=b'<' | b'>'..=b'~' => out.push(*b),
                            _ => out.extend(format!("={b:02X}").bytes()),
                        }
                    }
                    out.extend(eol.bytes());
                }
                _ => {
                    out.extend_from_slice(contents);
                    out.extend(eol.bytes());
                }
            }
        }
        Part::Multi(kind, parts) => {
            *level += 1;
            let boundary = format!("b{level}");
            out.extend(
                format!("Content-Type: multipart/{kind}; boundary=\"{boundary}\"{eol}{eol}")
                    .bytes(),
            );
            for p in parts {
                out.extend(format!("--{boundary}{eol}").bytes());
                write_part(p, eol, level, out);
            }
            out.extend(format!("--{boundary}--{eol}").bytes());
        }
    }
}

/// A message of generated MIME parts, with CRLF or LF line ends.
fn generated_message() -> impl Strategy<Value = Vec<u8>> {
    (part(), any::<bool>(), "[a-z ]{0,30}").prop_map(|(part, crlf, subject)| {
        let eol = if crlf { "\r\n" } else { "\n" };
        let mut out = format!(
            "From: Ann <ann@customer.example>{eol}To: support@example.com{eol}\
             Subject: {subject}{eol}Message-ID: <g@customer.example>{eol}MIME-Version: 1.0{eol}"
        )
        .into_bytes();
        write_part(&part, eol, &mut 0, &mut out);
        out
    })
}

/// Classify works from the copy filter hands it (the message without its binary parts'
/// contents), with no raw mail to read: it must decide what it decides on the whole
/// message, for generated MIME trees and mutated fixtures alike.
#[test]
fn classify_on_the_copy_decides_as_on_the_message() {
    let (config, rt) = golden_config_and_runtime();
    let strategy = prop_oneof![generated_message(), message(seeds())];
    let copies = std::sync::atomic::AtomicUsize::new(0);
    run_property("classify on the copy", strategy, |raw| {
        let (ports, world, _) = memory_ports();
        let engine = Engine::with_rules(config.clone(), ports);
        let env = fuzz_envelope(&raw);
        world
            .raw
            .lock()
            .unwrap()
            .insert("fuzz.eml".into(), raw.clone());
        let filtered = rt
            .block_on(engine.run_stage(mailroom_core::model::Stage::Filter, env.clone()))
            .map_err(|e| TestCaseError::fail(format!("filter: {e}")))?;
        let Some(copy) = &filtered.classify_copy else {
            // The copy is of what mail-parser parsed: 8-bit header lines made UTF-8 can
            // make it longer than the raw mail.
            let longest = Mail::parse(&raw)
                .ok()
                .and_then(|m| m.without_attachment_contents(usize::MAX))
                .map_or(0, |copy| copy.len());
            prop_assert!(
                longest == 0 || longest > mailroom_core::model::CLASSIFY_COPY_MAX,
                "a message that parsed got no copy, and its copy is {longest} bytes"
            );
            return Ok(());
        };
        prop_assert_eq!(copy.size, raw.len() as u64);
        copies.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // What the rules and the models read, beyond what the golden config's rules ask.
        let (part, whole) = (
            Mail::parse_copy(&copy.mail, None, copy.size).expect("the copy parses"),
            Mail::parse(&raw).expect("the message parsed in filter"),
        );
        prop_assert_eq!(&part.text, &whole.text);
        prop_assert_eq!(part.has_attachment(), whole.has_attachment());
        let features = mailroom_learn::FeatureConfig::default();
        prop_assert_eq!(
            mailroom_learn::features::extract(&part, &features),
            mailroom_learn::features::extract(&whole, &features)
        );
        world.raw.lock().unwrap().clear();
        let classified = rt
            .block_on(engine.run_stage(mailroom_core::model::Stage::Classify, filtered))
            .map_err(|e| TestCaseError::fail(format!("classify on the copy: {e}")))?;
        let (ports, _, _) = memory_ports();
        let whole = rt
            .block_on(Engine::with_rules(config.clone(), ports).run_all(env, &raw))
            .map_err(|e| TestCaseError::fail(format!("no verdict: {e}")))?;
        prop_assert_eq!(
            &classified.results.classify,
            &whole.envelope.results.classify
        );
        prop_assert_eq!(&classified.conversation, &whole.envelope.conversation);
        Ok(())
    });
    let copies = copies.into_inner();
    assert!(copies > 0, "no case made a copy");
    eprintln!("fuzz classify on the copy: {copies} cases classified from a copy");
}

/// A header field name, from the ones the rewrite treats specially and others.
fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "From",
            "FROM",
            "To",
            "Cc",
            "Subject",
            "Reply-To",
            "Message-ID",
            "DKIM-Signature",
            "Return-Path",
            "Sender",
            "X-Mailroom-Forwarded-For",
            "X-Team",
            "Content-Type",
        ])
        .prop_map(str::to_string),
        "[A-Za-z][A-Za-z0-9-]{0,12}",
    ]
}

/// A field value with hostile content: CR and LF (bare and folded), quotes, non-ASCII.
fn field_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,40}",
        "\"[ -~]{0,10}\" <[a-z]{1,8}@[a-z]{1,8}\\.example>",
        "[a-zA-Zäöü\"\\\\ ]{0,12}(\r\n[ \t][ -~]{0,10})?",
        "[ -~]{0,8}[\r\n]{1,2}[A-Za-z-]{1,8}: [ -~]{0,8}",
    ]
}

#[test]
fn the_forward_rewrite_keeps_the_body_and_adds_no_field() {
    let general = General {
        domains: vec!["example.com".into()],
        ..General::default()
    };
    let tags = vec![("X-Team".to_string(), "support".to_string())];
    let fields = prop::collection::vec((field_name(), field_value()), 0..12);
    let body = prop::collection::vec(any::<u8>(), 0..300);
    run_property(
        "forward rewrite",
        (fields, body, any::<bool>()),
        |(fields, body, crlf)| {
            let nl = if crlf { "\r\n" } else { "\n" };
            let mut raw = String::new();
            for (name, value) in &fields {
                raw.push_str(&format!("{name}: {value}{nl}"));
            }
            raw.push_str(nl);
            let mut raw = raw.into_bytes();
            raw.extend_from_slice(&body);
            let Ok(mail) = Mail::parse(&raw) else {
                return Ok(());
            };
            let to = vec!["agent@corp.example".to_string()];
            let plan = ForwardPlan::new(&mail, &general, &to, &tags);
            let out = plan.edit.apply(mail.raw);
            prop_assert_eq!(
                &plan
                    .edit
                    .apply_shared(&bytes::Bytes::copy_from_slice(&raw))
                    .to_vec(),
                &out
            );
            let (before, after) = (headers::split(mail.raw), headers::split(&out));
            prop_assert_eq!(after.rest, before.rest, "the body changed");
            let names = |h: &[u8]| -> Vec<String> {
                headers::fields(h)
                    .map(|f| String::from_utf8_lossy(f.name).to_ascii_lowercase())
                    .collect()
            };
            let (old, new) = (names(before.headers), names(after.headers));
            let added = [
                "from",
                "reply-to",
                &FORWARDED_FOR.to_ascii_lowercase(),
                "x-team",
            ];
            for name in &new {
                prop_assert!(
                    old.contains(name) || added.contains(&name.as_str()),
                    "a new header field {:?} in {:?}",
                    name,
                    String::from_utf8_lossy(after.headers)
                );
            }
            // Each field the rewrite writes appears at most once more than it did (an
            // existing Reply-To is kept, not doubled; From is replaced).
            let count = |names: &[String], name: &str| names.iter().filter(|n| *n == name).count();
            for name in added.iter().filter(|n| **n != "from") {
                prop_assert!(
                    count(&new, name) <= count(&old, name).max(1),
                    "{} added next to {} already there",
                    name,
                    count(&old, name)
                );
            }
            prop_assert_eq!(new.iter().filter(|n| *n == "from").count(), 1);
            Ok(())
        },
    );
}

const NOTIFICATION: &str = r#"{"notificationType":"Received","mail":{"source":"a@x.example","messageId":"m1","destination":["b@example.com"]},"receipt":{"recipients":["b@example.com"],"spamVerdict":{"status":"PASS"},"virusVerdict":{"status":"PASS"},"dmarcVerdict":{"status":"FAIL"},"dmarcPolicy":"reject","action":{"type":"S3","bucketName":"bk","objectKey":"raw/m1"}}}"#;

#[test]
fn notifications_events_and_envelopes_decode_or_fail_cleanly() {
    let envelope = serde_json::to_string(&Envelope::new(
        "m1",
        RawRef {
            bucket: "bk".into(),
            key: "raw/m1".into(),
        },
    ))
    .unwrap();
    let sns = serde_json::json!({"Type": "Notification", "Message": NOTIFICATION}).to_string();
    let seeds = [
        NOTIFICATION.as_bytes().to_vec(),
        envelope.into_bytes(),
        sns.into_bytes(),
        br#"{"Records":[{"messageId":"1","body":"x","attributes":{},"messageAttributes":{}}]}"#
            .to_vec(),
    ];
    let n = seeds.len();
    let input = prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..300),
        4 => (0..n, prop::collection::vec(mutation(), 0..5))
            .prop_map(move |(i, edits)| mutate(seeds[i].clone(), &edits)),
    ];
    run_property("decoding", input, |bytes| {
        let text = String::from_utf8_lossy(&bytes);
        let _ = mailroom_aws::events::inbound_envelopes(&text);
        let _ = mailroom_aws::events::envelope(&text);
        let _ = mailroom_core::receipt::envelope_from_notification(&text);
        let _ = serde_json::from_str::<aws_lambda_events::sqs::SqsEvent>(&text);
        Ok(())
    });
}

/// A small spam model, trained here.
fn model_bytes() -> Vec<u8> {
    mailroom_tests::tiny_model(
        "fuzz",
        &["ham", "spam"],
        &[
            (
                "ham",
                "Meeting notes",
                "Here are the notes from our meeting on Tuesday.",
            ),
            (
                "ham",
                "Invoice 118",
                "Please find the invoice for October attached.",
            ),
            ("ham", "Lunch?", "Are you free for lunch tomorrow at noon?"),
            (
                "spam",
                "WIN $$$ NOW",
                "Click here to claim your free prize, limited offer!!!",
            ),
            (
                "spam",
                "Cheap meds",
                "Buy cheap pills online, no prescription, best prices.",
            ),
            (
                "spam",
                "You won",
                "Congratulations, you won a lottery, send your bank details.",
            ),
        ],
    )
}

#[test]
fn damaged_model_files_are_errors() {
    use mailroom_learn::Model;
    let good = model_bytes();
    assert!(Model::from_bytes(&good).is_ok());
    let len = good.len();
    let damage = prop_oneof![
        (0..len, 1u8..=255).prop_map(|(i, x)| vec![Mutation::Flip(i, x)]),
        (0..len).prop_map(|i| vec![Mutation::Truncate(i)]),
        prop::collection::vec(mutation(), 1..4),
    ];
    run_property("model files", damage, |edits| {
        let single = matches!(
            edits.as_slice(),
            [Mutation::Flip(..) | Mutation::Truncate(_)]
        );
        let bytes = mutate(good.clone(), &edits);
        let result = Model::from_bytes(&bytes);
        if bytes != good && single {
            prop_assert!(result.is_err(), "a damaged model loaded: {:?}", edits);
        }
        Ok(())
    });
}

/// An executable's first bytes: PE, ELF or Mach-O.
fn executable_header() -> impl Strategy<Value = Vec<u8>> {
    let mut pe = b"MZ\x90\0\x03\0".to_vec();
    pe.resize(0x100, 0);
    pe[0x3c] = 0x80;
    pe[0x80..0x84].copy_from_slice(b"PE\0\0");
    prop_oneof![
        Just(pe),
        Just(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0".to_vec()),
        Just(b"\xcf\xfa\xed\xfe\x07\0\0\x01\x03\0\0\0".to_vec()),
    ]
}

fn harmless_name() -> impl Strategy<Value = String> {
    "[a-z]{1,10}\\.(jpg|txt|pdf|dat|png|csv)"
}

/// An executable under a harmless name, zipped (stored or deflated) to a random depth,
/// beside random padding entries, then attached in messages (as `message/rfc822` parts of a
/// multipart, after a text part or alone) to a random depth: never accepted.
#[test]
fn an_executable_in_any_container_is_never_accepted() {
    let (config, rt) = golden_config_and_runtime();
    let strategy = (
        executable_header(),
        prop::collection::vec(any::<u8>(), 0..300),
        harmless_name(),
        prop::collection::vec((any::<bool>(), harmless_name(), any::<bool>()), 0..6),
        prop::collection::vec(any::<bool>(), 0..5),
    );
    run_property(
        "executable in containers",
        strategy,
        |(head, padding, name, zips, messages)| {
            let mut contents = [head, padding.clone()].concat();
            let mut name = name;
            for (deflate, pad_name, pad_first) in &zips {
                let exe = (name.as_str(), contents.as_slice(), *deflate);
                let pad = (pad_name.as_str(), padding.as_slice(), !deflate);
                let entries = if *pad_first && pad_name != &name {
                    vec![pad, exe]
                } else {
                    vec![exe]
                };
                contents = mailroom_tests::zip::zip(&entries);
                name = format!("{pad_name}.zip");
            }
            let mut raw =
                mailroom_tests::zip::message_with(&name, "application/octet-stream", &contents);
            // Each level its own boundary: mail-parser's debug assertions fire on nested multiparts
            // sharing one (release builds parse them).
            for (level, multipart) in messages.into_iter().enumerate() {
                let inner = String::from_utf8(raw).expect("the messages are ASCII");
                raw = if multipart {
                format!(
                    "From: Ann <ann@customer.example>\r\nTo: support@example.com\r\nSubject: Fwd\r\n\
                     MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"m{level}\"\r\n\r\n\
                     --m{level}\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n\
                     --m{level}\r\nContent-Type: message/rfc822\r\n\r\n{inner}\r\n--m{level}--\r\n"
                )
            } else {
                format!(
                    "From: Ann <ann@customer.example>\r\nTo: support@example.com\r\nSubject: Fwd\r\n\
                     MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"m{level}\"\r\n\r\n\
                     --m{level}\r\nContent-Type: message/rfc822\r\n\r\n{inner}\r\n--m{level}--\r\n"
                )
            }
            .into_bytes();
            }
            let (ports, _, _) = memory_ports();
            let engine = Engine::with_rules(config.clone(), ports);
            let env = fuzz_envelope(&raw);
            let outcome = rt
                .block_on(engine.run_all(env, &raw))
                .map_err(|e| TestCaseError::fail(format!("no verdict: {e}")))?;
            let filter = outcome.envelope.results.filter.expect("a filter result");
            prop_assert!(
                filter.verdict != mailroom_core::model::Verdict::Accept,
                "accepted: {:?}",
                filter.reasons
            );
            Ok(())
        },
    );
}
