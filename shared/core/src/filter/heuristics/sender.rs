//! The sender and its headers: a display name showing another address, no Date or
//! Message-ID, a freemail Reply-To with money talk.

use std::sync::LazyLock;

use regex::Regex;

use super::text::base_domain;
use super::{Analysis, Hit};

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)[a-z0-9._%+\-]+@[a-z0-9\-]+(?:\.[a-z0-9\-]+)+").expect("email regex")
});
static MONEY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)(?-u:\b)(?:million|usd|us\$|dollars|euros?|bank account|wire transfer|western union|moneygram|bitcoin|payment|beneficiary|inheritance|lottery|fund(?:s)?)(?-u:\b)|\$\s?\d|€\s?\d",
    )
    .expect("money regex")
});

/// Freemail domains: a `Reply-To` there with money talk is the advance-fee pattern.
const FREEMAIL: &[&str] = &[
    "gmail.com",
    "googlemail.com",
    "yahoo.com",
    "yahoo.co.uk",
    "yahoo.fr",
    "ymail.com",
    "hotmail.com",
    "hotmail.fr",
    "outlook.com",
    "live.com",
    "msn.com",
    "aol.com",
    "gmx.de",
    "gmx.net",
    "gmx.com",
    "web.de",
    "mail.com",
    "mail.ru",
    "yandex.ru",
    "yandex.com",
    "protonmail.com",
    "proton.me",
    "zoho.com",
    "icloud.com",
    "rediffmail.com",
    "netscape.net",
    "excite.com",
    "lycos.com",
    "latinmail.com",
    "caramail.com",
    "usa.net",
];

pub(super) fn check(a: &Analysis, hits: &mut Vec<Hit>) {
    let mail = a.mail;
    if let (Some(name), Some(from)) = (mail.from_name.as_deref(), mail.from.as_deref())
        && let Some(other) = EMAIL.find(name)
        && !other.as_str().eq_ignore_ascii_case(from)
    {
        hits.push((
            "FROM_NAME_OTHER_ADDRESS",
            2.0,
            format!(
                "From display name shows {} but the address is {from}",
                other.as_str()
            ),
        ));
    }
    if !mail.has_header("Date") {
        hits.push(("MISSING_DATE", 1.0, "no Date header".into()));
    }
    if !mail.has_header("Message-ID") {
        hits.push(("MISSING_MESSAGE_ID", 1.0, "no Message-ID header".into()));
    }
    if let Some(reply_domain) = mail
        .message
        .reply_to()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .and_then(|a| {
            a.rsplit_once('@')
                .map(|(_, d)| d.trim().to_ascii_lowercase())
        })
        && let Some(from_domain) = mail.from_domain()
        && base_domain(&reply_domain) != base_domain(from_domain)
        && FREEMAIL.contains(&reply_domain.as_str())
        && let Some(m) = MONEY.find(&mail.text)
    {
        hits.push((
            "REPLY_TO_FREEMAIL_MONEY",
            2.5,
            format!(
                "Reply-To goes to {reply_domain}, not {from_domain}, and the body talks money ({:?})",
                m.as_str()
            ),
        ));
    }
}
