//! SPF, as SES reported it in the receipt notification's `spfVerdict` and in the topmost
//! `Received-SPF` and `Authentication-Results` headers. Lower headers of either kind came with the message and may be forged by the
//! sender, so they are never read (see [`super::auth`]). When several are present the worse
//! result counts.
//!
//! `fail` applies the `spf_fail` policy (lifted by the allow list; `accept` adds 1.0 to
//! the score instead), `softfail` adds 1.0, `pass` is noted, the rest is ignored.

use super::auth::{first_auth_results, first_received_spf, receipt_verdict, results_for};
use crate::config::{FilterConfig, Policy};
use crate::filter::{Check, Findings};
use crate::mail::Mail;

pub struct Spf;

const NAME: &str = "spf";

/// Score for `softfail`, and for `fail` when the policy accepts it.
pub const SOFTFAIL_SCORE: f32 = 1.0;

/// How bad an SPF result is; higher is worse.
fn rank(result: &str) -> u8 {
    match result {
        "fail" | "hardfail" => 4,
        "softfail" => 3,
        "permerror" | "temperror" => 2,
        "neutral" | "none" | "policy" => 1,
        _ => 0, // pass, bestguesspass, unknown words
    }
}

impl Check for Spf {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run(&self, mail: &Mail, config: &FilterConfig, findings: &mut Findings) {
        let results = first_auth_results(mail);
        let mut seen: Vec<(String, &str)> = Vec::new();
        // The receipt says PASS, FAIL, GRAY or PROCESSING_FAILED; only the first two decide.
        if let Some(r) =
            receipt_verdict(mail, |r| r.spf.as_ref()).filter(|r| r == "pass" || r == "fail")
        {
            seen.push((r, "SES receipt"));
        }
        if let Some(r) = first_received_spf(mail) {
            seen.push((r, "Received-SPF"));
        }
        for r in results_for(&results, "spf") {
            seen.push((r.result.clone(), "Authentication-Results"));
        }
        let Some((result, source)) = seen.iter().max_by_key(|(r, _)| rank(r)) else {
            return;
        };
        let mailfrom = results_for(&results, "spf")
            .find_map(|r| r.prop("smtp.mailfrom").or_else(|| r.prop("envelope-from")))
            .map(|d| format!(" for {d}"))
            .unwrap_or_default();
        let detail = format!("SPF {result}{mailfrom} ({source})");
        match result.as_str() {
            "pass" => findings.note(NAME, "SPF_PASS", detail),
            "fail" | "hardfail" => match config.spf_fail {
                Policy::Accept => findings.add_score(NAME, "SPF_FAIL", detail, SOFTFAIL_SCORE),
                p => findings.demand_unless_allowed(NAME, "SPF_FAIL", detail, p.verdict()),
            },
            "softfail" => findings.add_score(NAME, "SPF_SOFTFAIL", detail, SOFTFAIL_SCORE),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::checks::{run_check, tags};
    use crate::model::Verdict;

    fn run(headers: &str, config: &FilterConfig) -> Findings {
        let raw = format!("{headers}From: a@example.org\r\nSubject: hi\r\n\r\nhello\r\n");
        run_check(&Spf, &raw, config)
    }

    #[test]
    fn received_spf_fail_quarantines_by_default() {
        let f = run(
            "Received-SPF: fail (spfCheck: domain of example.org does not designate 192.0.2.9 as permitted sender) client-ip=192.0.2.9;\r\n",
            &FilterConfig::default(),
        );
        assert_eq!(tags(&f), ["SPF_FAIL"]);
        assert_eq!(f.demanded_verdict(), Verdict::Quarantine);
    }

    #[test]
    fn auth_results_fail_in_mixed_case_among_other_results() {
        let f = run(
            "Authentication-Results: amazonses.com; DKIM=pass header.i=@example.org; SPF=FAIL (not permitted; see policy) smtp.mailfrom=example.org; dmarc=none\r\n",
            &FilterConfig::default(),
        );
        assert_eq!(tags(&f), ["SPF_FAIL"]);
        assert!(f.reasons[0].detail.contains("example.org"));
        assert_eq!(f.demanded_verdict(), Verdict::Quarantine);
    }

    #[test]
    fn policy_applies_and_allow_list_lifts() {
        let c: FilterConfig = toml::from_str("spf_fail = \"reject\"").unwrap();
        let mut f = run("Received-SPF: Fail\r\n", &c);
        assert_eq!(f.demanded_verdict(), Verdict::Reject);
        f.allowlisted = true;
        assert_eq!(f.demanded_verdict(), Verdict::Accept);

        let c: FilterConfig = toml::from_str("spf_fail = \"accept\"").unwrap();
        let f = run("Received-SPF: fail\r\n", &c);
        assert_eq!(f.demanded_verdict(), Verdict::Accept);
        assert_eq!(f.score, SOFTFAIL_SCORE);
    }

    #[test]
    fn softfail_scores_pass_notes() {
        let f = run(
            "Received-SPF: softfail (transitioning)\r\n",
            &FilterConfig::default(),
        );
        assert_eq!(tags(&f), ["SPF_SOFTFAIL"]);
        assert_eq!(f.score, SOFTFAIL_SCORE);
        assert_eq!(f.demanded_verdict(), Verdict::Accept);

        let f = run("Received-SPF: pass\r\n", &FilterConfig::default());
        assert_eq!(tags(&f), ["SPF_PASS"]);
        for r in ["neutral", "none", "temperror", "permerror"] {
            let f = run(&format!("Received-SPF: {r}\r\n"), &FilterConfig::default());
            assert!(f.reasons.is_empty(), "{r}");
        }
    }

    #[test]
    fn lower_headers_are_not_trusted() {
        // SES's pass on top; the forged fail/pass below must not count either way.
        let f = run(
            "Received-SPF: pass\r\nAuthentication-Results: amazonses.com; spf=pass\r\nReceived-SPF: fail\r\nAuthentication-Results: x; spf=fail\r\n",
            &FilterConfig::default(),
        );
        assert_eq!(f.demanded_verdict(), Verdict::Accept);
        let f = run(
            "Received-SPF: fail\r\nReceived-SPF: pass\r\nAuthentication-Results: x; spf=pass\r\n",
            &FilterConfig::default(),
        );
        assert_eq!(f.demanded_verdict(), Verdict::Quarantine);
    }

    #[test]
    fn absent_does_nothing() {
        let f = run("", &FilterConfig::default());
        assert!(f.reasons.is_empty());
    }
}
