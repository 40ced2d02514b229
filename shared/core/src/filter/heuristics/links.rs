//! Links: shown host against real host, bare IP addresses, shorteners, user info that
//! hides the host.

use std::sync::LazyLock;

use regex::Regex;

use super::text::{base_domain, clip, clip_bytes, is_ip_host, url_host};
use super::{Analysis, Hit};

/// The opening tag of a link in (ASCII-lower-cased) HTML, with its href.
static ANCHOR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"<a[ \t\r\n][^>]*?href[ \t\r\n]*=[ \t\r\n]*["']?([^"' \t\r\n>]+)[^>]*>"#)
        .expect("anchor regex")
});
static TAG: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?s)<[^>]*>").expect("tag regex"));
/// A URL's authority (user info, host, port).
static URL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?i)(?-u:\b)https?://([^/\s"'<>?#\\]{1,255})"#).expect("url regex")
});
/// Visible link text that reads as a URL or host name.
static VISIBLE_HOST: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^\s*(?:https?://)?([a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,})(?:[:/?#]\S*)?\s*$")
        .expect("visible host regex")
});

/// URL shorteners: the target is hidden until clicked.
const SHORTENERS: &[&str] = &[
    "bit.ly",
    "tinyurl.com",
    "goo.gl",
    "t.co",
    "ow.ly",
    "is.gd",
    "buff.ly",
    "rebrand.ly",
    "cutt.ly",
    "shorturl.at",
    "tiny.cc",
    "rb.gy",
    "t.ly",
    "v.gd",
    "x.co",
    "lnkd.in",
    "adf.ly",
    "bc.vc",
    "soo.gd",
    "clck.ru",
    "s.id",
    "bl.ink",
    "shorte.st",
    "qr.ae",
];

pub(super) fn check(a: &Analysis, hits: &mut Vec<Hit>) {
    let lower_html = &a.lower_html;
    let mut mismatch: Option<(String, String)> = None;
    for c in ANCHOR.captures_iter(lower_html) {
        let (Some(tag), Some(href)) = (c.get(0), c.get(1)) else {
            continue;
        };
        let href = href.as_str();
        // The visible text: up to `</a`, within 300 bytes.
        let after = &lower_html[tag.end()..];
        let window = clip_bytes(after, 300);
        let Some(close) = window.find("</a") else {
            continue;
        };
        let visible = &after[..close];
        let Some(href_host) = url_host(href) else {
            continue;
        };
        let visible = TAG.replace_all(visible, "");
        let Some(v) = VISIBLE_HOST.captures(visible.trim()) else {
            continue;
        };
        let visible_host = v[1].to_ascii_lowercase();
        if !visible_host.contains('.') || !visible_host.bytes().any(|b| b.is_ascii_alphabetic()) {
            continue;
        }
        if base_domain(&visible_host) != base_domain(&href_host) {
            mismatch = Some((visible_host, href_host));
            break;
        }
    }
    if let Some((shown, real)) = mismatch {
        hits.push((
            "URL_HOST_MISMATCH",
            1.0,
            format!("link shows {shown} but goes to {real}"),
        ));
    }
    let (mut ip_url, mut shortener, mut userinfo) = (None, None, None);
    for text in [a.mail.text.as_str(), a.html.as_str()] {
        for c in URL.captures_iter(text) {
            let authority = c[1].to_ascii_lowercase();
            if authority.contains('@') && userinfo.is_none() {
                userinfo = Some(authority.clone());
            }
            let Some(host) = url_host(&format!("http://{authority}")) else {
                continue;
            };
            if ip_url.is_none() && is_ip_host(&host) {
                ip_url = Some(host.clone());
            }
            if shortener.is_none() && SHORTENERS.contains(&host.trim_start_matches("www.")) {
                shortener = Some(host);
            }
        }
    }
    if let Some(h) = ip_url {
        hits.push((
            "URL_IP_ADDRESS",
            2.0,
            format!("link to a bare IP address {h}"),
        ));
    }
    if let Some(h) = shortener {
        hits.push(("URL_SHORTENER", 1.0, format!("link through shortener {h}")));
    }
    if let Some(a) = userinfo {
        hits.push((
            "URL_USERINFO",
            2.5,
            format!("link hides its host behind user info: {}", clip(&a, 80)),
        ));
    }
}
