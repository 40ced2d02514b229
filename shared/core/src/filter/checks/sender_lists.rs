//! The sender block and allow lists (`block_senders`, `allow_senders`: `ann@example.org`,
//! `@example.org` or `example.org`, matched against the `From` address).
//!
//! A blocked sender is rejected, whatever else holds. An allowed sender skips the content
//! score and lifts the SES-spam and authentication demands, but only when SES's topmost
//! `Authentication-Results` and `Received-SPF` do not show `dmarc=fail` or `spf=fail`: a
//! forged `From` must not ride on someone's allow-list entry. The filter reads the allow
//! list after every check has run, so the order of checks does not matter.
//!
//! The per-recipient allow lists (a digest's "always allow", kept in the state, not the
//! config) count the same way, under the same authentication rule, and only when every
//! recipient of the message allowed the sender: one recipient's entry never lifts the
//! filter for mail that also goes to others.

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
        let failed = auth_failures(mail);
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

/// What in SES's topmost authentication results forbids allow-listing: `dmarc=fail`,
/// `spf=fail` (a forged `From` must not ride on an allow-list entry).
fn auth_failures(mail: &Mail) -> Vec<&'static str> {
    let results = first_auth_results(mail);
    let mut failed: Vec<&'static str> = Vec::new();
    if results_for(&results, "dmarc").any(|r| r.result == "fail") {
        failed.push("dmarc=fail");
    }
    let spf_fail = |r: &str| r == "fail" || r == "hardfail";
    if results_for(&results, "spf").any(|r| spf_fail(&r.result))
        || first_received_spf(mail).is_some_and(|r| spf_fail(&r))
    {
        failed.push("spf=fail");
    }
    failed
}

/// At most this many recipients are looked up in the per-recipient allow lists (SES
/// delivers a message to at most 50); mail to more is never allow-listed by them.
pub const MAX_ALLOW_RECIPIENTS: usize = 50;

/// The per-recipient allow lists (see [`crate::filter::Filter::run_allowing`]): the
/// message counts as allow-listed when every one of its recipients allowed its sender
/// (`allowing`) and its authentication does not fail, as for `allow_senders`.
pub(crate) fn allowed_by_recipients(mail: &Mail, allowing: &[String], findings: &mut Findings) {
    let Some(from) = mail.from.as_deref() else {
        return;
    };
    let recipients = &mail.recipients;
    if recipients.is_empty()
        || recipients.len() > MAX_ALLOW_RECIPIENTS
        || !recipients.iter().all(|r| allowing.contains(r))
    {
        return;
    }
    let who = if recipients.len() == 1 {
        format!("its recipient {}", recipients[0])
    } else {
        format!("each of its {} recipients", recipients.len())
    };
    let failed = auth_failures(mail);
    if failed.is_empty() {
        findings.allowlisted = true;
        findings.note(
            NAME,
            "ALLOWED_BY_RECIPIENT",
            format!("{from} is allowed by {who} (a digest's always allow)"),
        );
    } else {
        findings.note(
            NAME,
            "ALLOWLIST_IGNORED_AUTH_FAIL",
            format!(
                "{from} is allowed by {who} but authentication failed ({}): not allow-listed",
                failed.join(", ")
            ),
        );
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
    fn recipients_allow_a_sender_only_when_every_one_of_them_did() {
        let pass = "Authentication-Results: amazonses.com; spf=pass; dkim=pass; dmarc=pass\r\n";
        let run = |headers: &str, to: &str, allowing: &[&str]| {
            let raw = format!(
                "{headers}From: <promo@prizes.test>\r\nTo: {to}\r\nSubject: hi\r\n\r\nhello\r\n"
            );
            let mail = Mail::parse(raw.as_bytes()).unwrap();
            let mut f = Findings::default();
            let allowing: Vec<String> = allowing.iter().map(|a| a.to_string()).collect();
            allowed_by_recipients(&mail, &allowing, &mut f);
            f
        };
        let f = run(pass, "ann@corp.test", &["ann@corp.test"]);
        assert!(f.allowlisted);
        assert_eq!(tags(&f), ["ALLOWED_BY_RECIPIENT"]);
        // Another recipient of the same message did not: not allow-listed.
        let f = run(pass, "ann@corp.test, bob@corp.test", &["ann@corp.test"]);
        assert!(!f.allowlisted && f.reasons.is_empty());
        assert!(
            run(
                pass,
                "ann@corp.test, bob@corp.test",
                &["ann@corp.test", "bob@corp.test"]
            )
            .allowlisted
        );
        assert!(!run(pass, "bob@corp.test", &["ann@corp.test"]).allowlisted);
        // A forged From rides on no recipient's entry either.
        let f = run(
            "Authentication-Results: amazonses.com; spf=pass; dmarc=fail\r\n",
            "ann@corp.test",
            &["ann@corp.test"],
        );
        assert!(!f.allowlisted);
        assert_eq!(tags(&f), ["ALLOWLIST_IGNORED_AUTH_FAIL"]);
        // Past the cap of recipients looked up: never allow-listed.
        let many: Vec<String> = (0..=MAX_ALLOW_RECIPIENTS)
            .map(|i| format!("r{i}@corp.test"))
            .collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(!run(pass, &many.join(", "), &refs).allowlisted);
    }

    #[test]
    fn no_from_no_lists() {
        let f = run_check(&SenderLists, "Subject: hi\r\n\r\nhello\r\n", &config());
        assert!(f.reasons.is_empty());
    }
}
