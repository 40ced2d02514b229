//! What each stage decides, as its typed result with its audit entry. The route stage also
//! carries out what it can while the message is parsed (deliveries, untagged stores,
//! quarantine copies) and plans the rewritten copies; the respond stage sends its reply.

use std::time::SystemTime;

use super::effects::{Ran, Repeat, UNCONFIRMED, effect_key};
use super::{Deferred, Engine, StageError, port_context};
use crate::classify::Classifier;
use crate::config::STORE_ROOT;
use crate::config::{AssistConfig, AssistTask};
use crate::conversation::{self, Clues, Found};
use crate::filter;
use crate::filter::checks::sender_lists::MAX_ALLOW_RECIPIENTS;
use crate::mail::{Mail, MailError};
use crate::model::{
    Action, Assisted, ClassifyResult, Conversation, DecidedBy, Envelope, FilterResult,
    RespondResult, RouteResult, Stage, Verdict,
};
use crate::ports::PortError;
use crate::route::forward::ForwardPlan;
use crate::route::headers::HeaderEdit;
use crate::{respond, route};

/// A stage's audit entry before it is written: the decision, the reasons (one note per
/// route action), and the rules or models that decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Audit {
    pub decision: String,
    pub reasons: Vec<String>,
    pub decided_by: Vec<String>,
}

/// A stage's typed result and the audit entry that goes with it.
pub(super) struct Staged<R> {
    pub result: R,
    pub audit: Audit,
}

enum Executed {
    Done(String),
    Later(Deferred),
}

impl Engine {
    /// The filter's decision; `allowing` are the message's recipients whose own allow list
    /// holds its sender (see [`Engine::recipients_allowing`]).
    pub(super) fn filter_stage(
        &self,
        raw: &[u8],
        mail: Result<&Mail<'_>, &MailError>,
        allowing: &[String],
    ) -> Staged<FilterResult> {
        let result = match mail {
            Ok(mail) => self.filter.run_allowing(mail, &self.config, allowing),
            Err(_) if raw.len() as u64 > self.config.filter.max_message_size.0 => {
                filter::oversize(raw.len() as u64, &self.config)
            }
            Err(MailError::Limit(detail)) => filter::scan_limit(detail),
            Err(e) => filter::unparseable(&e.to_string()),
        };
        let audit = Audit {
            decision: result.verdict.as_str().to_string(),
            reasons: result
                .reasons
                .iter()
                .map(|r| format!("{}: {}", r.tag, r.detail))
                .collect(),
            decided_by: vec![format!("scorer:{}", result.scorer)],
        };
        Staged { result, audit }
    }

    /// The message's recipients that allowed its sender in their own allow list (a
    /// digest's "always allow"), when that can change the filter's decision: one lookup,
    /// only for mail the filter would otherwise hold or reject, that has a sender and at
    /// most [`MAX_ALLOW_RECIPIENTS`] recipients, and that no `allow_senders` entry (or
    /// `block_senders` entry) decided already. `None` unless every recipient allowed the
    /// sender: the filter then runs again with them. A failed lookup fails the stage (the
    /// message is retried), so an entry is never ignored for a passing fault.
    pub(super) async fn recipients_allowing(
        &self,
        id: &str,
        mail: &Mail<'_>,
        first: &FilterResult,
    ) -> Result<Option<Vec<String>>, StageError> {
        let decided = |tag: &str| first.reasons.iter().any(|r| r.tag == tag);
        if first.verdict == Verdict::Accept
            || decided("ALLOWED_SENDER")
            || decided("BLOCKED_SENDER")
            || mail.recipients.is_empty()
            || mail.recipients.len() > MAX_ALLOW_RECIPIENTS
        {
            return Ok(None);
        }
        let Some(from) = mail.from.as_deref() else {
            return Ok(None);
        };
        let allowing = self
            .ports
            .allow_list
            .allowing(from, &mail.recipients)
            .await
            .map_err(|e| {
                StageError::from_port(id, Stage::Filter, "reading the recipients' allow lists", e)
            })?;
        Ok(mail
            .recipients
            .iter()
            .all(|r| allowing.contains(r))
            .then_some(allowing))
    }

    /// The classification, and the conversation the message follows up when it is a
    /// follow-up (looked up in the message index; a failed lookup fails the stage, so the
    /// message is retried rather than classified as new for a passing fault).
    /// `clues` are the message's conversation clues when the caller has worked them out.
    pub(super) async fn classify_stage(
        &self,
        env: &Envelope,
        mail: Result<&Mail<'_>, &MailError>,
        clues: Option<Clues>,
    ) -> Result<
        (
            Staged<ClassifyResult>,
            Option<Conversation>,
            Option<Assisted>,
        ),
        StageError,
    > {
        let filter = require_filter(env, Stage::Classify)?;
        let (mut result, found) = match mail {
            Ok(mail) => {
                let clues = clues.unwrap_or_else(|| {
                    conversation::clues(mail, &self.config.respond.reference_prefix)
                });
                let found = conversation::find(self.ports.index.as_ref(), &env.id, mail, &clues)
                    .await
                    .map_err(|e| {
                        StageError::from_port(
                            &env.id,
                            Stage::Classify,
                            "looking up the conversation it follows",
                            e,
                        )
                    })?;
                let result =
                    self.classifier
                        .run_in(mail, filter, &self.config, found.conversation.as_ref());
                (result, found)
            }
            Err(_) => (Classifier::unparsed(&self.config), Found::default()),
        };
        let mut reasons: Vec<String> = result
            .language
            .iter()
            .map(|l| format!("language={l}"))
            .collect();
        if let Some(c) = &found.conversation {
            reasons.push(format!(
                "follows up {} in conversation {} (by {})",
                c.follows, c.id, c.by
            ));
        }
        reasons.extend(found.notes);
        let assisted = match (mail, &self.config.assist) {
            (Ok(mail), Some(assist)) => Some(
                self.assist(env.assist.clone(), mail, assist, &mut result, &mut reasons)
                    .await,
            ),
            _ => None,
        };
        let audit = Audit {
            decision: format!(
                "category={} priority={}",
                result.category,
                result.priority.as_str()
            ),
            reasons,
            decided_by: vec![
                result.category_by.to_string(),
                result.priority_by.to_string(),
            ],
        };
        Ok((Staged { result, audit }, found.conversation, assisted))
    }

    /// The spam task: for accepted mail whose P(spam) lies in the band, a second opinion
    /// that can only hold the message (quarantine it with `ASSIST_SPAM`), never pass one.
    pub(super) async fn assist_spam(
        &self,
        mail: &Mail<'_>,
        assist: &AssistConfig,
        staged: &mut Staged<FilterResult>,
    ) -> Option<Assisted> {
        let [low, high] = assist.spam_band;
        let p = staged.result.spam_probability?;
        if !assist.does(AssistTask::Spam)
            || staged.result.verdict != Verdict::Accept
            || !(low..=high).contains(&p)
        {
            return None;
        }
        let request = crate::assist::spam_request(mail, assist);
        let asked = crate::assist::call(
            self.ports.assistant.as_ref(),
            self.ports.state.as_ref(),
            assist,
            &request,
            SystemTime::now(),
        )
        .await;
        let outcome = match asked.map(|answer| crate::assist::parse_spam(&answer)) {
            Ok(Ok(true)) => {
                let detail = format!(
                    "the assist model {} judged it spam (P(spam) = {p:.4}, in the band [{low}, {high}])",
                    assist.model
                );
                staged.audit.reasons.push(format!("ASSIST_SPAM: {detail}"));
                staged.audit.decision = Verdict::Quarantine.as_str().to_string();
                staged
                    .audit
                    .decided_by
                    .push(format!("assist:{}", assist.model));
                staged.result.verdict = Verdict::Quarantine;
                staged.result.reasons.push(crate::model::Reason {
                    check: "assist".into(),
                    tag: "ASSIST_SPAM".into(),
                    detail,
                    score: 0.0,
                });
                "decided"
            }
            Ok(Ok(false)) => {
                staged.audit.reasons.push(format!(
                    "assist: not spam (P(spam) = {p:.4}): verdict unchanged"
                ));
                "agreed"
            }
            Ok(Err(why)) => {
                staged
                    .audit
                    .reasons
                    .push(format!("assist: answer ignored ({why})"));
                "invalid"
            }
            Err((outcome, why)) => {
                staged
                    .audit
                    .reasons
                    .push(format!("assist spam: {outcome}: {why}"));
                outcome
            }
        };
        let mut done = Assisted {
            model: assist.model.clone(),
            ..Assisted::default()
        };
        done.outcomes.insert("spam".into(), outcome.into());
        Some(done)
    }

    /// The language model's tasks for a parsed message: the classification when no rule
    /// (nor its conversation) decided and the category's confidence is below the
    /// threshold, then a draft for the categories that opt in. Each outcome is audited;
    /// none fails the stage.
    async fn assist(
        &self,
        env_assist: Option<Assisted>,
        mail: &Mail<'_>,
        assist: &AssistConfig,
        result: &mut ClassifyResult,
        reasons: &mut Vec<String>,
    ) -> Assisted {
        // The filter stage's spam outcome, when there was one, travels with the envelope.
        let mut done = env_assist.unwrap_or_else(|| Assisted {
            model: assist.model.clone(),
            ..Assisted::default()
        });
        let decided =
            |by: &DecidedBy| matches!(by, DecidedBy::Rule(_) | DecidedBy::Conversation(_));
        let assistant = self.ports.assistant.as_ref();
        let state = self.ports.state.as_ref();
        let now = SystemTime::now();
        if assist.does(AssistTask::Classify)
            && !decided(&result.category_by)
            && result.category_confidence < assist.confidence_below
        {
            let request = crate::assist::classify_request(mail, &self.config, assist);
            let outcome = match crate::assist::call(assistant, state, assist, &request, now).await {
                Ok(answer) => {
                    let allowed = crate::assist::allowed_categories(&self.config);
                    match crate::assist::parse_labels(&answer, &allowed) {
                        Ok((category, priority)) => {
                            reasons.push(format!(
                                "assist: category={category} priority={}",
                                priority.as_str()
                            ));
                            result.category = category;
                            result.category_by = DecidedBy::Assist(assist.model.clone());
                            if !decided(&result.priority_by) {
                                result.priority = priority;
                                result.priority_by = DecidedBy::Assist(assist.model.clone());
                            }
                            "decided"
                        }
                        Err(why) => {
                            reasons.push(format!("assist: answer ignored ({why})"));
                            "invalid"
                        }
                    }
                }
                Err((outcome, why)) => {
                    reasons.push(format!("assist: {outcome}: {why}"));
                    outcome
                }
            };
            done.outcomes.insert("classify".into(), outcome.into());
        }
        if assist.does(AssistTask::Draft) && assist.draft_categories.contains(&result.category) {
            let request = crate::assist::draft_request(mail, assist);
            let outcome = match crate::assist::call(assistant, state, assist, &request, now).await {
                Ok(answer) => {
                    let draft = crate::assist::clean_draft(&answer);
                    if draft.is_empty() {
                        reasons.push("assist: empty draft".into());
                        "invalid"
                    } else {
                        reasons.push(format!(
                            "assist: drafted a reply ({} characters)",
                            draft.chars().count()
                        ));
                        done.draft = Some(draft);
                        "drafted"
                    }
                }
                Err((outcome, why)) => {
                    reasons.push(format!("assist draft: {outcome}: {why}"));
                    outcome
                }
            };
            done.outcomes.insert("draft".into(), outcome.into());
        }
        done
    }

    pub(super) async fn route_stage(
        &self,
        env: &Envelope,
        raw: &[u8],
        mail: Result<&Mail<'_>, &MailError>,
    ) -> Result<(Staged<RouteResult>, Vec<Deferred>), StageError> {
        let filter = require_filter(env, Stage::Route)?;
        let result = match (mail, &env.results.classify) {
            (Ok(mail), Some(classify)) => route::decide_in(
                mail,
                filter,
                classify,
                &self.config,
                env.conversation.as_ref(),
            ),
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
        let audit = Audit {
            decision: result
                .actions
                .iter()
                .map(Action::kind)
                .collect::<Vec<_>>()
                .join(","),
            reasons: notes,
            decided_by: result.rules.clone(),
        };
        Ok((Staged { result, audit }, deferred))
    }

    /// Carries out one route action, or plans it (forwards, tagged stores). Writes to fixed
    /// keys are naturally idempotent; deliveries are claimed so a duplicate does not repeat
    /// them.
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
                let key = effect_key(Stage::Route, "deliver", queue);
                let body = serde_json::to_string(env).expect("envelopes serialise");
                let queues = &self.ports.queues;
                let ran = self
                    .effects()
                    .once(id, Stage::Route, &key, Repeat::AtLeastOnce, || async {
                        queues
                            .deliver(queue, &body)
                            .await
                            .map(|()| format!("delivered to queue {queue}"))
                            .map_err(|e| port_context(e, &format!("delivering to queue {queue}")))
                    })
                    .await?;
                Ok(Executed::Done(match ran {
                    Ran::Before(note) | Ran::Now(note) | Ran::Unconfirmed(note) => note,
                }))
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

    pub(super) async fn respond_stage(
        &self,
        env: &Envelope,
        mail: Result<&Mail<'_>, &MailError>,
    ) -> Result<Staged<RespondResult>, StageError> {
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
            } => Audit {
                decision: "sent".to_string(),
                reasons: vec![format!("reference {reference}")],
                decided_by: vec![format!("template:{template}")],
            },
            RespondResult::Unconfirmed {
                template,
                reference,
                reason,
                ..
            } => Audit {
                decision: "unconfirmed".to_string(),
                reasons: vec![format!("reference {reference}"), reason.clone()],
                decided_by: vec![format!("template:{template}")],
            },
            RespondResult::Suppressed { reason } => Audit {
                decision: "suppressed".to_string(),
                reasons: vec![reason.clone()],
                decided_by: vec![],
            },
        };
        Ok(Staged { result, audit })
    }

    /// The auto-reply: take the sender's rate-limit slot, render, then send at most once.
    /// The slot is owned by this message id, so a retry takes it again while a different
    /// message from the same sender is refused; it is freed when the reply can never be
    /// sent.
    async fn reply(&self, env: &Envelope, mail: &Mail<'_>) -> Result<RespondResult, StageError> {
        let id = &env.id;
        let stage = Stage::Respond;
        // The conversation got its auto-reply when it began.
        if let Some(c) = &env.conversation {
            return Ok(RespondResult::Suppressed {
                reason: format!("follows up conversation {}: no new auto-reply", c.id),
            });
        }
        let plan = match respond::plan(mail, &env.results, &self.config) {
            Ok(plan) => plan,
            Err(reason) => return Ok(RespondResult::Suppressed { reason }),
        };
        let period = self.config.respond.period.0;
        let t = SystemTime::now();
        let state = &self.ports.state;
        // The slot names the address by its keyed hash, which an erasure finds it by.
        let key = state
            .subject_key()
            .await
            .map_err(|e| StageError::from_port(id, stage, "reading the subject key", e))?;
        let slot = format!(
            "reply#{}#{}",
            crate::operate::subject_hash(&key, &plan.to),
            plan.template
        );
        match state.acquire_rate_limit(&slot, id, t + period, t).await {
            Ok(true) => {}
            Ok(false) => {
                return Ok(RespondResult::Suppressed {
                    reason: format!(
                        "rate limited: {} already got template {:?} within {}",
                        plan.to,
                        plan.template,
                        humantime::format_duration(period)
                    ),
                });
            }
            Err(e) => {
                return Err(StageError::from_port(
                    id,
                    stage,
                    "taking the reply rate-limit slot",
                    e,
                ));
            }
        }
        let free_slot = || async {
            // A slot that stays taken only delays this sender's next reply.
            let _ = state.release_rate_limit(&slot, id).await;
        };

        let reference = respond::reference_for(id, &self.config.respond.reference_prefix);
        let out = match respond::render(mail, &plan, &env.results, &self.config, &reference) {
            Ok(out) => out,
            Err(reason) => {
                free_slot().await;
                return Err(StageError::Permanent {
                    id: id.clone(),
                    stage,
                    detail: format!("rendering template {:?}: {reason}", plan.template),
                });
            }
        };
        let sent = RespondResult::Sent {
            to: plan.to.clone(),
            template: plan.template.clone(),
            reference: reference.clone(),
        };
        let note = serde_json::to_string(&sent).expect("results serialise");
        let sender = &self.ports.sender;
        let to = plan.to.clone();
        let ran = self
            .effects()
            .once(
                id,
                stage,
                "respond/reply",
                Repeat::AtMostOnce,
                || async move {
                    sender
                        .send(out)
                        .await
                        .map(|_| note)
                        .map_err(|e| port_context(e, &format!("sending auto-reply to {to}")))
                },
            )
            .await;
        let unconfirmed = |reason: String| RespondResult::Unconfirmed {
            to: plan.to.clone(),
            template: plan.template.clone(),
            reference: reference.clone(),
            reason,
        };
        match ran {
            Ok(Ran::Now(_)) => Ok(sent),
            Ok(Ran::Unconfirmed(reason)) => Ok(unconfirmed(reason)),
            Ok(Ran::Before(note)) => Ok(match note.strip_prefix(UNCONFIRMED) {
                Some(reason) => unconfirmed(reason.to_string()),
                None => serde_json::from_str(&note).unwrap_or(RespondResult::Suppressed {
                    reason: format!("already handled: {note}"),
                }),
            }),
            Err(e) => {
                if !e.is_retryable() {
                    free_slot().await;
                }
                Err(e)
            }
        }
    }
}

fn require_filter(env: &Envelope, stage: Stage) -> Result<&FilterResult, StageError> {
    env.results
        .filter
        .as_ref()
        .ok_or_else(|| StageError::Permanent {
            id: env.id.clone(),
            stage,
            detail: "envelope has no filter result".into(),
        })
}
