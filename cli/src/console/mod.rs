//! `mailroom console`: a web console over the same operator functions as the commands,
//! for the embedded store or a deployed stack, served on the operator's own machine.
//!
//! Access: it listens on 127.0.0.1 and prints a URL with a random per-run token, as
//! Jupyter does. The token, given once in the URL, becomes a `SameSite=Strict`, HttpOnly
//! cookie; without it nothing is served. Actions are POST forms carrying a second per-run
//! token (CSRF) and are asked for on a confirmation page first.
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
    port: u16,
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

/// `mailroom console`: serves until interrupted.
pub fn serve(target: &Target, bind: std::net::IpAddr, port: u16, by: Option<String>) -> Result<()> {
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
        let console = Arc::new(Console {
            operator: connected.operator,
            state: connected.state,
            forget: connected.forget,
            target: target.clone(),
            by: crate::operate::operator_name(&by),
            token: secret()?,
            csrf: secret()?,
            port,
            templates: pages::templates(),
            #[cfg(feature = "aws")]
            stack: connected.stack,
        });
        let host = if bind.is_loopback() {
            "127.0.0.1".to_string()
        } else {
            bind.to_string()
        };
        println!(
            "mailroom console on {}: open http://{host}:{port}/?token={}",
            console.operator.store(),
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
    // Another site's name resolving to 127.0.0.1 (DNS rebinding) is not this console.
    let host_ok = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| {
            let port = format!(":{}", console.port);
            ["127.0.0.1", "localhost", "[::1]"]
                .iter()
                .any(|n| h == format!("{n}{port}"))
        });
    if !host_ok {
        return Admit::No("this console answers only on 127.0.0.1 and localhost\n");
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
            let path = if rest.is_empty() {
                uri.path().to_string()
            } else {
                format!("{}?{}", uri.path(), rest.join("&"))
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
}
