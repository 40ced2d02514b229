//! More than one `From` header field. RFC 5322 allows exactly one, and a second one is a
//! known trick to make one filter judge one sender while a mail client shows another, so
//! the message is held back whatever the allow list says.

use crate::config::FilterConfig;
use crate::filter::{Check, Findings};
use crate::mail::Mail;
use crate::model::Verdict;

pub struct MultipleFrom;

const NAME: &str = "multiple_from";

impl Check for MultipleFrom {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run(&self, mail: &Mail, _config: &FilterConfig, findings: &mut Findings) {
        if mail.from_headers > 1 {
            findings.demand(
                NAME,
                "MULTIPLE_FROM",
                format!(
                    "{} From header fields (RFC 5322 allows one)",
                    mail.from_headers
                ),
                Verdict::Quarantine,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::checks::{run_check, tags};

    #[test]
    fn a_second_from_quarantines_even_when_allow_listed() {
        let raw = "From: mallory@attacker.example\r\nFrom: pat@partner.example\r\nSubject: hi\r\n\r\nhello\r\n";
        let mut f = run_check(&MultipleFrom, raw, &FilterConfig::default());
        assert_eq!(tags(&f), ["MULTIPLE_FROM"]);
        f.allowlisted = true;
        assert_eq!(f.demanded_verdict(), Verdict::Quarantine);
        // The first From is the sender the other checks see.
        assert_eq!(
            Mail::parse(raw.as_bytes()).unwrap().from.as_deref(),
            Some("mallory@attacker.example")
        );
    }

    #[test]
    fn one_from_is_fine() {
        let f = run_check(
            &MultipleFrom,
            "From: a@example.org\r\nSubject: hi\r\n\r\nx\r\n",
            &FilterConfig::default(),
        );
        assert!(tags(&f).is_empty());
    }
}
