//! The operator functions on a deployed stack, with the operator's own credentials (checked
//! against the template's OperatorPolicy): list, show, release through the route queue,
//! delete, and the dead-letter queues' list and redrive, faults included.

use mailroom_aws::dlq::Dlqs;
use mailroom_aws::operator::{StackNames, connect};
use mailroom_core::model::Stage;
use mailroom_core::operate::{Operator, Query};
use mailroom_core::pipeline::release::{Handled, Releaser};
use mailroom_tests::aws::{OPERATOR, Stack};
use mailroom_tests::proxy::Fault;

async fn operator(stack: &Stack) -> Operator {
    let names = StackNames::of_stack(&stack.name, &stack.account);
    assert_eq!(names.bucket, stack.bucket, "the template's naming");
    assert_eq!(names.table, stack.table);
    connect(&stack.sdk_as(OPERATOR).await, &names, None)
        .await
        .expect("the operator connects with the stack's own config")
}

async fn quarantined(op: &Operator) -> Vec<String> {
    let page = op
        .list(&Query {
            quarantined_only: true,
            ..Query::default()
        })
        .await
        .expect("the quarantine");
    page.rows.into_iter().map(|r| r.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_shows_releases_and_deletes_on_a_stack() {
    let Some(stack) = Stack::create("operator").await else {
        return;
    };
    let released = stack.put_mail("spam-fail.eml").await;
    let deleted = stack
        .put_raw(
            &mailroom_tests::aws::ses_message_id(),
            String::from_utf8(mailroom_tests::aws::fixture("spam-fail.eml"))
                .unwrap()
                .replace("reward-77", "reward-78")
                .into_bytes(),
        )
        .await;
    let pipeline = stack.pipeline().await;
    stack.run_until_idle(&pipeline).await;
    let op = operator(&stack).await;
    let mut listed = quarantined(&op).await;
    listed.sort();
    let mut want = vec![released.clone(), deleted.clone()];
    want.sort();
    assert_eq!(listed, want);

    let view = op.show(&released).await.expect("show");
    assert_eq!(view.summary.subject, "Claim your reward today");
    assert!(view.text.contains("reward"), "{}", view.text);
    assert!(
        view.headers
            .iter()
            .any(|(n, v)| n == "From" && v.contains("promo@prizes.example"))
    );
    assert_eq!(
        view.audit.iter().map(|r| r.stage).collect::<Vec<_>>(),
        Stage::ALL
    );

    // A release goes through the route queue: the functions forward it and reply, once.
    let handled = op
        .release(&released, &Releaser::operator("ops-ann"))
        .await
        .expect("release");
    assert!(matches!(handled, Handled::Queued), "{handled:?}");
    stack.run_until_idle(&pipeline).await;
    let mut to: Vec<Vec<String>> = stack
        .sent_mail()
        .await
        .into_iter()
        .map(|m| m.destinations)
        .collect();
    to.sort();
    assert_eq!(to, [["promo@prizes.example"], ["sales-team@corp.example"]]);
    let audit = op.show(&released).await.unwrap().audit;
    let release = audit
        .iter()
        .find(|r| r.stage == Stage::Route && r.event.as_deref() == Some("release"))
        .unwrap_or_else(|| panic!("no release in {audit:#?}"));
    assert!(
        release.decided_by.contains(&"operator:ops-ann".to_string()),
        "{release:?}"
    );
    assert_eq!(quarantined(&op).await, std::slice::from_ref(&deleted));
    assert!(matches!(
        op.release(&released, &Releaser::operator("ops-ann"))
            .await
            .unwrap(),
        Handled::NotInQuarantine
    ));
    stack.run_until_idle(&pipeline).await;
    assert_eq!(
        stack.sent_mail().await.len(),
        2,
        "a second release sends nothing"
    );

    let handled = op.delete(&deleted, "ops-bo").await.expect("delete");
    assert!(matches!(handled, Handled::Done(_)));
    assert!(
        !stack
            .objects("quarantine/")
            .await
            .contains(&format!("quarantine/{deleted}.eml"))
    );
    assert!(quarantined(&op).await.is_empty());
    assert!(op.show("no-such-id").await.is_err());
    stack.assert_no_dead_letters().await;
    stack.assert_calls_allowed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_with_their_reason_and_redriven_without_loss() {
    let Some(stack) = Stack::create("dlq").await else {
        return;
    };
    // SES is unavailable for every attempt: the forward is retried until the envelope
    // lies in the route DLQ.
    let outage = stack.arm("route", "SendEmail", 0, 10_000, Fault::Unavailable);
    let id = stack.put_mail("sales.eml").await;
    let pipeline = stack.pipeline().await;
    stack.run_until_idle(&pipeline).await;
    assert!(stack.disarm(outage) >= 3);
    assert!(stack.sent_mail().await.is_empty());

    let names = StackNames::of_stack(&stack.name, &stack.account);
    let dlqs = Dlqs {
        client: aws_sdk_sqs::Client::new(&stack.sdk_as(OPERATOR).await),
        names: &names,
    };
    let op = operator(&stack).await;
    let audit = op.engine().ports().audit.clone();
    let entries = dlqs
        .list(Stage::Route, audit.as_ref())
        .await
        .expect("dlq list");
    assert_eq!(entries.len(), 1, "{entries:?}");
    let entry = &entries[0];
    assert_eq!(entry.id.as_deref(), Some(id.as_str()));
    let reason = entry.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("forward") && reason.contains("503"),
        "the last attempt's reason: {reason:?}"
    );
    assert!(entry.receive_count >= 3, "{entry:?}");
    // Listing leaves the message where it was.
    assert_eq!(
        dlqs.list(Stage::Route, audit.as_ref()).await.unwrap().len(),
        1
    );
    assert!(
        dlqs.list(Stage::Filter, audit.as_ref())
            .await
            .unwrap()
            .is_empty()
    );

    // The send to the source queue fails, through the SDK's retries: the message stays in
    // the DLQ.
    let rule = stack.arm(OPERATOR, "SendMessage", 0, 10, Fault::Internal);
    let report = dlqs
        .redrive(Stage::Route, Some(std::slice::from_ref(&id)))
        .await
        .unwrap();
    assert!(stack.disarm(rule) >= 1);
    assert!(
        report.moved.is_empty() && report.failed.len() == 1,
        "{report:?}"
    );
    assert_eq!(
        dlqs.list(Stage::Route, audit.as_ref()).await.unwrap().len(),
        1,
        "nothing lost"
    );

    // SES is back; the whole DLQ goes back, and the forward goes out once.
    let report = dlqs.redrive(Stage::Route, None).await.expect("redrive");
    eprintln!("redrive of the whole DLQ: {report:?}");
    assert!(
        report.move_task.is_some() || report.moved == [entry.sqs_id.clone()],
        "{report:?}"
    );
    stack.run_until_idle(&pipeline).await;
    assert!(
        dlqs.list(Stage::Route, audit.as_ref())
            .await
            .unwrap()
            .is_empty()
    );
    let forwards = stack
        .sent_mail()
        .await
        .into_iter()
        .filter(|m| m.destinations == ["sales-team@corp.example"])
        .count();
    assert_eq!(forwards, 1, "the forward goes out once");
    stack.assert_no_dead_letters().await;
    stack.assert_calls_allowed();
}

/// `mailroom` as the operator runs it against the stack: the operator's credentials and
/// nothing else from this machine's environment.
fn operator_command(stack: &Stack, binary: &std::path::Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(binary);
    cmd.env_clear()
        .env("AWS_ENDPOINT_URL", &stack.endpoint)
        .env("AWS_ACCESS_KEY_ID", stack.principal(OPERATOR))
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", mailroom_tests::aws::REGION)
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    cmd
}

/// `target/<profile>/mailroom`, built with the `aws` feature (the README's test command
/// builds it so); `None` (skip) without it unless the emulator is required.
fn mailroom_binary() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().expect("the test executable");
    let path = exe.parent()?.parent()?.join("mailroom");
    let usable = path.is_file()
        && !String::from_utf8_lossy(
            &std::process::Command::new(&path)
                .args(["dlq", "list", "--stack", "x", "--queue", "nope"])
                .output()
                .ok()?
                .stderr,
        )
        .contains("without AWS support");
    if usable {
        return Some(path);
    }
    assert!(
        !mailroom_tests::aws::emulator_required(),
        "{} is missing or lacks AWS support: cargo build -p mailroom-cli --features aws",
        path.display()
    );
    mailroom_core::skip::skipped(&format!("{} lacks AWS support", path.display()));
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mailroom_command_works_on_a_stack_by_its_name() {
    let Some(stack) = Stack::create("cli-stack").await else {
        return;
    };
    let Some(binary) = mailroom_binary() else {
        return;
    };
    let spam = stack.put_mail("spam-fail.eml").await;
    let pipeline = stack.pipeline().await;
    stack.run_until_idle(&pipeline).await;
    let run = |args: &[&str]| {
        let out = operator_command(&stack, &binary)
            .args(args)
            .args(["--stack", &stack.name])
            .output()
            .expect("mailroom runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&["quarantine", "list", "--format", "jsonl"]);
    assert_eq!(code, Some(0), "{err}");
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "{out}");
    assert_eq!(rows[0]["id"], spam.as_str());
    let (code, out, err) = run(&["show", &spam, "--format", "jsonl"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("Claim your reward today"), "{out}");
    let (code, out, err) = run(&["dlq", "list", "--format", "jsonl"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.trim().is_empty(), "every DLQ is empty: {out}");
    let (code, out, err) = run(&["quarantine", "release", &spam, "--by", "ops-cli"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("handed to the route stage"), "{out}");
    stack.run_until_idle(&pipeline).await;
    assert!(
        stack
            .sent_mail()
            .await
            .iter()
            .any(|m| m.destinations == ["sales-team@corp.example"])
    );
    let (code, _, err) = run(&["show", "no-such-id"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no message \"no-such-id\""), "{err}");

    // Without a local config, allow edits the stack's own, which the functions then load.
    let before = String::from_utf8(stack.get_object("config/mailroom.toml").await).unwrap();
    let (code, out, err) = run(&["allow", "@Friend.example"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("added @friend.example to [filter] allow_senders"),
        "{out}"
    );
    let after = String::from_utf8(stack.get_object("config/mailroom.toml").await).unwrap();
    assert!(after.contains("\"@friend.example\""), "{after}");
    let comments = |t: &str| {
        t.lines()
            .filter(|l| l.trim_start().starts_with('#'))
            .count()
    };
    assert_eq!(comments(&after), comments(&before), "comments kept");
    let (code, out, _) = run(&["allow", "@friend.example"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("nothing changed"), "{out}");
    let (code, _, err) = run(&["block", "not an address"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("is not an address"), "{err}");
    // The functions start with the edited config (a refusal would panic here).
    stack.pipeline().await;

    // Export, then erase, the sender's mail.
    let zip = std::env::temp_dir().join(format!("{}-export.zip", stack.name));
    let (code, out, err) = run(&[
        "export",
        "--subject",
        "promo@prizes.example",
        "--out",
        zip.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("with 1 messages"), "{out}");
    assert!(std::fs::metadata(&zip).unwrap().len() > 100);
    let _ = std::fs::remove_file(&zip);
    let (code, out, err) = run(&["erase", "--subject", "promo@prizes.example", "--dry-run"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(&format!("would erase {spam}")), "{out}");
    let (code, out, err) = run(&["erase", "--subject", "promo@prizes.example", "--by", "dpo"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("every version erased"), "{out}");
    assert!(stack.items(&spam).await.is_empty());
    stack.assert_calls_allowed();
}

/// A GET to the console with its cookie; the status line and the body.
fn console_get(port: u16, token: &str, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("the console listens");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: mailroom_console={token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.lines().next().unwrap_or("").to_string();
    (status, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_serves_a_stack_with_its_dead_letters() {
    use std::io::BufRead;
    let Some(stack) = Stack::create("console").await else {
        return;
    };
    let Some(binary) = mailroom_binary() else {
        return;
    };
    let spam = stack.put_mail("spam-fail.eml").await;
    let outage = stack.arm("route", "SendEmail", 0, 10_000, Fault::Unavailable);
    let stuck = stack.put_mail("sales.eml").await;
    let pipeline = stack.pipeline().await;
    stack.run_until_idle(&pipeline).await;
    stack.disarm(outage);

    let mut child = operator_command(&stack, &binary)
        .args(["console", "--port", "0", "--stack", &stack.name])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("mailroom console starts");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://127.0.0.1:"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_string();
    let (base, token) = url.split_once("/?token=").unwrap();
    let port: u16 = base.rsplit(':').next().unwrap().parse().unwrap();
    let pages = tokio::task::spawn_blocking({
        let token = token.to_string();
        let spam = spam.clone();
        move || {
            [
                "/".to_string(),
                "/quarantine".to_string(),
                format!("/message/{spam}"),
                "/dlq".to_string(),
            ]
            .map(|p| console_get(port, &token, &p))
        }
    })
    .await
    .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    for (status, _) in &pages {
        assert!(status.contains("200"), "{status}");
    }
    assert!(
        pages[1].1.contains("Claim your reward today"),
        "{}",
        pages[1].1
    );
    assert!(pages[2].1.contains("SES_SPAM_FAIL"), "{}", pages[2].1);
    let dlq = &pages[3].1;
    assert!(dlq.contains(&stuck) && dlq.contains("Redrive"), "{dlq}");
    stack.assert_calls_allowed();
}
