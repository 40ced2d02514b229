//! Quarantine digests on a stack: the digest function's mail and its once-a-period send,
//! and the links function's answers (function URL events as Lambda delivers them) to a
//! prefetch, a forged, an expired, a reused and a virus token, a flood from one address
//! and a key rotation. Every call is checked against the two functions' roles.

use base64::Engine as _;
use mailroom_aws::digest::Function;
use mailroom_core::operate::digest::{LinkAction, LinkToken};
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
    assert_eq!(answer["digests"][0]["to"], short.as_str(), "{answer}");
    assert!(log.contains(&short), "{log}");
    assert!(!log.contains("sales@example.com"), "{log}");
    let mail = stack.sent_mail().await.pop().expect("the digest");
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
    let (answer, output) = invoke(links, Function::Links, event).await;
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
    stack.assert_calls_allowed();
}
