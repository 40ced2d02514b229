//! The filter stage: SES verdicts, authentication, attachment policy, sender lists and a
//! content spam score decide accept, quarantine or reject.
//!
//! Each check is one small module in [`checks`] that writes reasons, score and demanded
//! verdicts into one shared [`Findings`]; adding a check touches one file plus the list in
//! [`checks::all`]. The content score comes from a pluggable [`SpamScorer`].

pub mod checks;
mod heuristics;
pub mod scorer;
pub mod zip;

use crate::config::{Config, FilterConfig};
use crate::mail::Mail;
use crate::model::{FilterResult, Reason, Verdict};

/// The shared result every check writes into.
#[derive(Debug, Default)]
pub struct Findings {
    pub reasons: Vec<Reason>,
    pub score: f32,
    /// Set by the sender allow list; lifts the demands made with
    /// [`Findings::demand_unless_allowed`] and skips the content score.
    pub allowlisted: bool,
    /// The spam model's P(spam), when one scored the message.
    pub probability: Option<f32>,
    demands: Vec<(Verdict, bool)>,
}

impl Findings {
    /// Adds to the spam score.
    pub fn add_score(&mut self, check: &str, tag: &str, detail: impl Into<String>, score: f32) {
        self.score += score;
        self.reasons.push(Reason {
            check: check.into(),
            tag: tag.into(),
            detail: detail.into(),
            score,
        });
    }

    /// Records a finding that demands at least `verdict`, whatever the allow list says
    /// (viruses, blocked attachments, blocked senders).
    pub fn demand(&mut self, check: &str, tag: &str, detail: impl Into<String>, verdict: Verdict) {
        self.demands.push((verdict, false));
        self.reasons.push(Reason {
            check: check.into(),
            tag: tag.into(),
            detail: detail.into(),
            score: 0.0,
        });
    }

    /// Records a finding that demands at least `verdict` unless the sender is allow-listed
    /// (SES spam verdict, SPF, DKIM, DMARC).
    pub fn demand_unless_allowed(
        &mut self,
        check: &str,
        tag: &str,
        detail: impl Into<String>,
        verdict: Verdict,
    ) {
        self.demands.push((verdict, true));
        self.reasons.push(Reason {
            check: check.into(),
            tag: tag.into(),
            detail: detail.into(),
            score: 0.0,
        });
    }

    /// Records an informational finding (a pass, or a failure the policy accepts).
    pub fn note(&mut self, check: &str, tag: &str, detail: impl Into<String>) {
        self.reasons.push(Reason {
            check: check.into(),
            tag: tag.into(),
            detail: detail.into(),
            score: 0.0,
        });
    }

    /// The strongest verdict demanded so far, honouring the allow list.
    pub fn demanded_verdict(&self) -> Verdict {
        self.demands
            .iter()
            .filter(|(_, liftable)| !(self.allowlisted && *liftable))
            .map(|(v, _)| *v)
            .max()
            .unwrap_or(Verdict::Accept)
    }
}

/// One filter check. Checks must not panic on any input and must stay cheap: they run on
/// every message.
pub trait Check: Send + Sync {
    fn name(&self) -> &'static str;
    fn run(&self, mail: &Mail, config: &FilterConfig, findings: &mut Findings);
}

/// The seam for the content score: rule-based now, a trained model later.
pub trait SpamScorer: Send + Sync {
    /// Shown in results as the scorer that decided (`rules`, or the model's name).
    fn name(&self) -> &str;
    /// Adds the content score (and its reasons) to `findings`.
    fn score(&self, mail: &Mail, config: &FilterConfig, findings: &mut Findings);
}

/// The filter stage with its checks and scorer, built once per process.
pub struct Filter {
    checks: Vec<Box<dyn Check>>,
    scorer: Box<dyn SpamScorer>,
}

impl Default for Filter {
    fn default() -> Self {
        Filter::new()
    }
}

impl Filter {
    pub fn new() -> Filter {
        Filter {
            checks: checks::all(),
            scorer: Box::new(scorer::RuleScorer),
        }
    }

    pub fn with_scorer(scorer: Box<dyn SpamScorer>) -> Filter {
        Filter {
            checks: checks::all(),
            scorer,
        }
    }

    pub fn run(&self, mail: &Mail, config: &Config) -> FilterResult {
        self.run_allowing(mail, config, &[])
    }

    /// [`Filter::run`], with `allowing`: the message's recipients whose per-recipient allow
    /// list (a digest's "always allow") holds its sender, looked up by the engine. The
    /// message counts as allow-listed only when every one of its recipients is among them
    /// (mail to ann and bob, where only ann allowed the sender, is filtered as usual), and
    /// only as an `allow_senders` entry would: never against a failed DMARC or SPF, a
    /// blocked sender, a virus or the attachment policy.
    pub fn run_allowing(&self, mail: &Mail, config: &Config, allowing: &[String]) -> FilterResult {
        let fc = &config.filter;
        let mut findings = Findings::default();
        for check in &self.checks {
            check.run(mail, fc, &mut findings);
        }
        if !findings.allowlisted && !allowing.is_empty() {
            checks::sender_lists::allowed_by_recipients(mail, allowing, &mut findings);
        }
        if !findings.allowlisted {
            self.scorer.score(mail, fc, &mut findings);
        }
        let mut verdict = findings.demanded_verdict();
        if !findings.allowlisted {
            let by_score = if findings.score >= fc.reject_score {
                Verdict::Reject
            } else if findings.score >= fc.quarantine_score {
                Verdict::Quarantine
            } else {
                Verdict::Accept
            };
            verdict = verdict.max(by_score);
        }
        FilterResult {
            verdict,
            spam_score: (findings.score * 100.0).round() / 100.0,
            reasons: findings.reasons,
            scorer: self.scorer.name().to_string(),
            spam_probability: findings.probability,
        }
    }
}

/// The result for a message over the size limit: quarantined without being parsed.
pub fn oversize(size: u64, config: &Config) -> FilterResult {
    FilterResult {
        verdict: Verdict::Quarantine,
        spam_score: 0.0,
        reasons: vec![Reason {
            check: "size".into(),
            tag: "OVERSIZE".into(),
            detail: format!(
                "message is {size} bytes, over max_message_size {}",
                config.filter.max_message_size.0
            ),
            score: 0.0,
        }],
        scorer: "none".into(),
        spam_probability: None,
    }
}

/// The result for mail not parsed because a limit of the parse was reached: quarantined
/// with a `SCAN_LIMIT` finding, which is never released.
pub fn scan_limit(detail: &str) -> FilterResult {
    FilterResult {
        verdict: Verdict::Quarantine,
        spam_score: 0.0,
        reasons: vec![Reason {
            check: "parse".into(),
            tag: "SCAN_LIMIT".into(),
            detail: detail.into(),
            score: 0.0,
        }],
        scorer: "none".into(),
        spam_probability: None,
    }
}

/// The result for input that could not be parsed as mail: quarantined, with the reason.
pub fn unparseable(reason: &str) -> FilterResult {
    FilterResult {
        verdict: Verdict::Quarantine,
        spam_score: 0.0,
        reasons: vec![Reason {
            check: "parse".into(),
            tag: "MALFORMED".into(),
            detail: reason.into(),
            score: 0.0,
        }],
        scorer: "none".into(),
        spam_probability: None,
    }
}
