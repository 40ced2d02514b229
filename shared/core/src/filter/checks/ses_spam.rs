//! SES's spam verdict (the receipt's `spamVerdict`, else `X-SES-Spam-Verdict`), applied with the configured `ses_spam_fail` and
//! `ses_spam_gray` policies. An allow-listed sender lifts it. A policy of `accept` still
//! adds to the spam score, so the verdict counts together with the content score.

use super::ses_verdict;
use crate::config::{FilterConfig, Policy};
use crate::filter::{Check, Findings};
use crate::mail::Mail;

pub struct SesSpam;

const NAME: &str = "ses_spam";

/// Score added for a FAIL when the policy is `accept`.
pub const FAIL_SCORE: f32 = 3.0;
/// Score added for a GRAY when the policy is `accept` (the default).
pub const GRAY_SCORE: f32 = 1.5;

impl Check for SesSpam {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run(&self, mail: &Mail, config: &FilterConfig, findings: &mut Findings) {
        let Some(verdict) = ses_verdict(mail, |r| r.spam.as_ref(), "X-SES-Spam-Verdict") else {
            return;
        };
        let (tag, policy, score) = match verdict.as_str() {
            "PASS" => {
                findings.note(NAME, "SES_SPAM_PASS", "SES spam verdict: PASS");
                return;
            }
            "FAIL" => ("SES_SPAM_FAIL", config.ses_spam_fail, FAIL_SCORE),
            "GRAY" => ("SES_SPAM_GRAY", config.ses_spam_gray, GRAY_SCORE),
            other => {
                // DISABLED, PROCESSING_FAILED: SES has no opinion.
                findings.note(NAME, "SES_SPAM_NONE", format!("SES spam verdict: {other}"));
                return;
            }
        };
        let detail = format!("SES spam verdict: {verdict}");
        match policy {
            Policy::Accept => findings.add_score(NAME, tag, detail, score),
            p => findings.demand_unless_allowed(NAME, tag, detail, p.verdict()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::checks::{run_check, tags};
    use crate::model::Verdict;

    fn run(header: &str, config: &FilterConfig) -> Findings {
        let raw = format!("{header}From: a@example.org\r\nSubject: hi\r\n\r\nhello\r\n");
        run_check(&SesSpam, &raw, config)
    }

    #[test]
    fn fail_quarantines_by_default_and_the_allow_list_lifts_it() {
        let mut f = run("X-SES-Spam-Verdict: FAIL\r\n", &FilterConfig::default());
        assert_eq!(tags(&f), ["SES_SPAM_FAIL"]);
        assert_eq!(f.demanded_verdict(), Verdict::Quarantine);
        f.allowlisted = true;
        assert_eq!(f.demanded_verdict(), Verdict::Accept);
    }

    #[test]
    fn gray_accepted_by_default_adds_score() {
        let f = run("X-SES-Spam-Verdict: GRAY\r\n", &FilterConfig::default());
        assert_eq!(tags(&f), ["SES_SPAM_GRAY"]);
        assert_eq!(f.demanded_verdict(), Verdict::Accept);
        assert_eq!(f.score, GRAY_SCORE);
    }

    #[test]
    fn accept_policy_for_fail_scores_instead_of_demanding() {
        let c: FilterConfig = toml::from_str("ses_spam_fail = \"accept\"").unwrap();
        let f = run("X-SES-Spam-Verdict: FAIL\r\n", &c);
        assert_eq!(f.demanded_verdict(), Verdict::Accept);
        assert_eq!(f.score, FAIL_SCORE);
    }

    #[test]
    fn reject_policy_for_gray() {
        let c: FilterConfig = toml::from_str("ses_spam_gray = \"reject\"").unwrap();
        let f = run("X-SES-Spam-Verdict: gray\r\n", &c);
        assert_eq!(f.demanded_verdict(), Verdict::Reject);
    }

    #[test]
    fn pass_and_absent() {
        let f = run("X-SES-Spam-Verdict: PASS\r\n", &FilterConfig::default());
        assert_eq!(tags(&f), ["SES_SPAM_PASS"]);
        assert_eq!(f.score, 0.0);
        let f = run("", &FilterConfig::default());
        assert!(f.reasons.is_empty());
    }
}
