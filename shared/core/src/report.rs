//! What `mailroom run` reports per message, as a typed value: it prints as one JSON object
//! (`--format jsonl`, the golden tests' record) or a table row, and adds to the summary.

use serde::{Serialize, Serializer};

use crate::model::{Action, DecidedBy, Priority, Reason, RespondResult, Verdict};
use crate::pipeline::Outcome;

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Forward(to) => write!(f, "forward:{}", to.join(",")),
            Action::Deliver(q) => write!(f, "deliver:{q}"),
            Action::Store(p) => write!(f, "store:{p}"),
            Action::Tag { header, value } => write!(f, "tag:{header}={value}"),
            Action::Quarantine => f.write_str("quarantine"),
            Action::Drop => f.write_str("drop"),
        }
    }
}

impl std::fmt::Display for DecidedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecidedBy::Rule(n) => write!(f, "rule:{n}"),
            DecidedBy::Model(n) => write!(f, "model:{n}"),
            DecidedBy::Default => f.write_str("default"),
            DecidedBy::Conversation(id) => write!(f, "conversation:{id}"),
            DecidedBy::Assist(model) => write!(f, "assist:{model}"),
        }
    }
}

/// One input's report: the pipeline's decisions, or why the input failed.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub source: String,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub decided: Option<Decided>,
    /// Why the input could not be read, parsed or processed.
    pub error: Option<String>,
}

/// What the stages decided for a message.
#[derive(Debug, Clone, Serialize)]
pub struct Decided {
    pub id: String,
    pub message_id: Option<String>,
    pub from: Option<String>,
    pub subject: Option<String>,
    pub verdict: Option<Verdict>,
    pub spam_score: Option<f32>,
    pub scorer: Option<String>,
    pub reasons: Vec<Reason>,
    pub category: Option<String>,
    pub category_confidence: Option<f32>,
    pub category_by: Option<DecidedBy>,
    pub priority: Option<Priority>,
    pub priority_confidence: Option<f32>,
    pub priority_by: Option<DecidedBy>,
    pub language: Option<String>,
    pub route_rules: Vec<String>,
    #[serde(serialize_with = "as_text")]
    pub routes: Vec<Action>,
    pub auto_reply: Option<RespondResult>,
    /// The conversation a follow-up joined (its first message's id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation: Option<String>,
}

fn as_text<S: Serializer>(actions: &[Action], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(actions.iter().map(ToString::to_string))
}

impl Report {
    /// The report of a message the pipeline processed (a parse error is its `error`).
    pub fn of(source: &str, outcome: &Outcome) -> Report {
        let env = &outcome.envelope;
        let r = &env.results;
        let h = outcome.headline.as_ref();
        let filter = r.filter.as_ref();
        let classify = r.classify.as_ref();
        Report {
            source: source.to_string(),
            decided: Some(Decided {
                id: env.id.clone(),
                message_id: h.and_then(|h| h.message_id.clone()),
                from: h.and_then(|h| h.from.clone()),
                subject: h.map(|h| h.subject.clone()),
                verdict: filter.map(|f| f.verdict),
                spam_score: filter.map(|f| f.spam_score),
                scorer: filter.map(|f| f.scorer.clone()),
                reasons: filter.map(|f| f.reasons.clone()).unwrap_or_default(),
                category: classify.map(|c| c.category.clone()),
                category_confidence: classify.map(|c| c.category_confidence),
                category_by: classify.map(|c| c.category_by.clone()),
                priority: classify.map(|c| c.priority),
                priority_confidence: classify.map(|c| c.priority_confidence),
                priority_by: classify.map(|c| c.priority_by.clone()),
                language: classify.and_then(|c| c.language.clone()),
                route_rules: r
                    .route
                    .as_ref()
                    .map(|x| x.rules.clone())
                    .unwrap_or_default(),
                routes: r
                    .route
                    .as_ref()
                    .map(|x| x.actions.clone())
                    .unwrap_or_default(),
                auto_reply: r.respond.clone(),
                conversation: env.conversation.as_ref().map(|c| c.id.clone()),
            }),
            error: outcome.parse_error.clone(),
        }
    }

    /// The report of an input that failed before or during the pipeline.
    pub fn failure(source: &str, error: &str) -> Report {
        Report {
            source: source.to_string(),
            decided: None,
            error: Some(error.to_string()),
        }
    }

    /// The verdict, when the filter decided one.
    pub fn verdict(&self) -> Option<Verdict> {
        self.decided.as_ref().and_then(|d| d.verdict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_and_deciders_read_as_text() {
        assert_eq!(
            Action::Forward(vec!["a@x".into(), "b@x".into()]).to_string(),
            "forward:a@x,b@x"
        );
        assert_eq!(
            Action::Tag {
                header: "X-A".into(),
                value: "1".into()
            }
            .to_string(),
            "tag:X-A=1"
        );
        assert_eq!(DecidedBy::Model("spam".into()).to_string(), "model:spam");
        let failed = serde_json::to_value(Report::failure("a.eml", "not mail")).unwrap();
        assert_eq!(
            failed,
            serde_json::json!({ "source": "a.eml", "error": "not mail" })
        );
    }
}
