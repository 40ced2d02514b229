//! Evaluates a [`Match`] (the conditions of classify and route rules) against a message and
//! the results so far.

use crate::config::{Keywords, Match};
use crate::mail::Mail;
use crate::model::{Priority, Verdict};

/// What a rule can test: the message plus whatever earlier stages decided.
pub struct Facts<'a> {
    pub mail: &'a Mail<'a>,
    pub verdict: Verdict,
    pub spam_score: f32,
    pub category: Option<&'a str>,
    pub priority: Option<Priority>,
    pub language: Option<&'a str>,
    /// Our domains, for `billing@`-style recipient patterns.
    pub our_domains: &'a [String],
    /// Route rules without a `verdict` condition see only accepted mail; classify rules
    /// see every verdict.
    pub accepted_only_by_default: bool,
    /// The message follows up a conversation (see [`crate::conversation`]).
    pub follow_up: bool,
}

/// Removes a `+tag` from the local part: `sales+promo@x` → `sales@x`.
pub fn fold_plus(address: &str) -> std::borrow::Cow<'_, str> {
    match address.split_once('@') {
        Some((local, domain)) => match local.split_once('+') {
            Some((base, _)) if !base.is_empty() => format!("{base}@{domain}").into(),
            _ => address.into(),
        },
        None => address.into(),
    }
}

/// Does `address` (lower-case) match a recipient pattern: `a@x` (exact, plus-folded),
/// `@x` (any address at x) or `a@` (local part a at any of our domains, or any domain when
/// none are configured)?
pub fn recipient_matches(pattern: &str, address: &str, our_domains: &[String]) -> bool {
    let pattern = pattern.trim().to_ascii_lowercase();
    let folded = fold_plus(address);
    let Some((local, domain)) = folded.rsplit_once('@') else {
        return false;
    };
    if let Some(d) = pattern.strip_prefix('@') {
        return domain == d;
    }
    if let Some(l) = pattern.strip_suffix('@') {
        let l = l.split_once('+').map_or(l, |(base, _)| base);
        return local == l
            && (our_domains.is_empty()
                || our_domains.iter().any(|d| d.eq_ignore_ascii_case(domain)));
    }
    *fold_plus(&pattern) == *folded
}

/// Does the sender `address` match `a@x` (exact) or `@x` / `x` (the domain)?
pub fn sender_matches(pattern: &str, address: &str) -> bool {
    let pattern = pattern.trim().to_ascii_lowercase();
    if let Some(d) = pattern.strip_prefix('@') {
        return address.rsplit_once('@').is_some_and(|(_, ad)| ad == d);
    }
    if !pattern.contains('@') {
        return address
            .rsplit_once('@')
            .is_some_and(|(_, ad)| ad == pattern);
    }
    pattern == address || *fold_plus(&pattern) == *fold_plus(address)
}

/// Is `domain` equal to `pattern` or a subdomain of it?
pub fn domain_matches(pattern: &str, domain: &str) -> bool {
    let p = pattern
        .trim()
        .trim_start_matches('@')
        .trim_start_matches('.')
        .to_ascii_lowercase();
    domain == p
        || domain
            .strip_suffix(&p)
            .is_some_and(|rest| rest.ends_with('.'))
}

/// The first of `words` that occurs as a whole word (or phrase) in the subject or body.
pub fn any_word(mail: &Mail, words: &Keywords) -> Option<String> {
    words
        .find_in(mail.subject_lower())
        .or_else(|| words.find_in(mail.text_lower()))
        .map(str::to_string)
}

impl Match {
    pub fn matches(&self, f: &Facts) -> bool {
        let mail = f.mail;
        let verdict_ok = if self.verdict.is_empty() && !f.accepted_only_by_default {
            true
        } else {
            self.verdicts().contains(&f.verdict)
        };
        if !verdict_ok {
            return false;
        }
        if !self.recipient.is_empty()
            && !self.recipient.iter().any(|p| {
                mail.recipients
                    .iter()
                    .any(|r| recipient_matches(p, r, f.our_domains))
            })
        {
            return false;
        }
        if !self.to_header.is_empty()
            && !self.to_header.iter().any(|p| {
                mail.header_recipients
                    .iter()
                    .any(|r| recipient_matches(p, r, f.our_domains))
            })
        {
            return false;
        }
        if !self.sender.is_empty()
            && !mail
                .from
                .as_deref()
                .is_some_and(|from| self.sender.iter().any(|p| sender_matches(p, from)))
        {
            return false;
        }
        if !self.domain.is_empty()
            && !mail
                .from_domain()
                .is_some_and(|d| self.domain.iter().any(|p| domain_matches(p, d)))
        {
            return false;
        }
        if let Some(p) = &self.subject
            && !p.is_match(&mail.subject)
        {
            return false;
        }
        if let Some(p) = &self.body
            && !p.is_match(&mail.text)
        {
            return false;
        }
        if !self.keywords.is_empty() && any_word(mail, &self.keywords).is_none() {
            return false;
        }
        for (name, pattern) in &self.header {
            if !mail.header_texts(name).any(|v| pattern.is_match(&v)) {
                return false;
            }
        }
        if !self.category.is_empty()
            && !f
                .category
                .is_some_and(|c| self.category.iter().any(|x| x.eq_ignore_ascii_case(c)))
        {
            return false;
        }
        if !self.priority.is_empty() && !f.priority.is_some_and(|p| self.priority.0.contains(&p)) {
            return false;
        }
        if !self.language.is_empty()
            && !f
                .language
                .is_some_and(|l| self.language.iter().any(|x| x.eq_ignore_ascii_case(l)))
        {
            return false;
        }
        if self.spam_score_min.is_some_and(|m| f.spam_score < m)
            || self.spam_score_max.is_some_and(|m| f.spam_score > m)
        {
            return false;
        }
        if self
            .has_attachment
            .is_some_and(|want| mail.has_attachment() != want)
        {
            return false;
        }
        if self.follow_up.is_some_and(|want| f.follow_up != want) {
            return false;
        }
        let size = mail.size();
        if self.size_min.is_some_and(|m| size < m.0) || self.size_max.is_some_and(|m| size > m.0) {
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipient_patterns() {
        let ours = vec!["example.com".to_string()];
        assert!(recipient_matches(
            "sales@example.com",
            "sales+promo@example.com",
            &ours
        ));
        assert!(recipient_matches(
            "sales@example.com",
            "sales@example.com",
            &ours
        ));
        assert!(!recipient_matches(
            "sales@example.com",
            "sales@example.org",
            &ours
        ));
        assert!(recipient_matches(
            "@example.com",
            "anyone@example.com",
            &ours
        ));
        assert!(!recipient_matches(
            "@example.com",
            "anyone@sub.example.com",
            &ours
        ));
        assert!(recipient_matches(
            "billing@",
            "billing+x@example.com",
            &ours
        ));
        assert!(!recipient_matches("billing@", "billing@other.org", &ours));
        assert!(recipient_matches("billing@", "billing@other.org", &[]));
        assert!(!recipient_matches("bill@", "billing@example.com", &ours));
    }

    #[test]
    fn recipient_matches_the_envelope_and_to_header_the_headers() {
        let config =
            crate::Config::from_toml("[mailroom]\ndomains = [\"example.com\"]\n", "t").unwrap();
        let raw = b"From: a@partner.example\nTo: accounts@partner.example\nSubject: x\n\nbody\n";
        let receipt = crate::model::Receipt {
            recipients: vec!["billing@example.com".into()],
            ..Default::default()
        };
        let mail = Mail::parse_with_receipt(raw, Some(&receipt)).unwrap();
        let facts = Facts {
            mail: &mail,
            verdict: Verdict::Accept,
            spam_score: 0.0,
            category: None,
            priority: None,
            language: None,
            our_domains: &config.mailroom.domains,
            accepted_only_by_default: true,
            follow_up: false,
        };
        let when = |t: &str| -> Match { toml::from_str(t).unwrap() };
        assert!(when("recipient = \"billing@\"").matches(&facts));
        assert!(!when("recipient = \"@partner.example\"").matches(&facts));
        assert!(when("to_header = \"@partner.example\"").matches(&facts));
        assert!(!when("to_header = \"billing@\"").matches(&facts));
    }

    #[test]
    fn sender_and_domain_patterns() {
        assert!(sender_matches("@vip.example", "boss@vip.example"));
        assert!(sender_matches("vip.example", "boss@vip.example"));
        assert!(!sender_matches("@vip.example", "boss@notvip.example"));
        assert!(sender_matches("Boss@VIP.example", "boss@vip.example"));
        assert!(domain_matches("example.org", "mail.example.org"));
        assert!(!domain_matches("example.org", "badexample.org"));
    }

    #[test]
    fn words_match_whole_words_only() {
        let k = |w: &[&str]| Keywords::new(w.iter().map(|s| s.to_string()).collect()).unwrap();
        assert_eq!(k(&["urgent"]).find_in("this is urgent!"), Some("urgent"));
        assert_eq!(k(&["urgent"]).find_in("insurgents"), None);
        assert_eq!(
            k(&["urgent", "gents"]).find_in("insurgents and gents"),
            Some("gents")
        );
        assert_eq!(
            k(&["DRINGEND"]).find_in("bitte dringend prüfen"),
            Some("dringend")
        );
        assert_eq!(
            k(&["as soon as possible"]).find_in("as soon as possible please"),
            Some("as soon as possible")
        );
        assert_eq!(k(&["ausfall"]).find_in("der serverausfall"), None);
        assert_eq!(k(&[]).find_in("anything"), None);
    }
}
