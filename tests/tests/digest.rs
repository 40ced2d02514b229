//! Quarantine digests on a stack: the digest function's mail and its once-a-period send,
//! and the links function's answers (function URL events as Lambda delivers them) to a
//! prefetch, a forged, an expired, a reused and a virus token, a flood from one address
//! and a key rotation; and to what an attacker tries: a link for a macro-enabled invoice, a
//! request without a token, a flood from one IPv6 /64, an expired link of an erased
//! message. Every call is checked against the two functions' roles.

use base64::Engine as _;
use mailroom_aws::digest::Function;
use mailroom_core::operate::digest::{LinkAction, LinkToken};
use mailroom_core::operate::subject_hash;
use mailroom_tests::aws::Stack;
use serde_json::{Value, json};

const LINKS: &str = "https://links.example/";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A function URL event as Lambda sends it (payload format 2.0); a POST's form body comes
/// base64-encoded.
fn url_event(
    method: &str,
    token: &str,
    ip: &str,
) -> aws_lambda_events::event::lambda_function_urls::LambdaFunctionUrlRequest {
    let post = method == "POST";
    let mut event = json!({
        "version": "2.0",
        "rawPath": "/",
        "rawQueryString": if post { String::new() } else { format!("t={token}") },
        "headers": { "host": "abc.lambda-url.us-east-1.on.aws" },
        "requestContext": {
            "accountId": "anonymous",
            "domainName": "abc.lambda-url.us-east-1.on.aws",
            "http": { "method": method, "path": "/", "protocol": "HTTP/1.1",
                      "sourceIp": ip, "userAgent": "test" },
            "requestId": "r1", "time": "01/Dec/2026:12:00:00 +0000", "timeEpoch": 0
        },
        "isBase64Encoded": post
    });
    if post {
        event["headers"]["content-type"] = "application/x-www-form-urlencoded".into();
        event["body"] = base64::engine::general_purpose::STANDARD
            .encode(format!("t={token}"))
            .into();
    } else {
        event["queryStringParameters"] = json!({ "t": token });
    }
    serde_json::from_value(event).expect("a function URL event")
}

/// A function URL GET of `path` with no token, as a browser asks for `/favicon.ico`.
fn bare_event(
    path: &str,
) -> aws_lambda_events::event::lambda_function_urls::LambdaFunctionUrlRequest {
    serde_json::from_value(json!({
        "version": "2.0",
        "rawPath": path,
        "rawQueryString": "",
        "headers": { "host": "abc.lambda-url.us-east-1.on.aws" },
        "requestContext": {
            "accountId": "anonymous",
            "domainName": "abc.lambda-url.us-east-1.on.aws",
            "http": { "method": "GET", "path": path, "protocol": "HTTP/1.1",
                      "sourceIp": "203.0.113.77", "userAgent": "browser" },
            "requestId": "r2", "time": "01/Dec/2026:12:00:00 +0000", "timeEpoch": 0
        },
        "isBase64Encoded": false
    }))
    .expect("a function URL event")
}

async fn secret(stack: &Stack) -> aws_sdk_secretsmanager::Client {
    aws_sdk_secretsmanager::Client::new(&stack.sdk_as("harness").await)
}

async fn current_key(stack: &Stack) -> Vec<u8> {
    secret(stack)
        .await
        .get_secret_value()
        .secret_id(&stack.link_key_arn)
        .send()
        .await
        .unwrap()
        .secret_string()
        .unwrap()
        .as_bytes()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_lists_the_quarantine_and_its_links_release_once() {
    let Some(stack) = Stack::create("digest").await else {
        return;
    };
    let spam = stack.put_mail("spam-fail.eml").await;
    let virus = stack.put_mail("virus.eml").await;
    let pipeline = stack.pipeline().await;
    stack.run_until_idle(&pipeline).await;
    let sent_before = stack.sent_mail().await.len();

    let (digest, digest_metrics) = stack.desk(Function::Digest, LINKS).await;
    let at = now();
    let sent = digest.send_digests(at).await.expect("the digest run");
    assert_eq!(sent.len(), 1, "{sent:?}");
    // The virus was rejected, not quarantined: only the spam is listed.
    assert_eq!(
        (sent[0].to.as_str(), sent[0].entries),
        ("sales@example.com", 1)
    );
    let again = digest.send_digests(at + 60).await.unwrap();
    assert!(
        again.iter().all(|d| d.before),
        "a retried run sends nothing: {again:?}"
    );
    let mails = stack.sent_mail().await;
    assert_eq!(mails.len(), sent_before + 1);
    let mail = mails.last().unwrap();
    assert_eq!(mail.destinations, ["sales@example.com"]);
    assert_eq!(
        mail.source, stack.from_address,
        "sent as the stack's identity"
    );
    let parsed = mail_parser::MessageParser::default()
        .parse(mail.raw.as_bytes())
        .unwrap();
    assert_eq!(
        parsed.header("Auto-Submitted").and_then(|h| h.as_text()),
        Some("auto-generated")
    );
    let text = parsed.body_text(0).unwrap().into_owned();
    assert!(text.contains("Claim your reward today") && text.contains("promo@prizes.example"));
    assert!(!text.contains("Updated price list"), "{text}");
    let links: Vec<&str> = text
        .split_whitespace()
        .filter(|w| w.starts_with(LINKS))
        .collect();
    assert_eq!(links.len(), 2, "release and always-allow: {text}");
    let token = |l: &str| l.split_once("?t=").unwrap().1.to_string();
    let (release, allow) = (token(links[0]), token(links[1]));

    let (desk, link_metrics) = stack.desk(Function::Links, LINKS).await;
    let ask = |method: &'static str, t: String, ip: &'static str| {
        let desk = &desk;
        async move { desk.answer(&url_event(method, &t, ip), now()).await }
    };
    let route_queue = stack.queue("route").url.clone();
    // What the route queue holds, left visible for the pipeline.
    let on_route_queue = || async {
        let got = stack.receive(&route_queue, 10, Some(0)).await;
        got.into_iter().map(|m| m.body).collect::<Vec<_>>()
    };
    let ip = "203.0.113.9";

    // A mail scanner's prefetch: a confirmation page, nothing on the route queue.
    let page = ask("GET", release.clone(), ip).await;
    assert_eq!(page.status_code, 200);
    let body = page.body.clone().unwrap();
    assert!(body.contains("Release this message?") && body.contains("method=\"post\""));
    assert!(
        page.headers["content-security-policy"]
            .to_str()
            .unwrap()
            .starts_with("default-src 'none'")
    );
    assert_eq!(page.headers["referrer-policy"], "no-referrer");
    assert!(on_route_queue().await.is_empty(), "a GET releases nothing");

    // Forged: the allow token's claims under the release token's signature.
    let forged = format!(
        "{}.{}",
        allow.split_once('.').unwrap().0,
        release.split_once('.').unwrap().1
    );
    assert_eq!(ask("POST", forged, ip).await.status_code, 403);
    let key = current_key(&stack).await;
    let mut claims = LinkToken::verify(&release, std::slice::from_ref(&key), 0).unwrap();
    claims.expires = at - 1;
    assert_eq!(ask("POST", claims.sign(&key), ip).await.status_code, 410);
    // Virus mail is never released, even with a token signed with the stack's own key.
    let held = LinkToken {
        id: virus.clone(),
        action: LinkAction::Release,
        recipient: "sales@example.com".into(),
        expires: at + 3600,
    };
    let page = ask("POST", held.sign(&key), ip).await;
    assert_eq!(page.status_code, 403);
    assert!(page.body.unwrap().contains("never released"));
    assert!(
        on_route_queue().await.is_empty(),
        "refused tokens release nothing"
    );

    // The confirmation's POST releases through the route queue, once.
    let page = ask("POST", release.clone(), ip).await;
    assert_eq!(page.status_code, 200, "{:?}", page.body);
    let queued = on_route_queue().await;
    assert_eq!(queued.len(), 1);
    let envelope: Value = serde_json::from_str(&queued[0]).unwrap();
    assert_eq!(envelope["id"], spam);
    assert_eq!(envelope["released_by"], "digest:sales@example.com");
    // The release is the recipient's "not spam", kept for the spam model's retrain with
    // the raw mail's key (not a copy of the mail).
    let correction: Value = serde_json::from_slice(
        &stack
            .s3
            .get_object()
            .bucket(&stack.bucket)
            .key(format!("feedback/{spam}.json"))
            .send()
            .await
            .expect("a correction for the released message")
            .body
            .collect()
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    assert_eq!(
        (
            &correction["label"],
            &correction["by"],
            &correction["via"],
            &correction["verdict"]
        ),
        (
            &Value::from("ham"),
            &Value::from("digest:sales@example.com"),
            &Value::from("release"),
            &Value::from("quarantine")
        ),
        "{correction}"
    );
    assert_eq!(
        correction["raw"]["key"],
        format!("raw/{spam}"),
        "{correction}"
    );
    assert_eq!(ask("POST", release.clone(), ip).await.status_code, 409);
    stack.run_until_idle(&pipeline).await;
    let to: Vec<Vec<String>> = stack.sent_mail().await[sent_before + 1..]
        .iter()
        .map(|m| m.destinations.clone())
        .collect();
    assert!(
        to.contains(&vec!["sales-team@corp.example".to_string()]),
        "{to:?}"
    );

    // After a rotation the links already sent still work; a link under a key the stack
    // never had does not.
    secret(&stack)
        .await
        .put_secret_value()
        .secret_id(&stack.link_key_arn)
        .secret_string("b".repeat(64))
        .send()
        .await
        .unwrap();
    assert_eq!(ask("GET", allow.clone(), ip).await.status_code, 200);
    claims.expires = at + 3600;
    assert_eq!(
        ask("GET", claims.sign(&[7u8; 32]), ip).await.status_code,
        403
    );

    // One source address gets link_requests_per_hour (30) requests an hour; others go on.
    let mut refused = None;
    for i in 0..31 {
        if ask("GET", allow.clone(), ip).await.status_code == 429 {
            refused = Some(i);
            break;
        }
    }
    assert!(
        refused.is_some_and(|i| i >= 20),
        "the flood is refused after the hour's share, not before: {refused:?}"
    );
    assert_eq!(
        ask("GET", allow.clone(), "198.51.100.4").await.status_code,
        200
    );

    let keys: Vec<String> = stack.items(&spam).await.into_keys().collect();
    for outcome in ["viewed", "expired", "release", "reused"] {
        assert!(
            keys.iter()
                .any(|k| k.starts_with(&format!("audit#route#link-{outcome}-"))),
            "link-{outcome} is audited: {keys:?}"
        );
    }
    assert!(
        stack
            .items(&virus)
            .await
            .keys()
            .any(|k| k.starts_with("audit#route#link-refused-"))
    );
    // Their EMF lines: a digest sent, then found sent; each link request by outcome.
    let count = |lines: &mailroom_tests::aws::MetricLines, name: &str, dim: &str, value: &str| {
        lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|d| d[dim] == value && d[name] == 1.0)
            .count()
    };
    assert_eq!(count(&digest_metrics, "Digests", "Digest", "sent"), 1);
    assert_eq!(
        count(&digest_metrics, "Digests", "Digest", "sent-before"),
        1
    );
    for (outcome, n) in [
        ("release", 1),
        ("reused", 1),
        ("expired", 1),
        ("refused", 1),
    ] {
        assert_eq!(
            count(&link_metrics, "LinkRequests", "Outcome", outcome),
            n,
            "{outcome}"
        );
    }
    assert!(count(&link_metrics, "LinkRequests", "Outcome", "limited") >= 1);
    assert_eq!(count(&link_metrics, "LinkRequests", "Outcome", "forged"), 2);
    stack.assert_no_dead_letters().await;
    stack.assert_calls_allowed();
}

/// The two compiled binaries on the Runtime API: the digest function answers a scheduled
/// event by mailing the digest, and the links function answers a function URL POST by
/// releasing the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_digest_and_links_binaries_serve_their_events() {
    use mailroom_tests::aws::{Reported, RuntimeApi, binary_named};
    use std::time::Duration;
    let Some(stack) = Stack::create("digest-bin").await else {
        return;
    };
    let (Some(digest), Some(links)) = (
        binary_named("mailroom-digest"),
        binary_named("mailroom-links"),
    ) else {
        return;
    };
    let spam = stack.put_mail("spam-fail.eml").await;
    let invoice = stack.put_mail("macro-invoice.eml").await;
    let pipeline = stack.pipeline().await;
    stack.run_until_idle(&pipeline).await;

    let invoke = |binary: std::path::PathBuf, function: Function, event: Value| {
        let stack = &stack;
        async move {
            let arn = format!(
                "arn:aws:lambda:us-east-1:{}:function:{}-{}",
                stack.account,
                stack.name,
                function.name()
            );
            let api = RuntimeApi::start(&arn).await;
            api.push_event(&event);
            let mut process = stack.start_desk_function(function, LINKS, &binary, &api);
            let report = api.wait_report(&mut process, Duration::from_secs(60)).await;
            let output = process.stop().await;
            match report {
                Some(Reported::Response { body, .. }) => (
                    serde_json::from_str::<Value>(&body).expect("a JSON response"),
                    output,
                ),
                other => panic!("{}: {other:?}\n{output}", function.name()),
            }
        }
    };
    // An EventBridge scheduled event, as the template's Schedule sends it.
    let scheduled = json!({
        "version": "0", "id": "e1", "detail-type": "Scheduled Event", "source": "aws.events",
        "account": stack.account, "time": "2026-12-01T06:00:00Z", "region": "us-east-1",
        "resources": [format!("arn:aws:events:us-east-1:{}:rule/digest", stack.account)],
        "detail": {}
    });
    let (answer, output) = invoke(digest, Function::Digest, scheduled).await;
    let log = output.to_string();
    // The result and the log name the address by the start of its keyed hash only.
    let key =
        mailroom_core::ports::StateStore::subject_key(&mailroom_aws::dynamo::DynamoState::new(
            stack.dynamo.clone(),
            stack.table.clone(),
            Duration::from_secs(86_400),
        ))
        .await
        .unwrap();
    let short = mailroom_core::operate::short_subject(&key, "sales@example.com");
    let to: Vec<&str> = answer["digests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["to"].as_str())
        .collect();
    assert_eq!(to.len(), 2, "sales' and billing's: {answer}");
    assert!(to.contains(&short.as_str()), "{answer}");
    assert!(log.contains(&short), "{log}");
    assert!(!log.contains("sales@example.com"), "{log}");
    let mail = stack
        .sent_mail()
        .await
        .into_iter()
        .rfind(|m| m.destinations == ["sales@example.com"])
        .expect("the digest to sales");
    assert!(mail.raw.contains("X-Mailroom-Digest: 1"));
    let parsed = mail_parser::MessageParser::default()
        .parse(mail.raw.as_bytes())
        .unwrap();
    let text = parsed.body_text(0).unwrap().into_owned();
    let release = text
        .split_whitespace()
        .find(|w| w.starts_with(LINKS))
        .and_then(|l| l.split_once("?t="))
        .expect("a release link")
        .1
        .to_string();

    let event = serde_json::to_value(url_event("POST", &release, "203.0.113.5")).unwrap();
    let (answer, output) = invoke(links.clone(), Function::Links, event).await;
    let log = output.to_string();
    assert!(!log.contains("@example.com"), "{log}");
    assert_eq!(answer["statusCode"], 200, "{answer}");
    assert_eq!(answer["headers"]["referrer-policy"], "no-referrer");
    assert!(
        answer["body"].as_str().unwrap().contains("Released"),
        "{answer}"
    );
    let queued = stack.receive(&stack.queue("route").url, 10, Some(0)).await;
    assert_eq!(queued.len(), 1);
    assert!(queued[0].body.contains(&spam));

    // The macro-enabled invoice: refused by the binary too, even with the stack's key.
    let key = current_key(&stack).await;
    let held = LinkToken {
        id: invoice,
        action: LinkAction::Release,
        recipient: "billing@example.com".into(),
        expires: now() + 3600,
    }
    .sign(&key);
    let event = serde_json::to_value(url_event("POST", &held, "203.0.113.5")).unwrap();
    let (answer, _) = invoke(links.clone(), Function::Links, event).await;
    assert_eq!(answer["statusCode"], 403, "{answer}");
    // A browser's /favicon.ico: no DynamoDB call in that invocation.
    let table_calls = || {
        stack
            .calls_of("links")
            .iter()
            .filter(|c| c.service == "dynamodb")
            .count()
    };
    let before = table_calls();
    let event = serde_json::to_value(bare_event("/favicon.ico")).unwrap();
    let (answer, _) = invoke(links, Function::Links, event).await;
    assert_eq!(answer["statusCode"], 400, "{answer}");
    assert_eq!(
        table_calls(),
        before,
        "a request without a token costs no table call"
    );
    assert_eq!(
        stack
            .receive(&stack.queue("route").url, 10, Some(0))
            .await
            .len(),
        1,
        "nothing but the spam was released"
    );
    stack.assert_calls_allowed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_refuse_what_an_attacker_tries() {
    use mailroom_aws::erase::StackForget;
    use mailroom_aws::operator::{StackNames, connect};
    use mailroom_tests::aws::OPERATOR;
    let Some(stack) = Stack::create("digest-hostile").await else {
        return;
    };
    // A macro-enabled invoice to billing (whose mail is forwarded to the ledger), and
    // spam to sales: both quarantined.
    let invoice = stack.put_mail("macro-invoice.eml").await;
    let spam = stack.put_mail("spam-fail.eml").await;
    let pipeline = stack.pipeline().await;
    stack.run_until_idle(&pipeline).await;
    let sent_before = stack.sent_mail().await.len();

    // The digest lists the invoice without a link.
    let (digest, _) = stack.desk(Function::Digest, LINKS).await;
    let at = now();
    let sent = digest.send_digests(at).await.expect("the digest run");
    assert!(
        sent.iter()
            .any(|d| d.to == "billing@example.com" && d.entries == 1),
        "{sent:?}"
    );
    let mails = stack.sent_mail().await;
    let to_billing = mails
        .iter()
        .find(|m| m.destinations == ["billing@example.com"])
        .expect("billing's digest");
    let parsed = mail_parser::MessageParser::default()
        .parse(to_billing.raw.as_bytes())
        .unwrap();
    let text = parsed.body_text(0).unwrap().into_owned();
    assert!(
        text.contains("Held for MACRO_DOCUMENT") && !text.contains(LINKS),
        "{text}"
    );

    let (desk, metrics) = stack.desk(Function::Links, LINKS).await;
    let ask = |event| {
        let desk = &desk;
        async move { desk.answer(&event, now()).await }
    };
    let key = current_key(&stack).await;
    let route_queue = stack.queue("route").url.clone();

    // A link for the invoice, signed with the stack's own key, releases nothing.
    let link = |id: &str, recipient: &str, expires: u64| {
        LinkToken {
            id: id.to_string(),
            action: LinkAction::Release,
            recipient: recipient.into(),
            expires,
        }
        .sign(&key)
    };
    let for_invoice = link(&invoice, "billing@example.com", at + 3600);
    for method in ["GET", "POST"] {
        let page = ask(url_event(method, &for_invoice, "203.0.113.9")).await;
        assert_eq!(page.status_code, 403, "{method}: {:?}", page.body);
        assert!(page.body.unwrap().contains("MACRO_DOCUMENT"));
    }
    assert!(stack.receive(&route_queue, 10, Some(0)).await.is_empty());
    assert!(
        !stack
            .objects("feedback/")
            .await
            .iter()
            .any(|k| k.contains(&invoice)),
        "a refused link is no correction"
    );

    // A browser's /favicon.ico: answered without a DynamoDB (or Secrets Manager) call.
    let before = stack.calls_of("links").len();
    for path in ["/favicon.ico", "/"] {
        let page = ask(bare_event(path)).await;
        assert_eq!(page.status_code, 400, "{path}");
    }
    let calls = stack.calls_of("links");
    let made: Vec<String> = calls[before..]
        .iter()
        .map(|c| format!("{} {}", c.service, c.operation))
        .collect();
    assert!(made.is_empty(), "a request without a token called {made:?}");

    // One IPv6 /64 shares the hour's 30 requests, whatever its addresses.
    let forged = LinkToken {
        id: spam.clone(),
        action: LinkAction::Release,
        recipient: "sales@example.com".into(),
        expires: at + 3600,
    }
    .sign(&[7u8; 32]);
    for i in 0..30 {
        let ip = format!("2001:db8:44:5:{i:x}::9");
        let page = ask(url_event("GET", &forged, &ip)).await;
        assert_eq!(page.status_code, 403, "request {i}");
    }
    let page = ask(url_event("GET", &forged, "2001:db8:44:5:dead:beef::1")).await;
    assert_eq!(page.status_code, 429, "the /64's 31st request");
    let page = ask(url_event("GET", &forged, "2001:db8:44:6::1")).await;
    assert_eq!(page.status_code, 403, "the next /64 has its own");

    // An expired link of a kept message: audited, the recipient named by hash only.
    let page = ask(url_event(
        "POST",
        &link(&invoice, "billing@example.com", at - 1),
        "203.0.113.9",
    ))
    .await;
    assert_eq!(page.status_code, 410);
    let items = stack.items(&invoice).await;
    let (_, expired) = items
        .iter()
        .find(|(k, _)| k.starts_with("audit#route#link-expired-"))
        .expect("the expired link is audited");
    let text = format!("{expired:?}");
    let names = StackNames::of_stack(&stack.name, &stack.account);
    let sdk = stack.sdk_as(OPERATOR).await;
    let forget = StackForget::on(&sdk, &names);
    let hash = subject_hash(
        &mailroom_core::ports::StateStore::subject_key(&forget.state)
            .await
            .unwrap(),
        "billing@example.com",
    );
    assert!(
        !text.contains("billing@example.com")
            && !text.contains("203.0.113.9")
            && text.contains(&hash),
        "{text}"
    );

    // The spam's sender is erased; an expired (or a valid) link of it writes nothing, and
    // a second erasure finds nothing to erase.
    let op = connect(&sdk, &names, None).await.unwrap();
    let erased = op
        .erase(&forget, "promo@prizes.example", "dpo", false, now())
        .await
        .unwrap();
    assert_eq!(erased.messages.len(), 1, "{erased:?}");
    assert!(stack.items(&spam).await.is_empty());
    for expires in [at - 1, at + 3600] {
        let page = ask(url_event(
            "POST",
            &link(&spam, "sales@example.com", expires),
            "198.51.100.7",
        ))
        .await;
        assert_eq!(page.status_code, 404, "{:?}", page.body);
    }
    assert!(
        stack.items(&spam).await.is_empty(),
        "no record of the erased message: {:?}",
        stack.items(&spam).await.keys().collect::<Vec<_>>()
    );
    let again = op
        .erase(&forget, "promo@prizes.example", "dpo", false, now())
        .await
        .unwrap();
    assert!(again.messages.is_empty(), "{again:?}");
    assert_eq!(
        stack.sent_mail().await.len(),
        sent_before + sent.len(),
        "nothing but the digests was sent"
    );
    let malformed = metrics
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|d| d["Outcome"] == "malformed" && d["LinkRequests"] == 1.0)
        .count();
    assert_eq!(malformed, 2);
    stack.assert_calls_allowed();
}

/// The partition's items of the state table.
async fn partition(
    stack: &Stack,
    pk: &str,
) -> Vec<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
    stack
        .dynamo
        .query()
        .table_name(&stack.table)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(
            ":pk",
            aws_sdk_dynamodb::types::AttributeValue::S(pk.to_string()),
        )
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default()
}

/// The config object's ETag and version: what an edit of it would change.
async fn config_version(stack: &Stack) -> (Option<String>, Option<String>, usize) {
    let key = &mailroom_tests::aws::resources().bucket.config_key;
    let head = stack
        .s3
        .head_object()
        .bucket(&stack.bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    let versions = stack
        .s3
        .list_object_versions()
        .bucket(&stack.bucket)
        .prefix(key)
        .send()
        .await
        .unwrap()
        .versions()
        .iter()
        .filter(|v| v.key() == Some(key.as_str()))
        .count();
    (
        head.e_tag().map(str::to_string),
        head.version_id().map(str::to_string),
        versions,
    )
}

/// "Always allow" from sales@'s digest: an entry in the state table for sales@ only, the
/// config object untouched; the sender's next spam to sales@ is allow-listed, to support@
/// (or to sales@ and support@) it is held; an erasure of the sender takes the entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_allow_allows_the_sender_for_that_recipient_only() {
    use mailroom_core::model::Stage;
    use mailroom_tests::aws::{OPERATOR, fixture, ses_message_id};
    let Some(stack) = Stack::create("allow-one").await else {
        return;
    };
    const SENDER: &str = "promo@prizes.example";
    let spam = stack.put_mail("spam-fail.eml").await;
    let pipeline = stack.pipeline().await;
    stack.run_until_idle(&pipeline).await;
    let config_before = config_version(&stack).await;

    let (digest, _) = stack.desk(Function::Digest, LINKS).await;
    digest.send_digests(now()).await.expect("the digest run");
    let mail = stack.sent_mail().await.pop().expect("the digest");
    let parsed = mail_parser::MessageParser::default()
        .parse(mail.raw.as_bytes())
        .unwrap();
    let text = parsed.body_text(0).unwrap().into_owned();
    assert!(
        text.contains("always allow this sender's mail to you"),
        "{text}"
    );
    let allow = text
        .split_whitespace()
        .filter(|w| w.starts_with(LINKS))
        .nth(1)
        .and_then(|l| l.split_once("?t="))
        .expect("the always-allow link")
        .1
        .to_string();
    let (desk, metrics) = stack.desk(Function::Links, LINKS).await;
    let ip = "203.0.113.20";
    let page = desk.answer(&url_event("GET", &allow, ip), now()).await;
    let body = page.body.unwrap();
    assert!(
        body.contains("for sales@example.com only") && body.contains("filtered as before"),
        "{body}"
    );
    let page = desk.answer(&url_event("POST", &allow, ip), now()).await;
    assert_eq!(page.status_code, 200, "{:?}", page.body);
    assert!(
        page.body.unwrap().contains(&format!(
            "Mail from {SENDER} to sales@example.com is no longer held for spam, for sales@example.com only"
        ))
    );
    stack.run_until_idle(&pipeline).await;

    // The entry is the recipient's, in the table; the config object is as it was.
    assert_eq!(
        config_version(&stack).await,
        config_before,
        "the config is not written"
    );
    let entry = partition(&stack, "allow#sales@example.com").await;
    assert_eq!(entry.len(), 1, "{entry:?}");
    assert_eq!(entry[0]["sk"].as_s().unwrap(), SENDER);
    assert_eq!(entry[0]["via"].as_s().unwrap(), &spam);
    assert_eq!(
        partition(&stack, &format!("allowed#{SENDER}")).await.len(),
        1
    );
    let audit = stack.items(&spam).await;
    let (_, record) = audit
        .iter()
        .find(|(k, _)| k.starts_with("audit#route#link-allow-"))
        .expect("the allow is audited");
    let reasons = format!("{:?}", record["reasons"]);
    assert!(
        reasons.contains(&format!("allowed {SENDER} for sales@example.com only")),
        "{reasons}"
    );

    // The sender's next spam: to sales@ allow-listed, to support@ or to both held.
    let again = |to: &str| {
        String::from_utf8(fixture("spam-fail.eml"))
            .unwrap()
            .replacen("To: sales@example.com", &format!("To: {to}"), 1)
            .into_bytes()
    };
    let to_sales = stack
        .put_raw(&ses_message_id(), again("sales@example.com"))
        .await;
    let to_support = stack
        .put_raw(&ses_message_id(), again("support@example.com"))
        .await;
    let to_both = stack
        .receive_mail(
            &ses_message_id(),
            again("sales@example.com"),
            Some(vec![
                "sales@example.com".to_string(),
                "support@example.com".to_string(),
            ]),
        )
        .await;
    stack.run_until_idle(&pipeline).await;
    assert_eq!(
        stack
            .audit_decision(&to_sales, Stage::Filter)
            .await
            .as_deref(),
        Some("accept")
    );
    assert!(
        stack
            .audit_list(&to_sales, Stage::Filter, "reasons")
            .await
            .iter()
            .any(|r| r.starts_with("ALLOWED_BY_RECIPIENT")),
    );
    for (id, what) in [
        (&to_support, "another recipient"),
        (&to_both, "two recipients"),
    ] {
        assert_eq!(
            stack.audit_decision(id, Stage::Filter).await.as_deref(),
            Some("quarantine"),
            "{what}"
        );
    }
    // The filter read allow# items only, one BatchGetItem per message it would hold.
    let lookups: Vec<Vec<String>> = stack
        .calls_of("filter")
        .into_iter()
        .filter(|c| c.operation == "BatchGetItem")
        .flat_map(|c| c.needs)
        .map(|n| {
            n.sets
                .get("dynamodb:LeadingKeys")
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(
        lookups.len(),
        4,
        "the first spam, and the three after: {lookups:?}"
    );
    assert!(
        lookups
            .iter()
            .all(|keys| !keys.is_empty() && keys.iter().all(|k| k.starts_with("allow#"))),
        "{lookups:?}"
    );
    let count = metrics
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|d| d["Outcome"] == "allow" && d["LinkRequests"] == 1.0)
        .count();
    assert_eq!(count, 1);

    // An erasure of the sender takes the entry, and its report counts it.
    let names = mailroom_aws::operator::StackNames::of_stack(&stack.name, &stack.account);
    let sdk = stack.sdk_as(OPERATOR).await;
    let op = mailroom_aws::operator::connect(&sdk, &names, None)
        .await
        .unwrap();
    let forget = mailroom_aws::erase::StackForget::on(&sdk, &names);
    let erasure = op
        .erase(&forget, SENDER, "dpo", false, now())
        .await
        .unwrap();
    assert_eq!(erasure.record.unwrap().allowed, 1);
    assert!(
        partition(&stack, "allow#sales@example.com")
            .await
            .is_empty()
    );
    assert!(
        partition(&stack, &format!("allowed#{SENDER}"))
            .await
            .is_empty()
    );
    stack.assert_no_dead_letters().await;
    stack.assert_calls_allowed();
}
