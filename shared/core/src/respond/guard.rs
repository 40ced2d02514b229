//! Loop and backscatter protection (RFC 3834): the reasons never to auto-reply, the last of
//! them an envelope sender that is not authenticated (see [`super::sender`]).

use mail_parser::MimeHeaders;

use crate::config::Config;
use crate::mail::Mail;
use crate::matcher::domain_matches;
use crate::model::{StageResults, Verdict};
use crate::route::headers;

use super::reply::{self, ReturnPath};
use super::sender::SenderAuth;

/// Why no auto-reply must be sent for this message, or `None` when one may be. The reason is
/// a short string for the audit trail, such as `sender is a list: List-Id present`.
pub fn suppression_reason(mail: &Mail, results: &StageResults, config: &Config) -> Option<String> {
    if !config.respond.enabled {
        return Some("auto-replies are disabled in [respond]".into());
    }
    match &results.filter {
        None => return Some("not accepted: no filter result".into()),
        Some(f) if f.verdict != Verdict::Accept => {
            return Some(format!(
                "not accepted: filter verdict {}",
                f.verdict.as_str()
            ));
        }
        Some(_) => {}
    }
    if let Some(rule) = results
        .route
        .as_ref()
        .and_then(|r| r.reply_suppressed_by.as_deref())
    {
        return Some(format!("route rule {rule:?} says reply = false"));
    }

    let return_path = reply::return_path(mail);
    if return_path == ReturnPath::Null {
        return Some("null sender (Return-Path: <>)".into());
    }
    let Some(to) = reply::reply_address(mail) else {
        return Some("no reply address (no usable Return-Path, Reply-To or From)".into());
    };
    let mut senders = vec![to.clone()];
    if let Some(from) = &mail.from
        && !senders.contains(from)
    {
        senders.push(from.clone());
    }
    // A Return-Path without a usable address (`<MAILER-DAEMON>`) still names the sender.
    if let ReturnPath::Unusable(raw) = return_path {
        senders.push(raw);
    }
    for sender in &senders {
        if let Some(kind) = automated_local_part(sender) {
            return Some(format!("sender is {kind}: {sender}"));
        }
    }
    for sender in &senders {
        if let Some(why) = ours(sender, config) {
            return Some(format!("sender is ours: {why}"));
        }
    }

    if let Some(value) = mail.header_text("Auto-Submitted") {
        let v = short(&value);
        let keyword = v
            .split([';', '(', ' '])
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if keyword != "no" {
            return Some(format!("Auto-Submitted: {v}"));
        }
    }
    if let Some(ct) = mail.message.content_type()
        && ct.ctype().eq_ignore_ascii_case("multipart")
        && ct
            .subtype()
            .is_some_and(|s| s.eq_ignore_ascii_case("report"))
    {
        return Some("delivery or disposition report: Content-Type multipart/report".into());
    }
    // The field names as written (mail-parser reports known ones in its own spelling).
    if let Some(f) = headers::fields(headers::split(mail.raw).headers)
        .find(|f| f.name.len() > 5 && f.name[..5].eq_ignore_ascii_case(b"list-"))
    {
        return Some(format!(
            "sender is a list: {} present",
            String::from_utf8_lossy(f.name)
        ));
    }
    for value in mail.header_texts("Precedence") {
        let v = value.trim().to_ascii_lowercase();
        if matches!(v.as_str(), "bulk" | "list" | "junk") {
            return Some(format!("Precedence: {v}"));
        }
    }
    for name in [
        "X-Auto-Response-Suppress",
        "X-Loop",
        "X-Autoreply",
        "X-Autorespond",
    ] {
        if mail.has_header(name) {
            return Some(format!("{name} present"));
        }
    }
    // Last, so that a loop is named as such even when its sender is also unauthenticated.
    if config.respond.require_authenticated_sender {
        let auth = SenderAuth::of(mail, &to);
        if !auth.is_authenticated() {
            return Some(format!(
                "envelope sender not authenticated: {}",
                auth.describe()
            ));
        }
    }
    None
}

/// Trimmed, and cut to a length fit for an audit reason.
fn short(value: &str) -> String {
    let v: String = value
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(60)
        .collect();
    v.trim().to_string()
}

/// What kind of automated address this is, judging by the local part (case-insensitive,
/// `+tag` ignored).
fn automated_local_part(address: &str) -> Option<&'static str> {
    let local = address.rsplit_once('@').map_or(address, |(l, _)| l);
    let local = local.to_ascii_lowercase();
    let local = local.split('+').next().unwrap_or_default();
    let noreply = [
        "noreply",
        "no-reply",
        "no_reply",
        "donotreply",
        "do-not-reply",
        "do_not_reply",
    ];
    if matches!(local, "mailer-daemon" | "postmaster") {
        Some("a system address")
    } else if noreply.iter().any(|n| {
        local == *n
            || local
                .strip_prefix(n)
                .is_some_and(|rest| rest.starts_with(['-', '_', '.']))
    }) {
        Some("a no-reply address")
    } else if local.ends_with("-request")
        || local.starts_with("owner-")
        || matches!(local, "listserv" | "majordomo")
    {
        Some("a list address")
    } else if matches!(local, "bounce" | "bounces")
        || local.starts_with("bounce-")
        || local.starts_with("bounces-")
    {
        Some("a bounce address")
    } else {
        None
    }
}

/// Is the address one of ours? Says which rule made it so.
fn ours(address: &str, config: &Config) -> Option<String> {
    let general = &config.mailroom;
    if general.from_address.trim().eq_ignore_ascii_case(address) {
        return Some(format!("{address} is [mailroom] from_address"));
    }
    if general
        .addresses
        .iter()
        .any(|a| a.trim().eq_ignore_ascii_case(address))
    {
        return Some(format!("{address} is in [mailroom] addresses"));
    }
    let domain = address.rsplit_once('@').map(|(_, d)| d)?;
    general
        .domains
        .iter()
        .find(|d| domain_matches(d, domain))
        .map(|d| format!("{address} is in our domain {}", d.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FilterResult, RouteResult};

    fn config() -> Config {
        Config::from_toml(
            "[mailroom]\ndomains = [\"example.com\"]\naddresses = [\"help@example.net\"]\nfrom_address = \"mailroom@example.org\"\n",
            "t.toml",
        )
        .unwrap()
    }

    fn accepted() -> StageResults {
        StageResults {
            filter: Some(FilterResult {
                verdict: Verdict::Accept,
                spam_score: 0.0,
                reasons: vec![],
                scorer: "rules".into(),
                spam_probability: None,
            }),
            ..StageResults::default()
        }
    }

    const NORMAL: &str = "Return-Path: <ann@example.org>\nAuthentication-Results: amazonses.com; spf=pass smtp.mailfrom=ann@example.org; dkim=pass header.i=@example.org; dmarc=pass header.from=example.org\nFrom: Ann <ann@example.org>\nTo: support@example.com\nSubject: Question\nMessage-ID: <q1@example.org>\nContent-Type: text/plain\n\nHello\n";

    /// How a table row changes the normal message.
    enum Edit {
        /// Nothing: the case is in the results or the config.
        None,
        /// Header lines added on top.
        Add(&'static str),
        /// The header line starting with .0 replaced by .1 (an empty .1 removes it).
        Set(&'static str, &'static str),
    }

    struct Row {
        case: &'static str,
        raw: String,
        results: StageResults,
        config: Config,
        expect: &'static str,
    }

    fn row(case: &'static str, edit: Edit, expect: &'static str) -> Row {
        let raw = match edit {
            Edit::None => NORMAL.to_string(),
            Edit::Add(lines) => format!("{lines}{NORMAL}"),
            Edit::Set(prefix, line) => NORMAL
                .split_inclusive('\n')
                .filter_map(|l| match l.starts_with(prefix) {
                    true if line.is_empty() => None,
                    true => Some(format!("{line}\n")),
                    false => Some(l.to_string()),
                })
                .collect(),
        };
        Row {
            case,
            raw,
            results: accepted(),
            config: config(),
            expect,
        }
    }

    fn reason(raw: &str, results: &StageResults, config: &Config) -> Option<String> {
        let mail = Mail::parse(raw.as_bytes()).unwrap();
        suppression_reason(&mail, results, config)
    }

    #[test]
    fn normal_message_may_be_answered() {
        assert_eq!(reason(NORMAL, &accepted(), &config()), None);
        let with_no = format!("Auto-Submitted: no\n{NORMAL}");
        assert_eq!(reason(&with_no, &accepted(), &config()), None);
        let unrelated = format!("X-Mailer: Thunderbird\nPrecedence: first-class\n{NORMAL}");
        assert_eq!(reason(&unrelated, &accepted(), &config()), None);
        let lookalikes = NORMAL.replace("ann@example.org", "noreplyann@example.org");
        assert_eq!(reason(&lookalikes, &accepted(), &config()), None);
    }

    #[test]
    fn unauthenticated_envelope_sender_is_not_answered() {
        let forged = |auth: &str| {
            format!(
                "Return-Path: <victim@third.example>\n{auth}From: \"Cheap pills\" <victim@third.example>\nTo: support@example.com\nSubject: Buy now\n\nx\n"
            )
        };
        let cases = [
            (
                "",
                "envelope sender not authenticated: SPF none for third.example, DMARC none",
            ),
            (
                "Authentication-Results: amazonses.com; spf=softfail smtp.mailfrom=victim@third.example; dmarc=none\n",
                "envelope sender not authenticated: SPF softfail for third.example, DMARC none",
            ),
            (
                "Authentication-Results: amazonses.com; spf=fail smtp.mailfrom=third.example; dmarc=fail (p=none) header.from=third.example\n",
                "envelope sender not authenticated: SPF fail for third.example, DMARC fail for third.example",
            ),
            (
                "Authentication-Results: amazonses.com; spf=pass smtp.mailfrom=bulk@spammer.example; dmarc=none\n",
                "envelope sender not authenticated: SPF pass for spammer.example, not third.example, DMARC none",
            ),
            (
                "Authentication-Results: amazonses.com; spf=none; dmarc=none\nAuthentication-Results: forged.example; spf=pass smtp.mailfrom=third.example; dmarc=pass header.from=third.example\n",
                "envelope sender not authenticated: SPF none for third.example, DMARC none",
            ),
        ];
        for (auth, want) in cases {
            let raw = forged(auth);
            assert_eq!(
                reason(&raw, &accepted(), &config()).as_deref(),
                Some(want),
                "{auth}"
            );
        }
        // DMARC pass, but the Return-Path is in a domain not aligned with From.
        let raw = NORMAL.replace(
            "Return-Path: <ann@example.org>",
            "Return-Path: <victim@third.example>",
        );
        let raw = raw.replace("smtp.mailfrom=ann@example.org", "smtp.mailfrom=example.org");
        assert_eq!(
            reason(&raw, &accepted(), &config()).as_deref(),
            Some(
                "envelope sender not authenticated: SPF pass for example.org, not third.example, DMARC pass for example.org, not aligned with third.example"
            )
        );
        // A loop is named as a loop even when the sender is not authenticated.
        let list = format!("List-Id: <l.third.example>\n{}", forged(""));
        assert_eq!(
            reason(&list, &accepted(), &config()).as_deref(),
            Some("sender is a list: List-Id present")
        );
        // The switch off, the guard lets it through (render then drops the original's text).
        let mut loose = config();
        loose.respond.require_authenticated_sender = false;
        assert_eq!(reason(&forged(""), &accepted(), &loose), None);
    }

    #[test]
    fn authenticated_by_spf_or_by_aligned_dmarc() {
        let spf_only = NORMAL.replace("dmarc=pass header.from=example.org", "dmarc=none");
        assert_eq!(reason(&spf_only, &accepted(), &config()), None);
        let dmarc_only = NORMAL
            .replace(
                "Return-Path: <ann@example.org>",
                "Return-Path: <b-1@bounce.example.org>",
            )
            .replace("spf=pass smtp.mailfrom=ann@example.org", "spf=none");
        assert_eq!(reason(&dmarc_only, &accepted(), &config()), None);
        assert!(config().respond.require_authenticated_sender);
    }

    #[test]
    fn one_reason_per_case() {
        use Edit::*;
        let rp = "Return-Path";
        let rows = vec![
            Row {
                config: {
                    let mut c = config();
                    c.respond.enabled = false;
                    c
                },
                ..row("respond disabled", None, "auto-replies are disabled")
            },
            Row {
                results: StageResults::default(),
                ..row("no filter result", None, "not accepted: no filter result")
            },
            Row {
                results: {
                    let mut r = accepted();
                    r.filter.as_mut().unwrap().verdict = Verdict::Quarantine;
                    r
                },
                ..row(
                    "quarantined",
                    None,
                    "not accepted: filter verdict quarantine",
                )
            },
            Row {
                results: {
                    let mut r = accepted();
                    r.filter.as_mut().unwrap().verdict = Verdict::Reject;
                    r
                },
                ..row("rejected", None, "not accepted: filter verdict reject")
            },
            Row {
                results: StageResults {
                    route: Some(RouteResult {
                        rules: vec!["vip".into()],
                        actions: vec![],
                        reply_template: Option::None,
                        reply_suppressed_by: Some("vip".into()),
                    }),
                    ..accepted()
                },
                ..row(
                    "route rule reply = false",
                    None,
                    "route rule \"vip\" says reply = false",
                )
            },
            row(
                "null sender",
                Set(rp, "Return-Path: <>"),
                "null sender (Return-Path: <>)",
            ),
            Row {
                raw: "To: support@example.com\nSubject: hi\n\nx".into(),
                ..row("no reply address", None, "no reply address")
            },
            row(
                "MAILER-DAEMON",
                Set(rp, "Return-Path: <MAILER-DAEMON@mx.example.org>"),
                "sender is a system address: mailer-daemon@mx.example.org",
            ),
            row(
                "MAILER-DAEMON without domain",
                Set(rp, "Return-Path: <MAILER-DAEMON>"),
                "sender is a system address: mailer-daemon",
            ),
            row(
                "postmaster",
                Set(rp, "Return-Path: <postmaster@example.org>"),
                "system address",
            ),
            row(
                "noreply",
                Set(rp, "Return-Path: <noreply@example.org>"),
                "no-reply address",
            ),
            row(
                "no-reply",
                Set(rp, "Return-Path: <No-Reply@example.org>"),
                "no-reply address",
            ),
            row(
                "no_reply",
                Set(rp, "Return-Path: <no_reply@example.org>"),
                "no-reply address",
            ),
            row(
                "donotreply",
                Set(rp, "Return-Path: <DoNotReply@example.org>"),
                "no-reply address",
            ),
            row(
                "do-not-reply",
                Set(rp, "Return-Path: <do-not-reply@example.org>"),
                "no-reply address",
            ),
            row(
                "noreply+tag",
                Set(rp, "Return-Path: <noreply+abc123@example.org>"),
                "no-reply address",
            ),
            row(
                "noreply-suffix",
                Set(rp, "Return-Path: <noreply-alerts@example.org>"),
                "no-reply address",
            ),
            row(
                "noreply in From only",
                Set("From", "From: Shop <no-reply@shop.example>"),
                "no-reply address: no-reply@shop.example",
            ),
            row(
                "-request",
                Set(rp, "Return-Path: <announce-request@lists.example.org>"),
                "list address",
            ),
            row(
                "owner-",
                Set(rp, "Return-Path: <owner-announce@lists.example.org>"),
                "list address",
            ),
            row(
                "listserv",
                Set(rp, "Return-Path: <LISTSERV@lists.example.org>"),
                "list address",
            ),
            row(
                "majordomo",
                Set(rp, "Return-Path: <majordomo@lists.example.org>"),
                "list address",
            ),
            row(
                "bounce",
                Set(rp, "Return-Path: <bounce@example.org>"),
                "bounce address",
            ),
            row(
                "bounces+verp",
                Set(
                    rp,
                    "Return-Path: <bounces+123-ann=example.org@mail.example.org>",
                ),
                "bounce address",
            ),
            row(
                "our from_address",
                Set(rp, "Return-Path: <mailroom@example.org>"),
                "sender is ours: mailroom@example.org is [mailroom] from_address",
            ),
            row(
                "our address",
                Set(rp, "Return-Path: <Help@example.net>"),
                "is in [mailroom] addresses",
            ),
            row(
                "our domain",
                Set(rp, "Return-Path: <support@example.com>"),
                "is in our domain example.com",
            ),
            row(
                "our subdomain in From",
                Set("From", "From: x@eu.example.com"),
                "x@eu.example.com is in our domain example.com",
            ),
            row(
                "our domain via Reply-To",
                Set(rp, "Reply-To: support@example.com"),
                "in our domain example.com",
            ),
            row(
                "Auto-Submitted auto-generated",
                Add("Auto-Submitted: auto-generated\n"),
                "Auto-Submitted: auto-generated",
            ),
            row(
                "Auto-Submitted auto-replied",
                Add("Auto-Submitted: Auto-Replied\n"),
                "Auto-Submitted: Auto-Replied",
            ),
            row(
                "Auto-Submitted with parameters",
                Add("Auto-Submitted: auto-notified; owner-email=\"a@b.c\"\n"),
                "Auto-Submitted: auto-notified",
            ),
            row(
                "Precedence bulk",
                Add("Precedence: bulk\n"),
                "Precedence: bulk",
            ),
            row(
                "Precedence list",
                Add("Precedence: List\n"),
                "Precedence: list",
            ),
            row(
                "Precedence junk",
                Add("Precedence: junk\n"),
                "Precedence: junk",
            ),
            row(
                "List-Id",
                Add("List-Id: <announce.example.org>\n"),
                "sender is a list: List-Id present",
            ),
            row(
                "List-Unsubscribe",
                Add("List-Unsubscribe: <mailto:u@example.org>\n"),
                "sender is a list: List-Unsubscribe present",
            ),
            row(
                "List-Post",
                Add("List-Post: <mailto:l@example.org>\n"),
                "sender is a list: List-Post present",
            ),
            row(
                "X-Auto-Response-Suppress",
                Add("X-Auto-Response-Suppress: OOF\n"),
                "X-Auto-Response-Suppress present",
            ),
            row(
                "X-Loop",
                Add("X-Loop: support@example.com\n"),
                "X-Loop present",
            ),
            row(
                "X-Autoreply",
                Add("X-Autoreply: yes\n"),
                "X-Autoreply present",
            ),
            row(
                "X-Autorespond",
                Add("X-Autorespond: 1\n"),
                "X-Autorespond present",
            ),
            row(
                "DSN",
                Set(
                    "Content-Type",
                    "Content-Type: multipart/report; report-type=delivery-status; boundary=b",
                ),
                "Content-Type multipart/report",
            ),
        ];
        for r in &rows {
            let got = reason(&r.raw, &r.results, &r.config)
                .unwrap_or_else(|| panic!("{}: no reason for\n{}", r.case, r.raw));
            assert!(
                got.contains(r.expect),
                "{}: {got:?} lacks {:?}",
                r.case,
                r.expect
            );
        }
    }
}
