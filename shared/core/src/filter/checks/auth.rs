//! Reading the authentication results SES prepends: `Authentication-Results` (RFC 8601) and
//! `Received-SPF` (RFC 7208 §9.1). Shared by the `spf`, `dkim`, `dmarc` and `sender_lists`
//! checks; not a check itself.
//!
//! Only the FIRST (topmost) header of each kind is trusted. SES prepends its own headers
//! above everything the sending side wrote, so the topmost one is SES's verdict; any lower
//! `Authentication-Results` or `Received-SPF` came with the message and can say whatever a
//! forger wants (`dmarc=pass`), so it is never read.

use crate::mail::Mail;

/// One `method=result` of an `Authentication-Results` header, lower-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthResult {
    /// `spf`, `dkim`, `dmarc`, `arc`, … (without a `/version`).
    pub method: String,
    /// `pass`, `fail`, `softfail`, `none`, `permerror`, …
    pub result: String,
    /// `ptype.property=value` pairs and other `key=value` items that followed the result
    /// (`header.from=example.org`, `smtp.mailfrom=…`, `client-ip=…`), keys lower-cased.
    pub props: Vec<(String, String)>,
    /// The text of the comments in parentheses, joined by spaces (`p=REJECT sp=NONE dis=NONE`).
    pub comment: String,
}

impl AuthResult {
    /// The value of a property (`header.from`), if present.
    pub fn prop(&self, key: &str) -> Option<&str> {
        self.props
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A `key=value` token inside the comments (`p=reject` in `(p=REJECT sp=NONE)`),
    /// lower-cased.
    pub fn comment_value(&self, key: &str) -> Option<String> {
        self.comment
            .split(|c: char| c.is_whitespace() || c == ',' || c == ';')
            .filter_map(|t| t.split_once('='))
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.trim_matches(['"', '\'']).to_ascii_lowercase())
    }
}

/// SES's verdict from the receipt notification, lower-cased (`pass`, `fail`, `gray`,
/// `processing_failed`, `disabled`), when there was a notification and it gave one. It
/// decides over the headers: the sender can write none of it.
pub fn receipt_verdict(
    mail: &Mail,
    pick: impl Fn(&crate::model::Receipt) -> Option<&String>,
) -> Option<String> {
    mail.receipt
        .as_ref()
        .and_then(pick)
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| !v.is_empty())
}

/// The results of the first (topmost) `Authentication-Results` header; empty without one.
pub fn first_auth_results(mail: &Mail) -> Vec<AuthResult> {
    mail.header_text("Authentication-Results")
        .map(|v| parse_auth_results(&v))
        .unwrap_or_default()
}

/// The result of the first (topmost) `Received-SPF` header, lower-cased (`pass`, `fail`, …).
pub fn first_received_spf(mail: &Mail) -> Option<String> {
    let v = mail.header_text("Received-SPF")?;
    let token = v
        .split(|c: char| c.is_whitespace() || c == '(' || c == ';')
        .find(|t| !t.is_empty())?;
    Some(token.to_ascii_lowercase())
}

/// The results for one method (`spf`) in a parsed header.
pub fn results_for<'r>(
    results: &'r [AuthResult],
    method: &'r str,
) -> impl Iterator<Item = &'r AuthResult> + 'r {
    results.iter().filter(move |r| r.method == method)
}

/// Splits an `Authentication-Results` value into its results. Tolerant: unknown items are
/// skipped, comments may nest and may contain `;`, quoted strings are honoured.
pub fn parse_auth_results(value: &str) -> Vec<AuthResult> {
    let mut out = Vec::new();
    // Items separated by `;` outside comments and quotes, each with its comment text.
    let mut items: Vec<(String, String)> = Vec::new();
    let (mut text, mut comment) = (String::new(), String::new());
    let mut depth = 0usize;
    let mut quoted = false;
    let mut escaped = false;
    for c in value.chars() {
        if escaped {
            escaped = false;
            if depth > 0 {
                comment.push(c);
            } else {
                text.push(c);
            }
            continue;
        }
        match c {
            '\\' => escaped = true,
            '"' if depth == 0 => {
                quoted = !quoted;
                text.push(c);
            }
            '(' if !quoted => {
                if depth > 0 {
                    comment.push(c);
                } else {
                    comment.push(' ');
                    text.push(' ');
                }
                depth += 1;
            }
            ')' if !quoted && depth > 0 => {
                depth -= 1;
                if depth > 0 {
                    comment.push(c);
                }
            }
            ';' if depth == 0 && !quoted => {
                items.push((std::mem::take(&mut text), std::mem::take(&mut comment)));
            }
            _ if depth > 0 => comment.push(c),
            _ => text.push(c),
        }
    }
    items.push((text, comment));

    // The first item is the authserv-id (optionally with a version); results follow. SES
    // writes properties such as `client-ip=…` as items of their own: they belong to the
    // result before them.
    for (i, (text, comment)) in items.into_iter().enumerate() {
        let mut tokens = text.split_whitespace();
        let Some(first) = tokens.next() else {
            if let Some(last) = out.last_mut() {
                append_comment(last, &comment);
            }
            continue;
        };
        let Some((key, value)) = first.split_once('=') else {
            // authserv-id, or `none`.
            continue;
        };
        let key = key.trim().to_ascii_lowercase();
        let value = value.trim().trim_matches('"').to_ascii_lowercase();
        let method = key.split('/').next().unwrap_or_default().to_string();
        let is_method = i > 0
            && !method.is_empty()
            && !method.contains('.')
            && method
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && is_result_word(&value);
        if is_method {
            let mut r = AuthResult {
                method,
                result: value,
                props: Vec::new(),
                comment: comment.trim().to_string(),
            };
            add_props(&mut r, tokens);
            out.push(r);
        } else if let Some(last) = out.last_mut() {
            last.props.push((key, value));
            add_props(last, tokens);
            append_comment(last, &comment);
        }
    }
    out
}

fn append_comment(r: &mut AuthResult, comment: &str) {
    let comment = comment.trim();
    if !comment.is_empty() {
        if !r.comment.is_empty() {
            r.comment.push(' ');
        }
        r.comment.push_str(comment);
    }
}

fn add_props<'t>(r: &mut AuthResult, tokens: impl Iterator<Item = &'t str>) {
    for t in tokens {
        if let Some((k, v)) = t.split_once('=') {
            r.props.push((
                k.trim().to_ascii_lowercase(),
                v.trim().trim_matches('"').to_ascii_lowercase(),
            ));
        }
    }
}

/// Result words of RFC 8601 §2.7 (plus `bestguesspass` and `hardfail` seen in the wild).
fn is_result_word(v: &str) -> bool {
    matches!(
        v,
        "pass"
            | "fail"
            | "softfail"
            | "hardfail"
            | "neutral"
            | "none"
            | "temperror"
            | "permerror"
            | "policy"
            | "bestguesspass"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ses_style_header() {
        let v = "amazonses.com; spf=pass (spfCheck: domain of example.org designates 192.0.2.1 as permitted sender) client-ip=192.0.2.1; envelope-from=a@example.org; helo=mail.example.org; dkim=pass header.i=@example.org; dmarc=none header.from=example.org;";
        let r = parse_auth_results(v);
        assert_eq!(r.len(), 3, "{r:?}");
        assert_eq!(r[0].method, "spf");
        assert_eq!(r[0].result, "pass");
        assert_eq!(r[0].prop("client-ip"), Some("192.0.2.1"));
        assert_eq!(r[0].prop("envelope-from"), Some("a@example.org"));
        assert!(r[0].comment.contains("spfCheck"));
        assert_eq!(r[1].method, "dkim");
        assert_eq!(r[1].prop("header.i"), Some("@example.org"));
        assert_eq!(r[2].method, "dmarc");
        assert_eq!(r[2].result, "none");
        assert_eq!(r[2].prop("header.from"), Some("example.org"));
    }

    #[test]
    fn mixed_case_comments_and_semicolons_in_comments() {
        let v = "mx.example.com 1; SPF=Fail (sender (nested; comment) not allowed) smtp.mailfrom=x.test; DKIM=permerror (bad sig); DMARC=FAIL (p=REJECT sp=none dis=reject) header.from=Bank.Test";
        let r = parse_auth_results(v);
        assert_eq!(r.len(), 3, "{r:?}");
        assert_eq!(
            (r[0].method.as_str(), r[0].result.as_str()),
            ("spf", "fail")
        );
        assert_eq!(r[0].prop("smtp.mailfrom"), Some("x.test"));
        assert_eq!(r[1].result, "permerror");
        assert_eq!(r[2].result, "fail");
        assert_eq!(r[2].comment_value("p").as_deref(), Some("reject"));
        assert_eq!(r[2].comment_value("sp").as_deref(), Some("none"));
        assert_eq!(r[2].prop("header.from"), Some("bank.test"));
    }

    #[test]
    fn authserv_only_and_garbage_are_empty() {
        assert!(parse_auth_results("example.com; none").is_empty());
        assert!(parse_auth_results("").is_empty());
        assert!(parse_auth_results(";;;(((").is_empty());
        // An authserv-id that looks like a result is not one.
        assert!(parse_auth_results("spf=fail").is_empty());
    }

    #[test]
    fn only_the_topmost_headers_count() {
        let raw = b"Authentication-Results: amazonses.com; spf=fail smtp.mailfrom=x.test; dmarc=fail (p=reject) header.from=bank.test\r\nReceived-SPF: softfail (domain does not designate)\r\nAuthentication-Results: forged.test; spf=pass; dmarc=pass\r\nReceived-SPF: pass\r\nFrom: a@bank.test\r\nSubject: x\r\n\r\nbody\r\n";
        let m = Mail::parse(raw).unwrap();
        let r = first_auth_results(&m);
        assert_eq!(results_for(&r, "spf").next().unwrap().result, "fail");
        assert_eq!(results_for(&r, "dmarc").next().unwrap().result, "fail");
        assert_eq!(first_received_spf(&m).as_deref(), Some("softfail"));
    }
}
