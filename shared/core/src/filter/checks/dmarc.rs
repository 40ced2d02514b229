//! DMARC, as SES reported it in the receipt notification's `dmarcVerdict`, else in the
//! topmost `Authentication-Results` (lower ones may be forged; see [`super::auth`]). On a
//! failure the `dmarc_fail` policy decides: `follow` applies the domain owner's published
//! policy, which the receipt gives as `dmarcPolicy`, else read from the comment SES and
//! others write (`dmarc=fail (p=REJECT sp=NONE dis=NONE) header.from=…`) or a `policy.*`
//! property:
//! reject rejects, quarantine quarantines, none accepts with 1.0 added to the score, and an
//! unknown or missing policy quarantines. A fixed policy applies as configured. All of it is
//! lifted by the allow list (which itself ignores senders failing DMARC).

use super::auth::{AuthResult, first_auth_results, receipt_verdict, results_for};
use crate::config::{DmarcPolicy, FilterConfig};
use crate::filter::{Check, Findings};
use crate::mail::Mail;
use crate::model::Verdict;

pub struct Dmarc;

const NAME: &str = "dmarc";

/// Score for a failure the policy accepts (`p=none`, or a fixed `accept`).
pub const NONE_SCORE: f32 = 1.0;

/// The policy the domain owner published, lower-cased, when the result names it.
fn published_policy(r: &AuthResult) -> Option<String> {
    r.comment_value("p")
        .or_else(|| {
            ["policy.published-domain-policy", "policy.dmarc", "policy.p"]
                .iter()
                .find_map(|k| r.prop(k).map(str::to_string))
        })
        .filter(|p| !p.is_empty())
}

impl Check for Dmarc {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run(&self, mail: &Mail, config: &FilterConfig, findings: &mut Findings) {
        let results = first_auth_results(mail);
        let dmarc: Vec<&AuthResult> = results_for(&results, "dmarc").collect();
        let receipt = receipt_verdict(mail, |r| r.dmarc.as_ref());
        let header_pass = dmarc.iter().find(|r| r.result == "pass");
        let header_fail = dmarc.iter().find(|r| r.result == "fail");
        match receipt.as_deref() {
            Some("pass") => {
                let from = header_pass
                    .and_then(|r| r.prop("header.from"))
                    .or(mail.from_domain())
                    .unwrap_or("?");
                findings.note(
                    NAME,
                    "DMARC_PASS",
                    format!("DMARC pass for {from} (SES receipt)"),
                );
                return;
            }
            Some("fail") => {}
            _ => {
                if let Some(pass) = header_pass {
                    let from = pass.prop("header.from").unwrap_or("?");
                    findings.note(NAME, "DMARC_PASS", format!("DMARC pass for {from}"));
                    return;
                }
                if header_fail.is_none() {
                    return;
                }
            }
        }
        let from = header_fail
            .and_then(|r| r.prop("header.from"))
            .or(receipt.as_ref().and(mail.from_domain()))
            .unwrap_or("the From domain");
        // The receipt's dmarcPolicy, else what the header's comment or properties say.
        let published = receipt_verdict(mail, |r| r.dmarc_policy.as_ref())
            .or_else(|| header_fail.and_then(|r| published_policy(r)));
        let p_text = published.as_deref().unwrap_or("unknown");
        let (verdict, how) = match config.dmarc_fail {
            DmarcPolicy::Follow => match published.as_deref() {
                Some("reject") => (Verdict::Reject, "following p=reject"),
                Some("quarantine") => (Verdict::Quarantine, "following p=quarantine"),
                Some("none") => (Verdict::Accept, "following p=none"),
                _ => (Verdict::Quarantine, "published policy unknown: quarantined"),
            },
            DmarcPolicy::Accept => (Verdict::Accept, "dmarc_fail = accept"),
            DmarcPolicy::Quarantine => (Verdict::Quarantine, "dmarc_fail = quarantine"),
            DmarcPolicy::Reject => (Verdict::Reject, "dmarc_fail = reject"),
        };
        let detail = format!("DMARC fail for {from} (p={p_text}; {how})");
        if verdict == Verdict::Accept {
            findings.add_score(NAME, "DMARC_FAIL", detail, NONE_SCORE);
        } else {
            findings.demand_unless_allowed(NAME, "DMARC_FAIL", detail, verdict);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::checks::{run_check, tags};

    fn run(ar: &str, config: &FilterConfig) -> Findings {
        let raw = format!(
            "Authentication-Results: {ar}\r\nFrom: a@bank.test\r\nSubject: hi\r\n\r\nhello\r\n"
        );
        run_check(&Dmarc, &raw, config)
    }

    fn follow() -> FilterConfig {
        FilterConfig::default()
    }

    #[test]
    fn follows_the_published_policy() {
        let cases = [
            ("p=REJECT sp=NONE dis=NONE", Verdict::Reject),
            ("p=quarantine sp=none dis=quarantine", Verdict::Quarantine),
            ("p=NONE", Verdict::Accept),
            ("p=bogus", Verdict::Quarantine),
            ("no policy here", Verdict::Quarantine),
        ];
        for (comment, want) in cases {
            let f = run(
                &format!("amazonses.com; spf=pass; dmarc=FAIL ({comment}) header.from=bank.test"),
                &follow(),
            );
            assert_eq!(tags(&f), ["DMARC_FAIL"], "{comment}");
            assert_eq!(f.demanded_verdict(), want, "{comment}");
            assert!(f.reasons[0].detail.contains("bank.test"));
        }
        let f = run(
            "amazonses.com; dmarc=fail (p=none) header.from=bank.test",
            &follow(),
        );
        assert_eq!(f.score, NONE_SCORE);
    }

    #[test]
    fn policy_as_a_property() {
        let f = run(
            "mx.test; dmarc=fail policy.published-domain-policy=reject header.from=bank.test",
            &follow(),
        );
        assert_eq!(f.demanded_verdict(), Verdict::Reject);
    }

    #[test]
    fn fixed_policies_and_allow_list() {
        let ar = "amazonses.com; dmarc=fail (p=reject) header.from=bank.test";
        let c: FilterConfig = toml::from_str("dmarc_fail = \"quarantine\"").unwrap();
        assert_eq!(run(ar, &c).demanded_verdict(), Verdict::Quarantine);
        let c: FilterConfig = toml::from_str("dmarc_fail = \"accept\"").unwrap();
        let f = run(ar, &c);
        assert_eq!(f.demanded_verdict(), Verdict::Accept);
        assert_eq!(f.score, NONE_SCORE);
        let c: FilterConfig = toml::from_str("dmarc_fail = \"reject\"").unwrap();
        let mut f = run("amazonses.com; dmarc=fail (p=none)", &c);
        assert_eq!(f.demanded_verdict(), Verdict::Reject);
        f.allowlisted = true;
        assert_eq!(f.demanded_verdict(), Verdict::Accept);
    }

    #[test]
    fn the_receipt_decides_and_names_the_policy() {
        use crate::model::Receipt;
        let raw = b"Authentication-Results: amazonses.com; dmarc=pass header.from=bank.test\r\nFrom: a@bank.test\r\nSubject: hi\r\n\r\nhello\r\n";
        let receipt = Receipt {
            dmarc: Some("FAIL".into()),
            dmarc_policy: Some("reject".into()),
            ..Receipt::default()
        };
        let mail = Mail::parse_with_receipt(raw, Some(&receipt)).unwrap();
        let mut f = Findings::default();
        Dmarc.run(&mail, &follow(), &mut f);
        assert_eq!(f.demanded_verdict(), Verdict::Reject);
        assert!(f.reasons[0].detail.contains("p=reject"), "{:?}", f.reasons);
        assert!(f.reasons[0].detail.contains("bank.test"), "{:?}", f.reasons);
    }

    #[test]
    fn pass_none_and_absent() {
        let f = run("amazonses.com; dmarc=pass header.from=bank.test", &follow());
        assert_eq!(tags(&f), ["DMARC_PASS"]);
        let f = run("amazonses.com; dmarc=none header.from=bank.test", &follow());
        assert!(f.reasons.is_empty());
        let f = run_check(
            &Dmarc,
            "From: a@b.test\r\nSubject: x\r\n\r\nhi\r\n",
            &follow(),
        );
        assert!(f.reasons.is_empty());
    }
}
