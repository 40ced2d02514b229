//! The two functions behind quarantine digests: the digest function, run on an EventBridge
//! schedule, mails each recipient the period's quarantined mail with signed links; the
//! links function, behind a Lambda function URL, answers those links (a confirmation page
//! on GET, the release on its POST). Both read the link key from Secrets Manager, where the
//! stack generates it; after a rotation (`put-secret-value`) links signed with the previous
//! key keep working until they expire.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_lambda_events::event::lambda_function_urls::{
    LambdaFunctionUrlRequest, LambdaFunctionUrlResponse,
};
use aws_lambda_events::http::{HeaderMap, HeaderValue};
use base64::Engine as _;
use mailroom_core::model::Stage;
use mailroom_core::operate::digest::{self, DigestSent, LinkToken, TokenError};
use mailroom_core::operate::links::{LinkDesk, LinkMethod, PAGE_HEADERS, refuse_malformed};
use mailroom_core::operate::{Operator, ReleaseVia};

use crate::app::s3_client;
use crate::config_source::{ConfigLocation, ConfigSource};
use crate::metrics::Metrics;
use crate::settings::{Settings, SettingsError, required, required_url};

/// The Secrets Manager secret (ARN or name) holding the link key.
pub const LINK_KEY_SECRET: &str = "MAILROOM_LINK_KEY_SECRET";
/// The links function's URL, which the digest's links point at.
pub const LINK_URL: &str = "MAILROOM_LINK_URL";
/// The route stage's queue, where a released message goes.
pub const ROUTE_QUEUE_URL: &str = "MAILROOM_ROUTE_QUEUE_URL";

/// Which of the two functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    Digest,
    Links,
}

impl Function {
    pub fn name(self) -> &'static str {
        match self {
            Function::Digest => "digest",
            Function::Links => "links",
        }
    }
}

/// What the two functions read from their environment: what respond reads, the link key's
/// secret, and the links' URL (digest) or the route queue (links).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeskSettings {
    pub function: Function,
    pub settings: Settings,
    pub secret: String,
    pub link_url: Option<String>,
    pub route_queue_url: Option<String>,
}

impl DeskSettings {
    pub fn from_lookup(
        function: Function,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<DeskSettings, SettingsError> {
        let name = function.name();
        let settings = Settings::for_function(name, Stage::Respond, &get)?;
        let secret = required(name, &get, LINK_KEY_SECRET)?;
        let url = |var: &'static str| required_url(name, &get, var, "URL");
        let (link_url, route_queue_url) = match function {
            Function::Digest => (Some(url(LINK_URL)?), None),
            Function::Links => (None, Some(url(ROUTE_QUEUE_URL)?)),
        };
        Ok(DeskSettings {
            function,
            settings,
            secret,
            link_url,
            route_queue_url,
        })
    }
}

/// The link key's versions: the current one first, then the previous one while there is
/// one (a rotation keeps the links already sent working). Kept for `keep` between reads.
pub struct LinkKeys {
    client: aws_sdk_secretsmanager::Client,
    secret: String,
    keep: Duration,
    cached: tokio::sync::Mutex<Option<(Instant, Vec<Vec<u8>>)>>,
}

/// A token none of the cached keys signed reads the secret again, at most this often: a
/// rotation newer than the cache is seen at once, and forged tokens cost no read each.
const REREAD_AFTER: Duration = Duration::from_secs(5);

impl LinkKeys {
    pub fn new(client: aws_sdk_secretsmanager::Client, secret: String, keep: Duration) -> LinkKeys {
        LinkKeys {
            client,
            secret,
            keep,
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// The current key, read now (what signs new links).
    pub async fn current(&self) -> Result<Vec<u8>, String> {
        self.read("AWSCURRENT")
            .await?
            .ok_or_else(|| format!("the link key {} has no current version", self.secret))
    }

    /// The keys that verify links: cached, read again when older than `keep`, or than
    /// [`REREAD_AFTER`] when `unsigned` says a token at hand is signed by none of them.
    pub async fn verifying(
        &self,
        unsigned: impl Fn(&[Vec<u8>]) -> bool,
    ) -> Result<Vec<Vec<u8>>, String> {
        let mut cached = self.cached.lock().await;
        if let Some((at, keys)) = cached.as_ref() {
            let age = at.elapsed();
            if age < self.keep && (age < REREAD_AFTER || !unsigned(keys)) {
                return Ok(keys.to_vec());
            }
        }
        let mut keys = vec![self.current().await?];
        keys.extend(self.read("AWSPREVIOUS").await?);
        *cached = Some((Instant::now(), keys.clone()));
        Ok(keys)
    }

    async fn read(&self, stage: &str) -> Result<Option<Vec<u8>>, String> {
        let out = self
            .client
            .get_secret_value()
            .secret_id(&self.secret)
            .version_stage(stage)
            .send()
            .await;
        match out {
            Ok(v) => match v.secret_string() {
                Some(s) if s.len() >= 32 => Ok(Some(s.as_bytes().to_vec())),
                _ => Err(format!(
                    "the link key {} ({stage}) is shorter than 32 characters",
                    self.secret
                )),
            },
            // No previous version before the first rotation.
            Err(e)
                if stage == "AWSPREVIOUS"
                    && e.as_service_error()
                        .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(format!(
                "reading the link key {} ({stage}): {}",
                self.secret,
                aws_sdk_secretsmanager::error::DisplayErrorContext(e)
            )),
        }
    }
}

/// What either function holds across invocations: the config (re-checked as the stage
/// functions do, every stage's models loaded: a release runs filter and classify again),
/// the ports and the key.
pub struct Desk {
    pub settings: DeskSettings,
    pub config: ConfigSource,
    pub keys: LinkKeys,
    release_via: ReleaseVia,
    metrics: Metrics,
}

impl Desk {
    pub async fn new(
        desk: DeskSettings,
        sdk: &SdkConfig,
        metrics: Metrics,
    ) -> Result<Desk, String> {
        let settings = &desk.settings;
        let route_queue_url = desk.route_queue_url.clone();
        let release_via = match route_queue_url {
            Some(_) => ReleaseVia::Queue,
            None => ReleaseVia::Unavailable("the digest function releases nothing".into()),
        };
        let ports = crate::app::ports(
            sdk,
            &settings.bucket,
            &settings.table,
            Duration::from_secs(settings.retention_days * 86_400),
            route_queue_url,
            &settings.deliver_queue_prefix,
        );
        let location = ConfigLocation {
            bucket: settings.bucket.clone(),
            key: settings.config_key.clone(),
            from_address: settings.from_address.clone(),
            // A release (links) runs filter and classify again; a digest runs no stage.
            models: match desk.function {
                Function::Links => None,
                Function::Digest => Some(Stage::Respond),
            },
            effect_lease: settings.effect_lease,
        };
        let config = ConfigSource::load(
            s3_client(sdk),
            location,
            ports,
            Duration::from_secs(settings.config_refresh_seconds),
            metrics.clone(),
        )
        .await?;
        Ok(Desk {
            keys: LinkKeys::new(
                aws_sdk_secretsmanager::Client::new(sdk),
                desk.secret.clone(),
                Duration::from_secs(settings.config_refresh_seconds),
            ),
            settings: desk,
            config,
            release_via,
            metrics,
        })
    }

    pub async fn operator(&self) -> Operator {
        let s = &self.settings.settings;
        let store = format!("table {} and bucket {}", s.table, s.bucket);
        Operator::new(self.config.engine().await, store).with_release_via(self.release_via.clone())
    }

    /// The digest function's run: the period's digests, each sent once.
    pub async fn send_digests(&self, now: u64) -> Result<Vec<DigestSent>, String> {
        let link_url = self
            .settings
            .link_url
            .as_deref()
            .ok_or("the links function answers links; it sends no digest")?;
        let key = self.keys.current().await?;
        let sent = digest::send(&self.operator().await, link_url, &key, now)
            .await
            .map_err(|e| e.to_string())?;
        for d in &sent {
            let how = if d.before { "sent-before" } else { "sent" };
            self.metrics.count_by("Digests", "Digest", how);
        }
        Ok(sent)
    }

    /// The links function's answer to one request.
    pub async fn answer(
        &self,
        request: &LambdaFunctionUrlRequest,
        now: u64,
    ) -> LambdaFunctionUrlResponse {
        let http = &request.request_context.http;
        let method = match http.method.as_deref() {
            Some("POST") => LinkMethod::Post,
            _ => LinkMethod::Get,
        };
        let ip = http.source_ip.clone().unwrap_or_else(|| "unknown".into());
        let token = match method {
            LinkMethod::Post => form_token(request),
            LinkMethod::Get => None,
        }
        .or_else(|| request.query_string_parameters.get("t").cloned());
        // No token of ours (a browser's /favicon.ico, a probe): answered before the key is
        // read or anything is counted or written.
        if let Some(page) = refuse_malformed(token.as_deref()) {
            self.metrics
                .count_by("LinkRequests", "Outcome", page.outcome);
            tracing::info!(status = page.status, "{}", page.log);
            return response(page.status, page.html());
        }
        let unsigned = |keys: &[Vec<u8>]| {
            token
                .as_deref()
                .is_some_and(|t| LinkToken::verify(t, keys, now) == Err(TokenError::Forged))
        };
        let page = match self.keys.verifying(unsigned).await {
            Ok(keys) => {
                // "Always allow" writes the recipient's own allow-list entry in the
                // table; the links function never writes the config.
                let desk = LinkDesk {
                    operator: self.operator().await,
                    keys,
                };
                desk.handle(method, token.as_deref(), &ip, now).await
            }
            Err(e) => {
                tracing::error!(error = %e, "no link key");
                return response(503, "<!doctype html><title>mailroom</title><p>Not available just now: try again in a minute.</p>".into());
            }
        };
        self.metrics
            .count_by("LinkRequests", "Outcome", page.outcome);
        let state = self.config.engine().await.ports().state.clone();
        let log = crate::hidden(state.as_ref(), &page.log).await;
        if page.status >= 500 || page.status == 403 {
            tracing::warn!(status = page.status, "{log}");
        } else {
            tracing::info!(status = page.status, "{log}");
        }
        response(page.status, page.html())
    }
}

/// `t` from an `application/x-www-form-urlencoded` body (base64 when the URL says so).
fn form_token(request: &LambdaFunctionUrlRequest) -> Option<String> {
    let body = request.body.as_deref()?;
    let body = if request.is_base64_encoded {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(body)
                .ok()?,
        )
        .ok()?
    } else {
        body.to_string()
    };
    body.split('&')
        .find_map(|kv| kv.strip_prefix("t="))
        // A token is base64url and a dot: nothing in it is percent-encoded.
        .map(str::to_string)
}

fn response(status: u16, body: String) -> LambdaFunctionUrlResponse {
    let mut headers = HeaderMap::new();
    headers.insert(
        "content-type",
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    for (name, value) in PAGE_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    let mut r = LambdaFunctionUrlResponse::default();
    r.status_code = i64::from(status);
    r.headers = headers;
    r.body = Some(body);
    r
}

async fn start(function: Function) -> Result<Arc<Desk>, lambda_runtime::Error> {
    crate::init_logging();
    if function == Function::Digest && !cfg!(feature = "send") {
        return Err(format!(
            "the digest function sends mail, and {}",
            crate::app::WITHOUT_SES
        )
        .into());
    }
    let settings = DeskSettings::from_lookup(function, |n| std::env::var(n).ok())
        .map_err(|e| e.to_string())?;
    let sdk = crate::app::function_sdk_config().await?;
    Ok(Arc::new(
        Desk::new(settings, &sdk, Metrics::stdout()).await?,
    ))
}

fn now() -> u64 {
    mailroom_core::pipeline::epoch_secs(std::time::SystemTime::now())
}

/// The digest function's `main`: one run per scheduled event.
pub async fn run_digest() -> Result<(), lambda_runtime::Error> {
    let desk = start(Function::Digest).await?;
    lambda_runtime::run(lambda_runtime::service_fn(
        move |_: lambda_runtime::LambdaEvent<serde_json::Value>| {
            let desk = desk.clone();
            async move {
                // An error fails the invocation, and EventBridge tries again: what was sent
                // is not sent twice.
                let mut sent = desk.send_digests(now()).await?;
                // The log and the invocation's result name each address by its short hash.
                let state = desk.config.engine().await.ports().state.clone();
                for d in &mut sent {
                    d.to = crate::hidden(state.as_ref(), &d.to).await;
                    tracing::info!(to = %d.to, entries = d.entries, before = d.before, note = %d.note, "digest");
                }
                Ok::<_, lambda_runtime::Error>(serde_json::json!({ "digests": sent }))
            }
        },
    ))
    .await
}

/// The links function's `main`: one page per function URL request.
pub async fn run_links() -> Result<(), lambda_runtime::Error> {
    let desk = start(Function::Links).await?;
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: lambda_runtime::LambdaEvent<LambdaFunctionUrlRequest>| {
            let desk = desk.clone();
            async move { Ok::<_, lambda_runtime::Error>(desk.answer(&event.payload, now()).await) }
        },
    ))
    .await
}
