//! The JSON view of a processed message: what `mailroom run --format jsonl` prints per
//! message and what golden tests compare.

use serde_json::{Value, json};

use crate::model::{Action, DecidedBy};
use crate::pipeline::Outcome;

pub fn action_text(a: &Action) -> String {
    match a {
        Action::Forward(to) => format!("forward:{}", to.join(",")),
        Action::Deliver(q) => format!("deliver:{q}"),
        Action::Store(p) => format!("store:{p}"),
        Action::Tag { header, value } => format!("tag:{header}={value}"),
        Action::Quarantine => "quarantine".into(),
        Action::Drop => "drop".into(),
    }
}

fn by(d: &DecidedBy) -> Value {
    match d {
        DecidedBy::Rule(n) => json!({ "kind": "rule", "name": n }),
        DecidedBy::Model(n) => json!({ "kind": "model", "name": n }),
        DecidedBy::Default => json!({ "kind": "default" }),
    }
}

/// The JSONL object for a processed message.
pub fn record(source: &str, outcome: &Outcome) -> Value {
    let env = &outcome.envelope;
    let r = &env.results;
    let h = outcome.headline.as_ref();
    json!({
        "source": source,
        "id": env.id,
        "message_id": h.and_then(|h| h.message_id.clone()),
        "from": h.and_then(|h| h.from.clone()),
        "subject": h.map(|h| h.subject.clone()),
        "verdict": r.filter.as_ref().map(|f| f.verdict.as_str()),
        "spam_score": r.filter.as_ref().map(|f| f.spam_score),
        "scorer": r.filter.as_ref().map(|f| f.scorer.clone()),
        "reasons": r.filter.as_ref().map(|f| f.reasons.clone()).unwrap_or_default(),
        "category": r.classify.as_ref().map(|c| c.category.clone()),
        "category_confidence": r.classify.as_ref().map(|c| c.category_confidence),
        "category_by": r.classify.as_ref().map(|c| by(&c.category_by)),
        "priority": r.classify.as_ref().map(|c| c.priority.as_str()),
        "priority_confidence": r.classify.as_ref().map(|c| c.priority_confidence),
        "priority_by": r.classify.as_ref().map(|c| by(&c.priority_by)),
        "language": r.classify.as_ref().and_then(|c| c.language.clone()),
        "route_rules": r.route.as_ref().map(|x| x.rules.clone()).unwrap_or_default(),
        "routes": r.route.as_ref().map(|x| x.actions.iter().map(action_text).collect::<Vec<_>>()).unwrap_or_default(),
        "auto_reply": r.respond.as_ref(),
        "error": outcome.parse_error,
    })
}

/// The JSONL object for an input that failed before or during the pipeline.
pub fn failure(source: &str, error: &str) -> Value {
    json!({ "source": source, "error": error })
}
