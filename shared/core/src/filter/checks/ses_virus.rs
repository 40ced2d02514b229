//! SES's virus scan (the receipt's `virusVerdict`, else `X-SES-Virus-Verdict`). A virus is never delivered, whatever the allow
//! list says; a scan that could not decide quarantines.

use super::ses_verdict;
use crate::config::FilterConfig;
use crate::filter::{Check, Findings};
use crate::mail::Mail;
use crate::model::Verdict;

pub struct SesVirus;

const NAME: &str = "ses_virus";

impl Check for SesVirus {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run(&self, mail: &Mail, _config: &FilterConfig, findings: &mut Findings) {
        let Some(verdict) = ses_verdict(mail, |r| r.virus.as_ref(), "X-SES-Virus-Verdict") else {
            return;
        };
        match verdict.as_str() {
            "PASS" => findings.note(NAME, "VIRUS_PASS", "SES virus scan: PASS"),
            "FAIL" => findings.demand(
                NAME,
                "VIRUS_FAIL",
                "SES virus scan: FAIL (a virus was found)",
                Verdict::Reject,
            ),
            // SES did not scan (receipt rule without scanning): nothing to go on.
            "DISABLED" => findings.note(NAME, "VIRUS_DISABLED", "SES virus scan: DISABLED"),
            // GRAY, PROCESSING_FAILED and anything unexpected: undecided, so held back.
            other => findings.demand(
                NAME,
                "VIRUS_UNKNOWN",
                format!("SES virus scan: {other} (no clean verdict)"),
                Verdict::Quarantine,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::checks::{run_check, tags};

    fn run(header: &str) -> Findings {
        let raw = format!("{header}From: a@example.org\r\nSubject: hi\r\n\r\nhello\r\n");
        run_check(&SesVirus, &raw, &FilterConfig::default())
    }

    #[test]
    fn fail_rejects_even_when_allow_listed() {
        let mut f = run("X-SES-Virus-Verdict: FAIL\r\n");
        assert_eq!(tags(&f), ["VIRUS_FAIL"]);
        f.allowlisted = true;
        assert_eq!(f.demanded_verdict(), Verdict::Reject);
    }

    #[test]
    fn pass_is_a_note() {
        let f = run("X-SES-Virus-Verdict: PASS\r\n");
        assert_eq!(tags(&f), ["VIRUS_PASS"]);
        assert_eq!(f.demanded_verdict(), Verdict::Accept);
    }

    #[test]
    fn gray_and_processing_failed_quarantine() {
        for v in ["GRAY", "PROCESSING_FAILED", "gray"] {
            let f = run(&format!("X-SES-Virus-Verdict: {v}\r\n"));
            assert_eq!(tags(&f), ["VIRUS_UNKNOWN"], "{v}");
            assert_eq!(f.demanded_verdict(), Verdict::Quarantine, "{v}");
        }
    }

    #[test]
    fn absent_does_nothing() {
        let f = run("");
        assert!(f.reasons.is_empty());
        assert_eq!(f.demanded_verdict(), Verdict::Accept);
    }

    #[test]
    fn only_the_topmost_header_counts() {
        // A sender-written PASS below SES's FAIL changes nothing.
        let f = run("X-SES-Virus-Verdict: FAIL\r\nX-SES-Virus-Verdict: PASS\r\n");
        assert_eq!(f.demanded_verdict(), Verdict::Reject);
    }
}
