//! One module per filter check. A check reads the message and the filter config and writes
//! what it found into the shared [`Findings`](super::Findings); [`all`] lists them.
//!
//! `auth` is not a check: it parses the authentication headers SES prepends, for the
//! checks that need them.

use super::Check;

pub mod attachments;
pub mod auth;
pub mod dkim;
pub mod dmarc;
pub mod multiple_from;
pub mod sender_lists;
pub mod ses_spam;
pub mod ses_virus;
pub mod spf;

/// Every check, in the order they run. The order does not change the verdict: the filter
/// runs every check before it reads the demanded verdict and the allow list.
pub fn all() -> Vec<Box<dyn Check>> {
    vec![
        Box::new(ses_virus::SesVirus),
        Box::new(ses_spam::SesSpam),
        Box::new(spf::Spf),
        Box::new(dkim::Dkim),
        Box::new(dmarc::Dmarc),
        Box::new(attachments::Attachments),
        Box::new(sender_lists::SenderLists),
        Box::new(multiple_from::MultipleFrom),
    ]
}

/// SES's verdict, upper-cased: the receipt notification's when there was one, else the first
/// token of the first (topmost, so SES's own) value of a verdict header such as
/// `X-SES-Virus-Verdict`.
pub(crate) fn ses_verdict(
    mail: &crate::mail::Mail,
    from_receipt: impl Fn(&crate::model::Receipt) -> Option<&String>,
    header: &str,
) -> Option<String> {
    if let Some(v) = auth::receipt_verdict(mail, from_receipt) {
        return Some(v.to_ascii_uppercase());
    }
    let v = mail.header_text(header)?;
    let token = v
        .split(|c: char| c.is_whitespace() || c == ';' || c == '(')
        .find(|t| !t.is_empty())?;
    Some(token.to_ascii_uppercase())
}

/// Test helper: runs one check on a raw message with a config.
#[cfg(test)]
pub(crate) fn run_check(
    check: &dyn Check,
    raw: &str,
    config: &crate::config::FilterConfig,
) -> super::Findings {
    let mail = crate::mail::Mail::parse(raw.as_bytes()).expect("test message parses");
    let mut findings = super::Findings::default();
    check.run(&mail, config, &mut findings);
    findings
}

/// Test helper: the tags a check wrote.
#[cfg(test)]
pub(crate) fn tags(findings: &super::Findings) -> Vec<&str> {
    findings.reasons.iter().map(|r| r.tag.as_str()).collect()
}
