//! A loopback HTTP proxy between every SDK client of the tests (the harness's, the apps'
//! and the function binaries') and the emulator. It does two things moto does not:
//!
//! - **Records** every AWS call with who made it (the access key id, which the harness sets
//!   to `<stack>:<principal>`), and what IAM evaluates for it: the actions, the resource
//!   ARNs and the condition keys ([`Call::needs`]). [`crate::iam`] checks them against the
//!   template's policies.
//! - **Injects faults**, scripted per principal, operation and call number ([`FaultRule`]):
//!   500 and 503, each service's own throttling error, a connection reset before the
//!   request reaches the emulator, a lost response (the request takes effect, the client
//!   sees the connection close), and a delay.
//!
//! It runs on a runtime of its own, once per test process, so that it outlives each test's
//! runtime.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;

/// The account moto answers for.
pub const ACCOUNT: &str = "123456789012";

/// A fault the proxy answers a call with instead of (or after) the emulator's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// HTTP 500 with the service's internal-error shape.
    Internal,
    /// HTTP 503 with the service's unavailable shape.
    Unavailable,
    /// The service's own throttling error (S3 `SlowDown`, DynamoDB
    /// `ProvisionedThroughputExceededException`, SQS `RequestThrottled`, SES
    /// `TooManyRequestsException`).
    Throttle,
    /// The connection closes before the request reaches the emulator.
    Reset,
    /// The request reaches the emulator and takes effect; the connection closes before the
    /// client sees the answer.
    LostResponse,
    /// The call is held this long, then forwarded.
    Delay(Duration),
    /// The call never completes and never reaches the emulator (the caller is killed or
    /// times out while it waits).
    Hang,
}

impl Fault {
    /// The classes of the fault matrix.
    pub const MATRIX: [Fault; 5] = [
        Fault::Internal,
        Fault::Unavailable,
        Fault::Throttle,
        Fault::Reset,
        Fault::LostResponse,
    ];

    pub fn label(self) -> String {
        match self {
            Fault::Internal => "500".into(),
            Fault::Unavailable => "503".into(),
            Fault::Throttle => "throttle".into(),
            Fault::Reset => "reset".into(),
            Fault::LostResponse => "lost-response".into(),
            Fault::Delay(d) => format!("delay-{}ms", d.as_millis()),
            Fault::Hang => "hang".into(),
        }
    }
}

/// What IAM evaluates for one call: an action on a resource, with condition keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    pub action: String,
    pub resource: String,
    pub context: BTreeMap<String, String>,
    /// Multivalued condition keys (`dynamodb:LeadingKeys`), for `ForAllValues:` and
    /// `ForAnyValue:` conditions.
    pub sets: BTreeMap<String, Vec<String>>,
}

impl Need {
    fn new(action: &str, resource: impl Into<String>) -> Need {
        Need {
            action: action.into(),
            resource: resource.into(),
            context: BTreeMap::new(),
            sets: BTreeMap::new(),
        }
    }

    fn with(mut self, key: &str, value: impl Into<String>) -> Need {
        self.context.insert(key.into(), value.into());
        self
    }

    fn with_set(mut self, key: &str, values: Vec<String>) -> Need {
        self.sets.insert(key.into(), values);
        self
    }
}

/// The partition keys (`pk`, the table's hash key) a DynamoDB request names: IAM's
/// `dynamodb:LeadingKeys`. A `Query` on the table names the value its key condition
/// gives `pk`; on an index, none (IAM's key is the table's partition key).
fn leading_keys(target: &str, body: &Value) -> Vec<String> {
    let pk = |v: &Value| v["pk"]["S"].as_str().map(str::to_string);
    match target {
        "GetItem" | "DeleteItem" | "UpdateItem" => pk(&body["Key"]).into_iter().collect(),
        "PutItem" => pk(&body["Item"]).into_iter().collect(),
        "BatchGetItem" => body["RequestItems"]
            .as_object()
            .into_iter()
            .flat_map(|tables| tables.values())
            .flat_map(|t| t["Keys"].as_array().cloned().unwrap_or_default())
            .filter_map(|k| pk(&k))
            .collect(),
        "Query" if body["IndexName"].is_null() => {
            let expr = body["KeyConditionExpression"].as_str().unwrap_or("");
            let first = expr.split(" AND ").next().unwrap_or("");
            let Some((name, value)) = first.split_once('=') else {
                return Vec::new();
            };
            let name = name.trim();
            let name = body["ExpressionAttributeNames"][name]
                .as_str()
                .unwrap_or(name);
            if name != "pk" {
                return Vec::new();
            }
            body["ExpressionAttributeValues"][value.trim()]["S"]
                .as_str()
                .map(str::to_string)
                .into_iter()
                .collect()
        }
        _ => Vec::new(),
    }
}

/// One call through the proxy.
#[derive(Debug, Clone)]
pub struct Call {
    /// The access key id: `<stack>:<principal>` for the tests' clients.
    pub principal: String,
    /// The service, as signed (`s3`, `sqs`, `dynamodb`, `ses`, `sns`, `monitoring`).
    pub service: String,
    /// The API operation (`GetObject`, `PutItem`, `SendEmail`, ...), `?` when not known.
    pub operation: String,
    pub needs: Vec<Need>,
    /// The status the client saw; 0 when the connection closed instead.
    pub status: u16,
    pub fault: Option<Fault>,
}

/// Answers the `skip + 1`th to the `skip + times`th call of `operation` by `principal`
/// (counted from when the rule is armed) with `fault`.
#[derive(Debug, Clone)]
pub struct FaultRule {
    pub principal: String,
    pub operation: String,
    pub skip: usize,
    pub times: usize,
    pub fault: Fault,
}

/// A send SES (the emulator) accepted: its answer was 200, whether or not the client saw it.
#[derive(Debug, Clone)]
pub struct Sent {
    pub principal: String,
    pub from: String,
    pub to: Vec<String>,
    /// The raw message, decoded from the request.
    pub raw: Vec<u8>,
}

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    sent: Vec<Sent>,
    rules: Vec<(u64, FaultRule, usize)>,
    next_rule: u64,
    /// Bedrock Converse answers by principal, in turn (moto has no Bedrock runtime).
    converse: BTreeMap<String, std::collections::VecDeque<String>>,
}

/// The process-wide proxy.
pub struct Proxy {
    pub endpoint: String,
    state: Arc<Mutex<State>>,
}

/// The proxy in front of `upstream` (the emulator), started on first use.
pub fn proxy(upstream: &str) -> &'static Proxy {
    static PROXY: OnceLock<Proxy> = OnceLock::new();
    PROXY.get_or_init(|| start(upstream.to_string()))
}

fn start(upstream: String) -> Proxy {
    let state = Arc::new(Mutex::new(State::default()));
    let (tx, rx) = std::sync::mpsc::channel();
    let shared = state.clone();
    std::thread::Builder::new()
        .name("aws-proxy".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("the proxy's runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("binding the proxy");
                let addr = listener.local_addr().expect("local address");
                tx.send(format!("http://{addr}"))
                    .expect("the harness waits");
                let client: Client<HttpConnector, Full<Bytes>> =
                    Client::builder(TokioExecutor::new()).build_http();
                loop {
                    let Ok((sock, _)) = listener.accept().await else {
                        continue;
                    };
                    let (state, client, upstream) =
                        (shared.clone(), client.clone(), upstream.clone());
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            handle(req, state.clone(), client.clone(), upstream.clone())
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .keep_alive(true)
                            .serve_connection(TokioIo::new(sock), service)
                            .await;
                    });
                }
            });
        })
        .expect("starting the proxy thread");
    let endpoint = rx.recv().expect("the proxy's address");
    Proxy { endpoint, state }
}

impl Proxy {
    /// Arms a fault rule; returns its id.
    pub fn arm(&self, rule: FaultRule) -> u64 {
        let mut s = self.state.lock().unwrap();
        s.next_rule += 1;
        let id = s.next_rule;
        s.rules.push((id, rule, 0));
        id
    }

    /// Disarms a rule; returns how many calls it faulted.
    pub fn disarm(&self, id: u64) -> usize {
        let mut s = self.state.lock().unwrap();
        let Some(pos) = s.rules.iter().position(|(i, _, _)| *i == id) else {
            return 0;
        };
        let (_, rule, seen) = s.rules.remove(pos);
        seen.saturating_sub(rule.skip).min(rule.times)
    }

    /// Scripts the text of the next Bedrock Converse answers to `principal`, in turn. A
    /// Converse call with none left is refused (400 ValidationException); fault rules
    /// apply to Converse as to any call.
    pub fn script_converse(&self, principal: &str, answers: Vec<String>) {
        self.state
            .lock()
            .unwrap()
            .converse
            .entry(principal.to_string())
            .or_default()
            .extend(answers);
    }

    /// Every send the emulator accepted from principals starting with `prefix`, oldest first.
    pub fn sent(&self, prefix: &str) -> Vec<Sent> {
        self.state
            .lock()
            .unwrap()
            .sent
            .iter()
            .filter(|m| m.principal.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// Every call recorded so far by principals starting with `prefix`.
    pub fn calls(&self, prefix: &str) -> Vec<Call> {
        self.state
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|c| c.principal.starts_with(prefix))
            .cloned()
            .collect()
    }
}

/// Decides whether this call is faulted, counting it against every matching rule.
fn fault_for(state: &Mutex<State>, principal: &str, operation: &str) -> Option<Fault> {
    let mut s = state.lock().unwrap();
    let mut fault = None;
    for (_, rule, seen) in s.rules.iter_mut() {
        if rule.principal == principal && rule.operation == operation {
            *seen += 1;
            if *seen > rule.skip && *seen <= rule.skip + rule.times && fault.is_none() {
                fault = Some(rule.fault);
            }
        }
    }
    fault
}

/// The proxy's answer: a response, or `Err` to close the connection without one.
type Answer = Result<Response<Full<Bytes>>, std::io::Error>;

async fn handle(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
    client: Client<HttpConnector, Full<Bytes>>,
    upstream: String,
) -> Answer {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    // The emulator's own API (sent mail, the model dump) passes straight through.
    let scope = credential_scope(&parts.headers);
    let Some((principal, region, service)) = scope else {
        return forward(&client, &upstream, &parts, &path_and_query, body).await;
    };
    let (operation, needs) = describe(&service, &region, &parts, &path_and_query, &body);
    let fault = fault_for(&state, &principal, &operation);
    let record = |status: u16, needs: Vec<Need>| {
        state.lock().unwrap().calls.push(Call {
            principal: principal.clone(),
            service: service.clone(),
            operation: operation.clone(),
            needs,
            status,
            fault,
        });
    };
    match fault {
        Some(Fault::Reset) => {
            record(0, Vec::new());
            return Err(closed());
        }
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        Some(Fault::Hang) => {
            record(0, Vec::new());
            std::future::pending::<()>().await;
        }
        Some(f @ (Fault::Internal | Fault::Unavailable | Fault::Throttle)) => {
            let response = fault_response(&service, f);
            record(response.status().as_u16(), Vec::new());
            return Ok(response);
        }
        _ => {}
    }
    if service == "bedrock" {
        let answer = state
            .lock()
            .unwrap()
            .converse
            .get_mut(&principal)
            .and_then(|q| q.pop_front());
        let response = converse_answer(answer);
        record(response.status().as_u16(), needs);
        return Ok(response);
    }
    let request = (service == "ses" && operation == "SendEmail").then(|| body.clone());
    let response = forward(&client, &upstream, &parts, &path_and_query, body).await?;
    let status = response.status().as_u16();
    if let Some(request) = request
        && status == 200
        && let Some(sent) = accepted_send(&principal, &request)
    {
        state.lock().unwrap().sent.push(sent);
    }
    let mut needs = needs;
    // Without s3:ListBucket, S3 answers a missing key with 403 instead of 404: a 404 the
    // caller relies on needs it, for the key as prefix.
    if service == "s3"
        && status == 404
        && matches!(operation.as_str(), "GetObject" | "HeadObject")
        && let Some(bucket_need) = needs.first().cloned()
    {
        let (bucket, key) = split_object_arn(&bucket_need.resource);
        needs.push(
            Need::new("s3:ListBucket", format!("arn:aws:s3:::{bucket}")).with("s3:prefix", key),
        );
    }
    if fault == Some(Fault::LostResponse) {
        record(0, needs);
        return Err(closed());
    }
    record(status, needs);
    Ok(response)
}

/// The send in an SESv2 `SendEmail` request with raw content.
fn accepted_send(principal: &str, body: &[u8]) -> Option<Sent> {
    use base64::Engine as _;
    let v: Value = serde_json::from_slice(body).ok()?;
    let data = v["Content"]["Raw"]["Data"].as_str()?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(data)
        .ok()?;
    Some(Sent {
        principal: principal.to_string(),
        from: v["FromEmailAddress"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        to: v["Destination"]["ToAddresses"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        raw,
    })
}

fn closed() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionReset, "fault injected")
}

async fn forward(
    client: &Client<HttpConnector, Full<Bytes>>,
    upstream: &str,
    parts: &hyper::http::request::Parts,
    path_and_query: &str,
    body: Bytes,
) -> Answer {
    let mut builder = Request::builder()
        .method(parts.method.clone())
        .uri(format!("{upstream}{path_and_query}"));
    for (k, v) in &parts.headers {
        builder = builder.header(k, v);
    }
    let req = builder
        .body(Full::new(body))
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let resp = client
        .request(req)
        .await
        .map_err(|e| std::io::Error::other(format!("upstream: {e}")))?;
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| std::io::Error::other(format!("upstream body: {e}")))?
        .to_bytes();
    Ok(Response::from_parts(parts, Full::new(body)))
}

/// `(access key id, region, service)` from a SigV4 `Authorization` header.
fn credential_scope(headers: &hyper::HeaderMap) -> Option<(String, String, String)> {
    let auth = headers.get("authorization")?.to_str().ok()?;
    let cred = auth.split("Credential=").nth(1)?.split([',', ' ']).next()?;
    let mut parts = cred.split('/');
    let key = parts.next()?.to_string();
    let _date = parts.next()?;
    let region = parts.next()?.to_string();
    let service = parts.next()?.to_string();
    Some((key, region, service))
}

fn split_object_arn(arn: &str) -> (String, String) {
    let rest = arn.strip_prefix("arn:aws:s3:::").unwrap_or(arn);
    match rest.split_once('/') {
        Some((b, k)) => (b.to_string(), k.to_string()),
        None => (rest.to_string(), String::new()),
    }
}

/// `%XX` escapes decoded; `+` is a space in query and form values, itself in paths.
fn percent_decode(s: &str) -> String {
    decode(s, true)
}

fn decode_path(s: &str) -> String {
    decode(s, false)
}

fn decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(if plus_is_space && bytes[i] == b'+' {
            b' '
        } else {
            bytes[i]
        });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_params(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

/// The operation and what IAM evaluates for it.
fn describe(
    service: &str,
    region: &str,
    parts: &hyper::http::request::Parts,
    path_and_query: &str,
    body: &[u8],
) -> (String, Vec<Need>) {
    let json = || serde_json::from_slice::<Value>(body).unwrap_or(Value::Null);
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.rsplit('.').next())
        .unwrap_or("?")
        .to_string();
    match service {
        "s3" => describe_s3(parts, path_and_query),
        "bedrock" => {
            // Converse: POST /model/{modelId}/converse, the id percent-encoded.
            let path = path_and_query.split('?').next().unwrap_or("");
            let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
            match segments.as_slice() {
                ["model", id, "converse"] => {
                    let id = decode_path(id);
                    (
                        "Converse".into(),
                        vec![Need::new(
                            "bedrock:InvokeModel",
                            format!("arn:aws:bedrock:{region}::foundation-model/{id}"),
                        )],
                    )
                }
                _ => ("?".into(), Vec::new()),
            }
        }
        "dynamodb" => {
            let body = json();
            let table = body["TableName"].as_str().unwrap_or("?");
            let mut arn = format!("arn:aws:dynamodb:{region}:{ACCOUNT}:table/{table}");
            if let Some(index) = body["IndexName"].as_str() {
                arn.push_str(&format!("/index/{index}"));
            }
            let table_arn =
                |table: &str| format!("arn:aws:dynamodb:{region}:{ACCOUNT}:table/{table}");
            let needs = if target == "TransactWriteItems" {
                // Authorised item by item, each as its own action on its own table.
                body["TransactItems"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|item| item.as_object().cloned().unwrap_or_default())
                    .map(|(kind, op)| {
                        let (action, key) = match kind.as_str() {
                            "Put" => ("PutItem", &op["Item"]),
                            "Update" => ("UpdateItem", &op["Key"]),
                            "Delete" => ("DeleteItem", &op["Key"]),
                            _ => ("ConditionCheckItem", &op["Key"]),
                        };
                        let table = op["TableName"].as_str().unwrap_or("?");
                        let keys = key["pk"]["S"]
                            .as_str()
                            .map(str::to_string)
                            .into_iter()
                            .collect();
                        Need::new(&format!("dynamodb:{action}"), table_arn(table))
                            .with_set("dynamodb:LeadingKeys", keys)
                    })
                    .collect()
            } else if target == "BatchGetItem" {
                // Authorised per table it names, with that table's keys.
                body["RequestItems"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(table, request)| {
                        let one = serde_json::json!({ "RequestItems": { table.clone(): request.clone() } });
                        Need::new("dynamodb:BatchGetItem", table_arn(table))
                            .with_set("dynamodb:LeadingKeys", leading_keys(&target, &one))
                    })
                    .collect()
            } else {
                vec![
                    Need::new(&format!("dynamodb:{target}"), arn)
                        .with_set("dynamodb:LeadingKeys", leading_keys(&target, &body)),
                ]
            };
            (target, needs)
        }
        "sqs" => {
            let body = json();
            let arn = match (body["QueueUrl"].as_str(), body["QueueName"].as_str()) {
                (Some(url), _) => {
                    let mut segs = url.trim_end_matches('/').rsplit('/');
                    let name = segs.next().unwrap_or("?");
                    let account = segs.next().unwrap_or(ACCOUNT);
                    format!("arn:aws:sqs:{region}:{account}:{name}")
                }
                (None, Some(name)) => format!("arn:aws:sqs:{region}:{ACCOUNT}:{name}"),
                _ => body["SourceArn"].as_str().unwrap_or("*").to_string(),
            };
            // A batch call is authorised as its single form (sqs:SendMessage for
            // SendMessageBatch); a move task also needs to read the source and send to
            // the destination.
            let action = target.strip_suffix("Batch").unwrap_or(&target);
            let mut needs = vec![Need::new(&format!("sqs:{action}"), arn.clone())];
            if target == "StartMessageMoveTask" {
                for a in [
                    "sqs:ReceiveMessage",
                    "sqs:DeleteMessage",
                    "sqs:GetQueueAttributes",
                ] {
                    needs.push(Need::new(a, arn.clone()));
                }
                if let Some(to) = body["DestinationArn"].as_str() {
                    needs.push(Need::new("sqs:SendMessage", to.to_string()));
                }
            }
            (target, needs)
        }
        "ses" => {
            let path = path_and_query.split('?').next().unwrap_or("");
            if parts.method == hyper::Method::POST && path == "/v2/email/outbound-emails" {
                let body = json();
                let from = body["FromEmailAddress"].as_str().unwrap_or("").to_string();
                let domain = from.rsplit('@').next().unwrap_or("").to_string();
                let identity = format!("arn:aws:ses:{region}:{ACCOUNT}:identity/{domain}");
                let needs = ["ses:SendEmail", "ses:SendRawEmail"]
                    .into_iter()
                    .map(|a| Need::new(a, identity.clone()).with("ses:FromAddress", from.clone()))
                    .collect();
                ("SendEmail".into(), needs)
            } else {
                let op = if path.starts_with("/v2/email/identities") {
                    "CreateEmailIdentity"
                } else {
                    "?"
                };
                (op.into(), vec![Need::new(&format!("ses:{op}"), "*")])
            }
        }
        "sns" => {
            let form = query_params(&String::from_utf8_lossy(body));
            let action = form.get("Action").cloned().unwrap_or_else(|| "?".into());
            let arn = form.get("TopicArn").cloned().unwrap_or_else(|| "*".into());
            let needs = vec![Need::new(&format!("sns:{action}"), arn)];
            (action, needs)
        }
        "monitoring" => {
            let op = path_and_query
                .rsplit('/')
                .next()
                .unwrap_or("?")
                .split('?')
                .next()
                .unwrap_or("?")
                .to_string();
            let namespace = ciborium::de::from_reader::<ciborium::Value, _>(body)
                .ok()
                .and_then(|v| {
                    v.as_map()?.iter().find_map(|(k, v)| {
                        (k.as_text()? == "Namespace").then(|| v.as_text().map(str::to_string))?
                    })
                })
                .unwrap_or_default();
            let needs = vec![
                Need::new(&format!("cloudwatch:{op}"), "*").with("cloudwatch:namespace", namespace),
            ];
            (op, needs)
        }
        "sts" => {
            let form = query_params(&String::from_utf8_lossy(body));
            let action = form.get("Action").cloned().unwrap_or_else(|| "?".into());
            // GetCallerIdentity needs no permission, and no policy can deny it.
            let needs = if action == "GetCallerIdentity" {
                Vec::new()
            } else {
                vec![Need::new(&format!("sts:{action}"), "*")]
            };
            (action, needs)
        }
        "secretsmanager" => {
            let id = json()["SecretId"].as_str().unwrap_or("?").to_string();
            let arn = if id.starts_with("arn:") {
                id
            } else {
                format!("arn:aws:secretsmanager:{region}:{ACCOUNT}:secret:{id}")
            };
            let needs = vec![Need::new(&format!("secretsmanager:{target}"), arn)];
            (target, needs)
        }
        other => (
            format!("{other}:?"),
            vec![Need::new(&format!("{other}:?"), "*")],
        ),
    }
}

fn describe_s3(parts: &hyper::http::request::Parts, path_and_query: &str) -> (String, Vec<Need>) {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let params = query_params(query);
    let path = decode_path(path.trim_start_matches('/'));
    let (bucket, key) = match path.split_once('/') {
        Some((b, k)) => (b.to_string(), k.to_string()),
        None => (path.clone(), String::new()),
    };
    let object = format!("arn:aws:s3:::{bucket}/{key}");
    let bucket_arn = format!("arn:aws:s3:::{bucket}");
    let method = parts.method.as_str();
    let copy_source = parts
        .headers
        .get("x-amz-copy-source")
        .and_then(|v| v.to_str().ok())
        .map(|v| decode_path(v.trim_start_matches('/')));
    if key.is_empty() {
        let op = match (method, params.contains_key("list-type")) {
            ("GET", true) => "ListObjectsV2",
            ("GET", false) if params.contains_key("versions") => "ListObjectVersions",
            ("GET", false) => "ListObjects",
            ("PUT", _) if params.is_empty() => "CreateBucket",
            ("PUT", _) => "PutBucketConfiguration",
            ("DELETE", _) => "DeleteBucket",
            _ => "?",
        };
        let action = match op {
            "ListObjectsV2" | "ListObjects" => "s3:ListBucket",
            "ListObjectVersions" => "s3:ListBucketVersions",
            "CreateBucket" => "s3:CreateBucket",
            _ => "s3:?",
        };
        let mut need = Need::new(action, bucket_arn);
        if let Some(prefix) = params.get("prefix") {
            need = need.with("s3:prefix", prefix.clone());
        }
        return (op.into(), vec![need]);
    }
    match (method, copy_source) {
        // A version by its id is another action to IAM.
        ("GET", _) if params.contains_key("versionId") => (
            "GetObject".into(),
            vec![Need::new("s3:GetObjectVersion", object)],
        ),
        ("GET", _) => ("GetObject".into(), vec![Need::new("s3:GetObject", object)]),
        ("HEAD", _) => ("HeadObject".into(), vec![Need::new("s3:GetObject", object)]),
        ("PUT", Some(source)) => (
            "CopyObject".into(),
            vec![
                Need::new("s3:PutObject", object),
                Need::new(
                    "s3:GetObject",
                    format!("arn:aws:s3:::{}", source.split('?').next().unwrap_or("")),
                ),
            ],
        ),
        ("PUT", None) => ("PutObject".into(), vec![Need::new("s3:PutObject", object)]),
        ("DELETE", _) => (
            "DeleteObject".into(),
            vec![Need::new(
                if params.contains_key("versionId") {
                    "s3:DeleteObjectVersion"
                } else {
                    "s3:DeleteObject"
                },
                object,
            )],
        ),
        _ => ("?".into(), vec![Need::new("s3:?", object)]),
    }
}

/// The error response of a fault, in the service's own wire format (what its SDK parser
/// reads the error code from).
/// A Bedrock Converse answer with `text`, or the refusal of a call nothing was scripted for.
fn converse_answer(text: Option<String>) -> Response<Full<Bytes>> {
    let (status, body) = match text {
        Some(text) => (
            200,
            serde_json::json!({
                "output": { "message": { "role": "assistant", "content": [{ "text": text }] } },
                "stopReason": "end_turn",
                "usage": { "inputTokens": 1, "outputTokens": 1, "totalTokens": 2 },
                "metrics": { "latencyMs": 1 },
            }),
        ),
        None => (
            400,
            serde_json::json!({ "message": "no Converse answer scripted by the test" }),
        ),
    };
    let mut builder = Response::builder()
        .status(StatusCode::from_u16(status).expect("a status"))
        .header("content-type", "application/json");
    if status != 200 {
        builder = builder.header("x-amzn-ErrorType", "ValidationException");
    }
    builder
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a response")
}

fn fault_response(service: &str, fault: Fault) -> Response<Full<Bytes>> {
    let (status, code) = match (service, fault) {
        ("bedrock", Fault::Throttle) => (429, "ThrottlingException"),
        ("s3", Fault::Throttle) => (503, "SlowDown"),
        ("dynamodb", Fault::Throttle) => (400, "ProvisionedThroughputExceededException"),
        ("sqs", Fault::Throttle) => (400, "RequestThrottled"),
        ("ses", Fault::Throttle) => (429, "TooManyRequestsException"),
        (_, Fault::Throttle) => (400, "Throttling"),
        ("s3", Fault::Internal) => (500, "InternalError"),
        (_, Fault::Internal) => (500, "InternalFailure"),
        (_, _) => (503, "ServiceUnavailable"),
    };
    let message = format!("injected by the test proxy: {}", fault.label());
    let builder = Response::builder().status(StatusCode::from_u16(status).expect("a status"));
    let (builder, body) = match service {
        "s3" => (
            builder.header("content-type", "application/xml"),
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>fault</RequestId></Error>"
            ),
        ),
        "dynamodb" => (
            builder.header("content-type", "application/x-amz-json-1.0"),
            serde_json::json!({
                "__type": format!("com.amazonaws.dynamodb.v20120810#{code}"),
                "message": message,
            })
            .to_string(),
        ),
        "sqs" => (
            builder
                .header("content-type", "application/x-amz-json-1.0")
                .header("x-amzn-query-error", format!("{code};Sender")),
            serde_json::json!({ "__type": format!("com.amazonaws.sqs#{code}"), "message": message })
                .to_string(),
        ),
        _ => (
            builder
                .header("content-type", "application/json")
                .header("x-amzn-ErrorType", code),
            serde_json::json!({ "message": message }).to_string(),
        ),
    };
    builder
        .body(Full::new(Bytes::from(body)))
        .expect("a fault response")
}
