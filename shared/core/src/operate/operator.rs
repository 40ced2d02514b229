//! The operator's functions over the pipeline's ports, the same for the embedded store and
//! for a deployed stack: the commands and the console call only these.

use std::sync::Arc;

use super::{Correction, Judgement, MessageSummary, MessageView, Overview, Page, Query};
use crate::model::{AuditRecord, Stage};
use crate::pipeline::Engine;
use crate::pipeline::release::{Handled, OperatorError, Releaser};

/// How a release carries out the message's effects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseVia {
    /// Route and respond run here (the embedded store).
    InProcess,
    /// The released envelope goes to the route stage's queue (a deployed stack).
    Queue,
    /// Releasing is not possible here, and why.
    Unavailable(String),
}

/// An engine (config, models, ports) seen from the operator's side.
#[derive(Clone)]
pub struct Operator {
    engine: Arc<Engine>,
    /// The store's name in messages (`state folder mailroom-out/state`, `table T`).
    store: String,
    release_via: ReleaseVia,
}

/// The follow-ups `show` lists of a conversation (the latest ones, after its first message).
pub const SHOWN_FOLLOW_UPS: usize = 200;

impl Operator {
    /// The operator functions on an engine whose releases run in process.
    pub fn new(engine: Arc<Engine>, store: impl Into<String>) -> Operator {
        Operator {
            engine,
            store: store.into(),
            release_via: ReleaseVia::InProcess,
        }
    }

    pub fn with_release_via(mut self, via: ReleaseVia) -> Operator {
        self.release_via = via;
        self
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn store(&self) -> &str {
        &self.store
    }

    /// One page of the messages that hold every condition of `query`, newest first.
    pub async fn list(&self, query: &Query) -> Result<Page, OperatorError> {
        self.engine
            .ports()
            .index
            .query(query)
            .await
            .map_err(|e| OperatorError::Index {
                store: self.store.clone(),
                detail: e.to_string(),
            })
    }

    /// The summary of message `id`; an unknown id is an error naming the store.
    pub async fn summary(&self, id: &str) -> Result<MessageSummary, OperatorError> {
        let id = id.trim();
        self.engine
            .ports()
            .index
            .get(id)
            .await
            .map_err(|e| OperatorError::Store {
                id: id.to_string(),
                detail: e.to_string(),
            })?
            .ok_or_else(|| OperatorError::UnknownId {
                id: id.to_string(),
                store: self.store.clone(),
            })
    }

    /// The message's bytes: its quarantined copy while there is one, else the raw mail.
    pub async fn bytes(&self, summary: &MessageSummary) -> Result<Vec<u8>, String> {
        let ports = self.engine.ports();
        match &summary.quarantined {
            Some(key) => ports.objects.get_object(key).await,
            None => ports.raw.get_raw(&summary.raw).await,
        }
        .map_err(|e| e.to_string())
    }

    /// What `show` prints and the console's message page shows.
    pub async fn show(&self, id: &str) -> Result<MessageView, OperatorError> {
        let summary = self.summary(id).await?;
        let audit = self
            .engine
            .ports()
            .audit
            .records(&summary.id)
            .await
            .map_err(|e| OperatorError::Store {
                id: summary.id.clone(),
                detail: format!("reading the audit trail: {e}"),
            })?;
        let thread = crate::conversation::thread(
            self.engine.ports().index.as_ref(),
            &summary,
            SHOWN_FOLLOW_UPS,
        )
        .await
        .map_err(|e| OperatorError::Store {
            id: summary.id.clone(),
            detail: format!("reading its conversation: {e}"),
        })?;
        let mut view = match self.bytes(&summary).await {
            Ok(bytes) => MessageView::of(summary, audit, &bytes),
            Err(e) => MessageView {
                parse_error: Some(format!("the mail itself is not available: {e}")),
                ..MessageView::of(summary, audit, b"")
            },
        };
        if thread.len() > 1 {
            view.conversation = thread;
        }
        Ok(view)
    }

    /// Releases a quarantined message as `by` may (see [`Engine::release`] and
    /// [`crate::pipeline::release::releasable`]).
    pub async fn release(&self, id: &str, by: &Releaser) -> Result<Handled, OperatorError> {
        let summary = self.summary(id).await?;
        let via_queue = match &self.release_via {
            ReleaseVia::InProcess => false,
            ReleaseVia::Queue => true,
            ReleaseVia::Unavailable(why) => {
                return Err(OperatorError::Store {
                    id: summary.id.clone(),
                    detail: why.clone(),
                });
            }
        };
        let Some(key) = &summary.quarantined else {
            // Refused or nothing to do, without a copy to read.
            return self
                .engine
                .release(&summary, summary.raw.clone(), b"", by, via_queue)
                .await;
        };
        let objects = &self.engine.ports().objects;
        let raw = objects
            .get_object(key)
            .await
            .map_err(|e| OperatorError::Store {
                id: summary.id.clone(),
                detail: format!("reading the quarantined copy: {e}"),
            })?;
        self.engine
            .release(&summary, objects.object_ref(key), &raw, by, via_queue)
            .await
    }

    /// Says what message `id` is, for the spam model to learn from (`mailroom train
    /// --feedback`), and audits it as a `mark` event. Nothing else happens to the message:
    /// releasing it is [`Operator::release`], which marks it as ham by itself.
    pub async fn mark(
        &self,
        id: &str,
        label: Judgement,
        by: &str,
    ) -> Result<Correction, OperatorError> {
        let summary = self.summary(id).await?;
        let who = Releaser::operator(by).who();
        let correction = self.engine.correct(&summary, label, &who, "mark").await?;
        let record = AuditRecord {
            id: summary.id.clone(),
            stage: Stage::Filter,
            decision: format!("marked {}", label.label()),
            reasons: vec![format!(
                "an operator says this is {} (the filter's verdict was {})",
                label.label(),
                summary.verdict.as_str()
            )],
            decided_by: vec![who],
            sender: summary.sender.clone(),
            at: correction.at,
            event: Some(format!("mark-{}", label.label())),
        };
        self.engine
            .ports()
            .audit
            .append(&record)
            .await
            .map_err(|e| OperatorError::Store {
                id: summary.id.clone(),
                detail: format!("auditing the correction: {e}"),
            })?;
        Ok(correction)
    }

    /// Every correction operators have made, oldest first.
    pub async fn corrections(&self) -> Result<Vec<Correction>, OperatorError> {
        self.engine
            .ports()
            .feedback
            .corrections()
            .await
            .map_err(|e| OperatorError::Index {
                store: self.store.clone(),
                detail: format!("reading the corrections: {e}"),
            })
    }

    /// Deletes a message's quarantined copy and takes it off the quarantine list.
    pub async fn delete(&self, id: &str, by: &str) -> Result<Handled, OperatorError> {
        let summary = self.summary(id).await?;
        self.engine.delete_quarantined(&summary, by).await
    }

    /// Counts by day, verdict, category and route over the `days` days before `now`, read
    /// from the time index a page at a time (at most `cap` messages).
    pub async fn overview(
        &self,
        now: u64,
        days: u64,
        cap: usize,
    ) -> Result<Overview, OperatorError> {
        let mut overview = Overview::new(now, days);
        let mut query = Query {
            since: Some(overview.since()),
            limit: 500,
            ..Query::default()
        };
        loop {
            let page = self.list(&query).await?;
            for row in &page.rows {
                overview.add(row);
            }
            match page.next {
                Some(next) if overview.counted < cap => query.before = Some(next),
                Some(_) => {
                    overview.truncated = true;
                    break;
                }
                None => break,
            }
        }
        Ok(overview)
    }
}
