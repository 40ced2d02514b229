//! The console in a real browser: Debian's Chromium driven through chromedriver over
//! WebDriver. `infra/test.sh` installs both and sets `MAILROOM_REQUIRE_BROWSER=1`; without
//! them (and without that variable) the test says so and skips.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use super::{Store, mailroom, outbox_files, repo, temp};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Kills a child process when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, what: &str) {
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{what} did not listen on port {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A raw HTTP/1.1 request to the console; returns the status line and the body.
fn http(port: u16, request: &str) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut bytes = Vec::new();
    s.read_to_end(&mut bytes).unwrap();
    let out = String::from_utf8_lossy(&bytes).into_owned();
    let status = out.lines().next().unwrap_or("").to_string();
    (status, out)
}

struct Shots(PathBuf);

impl Shots {
    async fn take(&self, browser: &Client, name: &str) {
        let png = browser.screenshot().await.expect("a screenshot");
        std::fs::write(self.0.join(format!("{name}.png")), png).unwrap();
    }
}

/// Clicks what `locator` finds and waits until the page it leads to has loaded: the old
/// page is marked first, so that nothing is read from it by mistake.
async fn click(browser: &Client, locator: Locator<'_>) {
    browser
        .execute("window.mailroomOldPage = true;", vec![])
        .await
        .unwrap();
    browser
        .find(locator)
        .await
        .expect("the element to click")
        .click()
        .await
        .unwrap();
    let started = Instant::now();
    loop {
        let loaded = browser
            .execute(
                "return window.mailroomOldPage === undefined && document.readyState === 'complete';",
                vec![],
            )
            .await
            .unwrap_or(serde_json::Value::Bool(false));
        if loaded == serde_json::Value::Bool(true) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the click led to no new page"
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

async fn text(browser: &Client, css: &str) -> String {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .text()
        .await
        .unwrap()
}

/// What the hostile example's payloads would have set, had any run.
async fn pwned(browser: &Client) -> serde_json::Value {
    browser
        .execute(
            "return [typeof window.pwned, document.scripts.length, document.images.length];",
            vec![],
        )
        .await
        .unwrap()
}

fn browser_available() -> bool {
    let there = Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists();
    if !there && std::env::var("MAILROOM_REQUIRE_BROWSER").is_ok_and(|v| v == "1") {
        panic!("MAILROOM_REQUIRE_BROWSER=1 but {CHROMIUM} or {CHROMEDRIVER} is missing");
    }
    if !there {
        mailroom_core::skip::skipped(&format!(
            "the console's browser test needs {CHROMIUM} and {CHROMEDRIVER} \
             (apt-get install chromium chromium-driver; infra/test.sh does)"
        ));
    }
    there
}

/// Chromium under chromedriver, headless, with its profile in `dir`.
async fn chromium(dir: &Path) -> (Running, Client) {
    let driver_port = free_port();
    let driver = Running(
        Command::new(CHROMEDRIVER)
            .arg(format!("--port={driver_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts"),
    );
    wait_for_port(driver_port, "chromedriver");
    let profile = dir.join("chromium-profile");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1280,1000",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let browser = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{driver_port}"))
        .await
        .expect("a Chromium session");
    (driver, browser)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_browser_lists_shows_releases_and_escapes() {
    if !browser_available() {
        return;
    }
    let dir = temp("console");
    std::fs::create_dir_all(&dir).unwrap();
    let shots = Shots(Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots"));
    std::fs::create_dir_all(&shots.0).unwrap();
    // allow and block edit the config: a copy, not the example itself.
    let config = dir.join("mailroom.toml");
    std::fs::copy(repo().join("examples/mailroom.toml"), &config).unwrap();
    let on_store = Store::under(&dir).with_config(config.clone());
    let (state, outbox) = (&on_store.state, &on_store.outbox);
    let store = on_store.args();
    assert!(
        on_store
            .mailroom(&["run", "examples/mail"])
            .status
            .success()
    );
    let sent_by_run = outbox_files(outbox);

    let mut console = Command::new(env!("CARGO_BIN_EXE_mailroom"));
    console
        .args(["console", "--port", "0", "--by", "browser-test"])
        .args(store)
        .current_dir(repo())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut console = Running(console.spawn().expect("mailroom console starts"));
    let mut line = String::new();
    BufReader::new(console.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://127.0.0.1:"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_string();
    let (base, token) = url.split_once("/?token=").unwrap();
    let port: u16 = base.rsplit(':').next().unwrap().parse().unwrap();

    // Without the token, nothing; a POST without the CSRF token is refused even with it.
    let (status, body) = http(
        port,
        &format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"),
    );
    assert!(status.contains("403"), "{status}");
    assert!(body.contains("needs the URL with its token"));
    let (status, _) = http(
        port,
        &format!(
            "GET /?token={token} HTTP/1.1\r\nHost: evil.example:{port}\r\nConnection: close\r\n\r\n"
        ),
    );
    assert!(status.contains("403"), "another Host is refused: {status}");
    let form = "action=delete&id=x&csrf=wrong";
    let (status, _) = http(
        port,
        &format!(
            "POST /act HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: mailroom_console={token}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
            form.len()
        ),
    );
    assert!(
        status.contains("403"),
        "a POST without the CSRF token: {status}"
    );

    let (_driver, browser) = chromium(&dir).await;

    let result = async {
        browser.goto(base).await.unwrap();
        assert!(
            browser
                .source()
                .await
                .unwrap()
                .contains("needs the URL with its token")
        );
        browser.goto(&url).await.unwrap();
        assert_eq!(
            browser.current_url().await.unwrap().path(),
            "/",
            "the token leaves the URL"
        );
        assert_eq!(text(&browser, "h1").await, "The last 14 days");
        browser
            .find(Locator::Css("svg.chart rect.quarantine"))
            .await
            .expect("a chart with quarantined mail");
        shots.take(&browser, "overview").await;

        browser.goto(&format!("{base}/quarantine")).await.unwrap();
        let subjects: Vec<String> = {
            let mut out = Vec::new();
            for link in browser.find_all(Locator::Css("a.subject")).await.unwrap() {
                out.push(link.text().await.unwrap());
            }
            out
        };
        assert_eq!(subjects.len(), 3, "{subjects:?}");
        assert!(
            subjects
                .iter()
                .any(|s| s == "Rückfrage zur Rechnung 2026-207 – Überweisung"),
            "{subjects:?}"
        );
        assert!(
            subjects.iter().all(|s| !s.contains('\u{fffd}')),
            "{subjects:?}"
        );
        shots.take(&browser, "quarantine").await;

        // The hostile message: its markup shows as text, and none of it runs.
        click(&browser, Locator::XPath("//a[contains(., 'Your invoice')]")).await;
        let h1 = text(&browser, "h1").await;
        assert!(
            h1.contains("<script>window.pwned='subject'</script>") && h1.contains("onerror"),
            "{h1}"
        );
        assert!(
            text(&browser, "pre.body")
                .await
                .contains("<script>window.pwned='text'</script>")
        );
        assert!(
            text(&browser, "table.headers")
                .await
                .contains("window.pwned='header'")
        );
        assert_eq!(
            pwned(&browser).await,
            json!(["undefined", 0, 0]),
            "no payload ran or loaded"
        );
        shots.take(&browser, "hostile-message").await;

        // Release the Latin-1 question: its forward and reply go out, and the audit says who.
        browser
            .goto(&format!("{base}/quarantine?sender=rene%40kunde.example"))
            .await
            .unwrap();
        click(&browser, Locator::Css("a.subject")).await;
        assert_eq!(text(&browser, "dd.sender").await, "rene@kunde.example");
        click(&browser, Locator::Css("button.release")).await;
        assert_eq!(text(&browser, "h1").await, "Confirm: release");
        shots.take(&browser, "confirm-release").await;
        click(&browser, Locator::Id("confirm")).await;
        let done = text(&browser, "p.done").await;
        assert!(
            done.contains("released") && done.contains("operator:browser-test"),
            "{done}"
        );
        assert_eq!(
            outbox_files(outbox),
            sent_by_run + 2,
            "the forward to finance and the reply"
        );
        click(&browser, Locator::LinkText("Back to the message")).await;
        let audit = text(&browser, "table.audit").await;
        assert!(
            audit.contains("(release)") && audit.contains("operator:browser-test"),
            "{audit}"
        );
        assert!(
            browser.find(Locator::Css("button.release")).await.is_err(),
            "no longer in quarantine"
        );
        shots.take(&browser, "released").await;

        // Search by sender, through the form.
        browser.goto(&format!("{base}/search")).await.unwrap();
        browser
            .find(Locator::Css("input[name=sender]"))
            .await
            .unwrap()
            .send_keys("ap@bigcustomer.example")
            .await
            .unwrap();
        click(&browser, Locator::Css("form.filters button")).await;
        let rows = browser.find_all(Locator::Css("a.subject")).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            rows[0].text().await.unwrap(),
            "Invoice 2026-118 seems to be charged twice"
        );
        shots.take(&browser, "search").await;

        // Mark the accepted invoice as spam: recorded for `train --feedback` and audited.
        click(&browser, Locator::Css("a.subject")).await;
        click(&browser, Locator::Css("button.mark-spam")).await;
        assert_eq!(text(&browser, "h1").await, "Confirm: mark-spam");
        click(&browser, Locator::Id("confirm")).await;
        let done = text(&browser, "p.done").await;
        assert!(done.contains("as spam"), "{done}");
        click(&browser, Locator::LinkText("Back to the message")).await;
        let audit = text(&browser, "table.audit").await;
        assert!(
            audit.contains("(mark-spam)") && audit.contains("operator:browser-test"),
            "{audit}"
        );

        // Block the hostile sender from its page: the config gains it, comments intact.
        browser
            .goto(&format!("{base}/quarantine?sender=mallory%40evil.example"))
            .await
            .unwrap();
        click(&browser, Locator::Css("a.subject")).await;
        click(&browser, Locator::Css("button.block")).await;
        click(&browser, Locator::Id("confirm")).await;
        assert!(
            text(&browser, "p.done")
                .await
                .contains("added mallory@evil.example to [filter] block_senders")
        );
        let edited = std::fs::read_to_string(&config).unwrap();
        assert!(
            edited.contains("\"mallory@evil.example\"]")
                && edited.contains("# Senders whose mail is rejected.")
        );

        // A data subject: export their mail, then erase it while the console serves.
        let subject = "lucia@cliente.example";
        browser
            .goto(&format!("{base}/subject?address=lucia%40cliente.example"))
            .await
            .unwrap();
        assert_eq!(browser.find_all(Locator::Css("a.subject")).await.unwrap().len(), 1);
        shots.take(&browser, "data-subject").await;
        let (status, body) = http(
            port,
            &format!(
                "GET /subject/export?address=lucia%40cliente.example HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
                 Cookie: mailroom_console={token}\r\nConnection: close\r\n\r\n"
            ),
        );
        assert!(status.contains("200") && body.contains("application/zip"), "{status}");
        click(&browser, Locator::Css("button.erase")).await;
        click(&browser, Locator::Id("confirm")).await;
        let done = text(&browser, "p.done").await;
        assert!(done.contains("erased 1 messages"), "{done}");
        assert_eq!(
            super::files_holding(state, subject),
            Vec::<PathBuf>::new(),
            "no byte of the state names the erased address"
        );
        // The console goes on serving from the rewritten store.
        browser.goto(&format!("{base}/search")).await.unwrap();
        assert!(!browser.find_all(Locator::Css("a.subject")).await.unwrap().is_empty());
    }
    .await;
    browser.close().await.unwrap();
    drop(console);
    result
}

/// The forward and the reply of the released Latin-1 message, as sent.
#[test]
fn a_released_latin1_message_is_forwarded_under_its_real_name_and_answered() {
    let dir = temp("latin1");
    let store = Store::under(&dir);
    let (state, outbox) = (&store.state, &store.outbox);
    let args = |cmd: &[&str]| store.mailroom(cmd);
    assert!(
        args(&[
            "run",
            "--format",
            "jsonl",
            "examples/mail/14-latin1-spf-fail.eml"
        ])
        .status
        .success()
    );
    let list = mailroom(&[
        "quarantine",
        "list",
        "--state",
        state.to_str().unwrap(),
        "--format",
        "jsonl",
    ]);
    let row: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&list.stdout)
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let table = String::from_utf8_lossy(
        &mailroom(&["quarantine", "list", "--state", state.to_str().unwrap()]).stdout,
    )
    .into_owned();
    assert!(table.contains("Rückfrage zur Rechnung"), "{table}");
    let out = args(&["quarantine", "release", row["id"].as_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut forward = None;
    let mut reply = None;
    for e in std::fs::read_dir(outbox).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "eml") {
            let raw = std::fs::read(&path).unwrap();
            assert!(
                raw.split(|b| *b == b'\n')
                    .take_while(|l| l.len() > 1)
                    .all(|l| l.is_ascii()),
                "7-bit headers"
            );
            let parsed = mail_parser::MessageParser::default()
                .parse(&raw[..])
                .unwrap()
                .into_owned();
            if parsed
                .to()
                .and_then(|t| t.first())
                .and_then(|a| a.address())
                == Some("rene@kunde.example")
            {
                reply = Some(parsed);
            } else {
                forward = Some(parsed);
            }
        }
    }
    let (forward, reply) = (forward.expect("a forward"), reply.expect("a reply"));
    let from = forward.from().unwrap().first().unwrap();
    assert_eq!(from.name(), Some("René Müller via mailroom"));
    assert_eq!(
        forward.subject(),
        Some("Rückfrage zur Rechnung 2026-207 – Überweisung")
    );
    // DMARC passed for kunde.example, so the reply goes out; the example templates greet
    // no one by name (a display name is the sender's text).
    let body = reply.body_text(0).unwrap();
    assert!(
        body.starts_with("Hello,") && !body.contains("René"),
        "{body:?}"
    );
}

/// The links of the digest mailed to `to`, from the outbox: (release, allow) per message.
fn digest_links(outbox: &Path, to: &str) -> Vec<String> {
    let mut links = Vec::new();
    for entry in std::fs::read_dir(outbox).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let Some(mail) = mail_parser::MessageParser::default().parse(&bytes) else {
            continue;
        };
        let is_digest = mail.header("X-Mailroom-Digest").is_some();
        let to_them = mail.to().and_then(|a| a.first()).and_then(|a| a.address()) == Some(to);
        if !(is_digest && to_them) {
            continue;
        }
        assert_eq!(
            mail.header("Auto-Submitted").and_then(|h| h.as_text()),
            Some("auto-generated")
        );
        let text = mail.body_text(0).unwrap().into_owned();
        assert!(mail.body_html(0).is_some(), "a digest has an HTML part too");
        for word in text.split_whitespace() {
            if word.starts_with("http://") {
                links.push(word.to_string());
            }
        }
    }
    links
}

fn link_request(port: u16, method: &str, link: &str, token: &str) -> (String, String) {
    let path = &link[link.find("/link").unwrap()..];
    let form = format!("t={token}");
    let body = if method == "POST" { form.as_str() } else { "" };
    http(
        port,
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_links_confirm_before_they_release_and_work_once() {
    let dir = temp("digest");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("mailroom.toml");
    let example = std::fs::read_to_string(repo().join("examples/mailroom.toml")).unwrap();
    std::fs::write(
        &config,
        example.replace("link_requests_per_hour = 30", "link_requests_per_hour = 12"),
    )
    .unwrap();
    let on_store = Store::under(&dir).with_config(config.clone());
    let (state, outbox) = (&on_store.state, &on_store.outbox);
    let store = on_store.args();
    let with = |first: &[&str]| on_store.mailroom(first);
    assert!(with(&["run", "examples/mail"]).status.success());
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}/link");
    let out = with(&["digest", "--link-base", &base]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("digest to billing@example.com (1 message): sent"),
        "{said}"
    );
    assert!(
        said.contains("digest to info@example.com (2 messages): sent"),
        "{said}"
    );
    // A second run in the same period sends nothing again.
    let before = outbox_files(outbox);
    let again =
        String::from_utf8_lossy(&with(&["digest", "--link-base", &base]).stdout).into_owned();
    assert!(again.contains("already sent this period"), "{again}");
    assert_eq!(outbox_files(outbox), before);

    let links = digest_links(outbox, "billing@example.com");
    assert_eq!(
        links.len(),
        2,
        "release and always-allow for one message: {links:?}"
    );
    let (release, allow) = (&links[0], &links[1]);
    let token = |l: &str| l.split_once("?t=").unwrap().1.to_string();
    // A token for another action under this one's signature: forged.
    let forged = format!(
        "{}.{}",
        token(allow).split_once('.').unwrap().0,
        token(release).split_once('.').unwrap().1
    );
    // A token past its expiry, signed with the store's own key.
    let expired = {
        let key = mailroom_core::embedded::disk::DiskState::open(state)
            .unwrap()
            .link_key()
            .unwrap();
        let mut t = mailroom_core::operate::digest::LinkToken::verify(
            &token(release),
            std::slice::from_ref(&key),
            0,
        )
        .unwrap();
        t.expires = 1_000;
        t.sign(&key)
    };

    let config_before = std::fs::read(&config).unwrap();
    let mut console = Command::new(env!("CARGO_BIN_EXE_mailroom"));
    console
        .args(["console", "--port", &port.to_string()])
        .args(store)
        .current_dir(repo())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let console = Running(console.spawn().expect("mailroom console starts"));
    wait_for_port(port, "mailroom console");
    let ask = |method: &str, t: &str| link_request(port, method, release, t);

    // A scanner's prefetch: a confirmation page, and nothing released.
    let (status, page) = ask("GET", &token(release));
    assert!(status.contains("200"), "{status}");
    assert!(page.contains("Release this message?") && page.contains("id=\"confirm\""));
    assert!(
        page.contains("content-security-policy: default-src 'none'"),
        "{page}"
    );
    assert_eq!(outbox_files(outbox), before, "a GET releases nothing");
    // The always-allow link says whom it allows the sender for: the digest's recipient.
    let (status, page) = link_request(port, "GET", allow, &token(allow));
    assert!(
        status.contains("200")
            && page.contains("always allow its sender for you?")
            && page.contains("for billing@example.com only")
            && page.contains("filtered as before"),
        "{page}"
    );
    let (status, page) = ask("POST", &forged);
    assert!(
        status.contains("403") && page.contains("signature does not match"),
        "{status}"
    );
    let (status, page) = ask("POST", &expired);
    assert!(
        status.contains("410") && page.contains("expired"),
        "{status}"
    );
    assert_eq!(
        outbox_files(outbox),
        before,
        "refused tokens release nothing"
    );

    if browser_available() {
        let (_driver, browser) = chromium(&dir).await;
        let shots = Shots(Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots"));
        std::fs::create_dir_all(&shots.0).unwrap();
        let result = async {
            browser.goto(release).await.unwrap();
            shots.take(&browser, "digest-confirm").await;
            click(&browser, Locator::Id("confirm")).await;
            let done = text(&browser, "h1").await;
            assert_eq!(done, "Done");
            shots.take(&browser, "digest-released").await;
        }
        .await;
        browser.close().await.unwrap();
        result
    } else {
        let (status, page) = ask("POST", &token(release));
        assert!(
            status.contains("200") && page.contains("Released"),
            "{status}"
        );
    }
    assert!(
        outbox_files(outbox) > before,
        "the release sent the message's forward"
    );
    let released = outbox_files(outbox);
    let (status, page) = ask("POST", &token(release));
    assert!(
        status.contains("409") && page.contains("used already"),
        "{status}"
    );
    assert_eq!(outbox_files(outbox), released, "a reused link does nothing");
    // "Not spam, always allow" on the message released already: the sender is allowed for
    // billing@ only, in the state; the config (allow_senders) is not touched.
    let (status, page) = ask("POST", &token(allow));
    assert!(
        status.contains("200")
            && page.contains("released before")
            && page.contains("Mail from rene@kunde.example to billing@example.com is no longer held for spam, for billing@example.com only"),
        "{page}"
    );
    assert_eq!(
        std::fs::read(&config).unwrap(),
        config_before,
        "the config file is not edited"
    );
    assert_eq!(outbox_files(outbox), released, "nothing released twice");

    // One source gets link_requests_per_hour requests an hour.
    let limited = (0..12)
        .map(|_| ask("GET", &token(release)).0)
        .position(|s| s.contains("429"));
    // 8 requests came before these 12 (7 when the POST came without the browser's GET).
    assert!(
        limited.is_some_and(|i| i >= 4),
        "the 13th request of the hour is refused, not sooner: {limited:?}"
    );
    drop(console);

    let show =
        String::from_utf8_lossy(&with(&["show", "5aaa49a4f24f88e5be750178"]).stdout).into_owned();
    for event in [
        "link-viewed",
        "link-expired",
        "link-release",
        "link-reused",
        "link-allow",
    ] {
        assert!(show.contains(event), "{event} is audited:\n{show}");
    }
    assert!(
        show.contains("operator:digest:billing@example.com"),
        "{show}"
    );
    assert!(
        show.contains("allowed rene@kunde.example for billing@example.com only"),
        "{show}"
    );

    // The entry at work: spam from the sender (authenticated this time) to billing@ is
    // allow-listed; to another recipient, or to billing@ and another, it is held.
    let mail = dir.join("again");
    std::fs::create_dir_all(&mail).unwrap();
    let spam = |to: &str, n: u32| {
        format!(
            "X-SES-Spam-Verdict: FAIL\r\nX-SES-Virus-Verdict: PASS\r\n\
             Authentication-Results: amazonses.com; spf=pass smtp.mailfrom=rene@kunde.example; dkim=pass header.i=@kunde.example; dmarc=pass header.from=kunde.example\r\n\
             From: Rene <rene@kunde.example>\r\nTo: {to}\r\nSubject: Rechnung {n}\r\n\
             Message-ID: <again{n}@kunde.example>\r\n\r\nBitte pruefen.\r\n"
        )
    };
    for (n, to) in [
        (1, "billing@example.com"),
        (2, "sales@example.com"),
        (3, "billing@example.com, sales@example.com"),
    ] {
        std::fs::write(mail.join(format!("{n}.eml")), spam(to, n)).unwrap();
    }
    let verdicts = |out: &std::process::Output| -> Vec<(String, String, bool)> {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|row| {
                (
                    row["subject"].as_str().unwrap_or("").to_string(),
                    row["verdict"].as_str().unwrap_or("").to_string(),
                    row.to_string().contains("ALLOWED_BY_RECIPIENT"),
                )
            })
            .collect()
    };
    let run = with(&["run", "--format", "jsonl", mail.to_str().unwrap()]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let want = |v: &[(&str, &str, bool)]| -> Vec<(String, String, bool)> {
        v.iter()
            .map(|(s, v, a)| (s.to_string(), v.to_string(), *a))
            .collect()
    };
    assert_eq!(
        verdicts(&run),
        want(&[
            ("Rechnung 1", "accept", true),
            ("Rechnung 2", "quarantine", false),
            ("Rechnung 3", "quarantine", false),
        ])
    );

    // An erasure of the sender takes the entry too, and counts it.
    let erased = with(&[
        "erase",
        "--subject",
        "rene@kunde.example",
        "--format",
        "jsonl",
    ]);
    assert!(
        erased.status.success(),
        "{}",
        String::from_utf8_lossy(&erased.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&erased.stdout)
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(report["record"]["allowed"], 1, "{report}");
    std::fs::write(mail.join("1.eml"), spam("billing@example.com", 4)).unwrap();
    std::fs::remove_file(mail.join("2.eml")).unwrap();
    std::fs::remove_file(mail.join("3.eml")).unwrap();
    let run = with(&["run", "--format", "jsonl", mail.to_str().unwrap()]);
    assert_eq!(
        verdicts(&run),
        want(&[("Rechnung 4", "quarantine", false)]),
        "no entry left after the erasure"
    );
}

/// The console without a browser: mail held for a macro document offers only the separate
/// *Release anyway* action; the plain release is refused, the forced one audited as such.
#[test]
fn the_console_releases_a_macro_document_only_by_its_forced_action() {
    let dir = temp("console-macro");
    let input = dir.join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::copy(
        repo().join("tests/fixtures/aws/macro-invoice.eml"),
        input.join("invoice.eml"),
    )
    .unwrap();
    let store = Store::under(&dir);
    let out = store.mailroom(&["run", "--format", "jsonl", input.to_str().unwrap()]);
    let row: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(row["verdict"], "quarantine");
    let id = row["id"].as_str().unwrap().to_string();

    let (console, port, token) = console_on(&store, "ops-ann");
    let get = |path: &str| {
        http(
            port,
            &format!(
                "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: mailroom_console={token}\r\nConnection: close\r\n\r\n"
            ),
        )
    };
    let post = |form: &str| {
        http(
            port,
            &format!(
                "POST /act HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: mailroom_console={token}\r\n\
                 Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
                form.len()
            ),
        )
    };
    let (status, page) = get(&format!("/message/{id}"));
    assert!(status.contains("200"), "{status}");
    assert!(
        page.contains("value=\"release-macro\"") && !page.contains("value=\"release\""),
        "{page}"
    );
    let (_, confirm) = get(&format!("/confirm?action=release-macro&id={id}"));
    assert!(confirm.contains("MACRO_DOCUMENT"), "{confirm}");
    let csrf = confirm
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("the confirmation's CSRF token")
        .to_string();
    // The plain release, posted by hand: refused, naming the finding and the force.
    let (status, page) = post(&format!("action=release&id={id}&csrf={csrf}"));
    assert!(status.contains("409"), "{status}");
    assert!(
        page.contains("MACRO_DOCUMENT") && page.contains("--force-macro"),
        "{page}"
    );
    assert_eq!(outbox_files(&store.outbox), 0);
    let (status, page) = post(&format!("action=release-macro&id={id}&csrf={csrf}"));
    assert!(status.contains("200"), "{status}");
    assert!(page.contains("operator:ops-ann force-macro"), "{page}");
    assert!(outbox_files(&store.outbox) > 0, "forwarded");
    drop(console);
}

/// A follow-up and its conversation through `mailroom run`, `show`, `search` and the
/// console's message page, whose conversation table escapes the follow-up's hostile subject.
#[test]
fn a_follow_up_joins_its_conversation_in_show_search_and_the_console() {
    let dir = temp("conversation");
    let mail = dir.join("mail");
    std::fs::create_dir_all(&mail).unwrap();
    let first =
        std::fs::read_to_string(repo().join("examples/mail/01-support-request.eml")).unwrap();
    std::fs::write(mail.join("a.eml"), &first).unwrap();
    // Ann again, to billing@ and naming her first message: a support follow-up.
    let follow_up = first
        .replace("To: support@example.com", "To: billing@example.com")
        .replace(
            "Subject: Cannot log in to the dashboard",
            "Subject: Re: <script>alert(1)</script> invoice",
        )
        .replace(
            "Message-ID: <login-1@customer.example>",
            "Message-ID: <login-2@customer.example>\r\nIn-Reply-To: <login-1@customer.example>",
        );
    std::fs::write(mail.join("b.eml"), follow_up).unwrap();
    let store = Store::under(&dir);
    let run = store.mailroom(&[
        "run",
        "--format",
        "jsonl",
        "--jobs",
        "1",
        mail.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let rows = super::jsonl(&run);
    let (a, b) = (&rows[0], &rows[1]);
    let (a_id, b_id) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    assert_eq!(b["conversation"], a_id, "{b:#}");
    assert_eq!(
        b["category"], "support",
        "the conversation's category, not billing"
    );
    assert!(
        b["auto_reply"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("follows up conversation")),
        "{b:#}"
    );

    let show = store.mailroom(&["show", b_id]);
    let shown = String::from_utf8_lossy(&show.stdout).into_owned();
    assert!(
        shown.contains(&format!("conversation {a_id} (2 messages")),
        "{shown}"
    );
    let current = shown
        .lines()
        .find(|l| l.trim_start().starts_with('*'))
        .unwrap_or_else(|| panic!("the message itself is marked: {shown}"));
    assert!(current.contains(b_id), "{current}");
    let search = store.mailroom(&["search", "--conversation", a_id, "--format", "jsonl"]);
    let found = super::jsonl(&search);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["id"], b_id);
    assert_eq!(a["auto_reply"]["status"], "sent", "{a:#}");
    let reference = a["auto_reply"]["reference"].as_str().unwrap();
    let by_reference = super::jsonl(&store.mailroom(&[
        "search",
        "--reference",
        &reference.to_ascii_lowercase(),
        "--format",
        "jsonl",
    ]));
    assert_eq!(by_reference.len(), 1);
    assert_eq!(by_reference[0]["id"], a_id);

    let (console, port, token) = console_on(&store, "ops");
    let (status, page) = http(
        port,
        &format!(
            "GET /message/{a_id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
             Cookie: mailroom_console={token}\r\nConnection: close\r\n\r\n"
        ),
    );
    assert!(status.contains("200"), "{status}");
    let table = page
        .split_once("<table class=\"conversation\">")
        .unwrap_or_else(|| panic!("no conversation table: {page}"))
        .1;
    let table = table.split_once("</table>").unwrap().0;
    assert!(
        table.contains(&format!("href=\"/message/{b_id}\"")),
        "{table}"
    );
    assert!(table.contains("&lt;script&gt;"), "{table}");
    assert!(!table.contains("<script>"), "{table}");
    drop(console);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `mailroom console` on a store, as operator `by`: the running console, its port and the
/// token its first line prints.
fn console_on(store: &Store, by: &str) -> (Running, u16, String) {
    let port = free_port();
    let mut console = Command::new(env!("CARGO_BIN_EXE_mailroom"));
    console
        .args(["console", "--port", &port.to_string(), "--by", by])
        .args(store.args())
        .current_dir(repo())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut console = Running(console.spawn().expect("mailroom console starts"));
    let mut first = String::new();
    BufReader::new(console.0.stdout.as_mut().unwrap())
        .read_line(&mut first)
        .unwrap();
    let token = first
        .trim()
        .split_once("?token=")
        .unwrap_or_else(|| panic!("no token in {first:?}"))
        .1
        .to_string();
    wait_for_port(port, "mailroom console");
    (console, port, token)
}
