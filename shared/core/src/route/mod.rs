//! The route stage: an ordered rule list turns the message and its verdict, category and
//! priority into actions. The first matching rule stops unless it says `continue`.

pub mod forward;
pub mod headers;

use crate::config::{Config, RouteRule};
use crate::mail::Mail;
use crate::matcher::Facts;
use crate::model::{Action, ClassifyResult, Conversation, FilterResult, RouteResult, Verdict};

/// Decides the actions for a parsed message.
pub fn decide(
    mail: &Mail,
    filter: &FilterResult,
    classify: &ClassifyResult,
    config: &Config,
) -> RouteResult {
    decide_in(mail, filter, classify, config, None)
}

/// Decides the actions for a message that may follow up a conversation. A follow-up in the
/// conversation's category is routed as its conversation was, by the same rules (each where
/// its verdict allows it), unless a rule with `follow_up = true` matches it first, or one
/// of those rules is not `sticky` or no longer configured: then, or when a rule gave it
/// another category, it is routed afresh.
pub fn decide_in(
    mail: &Mail,
    filter: &FilterResult,
    classify: &ClassifyResult,
    config: &Config,
    follows: Option<&Conversation>,
) -> RouteResult {
    let facts = Facts {
        mail,
        verdict: filter.verdict,
        spam_score: filter.spam_score,
        category: Some(&classify.category),
        priority: Some(classify.priority),
        language: classify.language.as_deref(),
        our_domains: &config.mailroom.domains,
        accepted_only_by_default: true,
        follow_up: follows.is_some(),
    };
    let mut result = RouteResult {
        rules: Vec::new(),
        actions: Vec::new(),
        reply_template: None,
        reply_suppressed_by: None,
    };
    let rules = || config.routes.iter().map(|r| r.get_ref());
    let same_category = |c: &&Conversation| c.category.as_deref() == Some(&classify.category);
    let kept: Option<Vec<&RouteRule>> = follows.filter(same_category).and_then(|c| {
        let named: Option<Vec<&RouteRule>> = c
            .route_rules
            .iter()
            .filter(|n| *n != "default")
            .map(|n| rules().find(|r| &r.name == n))
            .collect();
        named.filter(|named| named.iter().all(|r| r.sticky))
    });
    match kept {
        Some(kept) => {
            let mut stopped = false;
            for rule in rules().filter(|r| r.when.follow_up == Some(true)) {
                if rule.when.matches(&facts) && !apply(rule, &mut result) {
                    stopped = true;
                    break;
                }
            }
            if !stopped && !disposes(&result) {
                for rule in kept {
                    if rule.when.verdicts().contains(&filter.verdict) {
                        apply(rule, &mut result);
                    }
                }
            }
        }
        None => {
            for rule in rules() {
                if rule.when.matches(&facts) && !apply(rule, &mut result) {
                    break;
                }
            }
        }
    }
    // Sieve's implicit keep: unless a matched rule disposed of the message (tags do not),
    // the verdict's default actions apply, so no message is silently left unhandled.
    if !disposes(&result) {
        result.rules.push("default".into());
        result
            .actions
            .extend(default_actions(filter.verdict, config));
    }
    enforce_verdict(filter.verdict, &mut result);
    result
}

/// Adds a matched rule's actions and reply settings; whether to go on to the next rule.
fn apply(rule: &RouteRule, result: &mut RouteResult) -> bool {
    if !result.rules.contains(&rule.name) {
        result.rules.push(rule.name.clone());
    }
    for action in &rule.actions {
        if !result.actions.contains(action) {
            result.actions.push(action.clone());
        }
    }
    if let Some(t) = &rule.reply_template
        && result.reply_template.is_none()
    {
        result.reply_template = Some(t.get_ref().clone());
    }
    if !rule.reply && result.reply_suppressed_by.is_none() {
        result.reply_suppressed_by = Some(rule.name.clone());
    }
    rule.continue_
}

/// Whether the actions so far dispose of the message (tags alone do not).
fn disposes(result: &RouteResult) -> bool {
    result
        .actions
        .iter()
        .any(|a| !matches!(a, Action::Tag { .. }))
}

/// Decides the actions for mail that could not be parsed: its verdict's default.
pub fn decide_unparsed(filter: &FilterResult, config: &Config) -> RouteResult {
    let mut result = RouteResult {
        rules: vec!["default".into()],
        actions: default_actions(filter.verdict, config),
        reply_template: None,
        reply_suppressed_by: Some("default".into()),
    };
    enforce_verdict(filter.verdict, &mut result);
    result
}

fn default_actions(verdict: Verdict, config: &Config) -> Vec<Action> {
    match verdict {
        Verdict::Accept => config.routing.default_actions.clone(),
        Verdict::Quarantine => vec![Action::Quarantine],
        Verdict::Reject => vec![Action::Drop],
    }
}

/// Rejected mail (a virus, a blocked sender) is never delivered, whatever a rule says.
fn enforce_verdict(verdict: Verdict, result: &mut RouteResult) {
    if verdict == Verdict::Reject {
        result
            .actions
            .retain(|a| !matches!(a, Action::Forward(_) | Action::Deliver(_)));
        if result.actions.is_empty() {
            result.actions.push(Action::Drop);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DecidedBy, Priority};

    const CONFIG: &str = r#"
[mailroom]
domains = ["example.com"]

[[route]]
name = "tag-all"
continue = true
actions = [{ tag = { header = "X-Mailroom", value = "seen" } }]

[[route]]
name = "sales"
when = { recipient = "sales@example.com" }
actions = [{ forward = ["team@corp.example"] }]

[[route]]
name = "billing"
when = { category = "billing", priority = "high" }
actions = [{ deliver = "tickets" }]
reply = false

[[route]]
name = "postmaster-sees-quarantine"
when = { verdict = "quarantine", spam_score_min = 8.0 }
actions = ["quarantine", { forward = ["postmaster@example.com"] }]

[[route]]
name = "virus-forward"
when = { verdict = "reject" }
actions = [{ forward = ["postmaster@example.com"] }]
"#;

    fn run(
        raw: &str,
        verdict: Verdict,
        score: f32,
        category: &str,
        priority: Priority,
    ) -> RouteResult {
        let config = Config::from_toml(CONFIG, "t.toml").unwrap();
        let mail = Mail::parse(raw.as_bytes()).unwrap();
        let filter = FilterResult {
            verdict,
            spam_score: score,
            reasons: vec![],
            scorer: "rules".into(),
            spam_probability: None,
        };
        let classify = ClassifyResult {
            category: category.into(),
            category_confidence: 1.0,
            category_by: DecidedBy::Default,
            priority,
            priority_confidence: 1.0,
            priority_by: DecidedBy::Default,
            language: None,
        };
        decide(&mail, &filter, &classify, &config)
    }

    const SALES: &str = "From: a@x.org\nTo: sales+promo@example.com\nSubject: hi\n\nbody\n";

    #[test]
    fn continue_then_first_match_stops() {
        let r = run(SALES, Verdict::Accept, 0.0, "billing", Priority::High);
        assert_eq!(r.rules, vec!["tag-all", "sales"]);
        assert_eq!(r.actions.len(), 2);
        assert_eq!(
            r.actions[1],
            Action::Forward(vec!["team@corp.example".into()])
        );
    }

    #[test]
    fn category_and_priority_conditions_and_reply_suppression() {
        let r = run(
            "From: a@x.org\nTo: help@example.com\nSubject: hi\n\nbody\n",
            Verdict::Accept,
            0.0,
            "billing",
            Priority::High,
        );
        assert_eq!(r.rules, vec!["tag-all", "billing"]);
        assert_eq!(r.reply_suppressed_by.as_deref(), Some("billing"));
    }

    #[test]
    fn unmatched_accepted_mail_gets_default_actions() {
        let r = run(
            "From: a@x.org\nTo: help@example.com\nSubject: hi\n\nbody\n",
            Verdict::Accept,
            0.0,
            "general",
            Priority::Low,
        );
        assert_eq!(
            r.rules,
            vec!["tag-all", "default"],
            "a tag alone does not dispose of the message"
        );
        assert_eq!(r.actions[1], Action::Store("unrouted/".into()));
        let config = Config::from_toml("", "t").unwrap();
        let mail = Mail::parse(SALES.as_bytes()).unwrap();
        let f = FilterResult {
            verdict: Verdict::Accept,
            spam_score: 0.0,
            reasons: vec![],
            scorer: "rules".into(),
            spam_probability: None,
        };
        let c = Classifier::unparsed(&config);
        let r = decide(&mail, &f, &c, &config);
        assert_eq!(r.rules, vec!["default"]);
        assert_eq!(r.actions, vec![Action::Store("unrouted/".into())]);
    }

    #[test]
    fn quarantined_mail_skips_accept_rules() {
        let r = run(SALES, Verdict::Quarantine, 6.0, "general", Priority::Low);
        assert_eq!(r.rules, vec!["default"]);
        assert_eq!(r.actions, vec![Action::Quarantine]);
        let r = run(SALES, Verdict::Quarantine, 9.0, "general", Priority::Low);
        assert_eq!(r.rules, vec!["postmaster-sees-quarantine"]);
    }

    #[test]
    fn rejected_mail_is_never_delivered() {
        let r = run(SALES, Verdict::Reject, 0.0, "general", Priority::Low);
        assert_eq!(r.rules, vec!["virus-forward"]);
        assert_eq!(r.actions, vec![Action::Drop]);
    }

    use crate::classify::Classifier;
}
