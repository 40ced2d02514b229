//! The rule-based content scorer.

use super::{Findings, SpamScorer};
use crate::config::FilterConfig;
use crate::mail::Mail;

pub struct RuleScorer;

impl SpamScorer for RuleScorer {
    fn name(&self) -> &str {
        "rules"
    }
    fn score(&self, _mail: &Mail, _config: &FilterConfig, _findings: &mut Findings) {}
}
