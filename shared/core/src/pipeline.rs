//! Runs stages against the ports: the one place where decisions become effects.
//!
//! Delivery is at-least-once (SQS, Lambda retries, a re-run of `mailroom run`), so every
//! effect is claimed through the [`StateStore`] before it happens and completed after: a
//! duplicate finds it done and skips it. Stage records and audit entries are conditional
//! writes too, so a duplicate writes no second transition.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::classify::Classifier;
use crate::config::{Config, STORE_ROOT};
use crate::filter::{self, Filter};
use crate::mail::{Mail, MailError, strip_mbox_from_line};
use crate::model::{Action, AuditRecord, DecidedBy, Envelope, RespondResult, Stage};
use crate::ports::{
    AuditLog, Claim, MailSender, ObjectStore, OutgoingMail, PortError, QueueDelivery,
    RawMailSource, StagePublisher, StateStore,
};
use crate::route::forward::ForwardPlan;
use crate::route::headers::HeaderEdit;
use crate::{respond, route};

/// How long a claimed effect is reserved for the invocation that claimed it. Longer than any
/// send takes; shorter than the queue's retry delay so a crashed holder does not block long.
pub const EFFECT_LEASE: Duration = Duration::from_secs(120);

/// A stage's audit entry: decision, reasons (one note per route action), and what decided.
type Audit = (String, Vec<String>, Vec<String>);

/// What a stage decided, before its audit record is written; the route stage's rewritten
/// copies are still to be made.
struct Decided {
    decision: String,
    reasons: Vec<String>,
    decided_by: Vec<String>,
    sender: Option<String>,
    deferred: Vec<Deferred>,
}

/// A route action that writes a rewritten copy of the message: worked out from the parse,
/// carried out on the raw bytes once the parse (with its decoded attachments) is dropped.
enum Deferred {
    Forward {
        /// The action's position in the route result, where its note goes.
        index: usize,
        to: Vec<String>,
        plan: ForwardPlan,
    },
    /// A store with tag headers added (an untagged store is a server-side copy).
    Store {
        index: usize,
        key: String,
        edit: HeaderEdit,
    },
}

impl Deferred {
    /// Whether it needs the message bytes at all.
    fn rewrites(&self) -> bool {
        match self {
            Deferred::Forward { plan, .. } => !plan.chunks.is_empty(),
            Deferred::Store { .. } => true,
        }
    }

    fn edit(&self) -> &HeaderEdit {
        match self {
            Deferred::Forward { plan, .. } => &plan.edit,
            Deferred::Store { edit, .. } => edit,
        }
    }
}

enum Executed {
    Done(String),
    Later(Deferred),
}

/// The raw message at the end of a stage: borrowed when one parse serves all stages (local
/// runs), owned in an invocation, where the last forward rewrites it in place instead of
/// copying it.
enum Raw<'r> {
    Borrowed(&'r [u8]),
    Owned(Vec<u8>),
}

impl Raw<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Raw::Borrowed(b) => b,
            Raw::Owned(b) => b,
        }
    }
}

/// A stage failure, with the message and stage it happened in.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// Try again later: the queue redelivers the message.
    #[error("message {id}, stage {stage}: {detail} (will retry)")]
    Retryable {
        id: String,
        stage: Stage,
        detail: String,
    },
    /// Retrying cannot help: the message goes to quarantine.
    #[error("message {id}, stage {stage}: {detail}")]
    Permanent {
        id: String,
        stage: Stage,
        detail: String,
    },
}

impl StageError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, StageError::Retryable { .. })
    }

    fn from_port(id: &str, stage: Stage, what: &str, e: PortError) -> StageError {
        let (id, detail) = (id.to_string(), format!("{what}: {e}"));
        if e.is_retryable() {
            StageError::Retryable { id, stage, detail }
        } else {
            StageError::Permanent { id, stage, detail }
        }
    }
}

/// The adapters a pipeline runs against.
#[derive(Clone)]
pub struct Ports {
    pub raw: Arc<dyn RawMailSource>,
    pub objects: Arc<dyn ObjectStore>,
    pub state: Arc<dyn StateStore>,
    pub audit: Arc<dyn AuditLog>,
    pub publisher: Arc<dyn StagePublisher>,
    pub queues: Arc<dyn QueueDelivery>,
    pub sender: Arc<dyn MailSender>,
}

/// The stages, their config and ports. Built once per process (per Lambda cold start).
pub struct Engine {
    pub config: Arc<Config>,
    pub filter: Filter,
    pub classifier: Classifier,
    pub ports: Ports,
}

/// What a local run reports for one message.
#[derive(Debug)]
pub struct Outcome {
    pub envelope: Envelope,
    /// The message's own headers, when it parsed.
    pub headline: Option<Headline>,
    /// Why the input could not be parsed as mail (it was quarantined).
    pub parse_error: Option<String>,
}

#[derive(Debug)]
pub struct Headline {
    pub message_id: Option<String>,
    pub from: Option<String>,
    pub subject: String,
}

/// A content-derived message id for mail that has no SES id (local runs): the same bytes
/// always get the same id, so a re-run is recognised as a duplicate.
pub fn content_id(raw: &[u8]) -> String {
    let digest = Sha256::digest(raw);
    digest[..12].iter().map(|b| format!("{b:02x}")).collect()
}

fn now() -> SystemTime {
    SystemTime::now()
}

fn epoch_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn decided(by: &DecidedBy) -> String {
    match by {
        DecidedBy::Rule(n) => format!("rule:{n}"),
        DecidedBy::Model(n) => format!("model:{n}"),
        DecidedBy::Default => "default".into(),
    }
}

impl Engine {
    pub fn new(config: Arc<Config>, ports: Ports) -> Engine {
        Engine {
            config,
            filter: Filter::new(),
            classifier: Classifier::default(),
            ports,
        }
    }

    /// Runs one stage on an envelope (one Lambda invocation's work for one record), then
    /// publishes the updated envelope to the next stage.
    pub async fn run_stage(&self, stage: Stage, mut env: Envelope) -> Result<Envelope, StageError> {
        let raw = self
            .ports
            .raw
            .get_raw(&env.raw)
            .await
            .map_err(|e| StageError::from_port(&env.id, stage, "reading raw mail", e))?;
        let decided = {
            let parsed = self.parse(&raw, &env);
            self.decide(stage, &mut env, &raw, parsed.as_ref()).await?
        };
        // The parse (with any decoded attachments) is gone: forwards take the raw bytes.
        self.finish(stage, &mut env, decided, Raw::Owned(raw))
            .await?;
        if let Some(next) = stage.next() {
            self.ports
                .publisher
                .publish(next, &env)
                .await
                .map_err(|e| {
                    StageError::from_port(&env.id, stage, "publishing to the next stage", e)
                })?;
        }
        Ok(env)
    }

    /// Runs every stage in process on raw bytes already in memory (local runs). The raw
    /// mail is parsed once for all four stages.
    pub async fn run_all(&self, mut env: Envelope, raw: &[u8]) -> Result<Outcome, StageError> {
        let parsed = self.parse(raw, &env);
        for stage in Stage::ALL {
            let decided = self.decide(stage, &mut env, raw, parsed.as_ref()).await?;
            self.finish(stage, &mut env, decided, Raw::Borrowed(raw))
                .await?;
        }
        let headline = parsed.as_ref().ok().map(|m| Headline {
            message_id: m.message_id.clone(),
            from: m.from.clone(),
            subject: m.subject.clone(),
        });
        Ok(Outcome {
            envelope: env,
            headline,
            parse_error: parsed.err().map(|e| e.to_string()),
        })
    }

    /// Parses unless the message is over the size limit (then it is never parsed).
    fn parse<'r>(&self, raw: &'r [u8], env: &Envelope) -> Result<Mail<'r>, MailError> {
        let max = self.config.filter.max_message_size.0;
        if raw.len() as u64 > max {
            return Err(MailError::NotMail(format!("oversize: {} bytes", raw.len())));
        }
        Mail::parse_with_receipt(raw, env.receipt.as_ref())
    }

    /// Runs a stage's decision and its effects, except the route stage's forwards, which
    /// [`Engine::finish`] sends once the parse can be dropped.
    async fn decide(
        &self,
        stage: Stage,
        env: &mut Envelope,
        raw: &[u8],
        mail: Result<&Mail<'_>, &MailError>,
    ) -> Result<Decided, StageError> {
        let ((decision, reasons, decided_by), deferred) = match stage {
            Stage::Filter => (self.filter_stage(env, raw, mail), Vec::new()),
            Stage::Classify => (self.classify_stage(env, mail)?, Vec::new()),
            Stage::Route => self.route_stage(env, raw, mail).await?,
            Stage::Respond => (self.respond_stage(env, mail).await?, Vec::new()),
        };
        Ok(Decided {
            decision,
            reasons,
            decided_by,
            sender: mail.ok().and_then(|m| m.from.clone()),
            deferred,
        })
    }

    /// Sends the pending forwards, then writes the audit record and the stage transition.
    async fn finish(
        &self,
        stage: Stage,
        env: &mut Envelope,
        mut decided: Decided,
        raw: Raw<'_>,
    ) -> Result<(), StageError> {
        let mut deferred = std::mem::take(&mut decided.deferred);
        // Forwards last: the last one takes the raw buffer, and a forward is the costliest
        // to copy (SES needs it base64-encoded on top).
        deferred.sort_by_key(|d| matches!(d, Deferred::Forward { .. }));
        let count = deferred.len();
        let mut raw = Some(raw);
        for (i, action) in deferred.into_iter().enumerate() {
            let rewritten = if !action.rewrites() {
                Vec::new()
            } else if i + 1 == count {
                // The last one takes an owned message and rewrites it in place.
                match raw.take() {
                    Some(Raw::Owned(bytes)) => action.edit().apply_owned(bytes),
                    Some(Raw::Borrowed(bytes)) => action.edit().apply(strip_mbox_from_line(bytes)),
                    None => Vec::new(),
                }
            } else {
                raw.as_ref()
                    .map(|r| action.edit().apply(strip_mbox_from_line(r.bytes())))
                    .unwrap_or_default()
            };
            let (index, note) = self.carry_out(&env.id, action, rewritten).await?;
            decided.reasons[index] = note;
        }
        drop(raw);
        let record = AuditRecord {
            id: env.id.clone(),
            stage,
            decision: decided.decision,
            reasons: decided.reasons,
            decided_by: decided.decided_by,
            sender: decided.sender,
            at: epoch_secs(now()),
        };
        // Audit first, then the transition: both are idempotent, and a crash in between
        // leaves an audit entry the retry finds rather than a transition without one.
        self.ports
            .audit
            .append(&record)
            .await
            .map_err(|e| StageError::from_port(&env.id, stage, "appending audit record", e))?;
        self.ports
            .state
            .record_stage(&env.id, stage, &record.decision)
            .await
            .map_err(|e| StageError::from_port(&env.id, stage, "recording stage state", e))?;
        Ok(())
    }

    /// Sends a deferred forward or writes a deferred store, given the rewritten message.
    async fn carry_out(
        &self,
        id: &str,
        action: Deferred,
        rewritten: Vec<u8>,
    ) -> Result<(usize, String), StageError> {
        match action {
            Deferred::Forward { index, to, plan } => {
                let mut sent = Vec::new();
                for (chunk, out) in plan.messages(rewritten).enumerate() {
                    let effect = format!("route/{index}/forward/{chunk}");
                    sent.push(self.send_once(id, Stage::Route, &effect, out).await?);
                }
                Ok((
                    index,
                    format!("forwarded to {}: {}", to.join(" "), sent.join(" ")),
                ))
            }
            Deferred::Store { index, key, .. } => {
                self.ports
                    .objects
                    .put_object(&key, rewritten)
                    .await
                    .map_err(|e| {
                        StageError::from_port(id, Stage::Route, &format!("storing under {key}"), e)
                    })?;
                Ok((index, format!("stored as {key}")))
            }
        }
    }

    fn filter_stage(
        &self,
        env: &mut Envelope,
        raw: &[u8],
        mail: Result<&Mail<'_>, &MailError>,
    ) -> Audit {
        let result = match mail {
            Ok(mail) => self.filter.run(mail, &self.config),
            Err(_) if raw.len() as u64 > self.config.filter.max_message_size.0 => {
                filter::oversize(raw.len() as u64, &self.config)
            }
            Err(e) => filter::unparseable(&e.to_string()),
        };
        let audit = (
            result.verdict.as_str().to_string(),
            result
                .reasons
                .iter()
                .map(|r| format!("{}: {}", r.tag, r.detail))
                .collect(),
            vec![format!("scorer:{}", result.scorer)],
        );
        env.results.filter = Some(result);
        audit
    }

    fn classify_stage(
        &self,
        env: &mut Envelope,
        mail: Result<&Mail<'_>, &MailError>,
    ) -> Result<Audit, StageError> {
        let filter = self.require_filter(env, Stage::Classify)?;
        let result = match mail {
            Ok(mail) => self.classifier.run(mail, filter, &self.config),
            Err(_) => Classifier::unparsed(&self.config),
        };
        let audit = (
            format!(
                "category={} priority={}",
                result.category,
                result.priority.as_str()
            ),
            result
                .language
                .iter()
                .map(|l| format!("language={l}"))
                .collect(),
            vec![decided(&result.category_by), decided(&result.priority_by)],
        );
        env.results.classify = Some(result);
        Ok(audit)
    }

    fn require_filter<'e>(
        &self,
        env: &'e Envelope,
        stage: Stage,
    ) -> Result<&'e crate::model::FilterResult, StageError> {
        env.results
            .filter
            .as_ref()
            .ok_or_else(|| StageError::Permanent {
                id: env.id.clone(),
                stage,
                detail: "envelope has no filter result".into(),
            })
    }

    async fn route_stage(
        &self,
        env: &mut Envelope,
        raw: &[u8],
        mail: Result<&Mail<'_>, &MailError>,
    ) -> Result<(Audit, Vec<Deferred>), StageError> {
        let filter = self.require_filter(env, Stage::Route)?;
        let result = match (mail, &env.results.classify) {
            (Ok(mail), Some(classify)) => route::decide(mail, filter, classify, &self.config),
            (Ok(_), None) => {
                return Err(StageError::Permanent {
                    id: env.id.clone(),
                    stage: Stage::Route,
                    detail: "envelope has no classify result".into(),
                });
            }
            (Err(_), _) => route::decide_unparsed(filter, &self.config),
        };
        let tags: Vec<(String, String)> = result
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Tag { header, value } => Some((header.clone(), value.clone())),
                _ => None,
            })
            .collect();
        let mut notes = Vec::new();
        let mut deferred = Vec::new();
        for (index, action) in result.actions.iter().enumerate() {
            match self.execute(env, raw, mail, index, action, &tags).await? {
                Executed::Done(note) => notes.push(note),
                Executed::Later(action) => {
                    // Filled in when it is carried out.
                    notes.push(String::new());
                    deferred.push(action);
                }
            }
        }
        let audit = (
            result
                .actions
                .iter()
                .map(Action::kind)
                .collect::<Vec<_>>()
                .join(","),
            notes,
            result.rules.clone(),
        );
        env.results.route = Some(result);
        Ok((audit, deferred))
    }

    /// Carries out one route action, or plans it (forwards). Writes to fixed keys are
    /// naturally idempotent; sends and deliveries are claimed first so a duplicate does not
    /// repeat them.
    async fn execute(
        &self,
        env: &Envelope,
        raw: &[u8],
        mail: Result<&Mail<'_>, &MailError>,
        index: usize,
        action: &Action,
        tags: &[(String, String)],
    ) -> Result<Executed, StageError> {
        let id = &env.id;
        let port = |what: &str| {
            let what = what.to_string();
            move |e: PortError| StageError::from_port(id, Stage::Route, &what, e)
        };
        match action {
            Action::Forward(to) => Ok(match mail {
                Ok(mail) => Executed::Later(Deferred::Forward {
                    index,
                    to: to.clone(),
                    plan: ForwardPlan::new(mail, &self.config.mailroom, to, tags),
                }),
                Err(_) => Executed::Done("forward skipped: message could not be parsed".into()),
            }),
            Action::Deliver(queue) => {
                let effect = format!("route/{index}/deliver/{queue}");
                let body = serde_json::to_string(env).expect("envelopes serialise");
                let claimed = self.claim(id, Stage::Route, &effect).await?;
                if let Some(done) = claimed {
                    return Ok(Executed::Done(done));
                }
                if let Err(e) = self.ports.queues.deliver(queue, &body).await {
                    self.release(id, Stage::Route, &effect).await;
                    return Err(port(&format!("delivering to queue {queue}"))(e));
                }
                let note = format!("delivered to queue {queue}");
                self.ports
                    .state
                    .complete_effect(id, &effect, &note)
                    .await
                    .map_err(port("completing delivery"))?;
                Ok(Executed::Done(note))
            }
            Action::Store(prefix) => {
                let key = format!("{STORE_ROOT}{prefix}{id}.eml");
                if !tags.is_empty() {
                    return Ok(Executed::Later(Deferred::Store {
                        index,
                        key,
                        edit: route::headers::tag_edit(HeaderEdit::new(), tags),
                    }));
                }
                let original = mail.map(|m| m.raw).unwrap_or(raw);
                self.ports
                    .objects
                    .copy_raw(&env.raw, &key, original)
                    .await
                    .map_err(port(&format!("storing under {key}")))?;
                Ok(Executed::Done(format!("stored as {key}")))
            }
            Action::Quarantine => {
                let key = format!("{}{id}.eml", self.config.routing.quarantine_prefix);
                self.ports
                    .objects
                    .copy_raw(&env.raw, &key, raw)
                    .await
                    .map_err(port(&format!("quarantining as {key}")))?;
                Ok(Executed::Done(format!("quarantined as {key}")))
            }
            Action::Tag { header, .. } => Ok(Executed::Done(format!("tagged {header}"))),
            Action::Drop => Ok(Executed::Done("dropped".into())),
        }
    }

    /// Claims an effect. `Ok(Some(note))` means it was already done.
    async fn claim(
        &self,
        id: &str,
        stage: Stage,
        effect: &str,
    ) -> Result<Option<String>, StageError> {
        match self
            .ports
            .state
            .claim_effect(id, effect, EFFECT_LEASE, now())
            .await
        {
            Ok(Claim::Acquired) => Ok(None),
            Ok(Claim::Done(note)) => Ok(Some(note)),
            Ok(Claim::Busy) => Err(StageError::Retryable {
                id: id.into(),
                stage,
                detail: format!("effect {effect} is being carried out by another invocation"),
            }),
            Err(e) => Err(StageError::from_port(
                id,
                stage,
                &format!("claiming effect {effect}"),
                e,
            )),
        }
    }

    /// Gives an effect back after a failed attempt. A failure to release only delays the
    /// retry until the lease expires, so it is logged in the error, not raised.
    async fn release(&self, id: &str, _stage: Stage, effect: &str) {
        let _ = self.ports.state.release_effect(id, effect).await;
    }

    async fn send_once(
        &self,
        id: &str,
        stage: Stage,
        effect: &str,
        out: OutgoingMail,
    ) -> Result<String, StageError> {
        if let Some(done) = self.claim(id, stage, effect).await? {
            return Ok(done);
        }
        let to = out.to.join(" ");
        match self.ports.sender.send(out).await {
            Ok(provider_id) => {
                let note = format!("sent {provider_id}");
                self.ports
                    .state
                    .complete_effect(id, effect, &note)
                    .await
                    .map_err(|e| {
                        StageError::from_port(id, stage, &format!("completing effect {effect}"), e)
                    })?;
                Ok(note)
            }
            Err(e) => {
                self.release(id, stage, effect).await;
                Err(StageError::from_port(
                    id,
                    stage,
                    &format!("sending ({effect}) to {to}"),
                    e,
                ))
            }
        }
    }

    async fn respond_stage(
        &self,
        env: &mut Envelope,
        mail: Result<&Mail<'_>, &MailError>,
    ) -> Result<Audit, StageError> {
        let result = match mail {
            Err(e) => RespondResult::Suppressed {
                reason: format!("message could not be parsed: {e}"),
            },
            Ok(mail) => self.reply(env, mail).await?,
        };
        let audit = match &result {
            RespondResult::Sent {
                template,
                reference,
                ..
            } => (
                "sent".to_string(),
                vec![format!("reference {reference}")],
                vec![format!("template:{template}")],
            ),
            RespondResult::Suppressed { reason } => {
                ("suppressed".to_string(), vec![reason.clone()], vec![])
            }
        };
        env.results.respond = Some(result);
        Ok(audit)
    }

    /// The auto-reply: claim the message's reply, take the sender's rate-limit slot, send.
    /// The slot is owned by this message id, so a retry after a failed send takes it again
    /// while a different message from the same sender is refused.
    async fn reply(&self, env: &Envelope, mail: &Mail<'_>) -> Result<RespondResult, StageError> {
        let id = &env.id;
        let stage = Stage::Respond;
        let plan = match respond::plan(mail, &env.results, &self.config) {
            Ok(plan) => plan,
            Err(reason) => return Ok(RespondResult::Suppressed { reason }),
        };
        let effect = "respond/reply";
        if let Some(note) = self.claim(id, stage, effect).await? {
            return Ok(
                serde_json::from_str(&note).unwrap_or(RespondResult::Suppressed {
                    reason: format!("already handled: {note}"),
                }),
            );
        }
        let complete = |result: RespondResult| async move {
            let note = serde_json::to_string(&result).expect("results serialise");
            self.ports
                .state
                .complete_effect(id, effect, &note)
                .await
                .map_err(|e| StageError::from_port(id, stage, "completing reply", e))?;
            Ok::<_, StageError>(result)
        };

        let period = self.config.respond.period.0;
        let t = now();
        let slot = format!("reply#{}", plan.rate_limit_key);
        match self
            .ports
            .state
            .acquire_rate_limit(&slot, id, t + period, t)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                return complete(RespondResult::Suppressed {
                    reason: format!(
                        "rate limited: {} already got template {:?} within {}",
                        plan.to,
                        plan.template,
                        humantime::format_duration(period)
                    ),
                })
                .await;
            }
            Err(e) => {
                self.release(id, stage, effect).await;
                return Err(StageError::from_port(
                    id,
                    stage,
                    "taking the reply rate-limit slot",
                    e,
                ));
            }
        }

        let reference = respond::reference_for(id, &self.config.respond.reference_prefix);
        let out = match respond::render(mail, &plan, &env.results, &self.config, &reference) {
            Ok(out) => out,
            Err(reason) => {
                self.release(id, stage, effect).await;
                return Err(StageError::Permanent {
                    id: id.clone(),
                    stage,
                    detail: format!("rendering template {:?}: {reason}", plan.template),
                });
            }
        };
        if let Err(e) = self.ports.sender.send(out).await {
            self.release(id, stage, effect).await;
            return Err(StageError::from_port(
                id,
                stage,
                &format!("sending auto-reply to {}", plan.to),
                e,
            ));
        }
        complete(RespondResult::Sent {
            to: plan.to,
            template: plan.template,
            reference,
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::embedded::memory::{MemoryState, memory_ports};
    use crate::model::{RawRef, Verdict};
    use crate::ports::PortResult;

    const CONFIG: &str = r#"
[mailroom]
domains = ["example.com"]

[[classify.rules]]
name = "support"
category = "support"
when = { recipient = "support@" }

[[route]]
name = "support"
when = { category = "support" }
actions = [{ forward = ["team@corp.example"] }]

[[respond.templates]]
name = "support"
category = "support"
subject = ""
body = "Thanks {{ sender_name }}, reference {{ reference }}."
"#;

    fn mail(n: u32, from: &str) -> Vec<u8> {
        format!("From: Ann <{from}>\r\nTo: support@example.com\r\nSubject: question {n}\r\nMessage-ID: <q{n}@x.example>\r\n\r\nHello, question {n}.\r\n").into_bytes()
    }

    /// A sender that fails its first `failures` sends, as a throttled SES would.
    #[derive(Default)]
    struct Flaky {
        failures: AtomicUsize,
        sent: Mutex<Vec<OutgoingMail>>,
    }

    #[async_trait]
    impl MailSender for Flaky {
        async fn send(&self, mail: OutgoingMail) -> PortResult<String> {
            if self.failures.load(Ordering::SeqCst) > 0 {
                self.failures.fetch_sub(1, Ordering::SeqCst);
                return Err(PortError::Retryable("Throttling: rate exceeded".into()));
            }
            self.sent.lock().unwrap().push(mail);
            Ok("ok".into())
        }
    }

    fn engine(sender: Arc<dyn MailSender>) -> (Engine, Arc<MemoryState>) {
        let (mut ports, _, state) = memory_ports();
        ports.sender = sender;
        (
            Engine::new(
                Arc::new(Config::from_toml(CONFIG, "t.toml").unwrap()),
                ports,
            ),
            state,
        )
    }

    fn env(raw: &[u8]) -> Envelope {
        Envelope::new(
            content_id(raw),
            RawRef {
                bucket: "t".into(),
                key: "k".into(),
            },
        )
    }

    #[tokio::test]
    async fn one_reply_per_sender_and_template_per_period() {
        let sender = Arc::new(Flaky::default());
        let (engine, _) = engine(sender.clone());
        let (a, b) = (
            mail(1, "ann@customer.example"),
            mail(2, "ann@customer.example"),
        );
        let first = engine.run_all(env(&a), &a).await.unwrap();
        assert!(matches!(
            first.envelope.results.respond,
            Some(RespondResult::Sent { .. })
        ));
        let second = engine.run_all(env(&b), &b).await.unwrap();
        match second.envelope.results.respond {
            Some(RespondResult::Suppressed { reason }) => {
                assert!(reason.starts_with("rate limited"), "{reason}")
            }
            other => panic!("expected a rate-limited reply, got {other:?}"),
        }
        // Two forwards (one per message) and one reply.
        assert_eq!(sender.sent.lock().unwrap().len(), 3);
        let c = mail(3, "bob@customer.example");
        let third = engine.run_all(env(&c), &c).await.unwrap();
        assert!(
            matches!(
                third.envelope.results.respond,
                Some(RespondResult::Sent { .. })
            ),
            "another sender gets a reply"
        );
    }

    #[tokio::test]
    async fn a_failed_send_is_retryable_and_the_retry_sends_exactly_once() {
        let sender = Arc::new(Flaky {
            failures: AtomicUsize::new(1),
            ..Default::default()
        });
        let (engine, state) = engine(sender.clone());
        let raw = mail(1, "ann@customer.example");
        let err = engine.run_all(env(&raw), &raw).await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert!(err.to_string().contains("Throttling"), "{err}");
        // The redelivery: the forward and the reply go out once each, and each stage is
        // recorded once.
        engine.run_all(env(&raw), &raw).await.unwrap();
        engine.run_all(env(&raw), &raw).await.unwrap();
        assert_eq!(sender.sent.lock().unwrap().len(), 2);
        assert_eq!(state.stage_records(&content_id(&raw)).len(), 4);
        assert_eq!(state.audit_records().len(), 4);
    }

    #[tokio::test]
    async fn an_effect_held_by_another_invocation_is_retried_not_repeated() {
        let sender = Arc::new(Flaky::default());
        let (engine, state) = engine(sender.clone());
        let raw = mail(1, "ann@customer.example");
        let id = content_id(&raw);
        // Another invocation claimed the forward a moment ago and has not finished.
        state
            .claim_effect(&id, "route/0/forward/0", EFFECT_LEASE, now())
            .await
            .unwrap();
        let err = engine.run_all(env(&raw), &raw).await.unwrap_err();
        assert!(
            err.is_retryable() && err.to_string().contains("another invocation"),
            "{err}"
        );
        assert!(sender.sent.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn unparseable_input_is_quarantined_with_its_reason() {
        let sender = Arc::new(Flaky::default());
        let (engine, _) = engine(sender);
        let raw = b"\x00\x01binary".to_vec();
        let out = engine.run_all(env(&raw), &raw).await.unwrap();
        assert_eq!(
            out.envelope.results.filter.as_ref().unwrap().verdict,
            Verdict::Quarantine
        );
        assert_eq!(
            out.envelope.results.route.as_ref().unwrap().actions,
            vec![Action::Quarantine]
        );
        assert!(out.parse_error.unwrap().contains("not an e-mail message"));
    }
}
