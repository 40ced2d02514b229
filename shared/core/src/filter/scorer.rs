//! The rule-based content scorer: the configured `[[filter.rules]]` plus a modest set of
//! built-in heuristics in the spirit of SpamAssassin. Every hit is a reason with a stable
//! tag and its score.
//!
//! Headers written by upstream filters (`X-Spam-Status`, `X-Spam-Flag`, `X-Spam-Score`,
//! `X-Spamd-*`, `X-Microsoft-Antispam`, …) are never read here or anywhere in the filter:
//! anyone can write them, so a spammer would simply send `X-Spam-Status: No, score=-100`.
//! They are not even used to raise the score, so that the measured catch rate is that of
//! this filter and not of the filter that ran before it. No built-in heuristic has a
//! negative score for the same reason: everything the sender wrote can be forged.
//!
//! Cost: the message is analysed once for all heuristics (`heuristics/analysis.rs`); their
//! regexes are compiled once per process, and all phrases are one `RegexSet`. The text is
//! at most `MAX_TEXT` bytes, the HTML scanned for links is bounded the same.

use super::{Findings, SpamScorer, heuristics};
use crate::config::{Field, FilterConfig, ScoreRule};
use crate::mail::Mail;

pub use heuristics::base_domain;

pub struct RuleScorer;

const NAME: &str = "rules";

impl SpamScorer for RuleScorer {
    fn name(&self) -> &str {
        NAME
    }

    fn score(&self, mail: &Mail, config: &FilterConfig, findings: &mut Findings) {
        for rule in &config.rules {
            if let Some(field) = rule_matches(rule, mail) {
                findings.add_score(
                    NAME,
                    &rule.name,
                    format!("rule {:?} matched the {field}", rule.name),
                    rule.score,
                );
            }
        }
        builtin(mail, findings);
    }
}

/// Applies a configured rule; returns the name of the field that matched.
fn rule_matches(rule: &ScoreRule, mail: &Mail) -> Option<String> {
    let p = &rule.pattern;
    match &rule.field {
        Field::Subject => p.is_match(&mail.subject).then(|| "subject".into()),
        Field::Body => p.is_match(&mail.text).then(|| "body".into()),
        Field::From => mail
            .from
            .as_deref()
            .is_some_and(|f| p.is_match(f))
            .then(|| "from address".into()),
        Field::Text => {
            (p.is_match(&mail.subject) || p.is_match(&mail.text)).then(|| "subject or body".into())
        }
        Field::Header(name) => mail
            .header_texts(name)
            .any(|v| p.is_match(&v))
            .then(|| format!("{name} header")),
    }
}
/// The built-in heuristics (one file each under `heuristics/`).
fn builtin(mail: &Mail, findings: &mut Findings) {
    for (tag, score, detail) in heuristics::all(mail) {
        findings.add_score(NAME, tag, detail, score);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::Filter;
    use crate::model::Verdict;
    use crate::{Config, Mail};

    fn tags_of(raw: &str) -> Vec<&'static str> {
        let mail = Mail::parse(raw.as_bytes()).unwrap();
        heuristics::all(&mail)
            .into_iter()
            .map(|(t, _, _)| t)
            .collect()
    }

    fn score_of(raw: &str, config: &Config) -> (f32, Verdict) {
        let mail = Mail::parse(raw.as_bytes()).unwrap();
        let r = Filter::new().run(&mail, config);
        (r.spam_score, r.verdict)
    }

    const HAM: &str = "From: Ann Example <ann@example.org>\r\nTo: support@example.com\r\nSubject: Question about my invoice\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\nMessage-ID: <1@example.org>\r\n\r\nHello,\r\n\r\nI was charged twice for order 1234. Could you please look into it?\r\n\r\nThanks, Ann\r\n";

    #[test]
    fn plain_ham_scores_nothing() {
        assert!(tags_of(HAM).is_empty(), "{:?}", tags_of(HAM));
        let (score, verdict) = score_of(HAM, &Config::default_config());
        assert_eq!(score, 0.0);
        assert_eq!(verdict, Verdict::Accept);
    }

    #[test]
    fn upstream_spam_headers_never_lower_the_score() {
        let spam = "From: Winner <promo@lucky.test>\r\nTo: you@example.com\r\nSubject: YOU HAVE WON $1,000,000!!!                 48213\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\nMessage-ID: <2@lucky.test>\r\n\r\nCongratulations, you have won the lottery! Click here to claim your prize. This is not spam. To be removed from our list reply with REMOVE in the subject.\r\n";
        let with_headers = spam.replacen(
            "From:",
            "X-Spam-Status: No, score=-100.0 required=5.0 tests=ALL_TRUSTED\r\nX-Spam-Flag: NO\r\nX-Spam-Score: -100\r\nX-Spamd-Result: default: False [-100.00 / 15.00]\r\nX-Microsoft-Antispam: BCL:0;\r\nX-Spam-Level: \r\nFrom:",
            1,
        );
        let config = Config::default_config();
        let plain = score_of(spam, &config);
        let headed = score_of(&with_headers, &config);
        assert_eq!(plain, headed);
        assert!(plain.0 >= 5.0, "{plain:?}");
        assert_ne!(plain.1, Verdict::Accept);
        // And a `Yes` does not raise the score of ham either.
        let ham_yes = HAM.replacen(
            "From:",
            "X-Spam-Flag: YES\r\nX-Spam-Status: Yes, score=99\r\nFrom:",
            1,
        );
        assert_eq!(score_of(&ham_yes, &config), score_of(HAM, &config));
    }

    #[test]
    fn configured_rules_apply_to_their_fields() {
        let config = Config::from_toml(
            r#"
            [[filter.rules]]
            name = "CRYPTO"
            field = "body"
            pattern = "bitcoin|crypto"
            score = 2.5

            [[filter.rules]]
            name = "FROM_BAD"
            field = "from"
            pattern = "@example\\.org$"
            score = 1.0

            [[filter.rules]]
            name = "SUBJ_INVOICE"
            field = "subject"
            pattern = "invoice"
            score = 0.5

            [[filter.rules]]
            name = "HDR"
            field = "header:X-Mailer"
            pattern = "spamware"
            score = 4.0

            [[filter.rules]]
            name = "TEXT"
            pattern = "charged twice"
            score = 0.25
            "#,
            "test.toml",
        )
        .unwrap();
        let mail = Mail::parse(HAM.as_bytes()).unwrap();
        let r = Filter::new().run(&mail, &config);
        let tags: Vec<&str> = r.reasons.iter().map(|r| r.tag.as_str()).collect();
        assert_eq!(tags, ["FROM_BAD", "SUBJ_INVOICE", "TEXT"]);
        assert_eq!(r.spam_score, 1.75);
        assert_eq!(r.scorer, "rules");

        let spammy = HAM.replacen("From:", "X-Mailer: SpamWare 1.0\r\nFrom:", 1);
        let mail = Mail::parse(spammy.as_bytes()).unwrap();
        let r = Filter::new().run(&mail, &config);
        assert_eq!(r.spam_score, 5.75);
        assert_eq!(r.verdict, Verdict::Quarantine);
    }

    #[test]
    fn subject_heuristics() {
        let t = tags_of(
            "From: a@x.test\r\nTo: zzzz@example.com\r\nSubject: zzzz, FREE CASH FOR YOU NOW!!          12345\r\n\r\nhi\r\n",
        );
        for want in [
            "SUBJ_TRACKING_ID",
            "SUBJ_EXCLAIM",
            "SUBJ_SPAM_WORDS",
            "SUBJ_HAS_RECIPIENT",
        ] {
            assert!(t.contains(&want), "{want} missing in {t:?}");
        }
        let t =
            tags_of("From: a@x.test\r\nSubject: ADV: LOWEST RATES ON LIFE INSURANCE\r\n\r\nhi\r\n");
        assert!(
            t.contains(&"SUBJ_ADV") && t.contains(&"SUBJ_ALL_CAPS"),
            "{t:?}"
        );
        // Normal subjects, short capitals and ticket numbers do not fire.
        for s in [
            "Re: [ILUG] NFS problem",
            "RE: FYI",
            "Meeting moved to 3pm",
            "Ticket #12345 updated",
            "ADVICE needed on routing",
        ] {
            let t = tags_of(&format!(
                "From: a@x.test\r\nTo: b@y.test\r\nSubject: {s}\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\nMessage-ID: <1@x>\r\n\r\nhi\r\n"
            ));
            assert!(t.is_empty(), "{s}: {t:?}");
        }
    }

    #[test]
    fn phrases_multilingual() {
        for body in [
            "Sie haben gewonnen! Jetzt Gewinn abholen.",
            "Félicitations, vous avez gagné un iPhone",
            "Usted ha ganado un premio",
            "Parabéns, você ganhou um prêmio",
        ] {
            let t = tags_of(&format!(
                "From: a@x.test\r\nSubject: hola\r\n\r\n{body}\r\n"
            ));
            assert!(t.contains(&"MULTILINGUAL_SPAM"), "{body}: {t:?}");
        }
    }

    #[test]
    fn html_and_link_heuristics() {
        let raw = "From: \"service@paypal.com\" <x@evil.test>\r\nTo: a@example.com\r\nSubject: account\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\nMessage-ID: <1@x>\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=default\r\n\r\n<html><body><a href=\"http://192.0.2.7/login\">https://www.paypal.com/signin</a> <a href='https://bit.ly/abc'>here</a> <a href=\"http://www.paypal.com@evil.test/\">x</a></body></html>\r\n";
        let t = tags_of(raw);
        for want in [
            "HTML_ONLY_LITTLE_TEXT",
            "URL_HOST_MISMATCH",
            "URL_IP_ADDRESS",
            "URL_SHORTENER",
            "URL_USERINFO",
            "FROM_NAME_OTHER_ADDRESS",
            "CHARSET_BOGUS",
        ] {
            assert!(t.contains(&want), "{want} missing in {t:?}");
        }
        // Same host shown and linked, subdomains of one domain: no mismatch.
        let raw = "From: a@x.test\r\nSubject: s\r\nContent-Type: text/html\r\n\r\n<a href=\"https://news.example.co.uk/a\">www.example.co.uk</a> <a href=\"http://example.org/\">Click for more</a>\r\n";
        assert!(!tags_of(raw).contains(&"URL_HOST_MISMATCH"));
    }

    #[test]
    fn header_heuristics() {
        let t = tags_of(
            "From: Mr Smith <smith@bank.test>\r\nReply-To: smith.private@yahoo.com\r\nSubject: proposal\r\n\r\nI need your help to transfer US$ 25 million.\r\n",
        );
        for want in [
            "MISSING_DATE",
            "MISSING_MESSAGE_ID",
            "REPLY_TO_FREEMAIL_MONEY",
            "ADVANCE_FEE",
        ] {
            assert!(t.contains(&want), "{want} missing in {t:?}");
        }
        let to: Vec<String> = (0..60).map(|i| format!("u{i}@example.com")).collect();
        let t = tags_of(&format!(
            "From: a@x.test\r\nTo: {}\r\nSubject: s\r\n\r\nhi\r\n",
            to.join(", ")
        ));
        assert!(t.contains(&"MANY_RECIPIENTS"), "{t:?}");
    }

    #[test]
    fn allow_listed_mail_skips_the_score() {
        let config =
            Config::from_toml("[filter]\nallow_senders = [\"@lucky.test\"]\n", "t.toml").unwrap();
        let raw = "From: promo@lucky.test\r\nSubject: YOU HAVE WON!!!     12345\r\n\r\nCongratulations you have won the lottery! Click here.\r\n";
        let mail = Mail::parse(raw.as_bytes()).unwrap();
        let r = Filter::new().run(&mail, &config);
        assert_eq!(r.verdict, Verdict::Accept);
        assert!(r.reasons.iter().any(|r| r.tag == "ALLOWED_SENDER"));
    }
}
