//! Is the address an auto-reply would go to authenticated? A forger can write any
//! `Return-Path`, so a reply to an unauthenticated one is backscatter: mail to a third party
//! carrying the forger's text.
//!
//! The reply address is authenticated when
//! - SPF passed for its domain: the MAIL FROM domain SPF was checked for (the receipt
//!   notification's `mail.source`, else `smtp.mailfrom` or `envelope-from` of the topmost
//!   `Authentication-Results`, else `envelope-from` of the topmost `Received-SPF`) is the
//!   reply address's domain; or
//! - DMARC passed for the `From` domain and the reply address's domain is aligned with it:
//!   the same domain, or one a subdomain of the other (relaxed alignment without a
//!   public-suffix list, so two sibling subdomains of one organisation are not aligned).
//!
//! The verdicts are SES's: the receipt notification's and the topmost headers' (lower ones
//! came with the message; see [`crate::filter::checks::auth`]). For SPF every one of them
//! must say `pass` (the worst counts); for DMARC the receipt's `pass` or `fail` decides,
//! else the topmost `Authentication-Results`.

use crate::filter::checks::auth::{
    AuthResult, first_auth_results, first_received_spf, receipt_verdict, results_for,
};
use crate::mail::Mail;
use crate::matcher::domain_matches;

/// What SPF and DMARC said about the sender, against the domain a reply would go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderAuth {
    /// The reply address's domain, lower-cased.
    pub reply_domain: String,
    /// The SPF result (`pass`, `softfail`, `fail`, `none`, `gray`, …); `none` without one.
    pub spf: String,
    /// The MAIL FROM domain the SPF result is for, when a verdict names it. When several
    /// name domains, the first that is not the reply address's domain.
    pub spf_domain: Option<String>,
    /// The DMARC result (`pass`, `fail`, `none`, …); `none` without one.
    pub dmarc: String,
    /// The `From` domain DMARC evaluated, when known.
    pub dmarc_domain: Option<String>,
}

impl SenderAuth {
    /// Reads the verdicts of `mail` for a reply to `reply_to`.
    pub fn of(mail: &Mail, reply_to: &str) -> SenderAuth {
        let reply_domain = domain_of(reply_to).unwrap_or_default();
        let results = first_auth_results(mail);
        let (spf, spf_domain) = spf(mail, &results, &reply_domain);
        let (dmarc, dmarc_domain) = dmarc(mail, &results);
        SenderAuth {
            reply_domain,
            spf,
            spf_domain,
            dmarc,
            dmarc_domain,
        }
    }

    /// SPF passed for the reply address's domain.
    pub fn spf_authenticates(&self) -> bool {
        self.spf == "pass"
            && !self.reply_domain.is_empty()
            && self.spf_domain.as_deref() == Some(self.reply_domain.as_str())
    }

    /// DMARC passed for a `From` domain aligned with the reply address's domain.
    pub fn dmarc_authenticates(&self) -> bool {
        self.dmarc == "pass"
            && self
                .dmarc_domain
                .as_deref()
                .is_some_and(|d| aligned(d, &self.reply_domain))
    }

    pub fn is_authenticated(&self) -> bool {
        self.spf_authenticates() || self.dmarc_authenticates()
    }

    /// What was found, for an audit reason: `SPF none for third.example, DMARC none`,
    /// `SPF pass for other.example, not third.example, DMARC pass for a.example, not aligned
    /// with third.example`.
    pub fn describe(&self) -> String {
        let reply = if self.reply_domain.is_empty() {
            "the reply address"
        } else {
            self.reply_domain.as_str()
        };
        let spf = match self.spf_domain.as_deref() {
            Some(d) if d == reply => format!("SPF {} for {d}", self.spf),
            Some(d) => format!("SPF {} for {d}, not {reply}", self.spf),
            None if self.spf == "pass" => {
                format!("SPF pass for an unnamed MAIL FROM domain, not {reply}")
            }
            None => format!("SPF {} for {reply}", self.spf),
        };
        let dmarc = match self.dmarc_domain.as_deref() {
            Some(d) if self.dmarc == "pass" && !aligned(d, &self.reply_domain) => {
                format!("DMARC pass for {d}, not aligned with {reply}")
            }
            Some(d) => format!("DMARC {} for {d}", self.dmarc),
            None => format!("DMARC {}", self.dmarc),
        };
        format!("{spf}, {dmarc}")
    }
}

/// Relaxed alignment without a public-suffix list: the same domain, or one a subdomain of
/// the other.
fn aligned(a: &str, b: &str) -> bool {
    !a.is_empty() && !b.is_empty() && (domain_matches(a, b) || domain_matches(b, a))
}

/// The domain of an address or of a bare domain (`smtp.mailfrom=example.org`), lower-cased,
/// without brackets or a trailing dot.
fn domain_of(address: &str) -> Option<String> {
    let a = address.trim().trim_matches(['<', '>', '"']).trim();
    let d = a.rsplit_once('@').map_or(a, |(_, d)| d);
    let d = d.trim().trim_end_matches('.').to_ascii_lowercase();
    (!d.is_empty()
        && d.contains('.')
        && d.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || !c.is_ascii()))
    .then_some(d)
}

/// How bad an SPF result is for authentication; only `pass` is 0.
fn spf_rank(result: &str) -> u8 {
    match result {
        "pass" => 0,
        "fail" | "hardfail" => 5,
        "softfail" => 4,
        "permerror" | "temperror" | "processing_failed" => 3,
        "neutral" | "none" | "policy" | "gray" => 2,
        _ => 1, // bestguesspass and unknown words are not a pass
    }
}

/// The worst SPF result of the receipt and the topmost headers, and the MAIL FROM domain
/// it is for.
fn spf(mail: &Mail, results: &[AuthResult], reply_domain: &str) -> (String, Option<String>) {
    let mut seen: Vec<String> = Vec::new();
    let mut domains: Vec<String> = Vec::new();
    // DISABLED (no scan) says nothing; the headers then decide.
    if let Some(r) = receipt_verdict(mail, |r| r.spf.as_ref()).filter(|r| r != "disabled") {
        seen.push(r);
        if let Some(d) = mail
            .receipt
            .as_ref()
            .and_then(|r| r.mail_from.as_deref())
            .and_then(domain_of)
        {
            domains.push(d);
        }
    }
    for r in results_for(results, "spf") {
        seen.push(r.result.clone());
        if let Some(d) = r
            .prop("smtp.mailfrom")
            .or_else(|| r.prop("envelope-from"))
            .and_then(domain_of)
        {
            domains.push(d);
        }
    }
    if let Some(r) = first_received_spf(mail) {
        seen.push(r);
        if let Some(d) = received_spf_envelope_from(mail).and_then(|d| domain_of(&d)) {
            domains.push(d);
        }
    }
    let result = seen
        .into_iter()
        .max_by_key(|r| spf_rank(r))
        .unwrap_or_else(|| "none".into());
    let domain = domains
        .iter()
        .find(|d| *d != reply_domain)
        .or(domains.first())
        .cloned();
    (result, domain)
}

/// The `envelope-from=` of the topmost `Received-SPF`.
fn received_spf_envelope_from(mail: &Mail) -> Option<String> {
    let v = mail.header_text("Received-SPF")?;
    // Key-value pairs follow the comment; a comment's text is never read as one.
    let mut depth = 0usize;
    let mut outside = String::new();
    for c in v.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            _ if depth == 0 => outside.push(c),
            _ => {}
        }
    }
    outside
        .split(|c: char| c == ';' || c.is_whitespace())
        .filter_map(|t| t.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("envelope-from"))
        .map(|(_, v)| v.trim().trim_matches('"').to_string())
}

/// The DMARC result and the `From` domain it is for.
fn dmarc(mail: &Mail, results: &[AuthResult]) -> (String, Option<String>) {
    let from_domain = || mail.from_domain().and_then(domain_of);
    let header: Vec<&AuthResult> = results_for(results, "dmarc").collect();
    let header_domain = |r: &AuthResult| r.prop("header.from").and_then(domain_of);
    let pass = header.iter().find(|r| r.result == "pass");
    let fail = header.iter().find(|r| r.result == "fail");
    match receipt_verdict(mail, |r| r.dmarc.as_ref()).as_deref() {
        Some("pass") => (
            "pass".into(),
            pass.and_then(|r| header_domain(r)).or_else(from_domain),
        ),
        Some("fail") => (
            "fail".into(),
            fail.and_then(|r| header_domain(r)).or_else(from_domain),
        ),
        _ => match (fail, pass, header.first()) {
            (Some(r), _, _) => ("fail".into(), header_domain(r).or_else(from_domain)),
            (None, Some(r), _) => ("pass".into(), header_domain(r).or_else(from_domain)),
            (None, None, Some(r)) => (r.result.clone(), header_domain(r)),
            (None, None, None) => ("none".into(), None),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Receipt;

    const SES_PASS: &str = "Authentication-Results: amazonses.com;\n spf=pass (spfCheck: domain of customer.example designates 203.0.113.5 as permitted sender) smtp.mailfrom=ann@customer.example;\n dkim=pass header.i=@customer.example;\n dmarc=pass header.from=customer.example;\n";

    fn auth(headers: &str, return_path: &str, from: &str) -> SenderAuth {
        let raw = format!(
            "Return-Path: <{return_path}>\n{headers}From: {from}\nTo: support@example.com\nSubject: x\n\nx\n"
        );
        let mail = Mail::parse(raw.as_bytes()).unwrap();
        SenderAuth::of(&mail, return_path)
    }

    #[test]
    fn spf_pass_for_the_reply_domain_authenticates() {
        let a = auth(SES_PASS, "ann@customer.example", "ann@customer.example");
        assert!(a.spf_authenticates() && a.dmarc_authenticates(), "{a:?}");
        let a = auth(
            "Authentication-Results: amazonses.com; spf=pass smtp.mailfrom=Customer.Example.; dmarc=none\n",
            "bounce@customer.example",
            "ann@elsewhere.example",
        );
        assert!(a.spf_authenticates(), "{a:?}");
        assert!(!a.dmarc_authenticates());
        assert!(a.is_authenticated());
    }

    #[test]
    fn received_spf_alone_names_its_envelope_from() {
        let a = auth(
            "Received-SPF: pass (spfCheck: domain of x.example designates 192.0.2.1 envelope-from=evil@evil.example) client-ip=192.0.2.1; envelope-from=ann@customer.example; helo=mx;\n",
            "ann@customer.example",
            "ann@customer.example",
        );
        assert_eq!(a.spf_domain.as_deref(), Some("customer.example"));
        assert!(a.is_authenticated());
    }

    #[test]
    fn spf_short_of_pass_does_not_authenticate() {
        for result in [
            "softfail",
            "fail",
            "none",
            "neutral",
            "temperror",
            "bestguesspass",
        ] {
            let a = auth(
                &format!(
                    "Authentication-Results: amazonses.com; spf={result} smtp.mailfrom=third.example; dmarc=none\n"
                ),
                "victim@third.example",
                "Spam <victim@third.example>",
            );
            assert!(!a.is_authenticated(), "{result}");
            assert_eq!(
                a.describe(),
                format!("SPF {result} for third.example, DMARC none")
            );
        }
        let a = auth("", "victim@third.example", "victim@third.example");
        assert_eq!(a.describe(), "SPF none for third.example, DMARC none");
    }

    #[test]
    fn the_worst_spf_result_counts() {
        let a = auth(
            "Received-SPF: softfail (not designated)\nAuthentication-Results: amazonses.com; spf=pass smtp.mailfrom=third.example\n",
            "victim@third.example",
            "victim@third.example",
        );
        assert_eq!(a.spf, "softfail");
        assert!(!a.is_authenticated());
    }

    #[test]
    fn spf_pass_for_another_domain_does_not_authenticate() {
        let a = auth(
            "Authentication-Results: amazonses.com; spf=pass smtp.mailfrom=bulk@spammer.example; dmarc=none\n",
            "victim@third.example",
            "victim@third.example",
        );
        assert!(!a.is_authenticated());
        assert_eq!(
            a.describe(),
            "SPF pass for spammer.example, not third.example, DMARC none"
        );
        // A pass that names no domain authenticates none.
        let a = auth(
            "Authentication-Results: amazonses.com; spf=pass; dmarc=none\n",
            "victim@third.example",
            "victim@third.example",
        );
        assert!(!a.is_authenticated());
        assert!(a.describe().contains("unnamed MAIL FROM domain"), "{a:?}");
        // A subdomain is another domain for SPF.
        let a = auth(
            "Authentication-Results: amazonses.com; spf=pass smtp.mailfrom=mail.third.example\n",
            "victim@third.example",
            "victim@third.example",
        );
        assert!(!a.is_authenticated());
    }

    #[test]
    fn dmarc_pass_authenticates_an_aligned_reply_domain_only() {
        let dmarc_only = "Authentication-Results: amazonses.com; spf=none; dkim=pass header.i=@brand.example; dmarc=pass header.from=brand.example\n";
        for (rp, ok) in [
            ("bounces@brand.example", true),
            ("b-123@mail.brand.example", true),
            ("x@brand.example.evil", false),
            ("victim@third.example", false),
        ] {
            let a = auth(dmarc_only, rp, "News <news@brand.example>");
            assert_eq!(a.is_authenticated(), ok, "{rp}: {a:?}");
        }
        let a = auth(dmarc_only, "victim@third.example", "news@brand.example");
        assert_eq!(
            a.describe(),
            "SPF none for third.example, DMARC pass for brand.example, not aligned with third.example"
        );
        // A From in a subdomain aligns with its parent.
        let a = auth(
            "Authentication-Results: amazonses.com; dmarc=pass header.from=eu.brand.example\n",
            "bounce@brand.example",
            "x@eu.brand.example",
        );
        assert!(a.dmarc_authenticates());
    }

    #[test]
    fn only_the_topmost_authentication_results_count() {
        let a = auth(
            "Authentication-Results: amazonses.com; spf=none smtp.mailfrom=third.example; dmarc=none\nAuthentication-Results: forged.example; spf=pass smtp.mailfrom=third.example; dmarc=pass header.from=third.example\n",
            "victim@third.example",
            "victim@third.example",
        );
        assert!(!a.is_authenticated(), "{a:?}");
        assert_eq!(a.describe(), "SPF none for third.example, DMARC none");
    }

    fn with_receipt(headers: &str, receipt: Receipt, return_path: &str) -> SenderAuth {
        let raw = format!(
            "Return-Path: <{return_path}>\n{headers}From: ann@customer.example\nSubject: x\n\nx\n"
        );
        let mail = Mail::parse_with_receipt(raw.as_bytes(), Some(&receipt)).unwrap();
        SenderAuth::of(&mail, return_path)
    }

    #[test]
    fn the_receipt_names_the_mail_from_and_its_verdicts_count() {
        let receipt = |spf: &str, dmarc: &str, from: &str| Receipt {
            mail_from: Some(from.into()),
            spf: Some(spf.into()),
            dmarc: Some(dmarc.into()),
            ..Receipt::default()
        };
        let a = with_receipt(
            "",
            receipt("PASS", "GRAY", "ann@customer.example"),
            "ann@customer.example",
        );
        assert!(a.spf_authenticates(), "{a:?}");
        // SPF passed for the envelope sender, not for the Return-Path written into the mail.
        let a = with_receipt(
            "",
            receipt("PASS", "GRAY", "bulk@spammer.example"),
            "victim@third.example",
        );
        assert!(!a.is_authenticated());
        assert!(
            a.describe()
                .starts_with("SPF pass for spammer.example, not third.example"),
            "{a:?}"
        );
        // The receipt's GRAY is not a pass even when a header says pass.
        let a = with_receipt(
            "Authentication-Results: amazonses.com; spf=pass smtp.mailfrom=customer.example\n",
            receipt("GRAY", "GRAY", "ann@customer.example"),
            "ann@customer.example",
        );
        assert_eq!(a.spf, "gray");
        assert!(!a.is_authenticated());
        // The receipt's DMARC verdict decides over the headers'.
        let a = with_receipt(
            "Authentication-Results: amazonses.com; dmarc=pass header.from=customer.example\n",
            receipt("GRAY", "FAIL", "ann@customer.example"),
            "ann@customer.example",
        );
        assert_eq!(a.dmarc, "fail");
        assert!(!a.is_authenticated());
        let a = with_receipt(
            "",
            receipt("GRAY", "PASS", "ann@customer.example"),
            "help@customer.example",
        );
        assert_eq!(a.dmarc_domain.as_deref(), Some("customer.example"));
        assert!(a.dmarc_authenticates());
    }
}
