//! The console's pages and actions. Each page asks the core's operator functions, as the
//! commands do, and renders a template; every value from a message is escaped there.

use std::sync::Arc;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use mailroom_core::config::SenderList;
use mailroom_core::model::Verdict;
use mailroom_core::operate::{Cursor, Judgement, MessageSummary, Query as IndexQuery};
use mailroom_core::pipeline::release::{Refusal, Releaser, releasable};
use minijinja::context;
use serde::{Deserialize, Serialize};

use super::{Console, same};

const CSS: &str = include_str!("console.css");

pub fn templates() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    // Names end in .html: minijinja escapes every value for HTML.
    for (name, source) in [
        ("base.html", include_str!("templates/base.html")),
        ("overview.html", include_str!("templates/overview.html")),
        ("list.html", include_str!("templates/list.html")),
        ("message.html", include_str!("templates/message.html")),
        ("confirm.html", include_str!("templates/confirm.html")),
        ("done.html", include_str!("templates/done.html")),
        ("dlq.html", include_str!("templates/dlq.html")),
        ("subject.html", include_str!("templates/subject.html")),
        ("error.html", include_str!("templates/error.html")),
    ] {
        env.add_template(name, source)
            .unwrap_or_else(|e| panic!("console template {name}: {e}"));
    }
    env.add_filter("when", |at: u64| crate::operate::received(at));
    env
}

impl Console {
    fn render(&self, name: &str, ctx: minijinja::Value) -> Response {
        let ctx = context! {
            aws => self.target.is_aws(),
            store => self.operator.store(),
            ..ctx
        };
        match self
            .templates
            .get_template(name)
            .and_then(|t| t.render(ctx))
        {
            Ok(html) => Html(html).into_response(),
            Err(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("rendering {name}: {e:#}"),
            )
                .into_response(),
        }
    }

    fn error(&self, status: StatusCode, message: impl std::fmt::Display) -> Response {
        let mut r = self.render("error.html", context! { message => message.to_string() });
        *r.status_mut() = status;
        r
    }
}

pub async fn css() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS).into_response()
}

/// One day's bar of the chart, in SVG units.
#[derive(Serialize)]
struct Bar {
    x: usize,
    label: String,
    total: usize,
    segments: Vec<Segment>,
}

#[derive(Serialize)]
struct Segment {
    class: &'static str,
    y: usize,
    height: usize,
}

const CHART_HEIGHT: usize = 160;
const DAYS: u64 = 14;

pub async fn overview(State(c): State<Arc<Console>>) -> Response {
    let o = match c
        .operator
        .overview(crate::target::now(), DAYS, 50_000)
        .await
    {
        Ok(o) => o,
        Err(e) => return c.error(StatusCode::BAD_GATEWAY, e),
    };
    let peak = o.peak();
    let bars: Vec<Bar> = o
        .days
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let mut y = CHART_HEIGHT;
            let mut segments = Vec::new();
            for (class, n) in [
                ("accept", d.accept),
                ("quarantine", d.quarantine),
                ("reject", d.reject),
            ] {
                let height = n * CHART_HEIGHT / peak;
                if height > 0 {
                    y -= height;
                    segments.push(Segment { class, y, height });
                }
            }
            Bar {
                x: i * 40 + 4,
                label: crate::operate::received(d.day)[5..10].to_string(),
                total: d.total(),
                segments,
            }
        })
        .collect();
    c.render(
        "overview.html",
        context! { o => o, bars => bars, days => DAYS, width => DAYS as usize * 40 + 8, height => CHART_HEIGHT },
    )
}

/// The filters of the list pages, as the URL gives them (an empty field is no filter).
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
pub struct Filters {
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    sender: String,
    #[serde(default)]
    recipient: String,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    verdict: String,
    #[serde(default)]
    category: String,
    #[serde(default)]
    message_id: String,
    #[serde(default)]
    reference: String,
    #[serde(default)]
    conversation: String,
    #[serde(default)]
    page: String,
}

fn given(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

impl Filters {
    fn query(&self, quarantined_only: bool) -> anyhow::Result<IndexQuery> {
        let time = |s: &str| given(s).map(|t| crate::operate::parse_time(&t)).transpose();
        Ok(IndexQuery {
            quarantined_only,
            since: time(&self.since)?,
            until: time(&self.until)?,
            sender: given(&self.sender),
            recipient: given(&self.recipient),
            subject: given(&self.subject),
            reason: given(&self.reason),
            verdict: given(&self.verdict)
                .map(|v| crate::operate::verdict(&v))
                .transpose()?,
            category: given(&self.category),
            message_id: given(&self.message_id),
            reference: given(&self.reference),
            conversation: given(&self.conversation),
            limit: 25,
            before: given(&self.page)
                .map(|p| p.parse::<Cursor>())
                .transpose()
                .map_err(anyhow::Error::msg)?,
        })
    }
}

async fn list(c: &Console, filters: Filters, quarantine: bool) -> Response {
    let query = match filters.query(quarantine) {
        Ok(q) => q,
        Err(e) => return c.error(StatusCode::BAD_REQUEST, format!("{e:#}")),
    };
    let page = match c.operator.list(&query).await {
        Ok(p) => p,
        Err(e) => return c.error(StatusCode::BAD_GATEWAY, e),
    };
    let next = page.next.map(|cursor| Filters {
        page: cursor.to_string(),
        ..filters.clone()
    });
    c.render(
        "list.html",
        context! {
            quarantine => quarantine,
            rows => page.rows,
            f => filters,
            next => next,
        },
    )
}

pub async fn quarantine(State(c): State<Arc<Console>>, Query(f): Query<Filters>) -> Response {
    list(&c, f, true).await
}

pub async fn search(State(c): State<Arc<Console>>, Query(f): Query<Filters>) -> Response {
    list(&c, f, false).await
}

/// What a message's page offers.
fn actions(c: &Console, s: &MessageSummary) -> Vec<&'static str> {
    let mut out = Vec::new();
    if s.quarantined.is_some() {
        // Mail held for a macro document is released only by the separate, forced action.
        let forced = matches!(
            releasable(&s.reasons, &Releaser::operator(c.by.as_str())),
            Err(Refusal::Unforced { .. })
        );
        out.extend([if forced { "release-macro" } else { "release" }, "delete"]);
    }
    // What the spam model learns from; a release already says "not spam".
    out.push(if s.verdict == Verdict::Accept {
        "mark-spam"
    } else {
        "mark-ham"
    });
    // Sender lists: the config file given, or on a stack its own config.
    if s.sender.is_some() && (c.target.config.is_some() || c.target.is_aws()) {
        out.extend(["allow", "block"]);
    }
    out
}

pub async fn message(State(c): State<Arc<Console>>, Path(id): Path<String>) -> Response {
    match c.operator.show(&id).await {
        Ok(view) => {
            let actions = actions(&c, &view.summary);
            c.render("message.html", context! { v => view, actions => actions })
        }
        Err(e @ mailroom_core::pipeline::release::OperatorError::UnknownId { .. }) => {
            c.error(StatusCode::NOT_FOUND, e)
        }
        Err(e) => c.error(StatusCode::BAD_GATEWAY, e),
    }
}

/// An action asked for: what, on which message (or DLQ message), and the CSRF token.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct Action {
    action: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    queue: String,
    #[serde(default)]
    csrf: String,
}

fn describe(action: &str) -> Option<&'static str> {
    Some(match action {
        "release" => {
            "Release this message: it goes on as accepted mail, with its forwards, deliveries and auto-reply, once."
        }
        "release-macro" => {
            "Release anyway: this message was held for a document with macros (MACRO_DOCUMENT), which digest links never release. It goes on as accepted mail, with its forwards, deliveries and auto-reply, once, and the release's audit record names force-macro beside you."
        }
        "delete" => "Delete this message's quarantined copy and take it off the quarantine list.",
        "mark-spam" => {
            "Mark this message as spam. Nothing happens to it now; the next `mailroom train --feedback` learns from it."
        }
        "mark-ham" => {
            "Mark this message as not spam, without releasing it. The next `mailroom train --feedback` learns from it."
        }
        "allow" => {
            "Add this sender to allow_senders in the config: their mail skips the spam score and the authentication policies."
        }
        "block" => "Add this sender to block_senders in the config: their mail is rejected.",
        "redrive" => "Move this message from the dead-letter queue back to its stage's queue.",
        "erase" => {
            "Erase everything kept about this address: every message naming it loses its copies, records, index entries and audit trail. One erasure record with a keyed hash of the address stays. What was already forwarded, delivered or answered cannot be recalled."
        }
        _ => return None,
    })
}

pub async fn confirm(State(c): State<Arc<Console>>, Query(a): Query<Action>) -> Response {
    let Some(what) = describe(&a.action) else {
        return c.error(StatusCode::BAD_REQUEST, format!("no action {:?}", a.action));
    };
    let summary = if a.action == "redrive" || a.action == "erase" {
        None
    } else {
        match c.operator.summary(&a.id).await {
            Ok(s) => Some(s),
            Err(e) => return c.error(StatusCode::NOT_FOUND, e),
        }
    };
    c.render(
        "confirm.html",
        context! { a => a, what => what, s => summary, csrf => c.csrf.clone() },
    )
}

pub async fn act(State(c): State<Arc<Console>>, Form(a): Form<Action>) -> Response {
    if !same(&a.csrf, &c.csrf) {
        return c.error(
            StatusCode::FORBIDDEN,
            "this form is not from this console run (CSRF token missing or stale): open the page again",
        );
    }
    let done = match a.action.as_str() {
        "release" | "release-macro" => c
            .operator
            .release(
                &a.id,
                &Releaser::Operator {
                    name: c.by.clone(),
                    force_macro: a.action == "release-macro",
                },
            )
            .await
            .map(|h| h.describe(&a.id, "released")),
        "delete" => c
            .operator
            .delete(&a.id, &c.by)
            .await
            .map(|h| h.describe(&a.id, "deleted")),
        "mark-spam" | "mark-ham" => {
            let label = if a.action == "mark-spam" {
                Judgement::Spam
            } else {
                Judgement::Ham
            };
            c.operator.mark(&a.id, label, &c.by).await.map(|m| {
                format!(
                    "marked {} as {}; the next `mailroom train --feedback` learns from it",
                    a.id,
                    m.label.label()
                )
            })
        }
        "allow" | "block" => {
            let list = if a.action == "allow" {
                SenderList::Allow
            } else {
                SenderList::Block
            };
            return sender_action(&c, &a.id, list).await;
        }
        "redrive" => return redrive(&c, &a).await,
        "erase" => return erase(&c, &a.id).await,
        other => return c.error(StatusCode::BAD_REQUEST, format!("no action {other:?}")),
    };
    match done {
        Ok(message) => c.render("done.html", context! { message => message, id => a.id }),
        Err(e) => c.error(StatusCode::CONFLICT, e),
    }
}

async fn sender_action(c: &Console, id: &str, list: SenderList) -> Response {
    // The sender is the message's own, from the index, not from the form.
    let sender = match c.operator.summary(id).await {
        Ok(s) => match s.sender {
            Some(sender) => sender,
            None => return c.error(StatusCode::BAD_REQUEST, "this message names no sender"),
        },
        Err(e) => return c.error(StatusCode::NOT_FOUND, e),
    };
    let Some(path) = c.target.config.clone() else {
        return match crate::senders::on_stack(&c.target, list, &sender).await {
            Ok(message) => c.render("done.html", context! { message => message, id => id }),
            Err(e) => c.error(StatusCode::CONFLICT, format!("{e:#}")),
        };
    };
    let edited = tokio::task::spawn_blocking(move || crate::senders::edit(&path, list, &sender))
        .await
        .map_err(anyhow::Error::from)
        .and_then(|r| r);
    let mut message = match edited {
        Ok(m) => m,
        Err(e) => return c.error(StatusCode::CONFLICT, format!("{e:#}")),
    };
    if let Err(e) = push(c).await {
        return c.error(
            StatusCode::BAD_GATEWAY,
            format!("{message}, but pushing it failed: {e:#}"),
        );
    }
    if c.target.is_aws() {
        message.push_str("; pushed to the stack");
    }
    c.render("done.html", context! { message => message, id => id })
}

#[cfg(feature = "aws")]
async fn push(c: &Console) -> anyhow::Result<()> {
    let (Some(stack), Some(path)) = (&c.stack, &c.target.config) else {
        return Ok(());
    };
    crate::push::push_async(
        &stack.sdk,
        path,
        &stack.names.bucket,
        &stack.names.config_key,
    )
    .await
}

#[cfg(not(feature = "aws"))]
async fn push(_c: &Console) -> anyhow::Result<()> {
    Ok(())
}

#[cfg(feature = "aws")]
pub async fn dlq(State(c): State<Arc<Console>>) -> Response {
    use mailroom_core::model::Stage;
    let Some(stack) = &c.stack else {
        return c.error(
            StatusCode::NOT_FOUND,
            "dead-letter queues are a deployed stack's: start the console with --stack NAME",
        );
    };
    let dlqs = stack.dlqs();
    let audit = c.operator.engine().ports().audit.clone();
    let mut entries = Vec::new();
    for stage in Stage::ALL {
        match dlqs.list(stage, audit.as_ref()).await {
            Ok(e) => entries.extend(e),
            Err(e) => return c.error(StatusCode::BAD_GATEWAY, e),
        }
    }
    c.render("dlq.html", context! { entries => entries })
}

#[cfg(not(feature = "aws"))]
pub async fn dlq(State(c): State<Arc<Console>>) -> Response {
    c.error(
        StatusCode::NOT_FOUND,
        "dead-letter queues are a deployed stack's: start the console with --stack NAME",
    )
}

#[cfg(feature = "aws")]
async fn redrive(c: &Console, a: &Action) -> Response {
    let Some(stack) = &c.stack else {
        return c.error(
            StatusCode::NOT_FOUND,
            "dead-letter queues are a deployed stack's",
        );
    };
    let stage = match crate::dlq::stages(Some(&a.queue)) {
        Ok(s) => s[0],
        Err(e) => return c.error(StatusCode::BAD_REQUEST, format!("{e:#}")),
    };
    let dlqs = stack.dlqs();
    match dlqs.redrive(stage, Some(std::slice::from_ref(&a.id))).await {
        Ok(r) if r.failed.is_empty() => c.render(
            "done.html",
            context! { message => format!("redrove {} to the {stage} queue", a.id) },
        ),
        Ok(r) => c.error(
            StatusCode::CONFLICT,
            r.failed
                .iter()
                .map(|(id, why)| format!("{id}: {why}"))
                .collect::<Vec<_>>()
                .join("; "),
        ),
        Err(e) => c.error(StatusCode::BAD_GATEWAY, e),
    }
}

#[cfg(not(feature = "aws"))]
async fn redrive(c: &Console, _a: &Action) -> Response {
    c.error(
        StatusCode::NOT_FOUND,
        "dead-letter queues are a deployed stack's",
    )
}

/// The address a data-subject page is about.
#[derive(Debug, Default, Deserialize)]
pub struct Subject {
    #[serde(default)]
    address: String,
}

pub async fn subject(State(c): State<Arc<Console>>, Query(q): Query<Subject>) -> Response {
    let address = q.address.trim().to_ascii_lowercase();
    let mut rows = Vec::new();
    if !address.is_empty() {
        let ids = match c.forget.messages_naming(&address).await {
            Ok(ids) => ids,
            Err(e) => return c.error(StatusCode::BAD_GATEWAY, e),
        };
        for id in ids {
            if let Ok(s) = c.operator.summary(&id).await {
                rows.push(s);
            }
        }
    }
    c.render(
        "subject.html",
        context! { address => address, rows => rows },
    )
}

pub async fn export(State(c): State<Arc<Console>>, Query(q): Query<Subject>) -> Response {
    match crate::subject::bundle(&c.operator, c.forget.as_ref(), &q.address).await {
        Ok((bytes, _)) => (
            [
                (header::CONTENT_TYPE, "application/zip".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"mailroom-export.zip\"".to_string(),
                ),
            ],
            bytes,
        )
            .into_response(),
        Err(e) => c.error(StatusCode::BAD_GATEWAY, format!("{e:#}")),
    }
}

async fn erase(c: &Console, address: &str) -> Response {
    let erasure = match c
        .operator
        .erase(
            c.forget.as_ref(),
            address,
            &c.by,
            false,
            crate::target::now(),
        )
        .await
    {
        Ok(e) => e,
        Err(e) => return c.error(StatusCode::CONFLICT, e),
    };
    if let Some(state) = &c.state
        && let Err(e) = state.rewrite_open()
    {
        return c.error(StatusCode::INTERNAL_SERVER_ERROR, e);
    }
    let went: Vec<String> = erasure
        .messages
        .iter()
        .flat_map(|m| m.went.clone())
        .collect();
    let record = erasure.record.as_ref();
    let message = format!(
        "erased {} messages ({} copies, {} records, {} rate-limit slots, {} allow-list entries); kept one erasure record{}",
        record.map_or(0, |r| r.messages),
        record.map_or(0, |r| r.objects),
        record.map_or(0, |r| r.records),
        record.map_or(0, |r| r.slots),
        record.map_or(0, |r| r.allowed),
        if went.is_empty() {
            String::new()
        } else {
            format!(". Already out and not recalled: {}", went.join("; "))
        }
    );
    let message = if erasure.sender_lists.is_empty() {
        message
    } else {
        format!(
            "{message}. The config still names the address in [filter] {}: \
             `mailroom erase --subject ADDRESS --from-config` takes it off",
            erasure.sender_lists.join(" and ")
        )
    };
    c.render("done.html", context! { message => message })
}

#[derive(Deserialize, Default)]
pub struct LinkForm {
    #[serde(default)]
    t: Option<String>,
}

/// A digest's link (`mailroom digest`): GET asks to confirm, the confirmation's POST acts.
pub async fn link(State(c): State<Arc<Console>>, request: axum::extract::Request) -> Response {
    use axum::extract::FromRequest;
    use mailroom_core::operate::links::LinkMethod;
    let Some(state) = c.state.clone() else {
        return c.error(
            StatusCode::NOT_FOUND,
            "on a stack, digest links are answered by its links function",
        );
    };
    let ip = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|ci| ci.0.ip().to_string())
        .unwrap_or_else(|| "127.0.0.1".into());
    let query = Query::<LinkForm>::try_from_uri(request.uri())
        .map(|q| q.0)
        .unwrap_or_default();
    let (method, token) = if request.method() == axum::http::Method::POST {
        let form = Form::<LinkForm>::from_request(request, &())
            .await
            .map(|f| f.0)
            .unwrap_or_default();
        (LinkMethod::Post, form.t.or(query.t))
    } else {
        (LinkMethod::Get, query.t)
    };
    let desk = match crate::digest::desk(c.operator.clone(), &state) {
        Ok(d) => d,
        Err(e) => return c.error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
    };
    let page = desk
        .handle(method, token.as_deref(), &ip, crate::target::now())
        .await;
    let _ = state.flush();
    // The console's log names addresses by the start of their keyed hash, as the
    // functions' logs do.
    let key = mailroom_core::operate::log_key(c.operator.engine().ports().state.as_ref()).await;
    eprintln!(
        "link: {}",
        mailroom_core::operate::hide_addresses(key.as_deref(), &page.log)
    );
    let status = StatusCode::from_u16(page.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Html(page.html())).into_response()
}
