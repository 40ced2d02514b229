//! Runs the real `mailroom` binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

#[path = "cli/assist.rs"]
mod assist;
#[path = "cli/console.rs"]
mod console;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn mailroom(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("mailroom runs")
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mailroom-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn jsonl(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn outbox_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "eml")
            })
            .count()
        })
        .unwrap_or(0)
}

#[test]
fn check_accepts_the_example_config() {
    let out = mailroom(&["check", "examples/mailroom.toml"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn init_writes_the_example_for_a_stack_and_never_overwrites_by_itself() {
    let dir = temp("init");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("mailroom.toml");
    let path = file.to_str().unwrap();
    let init = |extra: &[&str]| {
        let mut args = vec![
            "init",
            "--domain",
            "corp.example",
            "--from",
            "help@corp.example",
            "--output",
            path,
        ];
        args.extend_from_slice(extra);
        mailroom(&args)
    };
    let out = init(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("domains = [\"corp.example\"]"));
    assert!(text.contains("from_address = \"help@corp.example\""));
    assert!(
        !text.contains("example-ops.net"),
        "the example's own addresses go"
    );
    let check = mailroom(&["check", path]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    std::fs::write(&file, "# mine\n").unwrap();
    let again = init(&[]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "# mine\n");
    assert!(init(&["--force"]).status.success());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);

    let elsewhere = mailroom(&[
        "init",
        "--domain",
        "corp.example",
        "--from",
        "help@other.example",
        "--output",
        dir.join("other.toml").to_str().unwrap(),
    ]);
    assert!(!elsewhere.status.success());
    assert!(
        String::from_utf8_lossy(&elsewhere.stderr).contains("must be an address at corp.example")
    );
    assert!(!dir.join("other.toml").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_warns_when_unauthenticated_senders_get_replies_and_still_passes() {
    let out = mailroom(&["check", "examples/mailroom.toml"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("warning"), "{err}");
    let dir = temp("loosecfg");
    std::fs::create_dir_all(&dir).unwrap();
    let loose = dir.join("loose.toml");
    let example = std::fs::read_to_string(repo().join("examples/mailroom.toml")).unwrap();
    let text = example.replace(
        "require_authenticated_sender = true",
        "require_authenticated_sender = false",
    );
    assert_ne!(text, example, "the example config sets the switch");
    std::fs::write(&loose, text).unwrap();
    let out = mailroom(&["check", loose.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning: ") && err.contains("require_authenticated_sender = false"),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok ("));
}

#[test]
fn check_rejects_a_bad_config_with_line_and_column() {
    let dir = temp("badcfg");
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[filter]\nquarantine_score = 5.0\n\n[[route]]\nname = \"x\"\nwhen = { subject = \"([\" }\nactions = [\"drop\"]\n").unwrap();
    let out = mailroom(&["check", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:6:"), "{err}");
    assert!(err.contains("bad regex"), "{err}");
    // Nothing runs on an invalid config.
    let out = mailroom(&[
        "run",
        "--config",
        bad.to_str().unwrap(),
        "--state",
        dir.join("s").to_str().unwrap(),
        "examples/mail",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty() || !String::from_utf8_lossy(&out.stdout).contains("accept"));
}

/// A test's own state folder and outbox, and the config its commands use (the example's
/// unless given): what every command on the embedded store takes.
struct Store {
    config: PathBuf,
    state: PathBuf,
    outbox: PathBuf,
}

impl Store {
    /// `state/` and `outbox/` under `dir`, with the example config.
    fn under(dir: &Path) -> Store {
        Store {
            config: PathBuf::from("examples/mailroom.toml"),
            state: dir.join("state"),
            outbox: dir.join("outbox"),
        }
    }

    fn with_config(self, config: PathBuf) -> Store {
        Store { config, ..self }
    }

    /// `--config C --state S --outbox O`.
    fn args(&self) -> [&str; 6] {
        [
            "--config",
            self.config.to_str().unwrap(),
            "--state",
            self.state.to_str().unwrap(),
            "--outbox",
            self.outbox.to_str().unwrap(),
        ]
    }

    /// `mailroom CMD...` on this store.
    fn mailroom(&self, cmd: &[&str]) -> Output {
        let mut args = cmd.to_vec();
        args.extend(self.args());
        mailroom(&args)
    }
}

/// `mailroom run` over the examples, as JSONL.
const RUN_EXAMPLES: [&str; 4] = ["run", "--format", "jsonl", "examples/mail"];

/// The examples twice over (every message has a copy), with `jobs` messages at a time: the
/// rows without their times, the outbox files, and what a second run added to the outbox.
fn run_in_parallel(jobs: &str) -> (Vec<String>, usize, usize) {
    let dir = temp(&format!("jobs-{jobs}"));
    let store = Store::under(&dir);
    let mut args = RUN_EXAMPLES.to_vec();
    args.extend(["examples/mail", "--jobs", jobs]);
    let out = store.mailroom(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = jsonl(&out)
        .into_iter()
        .map(|mut r| {
            r.as_object_mut().unwrap().remove("at");
            r.to_string()
        })
        .collect();
    let sent = outbox_files(&store.outbox);
    assert!(store.mailroom(&args).status.success());
    let again = outbox_files(&store.outbox) - sent;
    let _ = std::fs::remove_dir_all(&dir);
    (rows, sent, again)
}

#[test]
fn run_with_jobs_keeps_the_input_order_and_each_effect_once() {
    let (one, sent_one, again_one) = run_in_parallel("1");
    let (four, sent_four, again_four) = run_in_parallel("4");
    assert!(one.len() >= 28, "{} rows", one.len());
    // The same reports in the same order, duplicates included, as one at a time.
    assert_eq!(one, four);
    assert_eq!(
        sent_one, sent_four,
        "each copy's effects once, in parallel too"
    );
    assert_eq!(
        (again_one, again_four),
        (0, 0),
        "a second run sends nothing"
    );
}

/// Support requests from three senders, each sender's in turn: 0, 1, 2, 0, 1, 2, ...
fn requests_from_three_senders(dir: &Path, count: usize) {
    let base =
        std::fs::read_to_string(repo().join("examples/mail/01-support-request.eml")).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..count {
        let text = base
            .replace(
                "ann@customer.example",
                &format!("ann{}@customer.example", i % 3),
            )
            .replace(
                "<login-1@customer.example>",
                &format!("<login-{i}@customer.example>"),
            )
            .replace(
                "Cannot log in to the dashboard",
                &format!("Cannot log in ({i})"),
            );
        std::fs::write(dir.join(format!("{i:03}.eml")), text).unwrap();
    }
}

#[test]
fn run_with_jobs_replies_to_the_message_one_job_replies_to() {
    let dir = temp("jobs-senders");
    let mail = dir.join("mail");
    requests_from_three_senders(&mail, 36);
    let rows = |jobs: &str| {
        let store = Store::under(&dir.join(format!("store-{jobs}")));
        let out = store.mailroom(&[
            "run",
            "--format",
            "jsonl",
            mail.to_str().unwrap(),
            "--jobs",
            jobs,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        jsonl(&out)
            .into_iter()
            .map(|mut r| {
                r.as_object_mut().unwrap().remove("at");
                r
            })
            .collect::<Vec<Value>>()
    };
    let (one, four) = (rows("1"), rows("4"));
    assert_eq!(one.len(), 36);
    let sent: Vec<usize> = four
        .iter()
        .enumerate()
        .filter(|(_, r)| r["auto_reply"]["status"] == "sent")
        .map(|(i, _)| i)
        .collect();
    // Each sender's first request gets the reply; the rate limit holds back the rest.
    assert_eq!(sent, [0, 1, 2], "{four:#?}");
    assert_eq!(one, four);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn run_over_examples_then_rerun_sends_nothing_twice() {
    let dir = temp("run");
    let store = Store::under(&dir);
    let outbox = &store.outbox;
    let out = store.mailroom(&RUN_EXAMPLES);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = jsonl(&out);
    // One row per .eml: a NAME.json beside NAME.eml is that message's receipt notification.
    assert_eq!(
        rows.len(),
        std::fs::read_dir(repo().join("examples/mail"))
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "eml"))
            .count()
    );
    // The blind copy to billing@ is routed by its envelope recipient, from the notification.
    let bcc = rows
        .iter()
        .find(|r| {
            r["source"]
                .as_str()
                .unwrap()
                .ends_with("13-bcc-billing.eml")
        })
        .expect("the Bcc example ran");
    assert_eq!(bcc["category"], "billing", "{bcc}");
    for row in &rows {
        for key in [
            "source",
            "message_id",
            "from",
            "subject",
            "verdict",
            "spam_score",
            "reasons",
            "category",
            "category_confidence",
            "priority",
            "routes",
            "auto_reply",
        ] {
            assert!(row.get(key).is_some(), "missing {key} in {row}");
        }
    }
    let sent_first = outbox_files(outbox);
    let replies_first = rows
        .iter()
        .filter(|r| r["auto_reply"]["status"] == "sent")
        .count();
    assert!(
        replies_first > 0,
        "the examples should produce at least one auto-reply"
    );
    assert!(
        sent_first > replies_first,
        "the examples should produce forwards as well as replies"
    );
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(summary.contains("messages/s"), "{summary}");

    let again = store.mailroom(&RUN_EXAMPLES);
    assert!(again.status.success());
    assert_eq!(
        outbox_files(outbox),
        sent_first,
        "a second run must send nothing new"
    );
    let rows2 = jsonl(&again);
    assert!(
        rows2
            .iter()
            .zip(&rows)
            .all(|(b, a)| a["auto_reply"] == b["auto_reply"]),
        "a re-run reports the same auto-reply outcome"
    );
}

#[test]
fn bad_inputs_are_reported_per_message_and_the_run_goes_on() {
    let dir = temp("bad");
    let input = dir.join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::write(
        input.join("a.eml"),
        "From: a@x.org\nTo: b@example.com\nSubject: fine\n\nhello\n",
    )
    .unwrap();
    std::fs::write(input.join("b.eml"), [0x89u8, b'P', b'N', b'G', 0, 0, 1, 2]).unwrap();
    std::fs::write(input.join("c.mbox"), "From a@x Mon Jan  1 00:00:00 2024\nFrom: a@x.org\nSubject: one\n\nx\n\nFrom b@x Mon Jan  1 00:00:00 2024\nFrom: b@x.org\nSubject: two\n\ny\n").unwrap();
    let missing = dir.join("missing.eml");
    let out = mailroom(&[
        "run",
        "--format",
        "jsonl",
        "--state",
        dir.join("s").to_str().unwrap(),
        "--outbox",
        dir.join("o").to_str().unwrap(),
        input.to_str().unwrap(),
        missing.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "failed inputs give exit code 1");
    let rows = jsonl(&out);
    assert_eq!(rows.len(), 5, "{rows:#?}");
    let by_source = |s: &str| {
        rows.iter()
            .find(|r| r["source"].as_str().unwrap().ends_with(s))
            .unwrap_or_else(|| panic!("no row for {s}"))
    };
    assert_eq!(by_source("a.eml")["verdict"], "accept");
    assert!(
        by_source("b.eml")["error"]
            .as_str()
            .unwrap()
            .contains("not an e-mail message")
    );
    assert_eq!(
        by_source("b.eml")["verdict"],
        "quarantine",
        "unparseable mail is quarantined, not lost"
    );
    assert_eq!(by_source("c.mbox#2")["subject"], "two");
    assert!(
        by_source("missing.eml")["error"]
            .as_str()
            .unwrap()
            .contains("cannot read")
    );
}

#[test]
fn a_notification_beside_a_message_counts_and_a_broken_one_is_reported() {
    let dir = temp("receipt");
    let input = dir.join("in");
    std::fs::create_dir_all(&input).unwrap();
    let mail =
        "From: ann@partner.example\nTo: accounts@partner.example\nSubject: remittance\n\nhello\n";
    std::fs::write(input.join("blind.eml"), mail).unwrap();
    std::fs::write(
        input.join("blind.json"),
        r#"{"notificationType":"Received","mail":{"messageId":"m1","source":"ann@partner.example"},
            "receipt":{"recipients":["billing@example.com"],"virusVerdict":{"status":"FAIL"}}}"#,
    )
    .unwrap();
    std::fs::write(input.join("broken.eml"), mail).unwrap();
    std::fs::write(input.join("broken.json"), "{\"notificationType\": ").unwrap();
    let out = mailroom(&[
        "run",
        "--config",
        "examples/mailroom.toml",
        "--format",
        "jsonl",
        "--state",
        dir.join("s").to_str().unwrap(),
        "--outbox",
        dir.join("o").to_str().unwrap(),
        input.to_str().unwrap(),
    ]);
    let rows = jsonl(&out);
    assert_eq!(rows.len(), 2, "the .json files are not inputs: {rows:#?}");
    assert_eq!(
        out.status.code(),
        Some(1),
        "the broken notification fails its message"
    );
    let blind = rows
        .iter()
        .find(|r| r["source"].as_str().unwrap().ends_with("blind.eml"))
        .unwrap();
    // The receipt's verdict and recipients count: a virus verdict rejects, and the
    // billing@ envelope recipient classifies.
    assert_eq!(blind["verdict"], "reject", "{blind}");
    assert_eq!(blind["category"], "billing", "{blind}");
    let broken = rows
        .iter()
        .find(|r| r["source"].as_str().unwrap().ends_with("broken.eml"))
        .unwrap();
    let error = broken["error"].as_str().unwrap();
    assert!(
        error.contains("broken.json") && error.contains("not an SES receipt notification"),
        "{error}"
    );
}

#[test]
fn a_message_no_stage_can_handle_is_quarantined_by_run_as_by_the_functions() {
    let dir = temp("failure");
    std::fs::create_dir_all(&dir).unwrap();
    // A reply template that compiles but cannot render: respond fails for good.
    let config = std::fs::read_to_string(repo().join("examples/mailroom.toml"))
        .unwrap()
        .replace("{{ reference }}", "{{ no_such_value.field }}");
    let config_path = dir.join("mailroom.toml");
    std::fs::write(&config_path, config).unwrap();
    let state = dir.join("s");
    let out = mailroom(&[
        "run",
        "--config",
        config_path.to_str().unwrap(),
        "--format",
        "jsonl",
        "--state",
        state.to_str().unwrap(),
        "--outbox",
        dir.join("o").to_str().unwrap(),
        "examples/mail/01-support-request.eml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let rows = jsonl(&out);
    let error = rows[0]["error"].as_str().unwrap();
    assert!(
        error.contains("stage respond") && error.contains("quarantined as quarantine/"),
        "{error}"
    );
    let quarantined: Vec<_> = std::fs::read_dir(state.join("objects/quarantine"))
        .unwrap()
        .collect();
    assert_eq!(quarantined.len(), 1, "{error}");
}

#[test]
fn the_quarantine_and_a_search_list_what_a_run_decided() {
    let dir = temp("operate");
    let state = dir.join("state");
    let run = mailroom(&[
        "run",
        "--config",
        "examples/mailroom.toml",
        "--state",
        state.to_str().unwrap(),
        "--outbox",
        dir.join("outbox").to_str().unwrap(),
        "examples/mail",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let list = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--state", state.to_str().unwrap(), "--format", "jsonl"]);
        let out = mailroom(&all);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            jsonl(&out),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Quarantined: the lottery and the hostile mail (SES spam FAIL), and the Latin-1
    // question whose sender's SPF record is wrong.
    let (rows, _) = list(&["quarantine", "list"]);
    assert_eq!(rows.len(), 3, "{rows:#?}");
    let latin = rows
        .iter()
        .find(|r| r["sender"] == "rene@kunde.example")
        .expect("the SPF failure is in quarantine");
    assert_eq!(
        latin["subject"],
        "Rückfrage zur Rechnung 2026-207 – Überweisung"
    );
    let q = rows
        .iter()
        .find(|r| r["sender"] == "winner@lottery.example")
        .expect("the lottery mail is in quarantine");
    for key in [
        "id",
        "at",
        "sender",
        "recipients",
        "subject",
        "score",
        "reasons",
    ] {
        assert!(q.get(key).is_some(), "no {key} in {q}");
    }
    assert!(
        q["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "SES_SPAM_FAIL"),
        "{q}"
    );
    assert!(
        q["quarantined"]
            .as_str()
            .unwrap()
            .starts_with("quarantine/")
    );

    let (by_recipient, _) = list(&["search", "--recipient", "billing@example.com"]);
    assert!(by_recipient.len() >= 2, "{by_recipient:#?}");
    assert!(by_recipient.iter().all(|r| {
        r["recipients"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x == "billing@example.com")
    }));
    let (blind, _) = list(&["search", "--subject", "REMITTANCE", "--category", "billing"]);
    assert_eq!(blind.len(), 1, "{blind:#?}");

    // Pages: two rows, then the rest, nothing twice.
    let (first, more) = list(&["search", "--limit", "2"]);
    assert_eq!(first.len(), 2);
    let cursor = more
        .lines()
        .find_map(|l| l.strip_prefix("more: --page "))
        .expect("a cursor after a full page")
        .to_string();
    let (rest, _) = list(&["search", "--limit", "100", "--page", &cursor]);
    let mut ids: Vec<&str> = first
        .iter()
        .chain(&rest)
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "a row on two pages");
    let eml = std::fs::read_dir(repo().join("examples/mail"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "eml")
        })
        .count();
    assert_eq!(n, eml, "every message is listed once");

    // One message in full: headers, text, attachments with the policy's verdict, audit.
    let id = q["id"].as_str().unwrap();
    let (views, _) = list(&["show", id]);
    let view = &views[0];
    assert!(
        view["headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h[0] == "Subject"),
        "{view}"
    );
    assert!(
        view["text"].as_str().unwrap().contains("Claim your prize"),
        "{view}"
    );
    let stages: Vec<&str> = view["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["stage"].as_str().unwrap())
        .collect();
    assert_eq!(stages, ["filter", "classify", "route", "respond"]);
    let (virus, _) = list(&["search", "--verdict", "reject", "--subject", "CV attached"]);
    assert_eq!(virus.len(), 1, "{virus:#?}");
    let virus_id = virus[0]["id"].as_str().unwrap().to_string();
    let out = mailroom(&[
        "show",
        &virus_id,
        "--state",
        state.to_str().unwrap(),
        "--format",
        "jsonl",
    ]);
    let view = &jsonl(&out)[0];
    let attachments = view["attachments"].as_array().unwrap();
    assert!(!attachments.is_empty(), "{view}");
    assert!(
        view["audit"][0]["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().unwrap().starts_with("VIRUS_FAIL")),
        "{view}"
    );
    let unknown = mailroom(&["show", "no-such-id", "--state", state.to_str().unwrap()]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no message \"no-such-id\""));

    let missing = mailroom(&[
        "quarantine",
        "list",
        "--state",
        dir.join("nowhere").to_str().unwrap(),
    ]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no state store"));
    let bad = mailroom(&[
        "search",
        "--state",
        state.to_str().unwrap(),
        "--since",
        "last tuesday",
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not a date"));
}

#[test]
fn a_released_message_goes_on_once_and_blocked_executables_stay() {
    let dir = temp("release");
    let input = dir.join("in");
    std::fs::create_dir_all(&input).unwrap();
    let example =
        |name: &str| std::fs::read_to_string(repo().join("examples/mail").join(name)).unwrap();
    // Sales mail SES called spam (a false positive), and the CV whose attachment is an
    // executable, with a clean virus scan: both quarantined.
    let sales = example("04-sales-plus-address.eml")
        .replace("X-SES-Spam-Verdict: PASS", "X-SES-Spam-Verdict: FAIL");
    let cv =
        example("06-virus.eml").replace("X-SES-Virus-Verdict: FAIL", "X-SES-Virus-Verdict: PASS");
    std::fs::write(input.join("sales.eml"), sales).unwrap();
    std::fs::write(input.join("cv.eml"), cv).unwrap();
    let store = Store::under(&dir);
    let (state, outbox) = (&store.state, &store.outbox);
    let local = |cmd: &[&str]| store.mailroom(cmd);
    let run = local(&["run", "--format", "jsonl", input.to_str().unwrap()]);
    let rows = jsonl(&run);
    assert!(
        rows.iter().all(|r| r["verdict"] == "quarantine"),
        "{rows:#?}"
    );
    assert_eq!(outbox_files(outbox), 0);
    let id_of = |file: &str| {
        rows.iter()
            .find(|r| r["source"].as_str().unwrap().ends_with(file))
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (sales_id, cv_id) = (id_of("sales.eml"), id_of("cv.eml"));

    let out = local(&["quarantine", "release", &sales_id, "--by", "ops-ann"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("operator:ops-ann") && said.contains("forwarded to"),
        "{said}"
    );
    // The sales rule forwards to two people in one send; the rule says no auto-reply.
    assert_eq!(outbox_files(outbox), 1, "{said}");
    let again = local(&["quarantine", "release", &sales_id, "--by", "ops-ann"]);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("not in quarantine"));
    assert_eq!(outbox_files(outbox), 1, "a second release sends nothing");
    let show = mailroom(&[
        "show",
        &sales_id,
        "--state",
        state.to_str().unwrap(),
        "--format",
        "jsonl",
    ]);
    let view = &jsonl(&show)[0];
    let release = view["audit"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["event"] == "release" && r["stage"] == "route")
        .unwrap_or_else(|| panic!("no release in the audit: {view}"));
    assert!(
        release["decided_by"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b == "operator:ops-ann")
    );
    assert!(release["at"].as_u64().unwrap() > 0);

    let refused = local(&["quarantine", "release", &cv_id]);
    assert_eq!(refused.status.code(), Some(1));
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        why.contains("never released") && why.contains("BLOCKED_EXTENSION"),
        "{why}"
    );
    assert_eq!(outbox_files(outbox), 1);

    let deleted = local(&["quarantine", "delete", &cv_id, "--by", "ops-bo"]);
    assert!(
        deleted.status.success(),
        "{}",
        String::from_utf8_lossy(&deleted.stderr)
    );
    assert!(
        !state
            .join(format!("objects/quarantine/{cv_id}.eml"))
            .exists()
    );
    let list = mailroom(&[
        "quarantine",
        "list",
        "--state",
        state.to_str().unwrap(),
        "--format",
        "jsonl",
    ]);
    assert!(jsonl(&list).is_empty(), "both left the quarantine");
    let unknown = local(&["quarantine", "release", "no-such-id"]);
    assert_eq!(unknown.status.code(), Some(1));
}

#[test]
fn a_macro_document_is_released_only_with_force_macro_and_the_audit_names_it() {
    let dir = temp("force-macro");
    let input = dir.join("in");
    std::fs::create_dir_all(&input).unwrap();
    // A macro-enabled invoice to billing, whose mail is forwarded to finance.
    std::fs::copy(
        repo().join("tests/fixtures/aws/macro-invoice.eml"),
        input.join("invoice.eml"),
    )
    .unwrap();
    let store = Store::under(&dir);
    let local = |cmd: &[&str]| store.mailroom(cmd);
    let rows = jsonl(&local(&[
        "run",
        "--format",
        "jsonl",
        input.to_str().unwrap(),
    ]));
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["verdict"], "quarantine", "{rows:#?}");
    let id = rows[0]["id"].as_str().unwrap().to_string();

    let refused = local(&["quarantine", "release", &id, "--by", "ops-ann"]);
    assert_eq!(refused.status.code(), Some(1));
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        why.contains("MACRO_DOCUMENT") && why.contains("--force-macro"),
        "{why}"
    );
    assert_eq!(outbox_files(&store.outbox), 0, "nothing forwarded");

    let out = local(&[
        "quarantine",
        "release",
        &id,
        "--force-macro",
        "--by",
        "ops-ann",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("operator:ops-ann force-macro") && said.contains("finance@corp.example"),
        "{said}"
    );
    // The forward to finance, and billing's auto-reply.
    assert_eq!(outbox_files(&store.outbox), 2, "{said}");
    let view = &jsonl(&mailroom(&[
        "show",
        &id,
        "--state",
        store.state.to_str().unwrap(),
        "--format",
        "jsonl",
    ]))[0];
    let release = view["audit"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["event"] == "release" && r["stage"] == "route")
        .unwrap_or_else(|| panic!("no release in the audit: {view}"));
    let by: Vec<&str> = release["decided_by"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let at = by.iter().position(|b| *b == "operator:ops-ann").unwrap();
    assert_eq!(by.get(at + 1), Some(&"force-macro"), "{by:?}");
}

#[test]
fn allow_and_block_edit_the_config_and_keep_its_comments() {
    let dir = temp("senders");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("mailroom.toml");
    let original = std::fs::read_to_string(repo().join("examples/mailroom.toml")).unwrap();
    std::fs::write(&config, &original).unwrap();
    let edit =
        |verb: &str, sender: &str| mailroom(&[verb, sender, "--config", config.to_str().unwrap()]);

    let out = edit("allow", "Ann@Friend.Example");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = edit("block", "@partner.example");
    assert!(String::from_utf8_lossy(&out.stdout).contains("took it off the other list"));
    let edited = std::fs::read_to_string(&config).unwrap();
    assert!(
        edited.contains("allow_senders = [\"ann@friend.example\"]"),
        "{edited}"
    );
    assert!(
        edited.contains("\"@junk.example\", \"@partner.example\"]"),
        "{edited}"
    );
    // Every comment line of the example is still there, in order.
    let comments = |t: &str| {
        t.lines()
            .filter(|l| l.trim_start().starts_with('#'))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(comments(&edited), comments(&original));
    assert!(
        mailroom(&["check", config.to_str().unwrap()])
            .status
            .success()
    );

    let again = edit("block", "@partner.example");
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing changed"));
    let bad = edit("allow", "not an address");
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not an address"));
    let missing = mailroom(&["allow", "a@b.example"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("--config FILE"));
    // A file that does not validate is never written.
    std::fs::write(&config, "[filter]\nallow_senders = 3\n").unwrap();
    assert_eq!(edit("allow", "a@b.example").status.code(), Some(1));
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        "[filter]\nallow_senders = 3\n"
    );
}

#[test]
fn the_operator_commands_say_what_a_store_or_build_lacks() {
    let dir = temp("nostore");
    let out = mailroom(&["quarantine", "list", "--state", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no state store at"));
    let dlq = mailroom(&["dlq", "list"]);
    assert_eq!(dlq.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&dlq.stderr).contains("--stack NAME"));
}

/// The files below `dir` (but `queues/`) whose bytes hold `needle`, as `grep -r` finds them.
fn files_holding(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "queues") {
                    stack.push(path);
                }
            } else if std::fs::read(&path)
                .unwrap()
                .windows(needle.len())
                .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
            {
                out.push(path);
            }
        }
    }
    out
}

#[test]
fn an_erased_subject_is_gone_from_the_store_down_to_its_bytes() {
    let dir = temp("erase");
    let state = dir.join("state");
    let store = |cmd: &[&str]| {
        let mut args = cmd.to_vec();
        args.extend(["--state", state.to_str().unwrap()]);
        mailroom(&args)
    };
    let run = Store::under(&dir).mailroom(&["run", "examples/mail"]);
    assert!(run.status.success());
    // The billing customer: a forward, a stored copy, an auto-reply and its rate-limit slot.
    let subject = "ap@bigcustomer.example";
    assert!(!files_holding(&state, subject).is_empty());

    let export = dir.join("access.zip");
    let out = store(&[
        "export",
        "--subject",
        subject,
        "--out",
        export.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let zip = std::fs::read(&export).unwrap();
    assert!(zip.starts_with(b"PK"), "a zip file");
    assert!(String::from_utf8_lossy(&out.stdout).contains("with 1 messages"));

    let dry = store(&["erase", "--subject", subject, "--dry-run"]);
    assert!(dry.status.success());
    let said = String::from_utf8_lossy(&dry.stdout);
    assert!(
        said.contains("would erase") && said.contains("store/billing/"),
        "{said}"
    );
    assert!(
        !files_holding(&state, subject).is_empty(),
        "a dry run removes nothing"
    );

    let erased = store(&[
        "erase",
        "--subject",
        "AP@BigCustomer.example",
        "--by",
        "dpo",
        "--format",
        "jsonl",
    ]);
    assert!(
        erased.status.success(),
        "{}",
        String::from_utf8_lossy(&erased.stderr)
    );
    let report = &jsonl(&erased)[0];
    let record = &report["record"];
    assert_eq!(record["messages"], 1);
    assert_eq!(record["objects"], 1, "the stored copy");
    assert_eq!(record["slots"], 1, "the auto-reply's rate-limit slot");
    assert_eq!(record["by"], "dpo");
    let went = report["messages"][0]["went"].to_string();
    assert!(went.contains("forwarded to finance@corp.example"), "{went}");
    assert_eq!(
        files_holding(&state, subject),
        Vec::<PathBuf>::new(),
        "the address is in no byte of the state, its objects or the rewritten state.redb"
    );
    // The erasure record holds a hash, not the address; the rest of the store still works.
    let list = store(&["search", "--format", "jsonl"]);
    assert!(list.status.success());
    assert!(!String::from_utf8_lossy(&list.stdout).contains("bigcustomer"));
    assert!(jsonl(&list).len() > 5);
    let again = store(&["erase", "--subject", subject]);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to erase"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_digest_an_erasure_leaves_no_key_naming_the_address_and_takes_it_off_the_config() {
    use mailroom_core::ports::StateStore;
    use serde_json::json;
    use std::time::Duration;
    let dir = temp("erase-digest");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("mailroom.toml");
    std::fs::copy(repo().join("examples/mailroom.toml"), &config).unwrap();
    let on_store = Store::under(&dir).with_config(config.clone());
    let state = on_store.state.clone();
    let with = |cmd: &[&str]| {
        let out = on_store.mailroom(cmd);
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    with(&["run", "examples/mail"]);
    // The digest's recipient, who an operator also allowed as a sender.
    let subject = "billing@example.com";
    let digest = with(&["digest"]);
    assert!(
        String::from_utf8_lossy(&digest.stdout).contains("digest to billing@example.com"),
        "{}",
        String::from_utf8_lossy(&digest.stdout)
    );
    with(&["allow", "Billing@Example.com"]);
    // Keys as versions before the keyed hash wrote them: a digest's effect, a reply's slot.
    {
        let old = mailroom_core::embedded::disk::DiskState::open(&state).unwrap();
        let now = std::time::SystemTime::now();
        let effect = "respond/digest/billing@example.com";
        old.claim_effect("digest-20000", effect, "o", Duration::from_secs(60), now)
            .await
            .unwrap();
        old.complete_effect("digest-20000", effect, "outbox:old.eml")
            .await
            .unwrap();
        assert!(
            old.acquire_rate_limit(
                "reply#billing@example.com#billing",
                "m-old",
                now + Duration::from_secs(600),
                now
            )
            .await
            .unwrap()
        );
        old.flush().unwrap();
    }
    assert!(!files_holding(&state, subject).is_empty());

    // Without --from-config the config stays, and the report says where it names them.
    let erased = with(&[
        "erase",
        "--subject",
        "BILLING@example.com",
        "--format",
        "jsonl",
    ]);
    let report = &jsonl(&erased)[0];
    assert_eq!(report["sender_lists"], json!(["allow_senders"]), "{report}");
    assert_eq!(report["config"], Value::Null);
    assert!(report["record"]["records"].as_u64().unwrap() > 0);
    assert_eq!(
        files_holding(&state, subject),
        Vec::<PathBuf>::new(),
        "no key, record or free page of the state names the address, old keys included"
    );
    assert!(
        std::fs::read_to_string(&config)
            .unwrap()
            .contains("\"billing@example.com\"")
    );
    // The rest of the store works: a second digest of the period is not sent again for
    // the others.
    let again = String::from_utf8_lossy(&with(&["digest"]).stdout).into_owned();
    assert!(again.contains("already sent this period"), "{again}");
    assert!(!again.contains(subject), "{again}");

    let erased = with(&["erase", "--subject", subject, "--from-config"]);
    let said = String::from_utf8_lossy(&erased.stdout);
    assert!(
        said.contains("took billing@example.com off [filter] allow_senders of"),
        "{said}"
    );
    let edited = std::fs::read_to_string(&config).unwrap();
    let parsed = mailroom_core::Config::from_toml(&edited, "edited").unwrap();
    assert!(
        !parsed
            .filter
            .allow_senders
            .iter()
            .any(|s| s.eq_ignore_ascii_case(subject)),
        "{edited}"
    );
    // The example's comments name the address too: said, and left to the operator.
    assert!(
        edited.contains("# mailroom configuration"),
        "the file keeps its comments"
    );
    assert!(
        said.contains("still names billing@example.com elsewhere"),
        "{said}"
    );
    assert!(
        mailroom(&["check", config.to_str().unwrap()])
            .status
            .success()
    );
    // --from-config needs a file to edit.
    let no_file = mailroom(&[
        "erase",
        "--subject",
        subject,
        "--from-config",
        "--state",
        state.to_str().unwrap(),
    ]);
    assert_eq!(no_file.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&no_file.stderr).contains("pass --config FILE"));
}

#[test]
fn retention_removes_each_class_when_its_time_has_run_out() {
    let dir = temp("gc");
    let on_store = Store::under(&dir);
    let state = &on_store.state;
    let store = |cmd: &[&str]| on_store.mailroom(cmd);
    assert!(store(&["run", "examples/mail"]).status.success());
    let in_days = |d: u64| {
        humantime::format_rfc3339_seconds(
            std::time::SystemTime::now() + std::time::Duration::from_secs(d * 86_400),
        )
        .to_string()
    };
    let count = |sub: &str| {
        std::fs::read_dir(state.join("objects").join(sub))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    assert_eq!(count("quarantine"), 3);
    let nothing = store(&["gc"]);
    assert!(String::from_utf8_lossy(&nothing.stdout).contains("removed 0 quarantined"));

    // The example keeps quarantined copies 30 days, stored ones a year, records 400 days.
    let month = in_days(45);
    let dry = store(&["gc", "--as-of", &month, "--dry-run"]);
    assert!(
        String::from_utf8_lossy(&dry.stdout)
            .contains("would remove 3 quarantined copies, 0 stored")
    );
    assert_eq!(count("quarantine"), 3, "a dry run removes nothing");
    let out = store(&["gc", "--as-of", &month]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("removed 3 quarantined copies, 0 stored copies, the records of 0 messages")
    );
    assert_eq!(count("quarantine"), 0);
    let list = store(&["quarantine", "list", "--format", "jsonl"]);
    assert!(jsonl(&list).is_empty(), "off the quarantine list");
    let all = store(&["search", "--format", "jsonl"]);
    assert_eq!(jsonl(&all).len(), 14, "the records stay");

    let later = store(&["gc", "--as-of", &in_days(500)]);
    assert!(
        String::from_utf8_lossy(&later.stdout).contains("the records of 14 messages"),
        "{}",
        String::from_utf8_lossy(&later.stdout)
    );
    assert!(jsonl(&store(&["search", "--format", "jsonl"])).is_empty());
    assert_eq!(count("store/billing"), 0);

    // A config whose raw mail would not outlast a dead-letter queue is refused.
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[retention]\nraw = \"7d\"\n").unwrap();
    let check = mailroom(&["check", bad.to_str().unwrap()]);
    assert_eq!(check.status.code(), Some(1));
    let why = String::from_utf8_lossy(&check.stderr);
    assert!(
        why.contains(":2:") && why.contains("at least 21 days"),
        "{why}"
    );
    std::fs::write(&bad, "[retention]\naudit = \"25d\"\n").unwrap();
    let why =
        String::from_utf8_lossy(&mailroom(&["check", bad.to_str().unwrap()]).stderr).into_owned();
    assert!(
        why.contains("retention.audit must be at least retention.raw"),
        "{why}"
    );
}

#[test]
fn run_writes_its_figures_as_json() {
    let dir = temp("metrics");
    let file = dir.join("metrics.json");
    let mut args = RUN_EXAMPLES.to_vec();
    args.extend(["--metrics", file.to_str().unwrap()]);
    let out = Store::under(&dir).mailroom(&args);
    assert!(out.status.success());
    let rows = jsonl(&out);
    let m: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(m["messages"], rows.len());
    let count = |key: &str, value: &str| rows.iter().filter(|r| r[key] == value).count();
    for v in ["accept", "quarantine", "reject"] {
        assert_eq!(m["verdicts"][v], count("verdict", v), "{v}: {m}");
    }
    let sent = rows
        .iter()
        .filter(|r| r["auto_reply"]["status"] == "sent")
        .count();
    assert_eq!(m["replies"]["sent"], sent);
    assert!(m["actions"]["forward"].as_u64().unwrap() > 0);
    assert!(m["messages_per_second"].as_f64().unwrap() > 0.0);
}
