//! Small text helpers the heuristics share.

/// The share of capitals among the cased letters, when there are at least `min` of them.
pub(crate) fn caps_ratio(text: &str, min: usize) -> Option<f32> {
    let (mut upper, mut letters) = (0usize, 0usize);
    for c in text.chars() {
        if c.is_uppercase() {
            upper += 1;
            letters += 1;
        } else if c.is_lowercase() {
            letters += 1;
        }
    }
    (letters >= min).then(|| upper as f32 / letters as f32)
}

/// The lower-cased host of an http(s) URL, without user info and port.
pub(crate) fn url_host(url: &str) -> Option<String> {
    let lower = url.trim().to_ascii_lowercase();
    let rest = lower
        .strip_prefix("http://")
        .or_else(|| lower.strip_prefix("https://"))?;
    let authority = rest.split(['/', '?', '#', '\\']).next()?;
    let host = authority.rsplit('@').next()?;
    let host = host.split(':').next()?.trim_end_matches('.');
    (!host.is_empty()).then(|| host.to_string())
}

/// A host written as an IP address: dotted quad, or one decimal or hex number (an
/// obfuscation browsers accept).
pub(crate) fn is_ip_host(host: &str) -> bool {
    let parts: Vec<&str> = host.split('.').collect();
    let dotted = parts.len() == 4
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()));
    let number = host.len() >= 8 && host.bytes().all(|b| b.is_ascii_digit());
    let hex = host
        .strip_prefix("0x")
        .is_some_and(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()));
    dotted || number || hex || host.starts_with('[')
}

/// The registrable part of a host name, approximately: the last two labels, or three
/// under a two-letter country code with a generic second level (`example.co.uk`).
pub fn base_domain(host: &str) -> &str {
    let host = host.trim_end_matches('.');
    let labels: Vec<&str> = host.split('.').collect();
    if labels.len() <= 2 {
        return host;
    }
    let n = labels.len();
    let keep = if labels[n - 1].len() == 2
        && matches!(
            labels[n - 2],
            "co" | "com" | "net" | "org" | "ac" | "gov" | "edu" | "ne" | "or" | "gob" | "gouv"
        ) {
        3
    } else {
        2
    };
    let skip: usize = labels[..n - keep].iter().map(|l| l.len() + 1).sum();
    &host[skip..]
}

pub(crate) fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

pub(crate) fn clip_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(base_domain("a.b.example.com"), "example.com");
        assert_eq!(base_domain("www.example.co.uk"), "example.co.uk");
        assert_eq!(base_domain("example.com"), "example.com");
        assert_eq!(
            url_host("HTTP://user@Host.Test:8080/x").as_deref(),
            Some("host.test")
        );
        assert_eq!(url_host("mailto:a@b"), None);
        assert!(is_ip_host("10.0.0.1") && is_ip_host("3232235777") && is_ip_host("0xc0a80001"));
        assert!(!is_ip_host("1.2.3.example"));
    }

    #[test]
    fn caps_ratio_counts_upper_and_lower_case_letters_of_any_script() {
        assert_eq!(caps_ratio("FREE money", 1), Some(4.0 / 9.0));
        assert_eq!(caps_ratio("ÄÖÜ straße", 1), Some(3.0 / 9.0));
        assert_eq!(caps_ratio("ПРИВЕТ мир 123!!", 1), Some(6.0 / 9.0));
        // Digits, punctuation and scripts without case are not letters here.
        assert_eq!(caps_ratio("1234 !!! 你好", 1), None);
        assert_eq!(caps_ratio("AB", 3), None);
        assert_eq!(caps_ratio("", 1), None);
    }
}
