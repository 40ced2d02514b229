//! The sender block and allow lists (`block_senders`, `allow_senders`: `ann@example.org`,
//! `@example.org` or `example.org`, matched against the `From` address).
//!
//! A blocked sender is rejected, whatever else holds. An allowed sender skips the content
//! score and lifts the SES-spam and authentication demands, but only when SES's topmost
//! `Authentication-Results` and `Received-SPF` do not show `dmarc=fail` or `spf=fail`: a
//! forged `From` must not ride on someone's allow-list entry. The filter reads the allow
//! list after every check has run, so the order of checks does not matter.

use super::auth::{first_auth_results, first_received_spf, results_for};
use crate::config::FilterConfig;
use crate::filter::{Check, Findings};
use crate::mail::Mail;
use crate::matcher::sender_matches;
use crate::model::Verdict;

pub struct SenderLists;

const NAME: &str = "sender_lists";

impl Check for SenderLists {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run(&self, mail: &Mail, config: &FilterConfig, findings: &mut Findings) {
        let Some(from) = mail.from.as_deref() else {
            return;
        };
        if let Some(p) = config
            .block_senders
            .iter()
            .find(|p| sender_matches(p, from))
        {
            findings.demand(
                NAME,
                "BLOCKED_SENDER",
                format!("{from} matches block_senders entry {p:?}"),
                Verdict::Reject,
            );
        }
        let Some(p) = config
            .allow_senders
            .iter()
            .find(|p| sender_matches(p, from))
        else {
            return;
        };
        let results = first_auth_results(mail);
        let mut failed: Vec<&str> = Vec::new();
        if results_for(&results, "dmarc").any(|r| r.result == "fail") {
            failed.push("dmarc=fail");
        }
        let spf_fail = |r: &str| r == "fail" || r == "hardfail";
        if results_for(&results, "spf").any(|r| spf_fail(&r.result))
            || first_received_spf(mail).is_some_and(|r| spf_fail(&r))
        {
            failed.push("spf=fail");
        }
        if failed.is_empty() {
            findings.allowlisted = true;
            findings.note(
                NAME,
                "ALLOWED_SENDER",
                format!("{from} matches allow_senders entry {p:?}"),
            );
        } else {
            findings.note(
                NAME,
                "ALLOWLIST_IGNORED_AUTH_FAIL",
                format!(
                    "{from} matches allow_senders entry {p:?} but authentication failed ({}): not allow-listed",
                    failed.join(", ")
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::checks::{run_check, tags};

    fn config() -> FilterConfig {
        toml::from_str(
            r#"
            allow_senders = ["boss@vip.test", "@partner.test", "friends.test"]
            block_senders = ["@spammer.test", "pest@annoy.test"]
            "#,
        )
        .unwrap()
    }

    fn run(headers: &str, from: &str) -> Findings {
        let raw = format!("{headers}From: \"X\" <{from}>\r\nSubject: hi\r\n\r\nhello\r\n");
        run_check(&SenderLists, &raw, &config())
    }

    #[test]
    fn blocked_senders_are_rejected() {
        for from in ["any@spammer.test", "Pest@Annoy.test"] {
            let mut f = run("", from);
            assert_eq!(tags(&f), ["BLOCKED_SENDER"], "{from}");
            f.allowlisted = true;
            assert_eq!(f.demanded_verdict(), Verdict::Reject);
        }
        assert!(run("", "pest2@annoy.test").reasons.is_empty());
    }

    #[test]
    fn allowed_senders_by_address_and_domain() {
        for from in ["Boss@VIP.test", "ann@partner.test", "bob@friends.test"] {
            let f = run(
                "Authentication-Results: amazonses.com; spf=pass; dkim=pass; dmarc=pass\r\n",
                from,
            );
            assert!(f.allowlisted, "{from}");
            assert_eq!(tags(&f), ["ALLOWED_SENDER"]);
        }
        let f = run("", "other@vip.test");
        assert!(!f.allowlisted);
        assert!(!run("", "a@sub.partner.test").allowlisted);
    }

    #[test]
    fn forged_from_is_not_allow_listed() {
        for headers in [
            "Authentication-Results: amazonses.com; spf=pass; dmarc=FAIL (p=none) header.from=vip.test\r\n",
            "Authentication-Results: amazonses.com; SPF=Fail smtp.mailfrom=vip.test\r\n",
            "Received-SPF: fail (not permitted)\r\n",
        ] {
            let f = run(headers, "boss@vip.test");
            assert!(!f.allowlisted, "{headers}");
            assert_eq!(tags(&f), ["ALLOWLIST_IGNORED_AUTH_FAIL"]);
        }
        // A forged pass below SES's fail does not help.
        let f = run(
            "Authentication-Results: amazonses.com; dmarc=fail\r\nAuthentication-Results: evil; dmarc=pass\r\n",
            "boss@vip.test",
        );
        assert!(!f.allowlisted);
        // A softfail or a DKIM failure alone does not cancel the allow list.
        let f = run(
            "Authentication-Results: amazonses.com; spf=softfail; dkim=fail; dmarc=none\r\n",
            "boss@vip.test",
        );
        assert!(f.allowlisted);
    }

    #[test]
    fn no_from_no_lists() {
        let f = run_check(&SenderLists, "Subject: hi\r\n\r\nhello\r\n", &config());
        assert!(f.reasons.is_empty());
    }
}
