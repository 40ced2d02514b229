//! DKIM, as SES reported it in the receipt notification's `dkimVerdict`, else in the topmost
//! `Authentication-Results` (lower ones may be forged; see [`super::auth`]). `fail` or `permerror` applies the `dkim_fail` policy
//! (lifted by the allow list; `accept`, the default, adds 1.0 to the score). A message with
//! several signatures fails only when none of them passes: a broken extra signature (a
//! mailing list footer, a forwarder) is the same as no signature (RFC 6376 §6.1).

use super::auth::{first_auth_results, receipt_verdict, results_for};
use crate::config::{FilterConfig, Policy};
use crate::filter::{Check, Findings};
use crate::mail::Mail;

pub struct Dkim;

const NAME: &str = "dkim";

/// Score for a failed signature when the policy accepts it.
pub const FAIL_SCORE: f32 = 1.0;

impl Check for Dkim {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run(&self, mail: &Mail, config: &FilterConfig, findings: &mut Findings) {
        let results = first_auth_results(mail);
        let signer = |r: &super::auth::AuthResult| {
            r.prop("header.d")
                .or_else(|| r.prop("header.i"))
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        };
        match receipt_verdict(mail, |r| r.dkim.as_ref()).as_deref() {
            Some("pass") => {
                findings.note(NAME, "DKIM_PASS", "DKIM pass (SES receipt)");
                return;
            }
            Some("fail") => {
                let signer = results_for(&results, "dkim")
                    .find(|r| r.result == "fail" || r.result == "permerror")
                    .map(signer)
                    .unwrap_or_default();
                apply(config, findings, format!("DKIM fail{signer} (SES receipt)"));
                return;
            }
            _ => {}
        }
        if let Some(pass) = results_for(&results, "dkim").find(|r| r.result == "pass") {
            findings.note(NAME, "DKIM_PASS", format!("DKIM pass{}", signer(pass)));
            return;
        }
        let Some(failed) =
            results_for(&results, "dkim").find(|r| r.result == "fail" || r.result == "permerror")
        else {
            return;
        };
        apply(
            config,
            findings,
            format!("DKIM {}{}", failed.result, signer(failed)),
        );
    }
}

/// The `dkim_fail` policy on a failed signature.
fn apply(config: &FilterConfig, findings: &mut Findings, detail: String) {
    match config.dkim_fail {
        Policy::Accept => findings.add_score(NAME, "DKIM_FAIL", detail, FAIL_SCORE),
        p => findings.demand_unless_allowed(NAME, "DKIM_FAIL", detail, p.verdict()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::checks::{run_check, tags};
    use crate::model::Verdict;

    fn run(headers: &str, config: &FilterConfig) -> Findings {
        let raw = format!("{headers}From: a@example.org\r\nSubject: hi\r\n\r\nhello\r\n");
        run_check(&Dkim, &raw, config)
    }

    #[test]
    fn fail_is_accepted_with_score_by_default() {
        let f = run(
            "Authentication-Results: amazonses.com; spf=pass; dkim=fail (bad signature) header.d=example.org\r\n",
            &FilterConfig::default(),
        );
        assert_eq!(tags(&f), ["DKIM_FAIL"]);
        assert_eq!(f.score, FAIL_SCORE);
        assert_eq!(f.demanded_verdict(), Verdict::Accept);
        assert!(f.reasons[0].detail.contains("example.org"));
    }

    #[test]
    fn permerror_with_quarantine_policy_and_allow_list() {
        let c: FilterConfig = toml::from_str("dkim_fail = \"quarantine\"").unwrap();
        let mut f = run(
            "Authentication-Results: amazonses.com; DKIM=PermError\r\n",
            &c,
        );
        assert_eq!(f.demanded_verdict(), Verdict::Quarantine);
        f.allowlisted = true;
        assert_eq!(f.demanded_verdict(), Verdict::Accept);
    }

    #[test]
    fn a_passing_signature_wins_over_a_broken_one() {
        let c: FilterConfig = toml::from_str("dkim_fail = \"reject\"").unwrap();
        let f = run(
            "Authentication-Results: mx; dkim=fail header.d=list.test; dkim=pass header.d=example.org\r\n",
            &c,
        );
        assert_eq!(tags(&f), ["DKIM_PASS"]);
        assert_eq!(f.demanded_verdict(), Verdict::Accept);
    }

    #[test]
    fn only_topmost_header_and_absent() {
        let c: FilterConfig = toml::from_str("dkim_fail = \"reject\"").unwrap();
        let f = run(
            "Authentication-Results: amazonses.com; dkim=none\r\nAuthentication-Results: x; dkim=fail\r\n",
            &c,
        );
        assert!(f.reasons.is_empty());
        let f = run("", &c);
        assert!(f.reasons.is_empty());
    }
}
