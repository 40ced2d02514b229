//! `mailroom console`: a web console over the same operator functions as the commands,
//! for the embedded store or a deployed stack, served on the operator's own machine.
//!
//! Access: it listens on 127.0.0.1 and prints a URL with a random per-run token, as
//! Jupyter does. The token, given once in the URL, becomes a `SameSite=Strict`, HttpOnly
//! cookie; without it nothing is served. Actions are POST forms carrying a second per-run
//! token (CSRF) and are asked for on a confirmation page first.
//!
//! Only requests whose `Host` is one the console answers as are served (another site's
//! name resolving to this machine, DNS rebinding, is not): on the loopback `127.0.0.1`,
//! `localhost` and `[::1]`; on another `--bind` address that address; and each `--host`
//! name, always with the port. Bound to every address (`0.0.0.0`, `::`) the machine's
//! names are not known, so `--host` must name them. Beyond the loopback the console warns
//! that its token and pages travel in plain HTTP.
//!
//! Mail is hostile: every value from a message goes through the templates' HTML escaping,
//! a message's HTML is never rendered (its text is shown in a `<pre>`), and every response
//! carries a Content-Security-Policy that allows no script at all.

mod pages;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use mailroom_core::operate::Operator;

use crate::target::Target;

/// The policy every response carries: no script, no plugin, no frame, styles and images
/// from the console only, forms posted only to it.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
                       form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const COOKIE: &str = "mailroom_console";

pub struct Console {
    pub operator: Operator,
    /// The embedded store (rewritten after an erasure; digest links are answered on it).
    pub state: Option<Arc<mailroom_core::embedded::disk::DiskState>>,
    /// Erasure and export, on either store.
    pub forget: Arc<dyn mailroom_core::operate::Forget>,
    pub target: Target,
    /// Who acts, for the audit trail.
    pub by: String,
    token: String,
    csrf: String,
    /// The `Host` values it answers to (lower-cased, with the port).
    hosts: Vec<String>,
    templates: minijinja::Environment<'static>,
    #[cfg(feature = "aws")]
    pub stack: Option<crate::target::Stack>,
}

/// A random per-run secret, 128 bits as hex.
fn secret() -> Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness for the token: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Compares secrets without stopping at the first differing byte.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// An address as a URL's host: IPv6 in brackets.
fn url_host(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        v4 => v4.to_string(),
    }
}

/// The `Host` values a console bound to `bind`:`port` answers to, the one its URL names
/// first. `names` are the `--host` names (a name or an address, without a port).
pub fn accepted_hosts(
    bind: std::net::IpAddr,
    port: u16,
    names: &[String],
) -> Result<Vec<String>, String> {
    let mut hosts: Vec<String> = Vec::new();
    for name in names {
        let name = name.trim().to_ascii_lowercase();
        let plain = match name.parse::<std::net::IpAddr>() {
            Ok(ip) => url_host(ip),
            Err(_) => name.clone(),
        };
        let ok = !plain.is_empty()
            && plain
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-.[]:".contains(c))
            && !plain.contains("..");
        if !ok || (plain.contains(':') && !plain.starts_with('[')) {
            return Err(format!(
                "--host {name:?} is not a host name or address (give it without a port)"
            ));
        }
        hosts.push(format!("{plain}:{port}"));
    }
    if bind.is_unspecified() {
        if hosts.is_empty() {
            return Err(format!(
                "--bind {bind} listens on every address of this machine, which the console \
                 cannot list: name the one browsers use with --host NAME (any other Host is \
                 refused, against DNS rebinding)"
            ));
        }
    } else if !bind.is_loopback() {
        hosts.insert(0, format!("{}:{port}", url_host(bind)));
    }
    // The loopback reaches a loopback bind, and an unspecified one.
    if bind.is_loopback() || bind.is_unspecified() {
        let first = if bind.is_loopback() && bind != std::net::IpAddr::from([127, 0, 0, 1]) {
            vec![format!("{}:{port}", url_host(bind))]
        } else {
            Vec::new()
        };
        let loopback = ["127.0.0.1", "localhost", "[::1]"].map(|n| format!("{n}:{port}"));
        let at = if bind.is_loopback() { 0 } else { hosts.len() };
        hosts.splice(at..at, first.into_iter().chain(loopback));
    }
    hosts.dedup();
    Ok(hosts)
}

/// Where the login's redirect goes: a path of this console only. A path that a browser
/// would read as another host (`//evil.example/`, `/\evil.example`) or that is not a path
/// becomes `/`.
pub fn local_path(path: &str) -> &str {
    let offsite = !path.starts_with('/')
        || path[1..].starts_with(['/', '\\'])
        || path.chars().any(|c| c == '\\' || c.is_control());
    if offsite { "/" } else { path }
}

/// `mailroom console`: serves until interrupted.
pub fn serve(
    target: &Target,
    bind: std::net::IpAddr,
    names: &[String],
    port: u16,
    by: Option<String>,
) -> Result<()> {
    // Checked before anything is opened: a refused --bind/--host changes nothing.
    accepted_hosts(bind, port, names).map_err(anyhow::Error::msg)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let connected = target.connect(&runtime)?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(SocketAddr::new(bind, port))
            .await
            .with_context(|| format!("listening on {bind}:{port}"))?;
        let port = listener.local_addr()?.port();
        let hosts = accepted_hosts(bind, port, names).map_err(anyhow::Error::msg)?;
        let console = Arc::new(Console {
            operator: connected.operator,
            state: connected.state,
            forget: connected.forget,
            target: target.clone(),
            by: crate::operate::operator_name(&by),
            token: secret()?,
            csrf: secret()?,
            hosts,
            templates: pages::templates(),
            #[cfg(feature = "aws")]
            stack: connected.stack,
        });
        if !bind.is_loopback() {
            eprintln!(
                "warning: the console listens on {} beyond this machine's loopback, in plain \
                 HTTP: its token, its cookie and every page it serves (mail included) can be \
                 read on the network on the way. Prefer the default 127.0.0.1 and an SSH \
                 tunnel (ssh -L {port}:127.0.0.1:{port} HOST); it answers only as {}",
                url_host(bind),
                console.hosts.join(", ")
            );
        }
        println!(
            "mailroom console on {}: open http://{}/?token={}",
            console.operator.store(),
            console.hosts[0],
            console.token
        );
        use std::io::Write;
        std::io::stdout().flush()?;
        axum::serve(
            listener,
            router(console).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("serving the console")
    })
}

pub fn router(console: Arc<Console>) -> Router {
    Router::new()
        .route("/", get(pages::overview))
        .route("/quarantine", get(pages::quarantine))
        .route("/search", get(pages::search))
        .route("/message/{id}", get(pages::message))
        .route("/dlq", get(pages::dlq))
        .route("/subject", get(pages::subject))
        .route("/subject/export", get(pages::export))
        .route("/confirm", get(pages::confirm))
        .route("/act", post(pages::act))
        .route("/console.css", get(pages::css))
        .route("/link", get(pages::link).post(pages::link))
        .layer(axum::middleware::from_fn_with_state(console.clone(), guard))
        .with_state(console)
}

/// The token check, the Host check and the headers of every response.
async fn guard(State(console): State<Arc<Console>>, request: Request, next: Next) -> Response {
    let mut response = match admit(&console, &request) {
        Admit::Yes => next.run(request).await,
        Admit::WithCookie(path) => {
            // The token leaves the address bar (and the history) at once.
            let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, path)]).into_response();
            let cookie = format!(
                "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
                console.token
            );
            r.headers_mut().insert(
                header::SET_COOKIE,
                HeaderValue::from_str(&cookie).expect("hex token"),
            );
            r
        }
        Admit::No(why) => (StatusCode::FORBIDDEN, why).into_response(),
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

enum Admit {
    Yes,
    /// The right token in the URL: set the cookie and go to this path without it.
    WithCookie(String),
    No(&'static str),
}

fn admit(console: &Console, request: &Request) -> Admit {
    // Another site's name resolving to this machine (DNS rebinding) is not this console.
    let host_ok = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| console.hosts.iter().any(|ok| h.eq_ignore_ascii_case(ok)));
    if !host_ok {
        return Admit::No(
            "this console answers only under the names it printed (see --bind and --host)\n",
        );
    }
    // A digest's link carries its own signed token and is answered without the console's.
    if request.uri().path() == "/link" {
        return Admit::Yes;
    }
    if cookie_token(request.headers()).is_some_and(|t| same(&t, &console.token)) {
        return Admit::Yes;
    }
    let uri = request.uri();
    let given = uri.query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("token="))
            .map(str::to_string)
    });
    match given {
        Some(t) if same(&t, &console.token) => {
            let rest: Vec<&str> = uri
                .query()
                .unwrap_or("")
                .split('&')
                .filter(|kv| !kv.starts_with("token=") && !kv.is_empty())
                .collect();
            // Only a path of this console: never another site's (`//evil.example/`).
            let path = local_path(uri.path());
            let path = if rest.is_empty() {
                path.to_string()
            } else {
                format!("{path}?{}", rest.join("&"))
            };
            Admit::WithCookie(path)
        }
        _ => Admit::No(
            "this console needs the URL with its token, as `mailroom console` printed it\n",
        ),
    }
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            kv.trim()
                .strip_prefix(&format!("{COOKIE}="))
                .map(str::to_string)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_and_compared_whole() {
        let (a, b) = (secret().unwrap(), secret().unwrap());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(same(&a, &a.clone()));
        assert!(!same(&a, &b));
        assert!(!same(&a, &a[..31]));
    }

    #[test]
    fn the_login_redirect_stays_on_the_console() {
        for offsite in [
            "//evil.example/",
            "///evil.example",
            "/\\evil.example",
            "/\\/evil.example",
            "https://evil.example/",
            "evil.example",
            "",
            "/a\\b",
            "/\tx",
        ] {
            assert_eq!(local_path(offsite), "/", "{offsite:?}");
        }
        for path in [
            "/",
            "/quarantine",
            "/message/abc",
            "/a//b",
            "/%2F%2Fevil.example",
        ] {
            assert_eq!(local_path(path), path);
        }
    }

    #[test]
    fn the_host_check_accepts_the_bind_address_and_the_named_hosts_only() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let none: &[String] = &[];
        assert_eq!(
            accepted_hosts(ip("127.0.0.1"), 8025, none).unwrap(),
            ["127.0.0.1:8025", "localhost:8025", "[::1]:8025"]
        );
        assert_eq!(
            accepted_hosts(ip("::1"), 80, none).unwrap()[0],
            "[::1]:80",
            "the URL names the bind address"
        );
        assert_eq!(
            accepted_hosts(ip("192.168.1.5"), 8025, none).unwrap(),
            ["192.168.1.5:8025"],
            "the loopback does not reach it"
        );
        assert_eq!(
            accepted_hosts(ip("fd00::5"), 9000, &["Console.Corp.example".into()]).unwrap(),
            ["[fd00::5]:9000", "console.corp.example:9000"]
        );
        let why = accepted_hosts(ip("0.0.0.0"), 8025, none).unwrap_err();
        assert!(why.contains("--host"), "{why}");
        assert!(accepted_hosts(ip("::"), 8025, none).is_err());
        assert_eq!(
            accepted_hosts(
                ip("0.0.0.0"),
                8025,
                &["10.0.0.7".into(), "ops.example".into()]
            )
            .unwrap(),
            [
                "10.0.0.7:8025",
                "ops.example:8025",
                "127.0.0.1:8025",
                "localhost:8025",
                "[::1]:8025"
            ]
        );
        for bad in ["ops.example:80", "a b", "", "evil.example/x", "a..b"] {
            assert!(
                accepted_hosts(ip("0.0.0.0"), 1, &[bad.to_string()]).is_err(),
                "{bad:?}"
            );
        }
    }
}
