//! Runs stages against the ports: the one place where decisions become effects.
//!
//! Each stage decides in [`stages`] and returns its typed result with its audit entry;
//! [`effects`] carries out sends and deliveries once; [`failure`] is the failure path
//! (quarantine and audit) that the Lambda handler and `mailroom run` share. Stage records
//! and audit entries are conditional writes, so a duplicate delivery writes no second
//! transition.

pub mod effects;
pub mod failure;
pub mod release;
mod stages;
pub mod turns;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::classify::Classifier;
use crate::config::Config;
use crate::filter::Filter;
use crate::mail::{Mail, MailError, strip_mbox_from_line};
use crate::model::{AuditRecord, CLASSIFY_COPY_MAX, Envelope, HEADER_SECTION_MAX, MailCopy, Stage};
use crate::operate::MessageSummary;
use crate::ports::{
    Assistant, AuditLog, FeedbackLog, MailBytes, MailSender, MessageIndex, ObjectStore, PortError,
    QueueDelivery, RawMailSource, RecipientAllowList, StagePublisher, StateStore,
};
use crate::route::forward::ForwardPlan;
use crate::route::headers::HeaderEdit;

pub use effects::EFFECT_LEASE;
use effects::{Effects, Ran, Repeat, effect_key};
pub use stages::Audit;

/// What a stage decided, before its audit record is written; the route stage's rewritten
/// copies are still to be made.
struct Decided {
    audit: Audit,
    sender: Option<String>,
    deferred: Vec<Deferred>,
    /// The operators' summary, written once the route stage has decided.
    summary: Option<MessageSummary>,
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

/// The raw message at the end of a stage: borrowed when one parse serves all stages (local
/// runs), owned in an invocation, where the forwards then share it without a copy.
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

    /// The stage it happened in.
    pub fn stage(&self) -> Stage {
        match self {
            StageError::Retryable { stage, .. } | StageError::Permanent { stage, .. } => *stage,
        }
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
    pub index: Arc<dyn MessageIndex>,
    pub feedback: Arc<dyn FeedbackLog>,
    /// The recipients' own allow lists (a digest's "always allow").
    pub allow_list: Arc<dyn RecipientAllowList>,
    /// The language model of `[assist]` (called only when the config has one).
    pub assistant: Arc<dyn Assistant>,
}

/// The stages, their config and ports. Built once per process (per Lambda cold start, and
/// again when the config or a model changes).
pub struct Engine {
    config: Arc<Config>,
    filter: Filter,
    classifier: Classifier,
    ports: Ports,
    lease: Duration,
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
    crate::secret::hex(&Sha256::digest(raw)[..12])
}

/// What a stage hands the next one of the mail besides its reference, so that it reads no
/// raw mail: filter hands classify the copy without attachment contents, route hands
/// respond the header section. Nothing for mail that did not parse, or when it is too long.
fn hand_on(
    stage: Stage,
    raw: &[u8],
    parsed: &Result<Mail<'_>, MailError>,
) -> (Option<MailCopy>, Option<Vec<u8>>) {
    let Ok(mail) = parsed else {
        return (None, None);
    };
    match stage.next() {
        Some(Stage::Classify) => (
            mail.without_attachment_contents(CLASSIFY_COPY_MAX)
                .map(|copy| MailCopy {
                    size: mail.size(),
                    mail: copy,
                }),
            None,
        ),
        Some(Stage::Respond) => (None, header_section(raw)),
        _ => (None, None),
    }
}

/// The header section of `raw` (without an mbox `From ` line, with the blank line that ends
/// it), or `None` when it is longer than [`HEADER_SECTION_MAX`].
fn header_section(raw: &[u8]) -> Option<Vec<u8>> {
    let raw = strip_mbox_from_line(raw);
    let split = crate::route::headers::split(raw);
    let blank = [&b"\r\n"[..], b"\n"]
        .into_iter()
        .find(|end| split.rest.starts_with(end))
        .map_or(0, <[u8]>::len);
    let section = &raw[..split.headers.len() + blank];
    (section.len() <= HEADER_SECTION_MAX).then(|| section.to_vec())
}

/// Seconds since the epoch.
pub fn epoch_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Engine {
    /// The engine for a config, the filter and classifier built for it (with its models),
    /// and the ports to carry effects out through.
    pub fn new(
        config: Arc<Config>,
        filter: Filter,
        classifier: Classifier,
        ports: Ports,
    ) -> Engine {
        Engine {
            config,
            filter,
            classifier,
            ports,
            lease: EFFECT_LEASE,
        }
    }

    /// The engine with the rule-based filter and classifier only (no models).
    pub fn with_rules(config: Arc<Config>, ports: Ports) -> Engine {
        Engine::new(config, Filter::new(), Classifier::default(), ports)
    }

    /// How long an attempt holds a claimed effect ([`EFFECT_LEASE`] unless set).
    pub fn with_effect_lease(mut self, lease: Duration) -> Engine {
        self.lease = lease;
        self
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn ports(&self) -> &Ports {
        &self.ports
    }

    fn effects(&self) -> Effects<'_> {
        Effects {
            state: self.ports.state.as_ref(),
            lease: self.lease,
        }
    }

    /// Runs one stage on an envelope (one Lambda invocation's work for one record), then
    /// publishes the updated envelope to the next stage.
    /// Respond reads the header section route handed it, and classify the copy without
    /// attachment contents filter handed it, instead of the raw mail, when the envelope
    /// carries one.
    pub async fn run_stage(&self, stage: Stage, mut env: Envelope) -> Result<Envelope, StageError> {
        // Taken in every stage: each goes no further than its own stage's input.
        let (section, copy) = (env.header_section.take(), env.classify_copy.take());
        let (raw, size) =
            match (stage, section, copy) {
                (Stage::Respond, Some(headers), _) => (headers, None),
                (Stage::Classify, _, Some(copy)) => (copy.mail, Some(copy.size)),
                _ => (
                    self.ports.raw.get_raw(&env.raw).await.map_err(|e| {
                        StageError::from_port(&env.id, stage, "reading raw mail", e)
                    })?,
                    None,
                ),
            };
        let (decided, handed_on) = {
            let parsed = self.parse(&raw, size, &env);
            let decided = self
                .decide(stage, &mut env, &raw, parsed.as_ref(), None)
                .await?;
            (decided, hand_on(stage, &raw, &parsed))
        };
        // The parse (with any decoded attachments) is gone: forwards take the raw bytes.
        self.finish(stage, &mut env, decided, Raw::Owned(raw))
            .await?;
        (env.classify_copy, env.header_section) = handed_on;
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
    pub async fn run_all(&self, env: Envelope, raw: &[u8]) -> Result<Outcome, StageError> {
        self.run_all_in_turn(env, raw, &mut turns::AnyOrder).await
    }

    /// [`Engine::run_all`], waiting where `turns` says between stages (a local run of many
    /// messages at once).
    pub async fn run_all_in_turn(
        &self,
        mut env: Envelope,
        raw: &[u8],
        turns: &mut dyn turns::Turns,
    ) -> Result<Outcome, StageError> {
        let parsed = self.parse(raw, None, &env);
        for stage in Stage::ALL {
            // Worked out once: they say whether classify reads the index, and it reads by them.
            let clues = match (stage, &parsed) {
                (Stage::Classify, Ok(m)) => Some(crate::conversation::clues(
                    m,
                    &self.config.respond.reference_prefix,
                )),
                _ => None,
            };
            let follows_up = clues.as_ref().is_some_and(|c| !c.is_empty());
            turns.before(stage, follows_up).await;
            let decided = self
                .decide(stage, &mut env, raw, parsed.as_ref(), clues)
                .await?;
            self.finish(stage, &mut env, decided, Raw::Borrowed(raw))
                .await?;
            turns.after(stage);
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

    /// Parses unless the message is over the size limit (then it is never parsed); `size`
    /// is the message's when `raw` is a copy of it.
    fn parse<'r>(
        &self,
        raw: &'r [u8],
        size: Option<u64>,
        env: &Envelope,
    ) -> Result<Mail<'r>, MailError> {
        let max = self.config.filter.max_message_size.0;
        let size_of_message = size.unwrap_or(raw.len() as u64);
        if size_of_message > max {
            return Err(MailError::NotMail(format!(
                "oversize: {size_of_message} bytes"
            )));
        }
        match size {
            Some(size) => Mail::parse_copy(raw, env.receipt.as_ref(), size),
            None => Mail::parse_with_receipt(raw, env.receipt.as_ref()),
        }
    }

    /// Runs a stage's decision and its effects, except the route stage's rewritten copies,
    /// which [`Engine::finish`] makes once the parse can be dropped.
    /// `clues`: classify's conversation clues when the caller has them already.
    async fn decide(
        &self,
        stage: Stage,
        env: &mut Envelope,
        raw: &[u8],
        mail: Result<&Mail<'_>, &MailError>,
        clues: Option<crate::conversation::Clues>,
    ) -> Result<Decided, StageError> {
        let sender = mail.ok().and_then(|m| m.from.clone());
        let mut summary = None;
        let (audit, deferred) = match stage {
            Stage::Filter => {
                let mut s = self.filter_stage(raw, mail, &[]);
                if let Ok(m) = mail
                    && let Some(allowing) = self.recipients_allowing(&env.id, m, &s.result).await?
                {
                    s = self.filter_stage(raw, mail, &allowing);
                }
                if let (Ok(m), Some(assist)) = (mail, &self.config.assist) {
                    env.assist = self.assist_spam(m, assist, &mut s).await;
                }
                env.results.filter = Some(s.result);
                (s.audit, Vec::new())
            }
            Stage::Classify => {
                let (s, conversation, assisted) = self.classify_stage(env, mail, clues).await?;
                env.results.classify = Some(s.result);
                env.conversation = conversation;
                env.assist = assisted;
                (s.audit, Vec::new())
            }
            Stage::Route => {
                let (s, deferred) = self.route_stage(env, raw, mail).await?;
                let quarantined = s
                    .result
                    .actions
                    .contains(&crate::model::Action::Quarantine)
                    .then(|| format!("{}{}.eml", self.config.routing.quarantine_prefix, env.id));
                env.results.route = Some(s.result);
                let mut row =
                    MessageSummary::of(env, mail.ok(), epoch_secs(SystemTime::now()), quarantined);
                row.reference = Some(crate::respond::reference_for(
                    &env.id,
                    &self.config.respond.reference_prefix,
                ));
                summary = Some(row);
                (s.audit, deferred)
            }
            Stage::Respond => {
                let s = self.respond_stage(env, mail).await?;
                env.results.respond = Some(s.result);
                (s.audit, Vec::new())
            }
        };
        Ok(Decided {
            audit,
            sender,
            deferred,
            summary,
        })
    }

    /// Makes the pending rewritten copies, then writes the audit record and the stage
    /// transition; for an operator's `event` (a release), the audit record of that event
    /// instead, the stage's own record staying as it was.
    async fn finish(
        &self,
        stage: Stage,
        env: &mut Envelope,
        mut decided: Decided,
        raw: Raw<'_>,
    ) -> Result<AuditRecord, StageError> {
        // A release's route and respond are audited as the release, with who released it.
        let event = env.released_by.as_ref().map(|_| "release");
        if let Some(by) = &env.released_by {
            decided.audit.decided_by.push(format!("operator:{by}"));
            // A force the operator named to release it stands beside their name.
            if let Some(force) = &env.release_force {
                decided.audit.decided_by.push(force.clone());
            }
        }
        let mut deferred = std::mem::take(&mut decided.deferred);
        // Stores first, each a rewritten copy written and released in turn; then the
        // forwards, which share one buffer of the message (an owned message becomes it
        // without a copy), each adding only its header section.
        deferred.sort_by_key(|d| matches!(d, Deferred::Forward { .. }));
        let mut raw = Some(raw);
        let mut shared: Option<Bytes> = None;
        for action in deferred {
            let rewritten = match (&action, &raw) {
                _ if !action.rewrites() => MailBytes::default(),
                (Deferred::Store { .. }, Some(raw)) => action
                    .edit()
                    .apply(strip_mbox_from_line(raw.bytes()))
                    .into(),
                _ => {
                    let bytes = shared.get_or_insert_with(|| match raw.take() {
                        Some(Raw::Owned(bytes)) => Bytes::from(bytes),
                        Some(Raw::Borrowed(bytes)) => Bytes::copy_from_slice(bytes),
                        None => Bytes::new(),
                    });
                    action.edit().apply_shared(bytes)
                }
            };
            let (index, note) = self.carry_out(&env.id, action, rewritten).await?;
            decided.audit.reasons[index] = note;
        }
        drop((raw, shared));
        if let Some(summary) = &decided.summary {
            self.ports.index.record(summary).await.map_err(|e| {
                StageError::from_port(&env.id, stage, "recording the message summary", e)
            })?;
        }
        let mut record = decided.audit.record(&env.id, stage, decided.sender);
        record.event = event.map(str::to_string);
        // The audit record is the stage's record too: one conditional write says what the
        // stage decided and that it finished, and a redelivery finds it there.
        self.ports
            .audit
            .append(&record)
            .await
            .map_err(|e| StageError::from_port(&env.id, stage, "appending audit record", e))?;
        Ok(record)
    }

    /// Sends a deferred forward or writes a deferred store, given the rewritten message.
    async fn carry_out(
        &self,
        id: &str,
        action: Deferred,
        rewritten: MailBytes,
    ) -> Result<(usize, String), StageError> {
        match action {
            Deferred::Forward { index, to, plan } => {
                let mut sent = Vec::new();
                for out in plan.messages(rewritten) {
                    let key = effect_key(Stage::Route, "forward", &out.to.join(","));
                    let to = out.to.join(" ");
                    let sender = &self.ports.sender;
                    let ran = self
                        .effects()
                        .once(id, Stage::Route, &key, Repeat::AtLeastOnce, || async move {
                            sender
                                .send(out)
                                .await
                                .map(|provider_id| format!("sent {provider_id}"))
                                .map_err(|e| port_context(e, &format!("sending to {to}")))
                        })
                        .await?;
                    sent.push(match ran {
                        Ran::Before(note) | Ran::Now(note) | Ran::Unconfirmed(note) => note,
                    });
                }
                Ok((
                    index,
                    format!("forwarded to {}: {}", to.join(" "), sent.join(" ")),
                ))
            }
            Deferred::Store { index, key, .. } => {
                self.ports
                    .objects
                    .put_object(&key, rewritten.into_vec())
                    .await
                    .map_err(|e| {
                        StageError::from_port(id, Stage::Route, &format!("storing under {key}"), e)
                    })?;
                Ok((index, format!("stored as {key}")))
            }
        }
    }
}

/// The same error, with what was being done in front.
fn port_context(e: PortError, what: &str) -> PortError {
    match e {
        PortError::Retryable(m) => PortError::Retryable(format!("{what}: {m}")),
        PortError::Unknown(m) => PortError::Unknown(format!("{what}: {m}")),
        PortError::Permanent(m) => PortError::Permanent(format!("{what}: {m}")),
    }
}

/// The audit record a stage writes.
impl Audit {
    fn record(self, id: &str, stage: Stage, sender: Option<String>) -> AuditRecord {
        AuditRecord {
            event: None,
            id: id.to_string(),
            stage,
            decision: self.decision,
            reasons: self.reasons,
            decided_by: self.decided_by,
            sender,
            at: epoch_secs(SystemTime::now()),
        }
    }
}

#[cfg(test)]
mod assist_tests;
#[cfg(test)]
mod conversation_tests;

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::embedded::memory::{MemoryState, MemoryWorld, memory_ports};
    use crate::model::{Action, DecidedBy, RawRef, RespondResult, Verdict};
    use crate::ports::{OutgoingMail, PortResult};

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

    /// A message as SES stores it from an authenticated sender (SPF passed for its domain).
    fn mail(n: u32, from: &str) -> Vec<u8> {
        let domain = from.rsplit_once('@').map_or(from, |(_, d)| d);
        format!("Return-Path: <{from}>\r\nAuthentication-Results: amazonses.com; spf=pass smtp.mailfrom={from}; dmarc=pass header.from={domain}\r\nFrom: Ann <{from}>\r\nTo: support@example.com\r\nSubject: question {n}\r\nMessage-ID: <q{n}@x.example>\r\n\r\nHello, question {n}.\r\n").into_bytes()
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
            Engine::with_rules(
                Arc::new(Config::from_toml(CONFIG, "t.toml").unwrap()),
                ports,
            ),
            state,
        )
    }

    /// The rules-only engine of [`CONFIG`] on the memory ports, with their world and state.
    fn memory_engine() -> (Engine, Arc<MemoryWorld>, Arc<MemoryState>) {
        memory_engine_of(CONFIG)
    }

    /// The same with the config `toml`.
    fn memory_engine_of(toml: &str) -> (Engine, Arc<MemoryWorld>, Arc<MemoryState>) {
        let (ports, world, state) = memory_ports();
        let config = Arc::new(Config::from_toml(toml, "t.toml").unwrap());
        (Engine::with_rules(config, ports), world, state)
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
        assert_eq!(state.audit_records().len(), 4);
    }

    /// A sender that refuses every message for good, as SES refuses content.
    struct Refusing;

    #[async_trait]
    impl MailSender for Refusing {
        async fn send(&self, _mail: OutgoingMail) -> PortResult<String> {
            Err(PortError::Permanent(
                "MessageRejected: content refused".into(),
            ))
        }
    }

    #[tokio::test]
    async fn a_reply_that_can_never_be_sent_frees_its_rate_limit_slot() {
        let (mut ports, _, state) = memory_ports();
        ports.sender = Arc::new(Refusing);
        let config = Config::from_toml(&CONFIG.replace("[[route]]\nname = \"support\"\nwhen = { category = \"support\" }\nactions = [{ forward = [\"team@corp.example\"] }]\n", "[[route]]\nname = \"support\"\nwhen = { category = \"support\" }\nactions = [\"drop\"]\n"), "t.toml").unwrap();
        let engine = Engine::with_rules(Arc::new(config), ports);
        let raw = mail(1, "ann@customer.example");
        let err = engine.run_all(env(&raw), &raw).await.unwrap_err();
        assert!(
            !err.is_retryable() && err.stage() == Stage::Respond,
            "{err}"
        );
        // The slot was freed: another message from the sender may take it. It names the
        // sender by the keyed hash only.
        let now = SystemTime::now();
        let slot = |key: &[u8]| {
            format!(
                "reply#{}#support",
                crate::operate::subject_hash(key, "ann@customer.example")
            )
        };
        let free = state
            .acquire_rate_limit(
                &slot(&state.subject_key().await.unwrap()),
                "another message",
                now + Duration::from_secs(60),
                now,
            )
            .await
            .unwrap();
        assert!(
            free,
            "the slot is still held by a reply that was never sent"
        );

        // A passing failure keeps it: the retry sends the reply.
        let (mut ports, _, state) = memory_ports();
        ports.sender = Arc::new(Flaky {
            failures: AtomicUsize::new(1),
            ..Default::default()
        });
        let engine = Engine::with_rules(engine.config.clone(), ports);
        assert!(
            engine
                .run_all(env(&raw), &raw)
                .await
                .unwrap_err()
                .is_retryable()
        );
        let held = !state
            .acquire_rate_limit(
                &slot(&state.subject_key().await.unwrap()),
                "another message",
                now + Duration::from_secs(60),
                now,
            )
            .await
            .unwrap();
        assert!(held, "a retryable failure must keep the slot for its retry");
    }

    #[tokio::test]
    async fn an_effect_held_by_another_invocation_is_retried_not_repeated() {
        let sender = Arc::new(Flaky::default());
        let (engine, state) = engine(sender.clone());
        let raw = mail(1, "ann@customer.example");
        let id = content_id(&raw);
        // Another invocation claimed the forward a moment ago and has not finished.
        state
            .claim_effect(
                &id,
                "route/forward/team@corp.example",
                "another",
                EFFECT_LEASE,
                SystemTime::now(),
            )
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
    async fn a_recipients_allow_list_entry_lifts_spam_for_that_recipient_only() {
        use crate::ports::{AllowedSender, RecipientAllowList};
        let (engine, _, state) = memory_engine();
        state
            .allow_sender(&AllowedSender {
                recipient: "ann@example.com".into(),
                sender: "promo@prizes.test".into(),
                via: "m0".into(),
                at: 1,
            })
            .await
            .unwrap();
        let pass = "spf=pass smtp.mailfrom=prizes.test; dkim=pass; dmarc=pass";
        let mail = |to: &str, auth: &str, virus: &str, body: &str| {
            format!(
                "X-SES-Spam-Verdict: FAIL\r\nX-SES-Virus-Verdict: {virus}\r\n\
                 Authentication-Results: amazonses.com; {auth}\r\n\
                 From: Prize Desk <promo@prizes.test>\r\nTo: {to}\r\nSubject: an offer\r\n{body}"
            )
            .into_bytes()
        };
        let plain = "\r\nYou won.\r\n";
        let exe = "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
                   --b\r\nContent-Type: text/plain\r\n\r\nYou won.\r\n\
                   --b\r\nContent-Type: application/octet-stream\r\n\
                   Content-Disposition: attachment; filename=\"prize.exe\"\r\n\
                   Content-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAA=\r\n--b--\r\n";
        let run = |raw: Vec<u8>| {
            let engine = &engine;
            async move {
                let out = engine.run_all(env(&raw), &raw).await.unwrap();
                let f = out.envelope.results.filter.unwrap();
                let tags: Vec<String> = f.reasons.iter().map(|r| r.tag.clone()).collect();
                (f.verdict, tags)
            }
        };
        // To ann, who allowed the sender: accepted as an allow-listed sender's mail.
        let (verdict, tags) = run(mail("ann@example.com", pass, "PASS", plain)).await;
        assert_eq!(verdict, Verdict::Accept, "{tags:?}");
        assert!(
            tags.contains(&"ALLOWED_BY_RECIPIENT".to_string()),
            "{tags:?}"
        );
        // To bob, or to ann and bob: bob did not allow it.
        for to in ["bob@example.com", "ann@example.com, bob@example.com"] {
            let (verdict, tags) = run(mail(to, pass, "PASS", plain)).await;
            assert_eq!(verdict, Verdict::Quarantine, "{to}: {tags:?}");
            assert!(
                !tags.contains(&"ALLOWED_BY_RECIPIENT".to_string()),
                "{tags:?}"
            );
        }
        // A forged From, a virus or an executable: the entry lifts none of them.
        let (verdict, tags) = run(mail(
            "ann@example.com",
            "spf=pass; dmarc=fail",
            "PASS",
            plain,
        ))
        .await;
        assert_eq!(verdict, Verdict::Quarantine, "{tags:?}");
        assert!(
            tags.contains(&"ALLOWLIST_IGNORED_AUTH_FAIL".to_string()),
            "{tags:?}"
        );
        let (verdict, tags) = run(mail("ann@example.com", pass, "FAIL", plain)).await;
        assert_eq!(verdict, Verdict::Reject, "{tags:?}");
        let (verdict, tags) = run(mail("ann@example.com", pass, "PASS", exe)).await;
        assert_eq!(verdict, Verdict::Quarantine, "{tags:?}");
        assert!(
            tags.iter()
                .any(|t| t == "BLOCKED_EXTENSION" || t == "EXECUTABLE"),
            "{tags:?}"
        );
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

    /// The reply's lines, without the two that differ from one send to the next (its `Date`
    /// and the time-salted part of its `Message-ID`).
    fn reply_lines(mail: &OutgoingMail) -> Vec<String> {
        String::from_utf8(mail.raw.to_vec())
            .expect("replies are UTF-8")
            .lines()
            .filter(|l| !l.starts_with("Date:") && !l.starts_with("Message-ID:"))
            .map(str::to_string)
            .collect()
    }

    #[tokio::test]
    async fn respond_reads_the_header_section_route_hands_it_not_the_raw_mail() {
        let (engine, world, _) = memory_engine();
        // An mbox line first, which the section leaves out like every parse does.
        let mut raw = b"From ann@customer.example Mon Dec  7 08:00:00 2026\n".to_vec();
        raw.extend(mail(1, "ann@customer.example"));
        let mut env = env(&raw);
        world.raw.lock().unwrap().insert("k".into(), raw.clone());
        for stage in [Stage::Filter, Stage::Classify, Stage::Route] {
            engine.run_stage(stage, env).await.unwrap();
            let (next, published) = world.published.lock().unwrap().last().cloned().unwrap();
            assert_eq!(Some(next), stage.next());
            assert_eq!(
                published.header_section.is_some(),
                stage == Stage::Route,
                "{stage}"
            );
            // Through the wire format, as SQS carries it.
            env = serde_json::from_str(&serde_json::to_string(&published).unwrap()).unwrap();
        }
        let section = env.header_section.clone().unwrap();
        assert!(section.starts_with(b"Return-Path: <ann@customer.example>\r\n"));
        assert!(section.ends_with(b"<q1@x.example>\r\n\r\n"));
        // The raw mail is gone: respond runs on what the envelope carries.
        world.raw.lock().unwrap().clear();
        let done = engine.run_stage(Stage::Respond, env).await.unwrap();
        assert!(done.header_section.is_none());
        let reply = world.sent.lock().unwrap().last().cloned().unwrap();
        assert_eq!(reply.to, vec!["ann@customer.example".to_string()]);

        // The same decision and reply as a run that parsed the whole message.
        let (engine, whole, _) = memory_engine();
        let out = engine.run_all(self::env(&raw), &raw).await.unwrap();
        assert!(matches!(
            out.envelope.results.respond,
            Some(RespondResult::Sent { .. })
        ));
        assert_eq!(done.results.respond, out.envelope.results.respond);
        let same = whole.sent.lock().unwrap().last().cloned().unwrap();
        assert_eq!(reply_lines(&reply), reply_lines(&same));
        assert!(
            reply_lines(&reply).contains(&"In-Reply-To: <q1@x.example>".to_string()),
            "{:?}",
            reply_lines(&reply)
        );
    }

    /// A message with a 300 KB attachment, which a rule on its size, attachment and
    /// headers decides.
    fn invoice(n: u32) -> Vec<u8> {
        let mut raw = mail(n, "ann@customer.example");
        let body = raw.split_off(raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap());
        raw.extend_from_slice(b"\r\nX-Account: A-17\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n");
        raw.extend_from_slice(&body);
        raw.extend_from_slice(b"--b\r\nContent-Type: application/pdf; name=invoice.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n");
        for _ in 0..5_000 {
            raw.extend_from_slice(
                b"JVBERi0xLjQKJeLjz9MKJeLjz9MKJeLjz9MKJeLjz9MKJeLjz9MKJeLjz9MK\r\n",
            );
        }
        raw.extend_from_slice(b"--b--\r\n");
        raw
    }

    const SIZED: &str = r#"
[mailroom]
domains = ["example.com"]

[[classify.rules]]
name = "large-account-invoice"
category = "billing"
when = { has_attachment = true, size_min = "200KB", header = { "X-Account" = "^A-" }, body = "question" }
"#;

    #[tokio::test]
    async fn classify_reads_the_copy_filter_hands_it_not_the_raw_mail() {
        let (engine, world, _) = memory_engine_of(SIZED);
        let raw = invoice(3);
        assert!(raw.len() > 300_000);
        world.raw.lock().unwrap().insert("k".into(), raw.clone());
        let env = engine.run_stage(Stage::Filter, env(&raw)).await.unwrap();
        let (next, published) = world.published.lock().unwrap().last().cloned().unwrap();
        assert_eq!(next, Stage::Classify);
        let copy = published
            .classify_copy
            .clone()
            .expect("filter hands classify a copy");
        assert_eq!(copy.size, raw.len() as u64);
        assert!(copy.mail.len() < 1_000, "{} bytes", copy.mail.len());
        assert_eq!(published, env);
        // Through the wire format, as SQS carries it; then without the raw mail.
        let env: Envelope = serde_json::from_str(&serde_json::to_string(&env).unwrap()).unwrap();
        assert_eq!(env.classify_copy, Some(copy));
        world.raw.lock().unwrap().clear();
        let done = engine.run_stage(Stage::Classify, env).await.unwrap();
        assert!(
            done.classify_copy.is_none(),
            "it goes no further than classify"
        );
        let classify = done.results.classify.clone().unwrap();
        assert_eq!(classify.category, "billing");
        assert_eq!(
            classify.category_by,
            DecidedBy::Rule("large-account-invoice".into())
        );

        // The same classification as a run that parsed the whole message.
        let (whole, _, _) = memory_engine_of(SIZED);
        let out = whole.run_all(self::env(&raw), &raw).await.unwrap();
        assert_eq!(out.envelope.results.classify, Some(classify));
        // Route needs the bytes, and reads them: without them it fails.
        let e = engine.run_stage(Stage::Route, done).await.unwrap_err();
        assert!(e.to_string().contains("reading raw mail"), "{e}");
    }

    #[tokio::test]
    async fn the_envelope_with_the_longest_copy_fits_one_sqs_chunk() {
        let (engine, world, _) = memory_engine();
        // A text body that makes the copy as long as it may be, 50 envelope recipients.
        let mut raw = mail(5, "ann@customer.example");
        let words = "please see the attached statement ".repeat(CLASSIFY_COPY_MAX / 34);
        raw.extend_from_slice(words.as_bytes());
        raw.truncate(CLASSIFY_COPY_MAX);
        let mut env = env(&raw);
        env.receipt = Some(crate::model::Receipt {
            recipients: (0..50)
                .map(|i| format!("a-rather-long-recipient-name-{i}@support.example.com"))
                .collect(),
            ..Default::default()
        });
        world.raw.lock().unwrap().insert("k".into(), raw.clone());
        let env = engine.run_stage(Stage::Filter, env).await.unwrap();
        assert_eq!(
            env.classify_copy.as_ref().unwrap().mail.len(),
            CLASSIFY_COPY_MAX
        );
        let wire = serde_json::to_string(&env).unwrap();
        assert!(wire.len() <= 64 * 1024, "{} bytes", wire.len());
        // One byte more, and classify reads the raw mail instead.
        raw.push(b'.');
        world.raw.lock().unwrap().insert("k".into(), raw.clone());
        let env = engine
            .run_stage(Stage::Filter, self::env(&raw))
            .await
            .unwrap();
        assert!(env.classify_copy.is_none());
    }

    #[tokio::test]
    async fn classify_reads_the_raw_mail_when_the_envelope_has_no_copy() {
        // An envelope from a filter that predates the copy, or whose copy was too long.
        let (engine, world, _) = memory_engine();
        let raw = mail(4, "bob@customer.example");
        world.raw.lock().unwrap().insert("k".into(), raw.clone());
        let mut env = engine.run_stage(Stage::Filter, env(&raw)).await.unwrap();
        env.classify_copy = None;
        let done = engine
            .run_stage(Stage::Classify, env.clone())
            .await
            .unwrap();
        assert_eq!(done.results.classify.unwrap().category, "support");
        world.raw.lock().unwrap().clear();
        let e = engine.run_stage(Stage::Classify, env).await.unwrap_err();
        assert!(e.to_string().contains("reading raw mail"), "{e}");
        // Mail that did not parse gets no copy.
        let junk = b"\x00\x01binary".to_vec();
        world.raw.lock().unwrap().insert("k".into(), junk.clone());
        let env = engine
            .run_stage(Stage::Filter, self::env(&junk))
            .await
            .unwrap();
        assert!(env.classify_copy.is_none());
    }

    #[tokio::test]
    async fn respond_reads_the_raw_mail_when_the_envelope_has_no_section() {
        // An envelope from a route that predates the section, or whose section was too long.
        let (engine, world, _) = memory_engine();
        let raw = mail(2, "bob@customer.example");
        world.raw.lock().unwrap().insert("k".into(), raw.clone());
        let mut env = env(&raw);
        for stage in [Stage::Filter, Stage::Classify, Stage::Route] {
            env = engine.run_stage(stage, env).await.unwrap();
        }
        env.header_section = None;
        let done = engine.run_stage(Stage::Respond, env.clone()).await.unwrap();
        assert!(matches!(
            done.results.respond,
            Some(RespondResult::Sent { .. })
        ));
        // Without the section and without the raw mail, respond cannot guess: it fails.
        world.raw.lock().unwrap().clear();
        let e = engine.run_stage(Stage::Respond, env).await.unwrap_err();
        assert!(e.to_string().contains("reading raw mail"), "{e}");
    }

    #[test]
    fn the_header_section_ends_at_the_blank_line_and_has_a_cap() {
        assert_eq!(
            header_section(b"From: a@x\nSubject: s\n\nbody\n").as_deref(),
            Some(&b"From: a@x\nSubject: s\n\n"[..])
        );
        assert_eq!(
            header_section(b"From b Mon\nFrom: a@x\r\n\r\nbody").as_deref(),
            Some(&b"From: a@x\r\n\r\n"[..])
        );
        assert_eq!(
            header_section(b"From: a@x\nSubject: only").as_deref(),
            Some(&b"From: a@x\nSubject: only"[..])
        );
        let long = format!(
            "From: a@x\nX-Pad: {}\n\nbody",
            "p".repeat(HEADER_SECTION_MAX)
        );
        assert_eq!(header_section(long.as_bytes()), None);
        // 8-bit bytes survive the envelope's JSON.
        let mut env = env(b"x");
        env.header_section = Some(b"Subject: \xe9t\xe9\r\n\r\n".to_vec());
        let back: Envelope = serde_json::from_str(&serde_json::to_string(&env).unwrap()).unwrap();
        assert_eq!(back.header_section, env.header_section);
    }
}
