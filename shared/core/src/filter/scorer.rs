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
//! Cost: the regexes are compiled once per process ([`LazyLock`]); the body is scanned by
//! one [`RegexSet`] for all phrases and a few plain scans. The text is at most
//! [`MAX_TEXT`] bytes, the HTML scanned for links is bounded the same.

use std::sync::LazyLock;

use mail_parser::{Encoding, MimeHeaders, PartType};
use regex::{Regex, RegexSet};

use super::{Findings, SpamScorer};
use crate::config::{Field, FilterConfig, ScoreRule};
use crate::mail::{MAX_TEXT, Mail};

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

/// A built-in heuristic that matched: tag, score, detail.
type Hit = (&'static str, f32, String);

/// Phrases in the subject or body (lower-cased), one tag and score each. ASCII word
/// boundaries (`(?-u:\b)`) keep the set on the fast DFA; patterns that end in a non-ASCII
/// letter have none there.
const PHRASES: &[(&str, f32, &str)] = &[
    (
        "NOT_SPAM_CLAIM",
        3.0,
        r"this (?:is not|isn'?t) (?:a )?spam|not (?:an? )?unsolicited|(?:bill|s\.) ?1618|section 301|(?:sent|mailed) in compliance with|this (?:e-?mail|message) is not spam",
    ),
    (
        "REMOVE_INSTRUCTIONS",
        2.0,
        r#"to be removed from (?:our|this|any|the|future)|"remove" in the subject|remove in the subject|subject (?:line )?(?:of |as )?"?remove|click here to (?:be )?remove|removal instructions|(?:to|wish to|like to) be removed,? (?:please |simply )?(?:click|reply|send|e-?mail)|to opt[- ]out"#,
    ),
    (
        "OPT_IN_CLAIM",
        1.0,
        // Not "you are receiving this because you subscribed": every newsletter says so.
        r"opt-?in (?:list|e-?mail|database)|one[- ]time (?:mailing|e-?mail|offer)|(?:not|never) receive (?:another|any further|further) (?:e-?mail|message|mailing|offer)",
    ),
    (
        "GUARANTEE",
        1.5,
        r"100% (?:guaranteed|free|satisfaction|natural|legal|risk)|money[- ]back guarantee|risk[- ]free|(?-u:\b)no risk(?-u:\b)|satisfaction guaranteed|guaranteed (?:approval|results|income)",
    ),
    (
        "ACT_NOW",
        1.5,
        r"(?-u:\b)act now(?-u:\b)|order (?:now|today)(?-u:\b)|call (?:now|today|toll[- ]free)|limited[- ]time (?:offer|only)|offer expires|don'?t (?:delay|miss out)|while supplies last|once in a lifetime|(?:respond|reply) (?:now|today|immediately)",
    ),
    (
        "EARN_MONEY",
        1.5,
        r"(?:make|earn|making|earning) (?:\$|money (?:fast|online|from home|at home|while)|cash|extra (?:money|cash|income)|up to \$)|work(?:ing)? (?:from|at) home|home[- ]based business|financial freedom|be your own boss|double your (?:income|money)|(?:extra|residual|additional) income|income opportunity|get paid (?:to|for)|multi-?level marketing|(?-u:\b)mlm(?-u:\b)",
    ),
    (
        "PHARMA_ADULT",
        2.0,
        r"(?-u:\b)(?:viagra|cialis|levitra|phentermine|xanax|valium|vicodin|penis|erection|hgh|horny)(?-u:\b)|online pharmacy|no prescription|(?:penis|breast) (?:enhancement|enlargement)|lose (?:up to )?[0-9]+ ?(?:lbs|pounds|kg)|weight loss|diet pill|human growth hormone|adult (?:site|entertainment|video)|xxx (?:pics|movies|videos|sites?)|barely legal",
    ),
    (
        "FINANCE_OFFER",
        1.5,
        r"refinanc|mortgage rates?|lowest (?:rates?|prices?)|credit (?:repair|card debt)|debt consolidation|consolidate your (?:debt|bills)|bad credit|pre-?approved|low interest|cash advance|payday loan|(?:get|receive) (?:a )?(?:free )?quote",
    ),
    (
        "ADVANCE_FEE",
        2.0,
        r"next of kin|(?:transfer|remit|release) (?:of )?(?:the |this |these )?(?:sum|funds?) |(?:us\$|usd) ?[0-9][0-9,.]* ?(?:million|m(?-u:\b))|[0-9](?:[.,][0-9]+)? million (?:united states |u\.s\. |us )?dollars|strictly confidential|barrister|foreign (?:partner|account)|central bank of|diplomatic (?:courier|bag)|(?-u:\b)fund(?-u:\b)s? (?:transfer|release)",
    ),
    (
        "LOTTERY",
        2.0,
        r"you(?: have)? won (?:a |an |the |our |\$|[0-9])|you have been (?:selected|chosen)|winning (?:notification|number)|claim (?:your|the) (?:prize|reward|winnings|award)|congratulations!?,? you(?: have|'ve| are| were)? (?:won|a winner|been selected)|lottery|sweepstake",
    ),
    (
        "CLICK_HERE",
        1.0,
        r"click here|click below|click on the link below",
    ),
    (
        "DEAR_FRIEND",
        1.0,
        r"dear (?:friend|sir/madam|sir or madam|valued (?:customer|member)|account holder|winner|beloved)",
    ),
    (
        "FREE_OFFER",
        1.0,
        r"free (?:gift|offer|quote|consultation|membership|sample|info(?:rmation)?|money|cash|access|report|vacation)|absolutely free|(?:it'?s|100%) free(?-u:\b)",
    ),
    (
        "BULK_MAIL",
        1.5,
        r"(?:million|thousands of) (?:e-?mail )?addresses|(?:e-?mail|address) (?:list|database)s? (?:for sale|of)|targeted (?:e-?mail|mailing) list|mass (?:e-?mail|mailing)|bulk (?:e-?mail|mailer) (?:software|service)",
    ),
    (
        "TOLL_FREE_NUMBER",
        1.0,
        r"toll[- ]free|(?-u:\b)1[-. ]8[0-9]{2}[-. ][0-9]{3}[-. ]?[0-9]{4}",
    ),
    (
        "PHISHING",
        2.0,
        r"verify your (?:account|identity|information|password|login)|your (?:account|password) (?:has been|will be) (?:suspended|locked|limited|closed|disabled)|confirm your (?:account|billing|identity)|update your (?:billing|payment|account) (?:information|details)|unusual (?:sign-?in )?activity",
    ),
    (
        "MULTILINGUAL_SPAM",
        1.5,
        concat!(
            // German
            r"sie haben gewonnen|gewinnbenachrichtigung|geld verdienen|von zu hause (?:aus )?arbeiten|ihr konto (?:wurde|wird) (?:gesperrt|eingeschränkt)|bestätigen sie ihr(?:e)? (?:konto|identität|daten)|nur für kurze zeit|potenzmittel|",
            // French
            r"vous avez gagné|gagnez de l'argent|argent facile|travail(?:ler)? à domicile|offre (?:exclusive|limitée) |100% gratuit|votre compte (?:a été|sera) (?:suspendu|bloqué)|vérifiez votre (?:compte|identité)|perdre du poids|",
            // Spanish
            r"(?:usted )?ha ganado|has ganado|gane dinero|dinero fácil|trabaj(?:e|ar) desde casa|oferta (?:exclusiva|limitada) |100% gratis|su cuenta (?:ha sido|será) (?:suspendida|bloqueada)|verifique su (?:cuenta|identidad)|",
            // Portuguese
            r"você ganhou|voce ganhou|ganhe dinheiro|dinheiro fácil|trabalh(?:e|ar) em casa|100% grátis|sua conta (?:foi|será) (?:suspensa|bloqueada)|verifique sua (?:conta|identidade)"
        ),
    ),
];

static PHRASE_SET: LazyLock<RegexSet> = LazyLock::new(|| {
    RegexSet::new(PHRASES.iter().map(|(_, _, p)| *p)).expect("built-in phrases compile")
});

/// The same phrases one by one, to quote what matched (only run for the ones the set found).
static PHRASE_REGEXES: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    PHRASES
        .iter()
        .map(|(_, _, p)| Regex::new(p).expect("built-in phrase compiles"))
        .collect()
});

/// Subject patterns (case-insensitive, on the raw subject).
const SUBJECT_PATTERNS: &[(&str, f32, &str)] = &[
    ("SUBJ_ADV", 3.0, r"(?i)^\s*(?:\[\s*adv\s*\]|adv\s*:|adv\s)"),
    // `Get paid now!                    24531`, `Expand your business [lzgsy]`: the
    // per-recipient tracking tokens of bulk mailers.
    (
        "SUBJ_TRACKING_ID",
        2.5,
        r"(?i)\S\s{6,}[\[(#]?[a-z0-9.\-]{1,12}[\])]?\s*$|\[[a-z0-9]{5,6}\]\s*$",
    ),
    ("SUBJ_MONEY", 1.0, r"\$\s?\d|\$\$"),
    ("SUBJ_EXCLAIM", 1.0, r"!\s*!|![^!]*![^!]*!"),
    (
        "SUBJ_SPAM_WORDS",
        1.0,
        r"(?i)(?-u:\b)(?:free|viagra|mortgage|loan|credit|cash|income|sex|lose weight|save up to|guaranteed|approved|winner|earn|\d+% off)(?-u:\b)",
    ),
];

static SUBJECT_SET: LazyLock<RegexSet> = LazyLock::new(|| {
    RegexSet::new(SUBJECT_PATTERNS.iter().map(|(_, _, p)| *p))
        .expect("built-in subject patterns compile")
});

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
static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)[a-z0-9._%+\-]+@[a-z0-9\-]+(?:\.[a-z0-9\-]+)+").expect("email regex")
});
/// Shouting HTML: big or red fonts.
static HTML_BIG_FONT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"<font[^>]*?size[ \t\r\n]*=\s*["']?\+?[4-7]"#).expect("font regex")
});
static HTML_RED_FONT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"<font[^>]*?color[ \t\r\n]*=[ \t\r\n]*["']?(?:#?ff0000|red)(?-u:\b)"#)
        .expect("font color regex")
});
/// A `mailto:` link asking for a "remove" mail: the 2000s bulk mailer's opt-out.
static MAILTO_REMOVE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?i)mailto:[^"'\s>]*?(?:remove|unsub|optout|opt-out)"#).expect("mailto regex")
});
static MONEY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)(?-u:\b)(?:million|usd|us\$|dollars|euros?|bank account|wire transfer|western union|moneygram|bitcoin|payment|beneficiary|inheritance|lottery|fund(?:s)?)(?-u:\b)|\$\s?\d|€\s?\d",
    )
    .expect("money regex")
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

/// Charsets that no mail program writes: a spamware give-away.
const BOGUS_CHARSETS: &[&str] = &[
    "default",
    "default_charset",
    "x-user-defined",
    "unknown",
    "x-unknown",
    "charset",
    "none",
];

/// Charsets of scripts far from the languages this pipeline serves (en, de, es, fr, pt):
/// a weak hint alone.
const FARAWAY_CHARSETS: &[&str] = &[
    "big5",
    "gb2312",
    "gbk",
    "gb18030",
    "hz-gb-2312",
    "ks_c_5601-1987",
    "euc-kr",
    "iso-2022-kr",
    "euc-jp",
    "iso-2022-jp",
    "shift_jis",
    "shift-jis",
    "koi8-r",
    "koi8-u",
    "windows-1251",
    "windows-874",
    "tis-620",
];

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

/// The built-in heuristics.
fn builtin(mail: &Mail, findings: &mut Findings) {
    for (tag, score, detail) in heuristics(mail) {
        findings.add_score(NAME, tag, detail, score);
    }
}

/// All built-in heuristics that match a message.
pub(crate) fn heuristics(mail: &Mail) -> Vec<Hit> {
    let mut hits: Vec<Hit> = Vec::new();
    let subject = mail.subject.as_str();

    // Subject.
    for i in SUBJECT_SET.matches(subject).iter() {
        let (tag, score, _) = SUBJECT_PATTERNS[i];
        hits.push((tag, score, format!("subject {:?}", clip(subject, 80))));
    }
    if let Some(ratio) = caps_ratio(subject, 10)
        && ratio >= 0.8
    {
        hits.push((
            "SUBJ_ALL_CAPS",
            1.5,
            format!("subject is {:.0}% capitals", ratio * 100.0),
        ));
    }
    if let Some(r) = recipient_in_subject(mail) {
        hits.push((
            "SUBJ_HAS_RECIPIENT",
            1.5,
            format!("subject names the recipient {r:?}"),
        ));
    }

    // Body phrases.
    let lower = format!("{}\n{}", mail.subject_lower(), mail.text_lower());
    for i in PHRASE_SET.matches(&lower).iter() {
        let (tag, score, _) = PHRASES[i];
        let quote = PHRASE_REGEXES[i]
            .find(&lower)
            .map(|m| clip(m.as_str(), 60))
            .unwrap_or_default();
        hits.push((tag, score, format!("spam phrase {quote:?}")));
    }
    let exclaims = mail.text.matches("!!!").count();
    if exclaims >= 3 {
        hits.push((
            "BODY_EXCLAIM",
            1.0,
            format!("{exclaims} runs of '!!!' in the body"),
        ));
    }
    let dollars = mail.text.matches("$$$").count();
    if dollars >= 1 {
        hits.push(("BODY_DOLLARS", 1.0, "'$$$' in the body".into()));
    }
    if let Some(ratio) = caps_ratio(&mail.text, 200)
        && ratio >= 0.5
    {
        hits.push((
            "BODY_MOSTLY_CAPS",
            1.5,
            format!("body is {:.0}% capitals", ratio * 100.0),
        ));
    }

    // MIME structure and HTML.
    // The body parts only (attachments are the attachment check's business): the HTML
    // bodies for links and layout, whether a plain-text body exists, how they were encoded.
    let msg = &mail.message;
    let mut html = String::new();
    let mut has_plain = false;
    let mut base64_text = false;
    let mut seen = vec![false; msg.parts.len()];
    for id in msg.text_body.iter().chain(&msg.html_body) {
        let id = *id as usize;
        let Some(part) = msg.parts.get(id) else {
            continue;
        };
        if std::mem::replace(&mut seen[id], true) {
            continue; // an HTML-only body is in both lists
        }
        if part.encoding == Encoding::Base64 {
            base64_text = true;
        }
        match &part.body {
            PartType::Text(_) => has_plain = true,
            PartType::Html(h) if html.len() < MAX_TEXT => {
                html.push_str(clip_bytes(h, MAX_TEXT - html.len()));
                html.push('\n');
            }
            _ => {}
        }
    }
    let mut bogus_charset: Option<String> = None;
    let mut faraway_charset: Option<String> = None;
    for part in &msg.parts {
        if let Some(cs) = part.content_type().and_then(|ct| ct.attribute("charset")) {
            let cs = cs.trim().to_ascii_lowercase();
            if BOGUS_CHARSETS.contains(&cs.as_str()) {
                bogus_charset.get_or_insert(cs);
            } else if FARAWAY_CHARSETS.contains(&cs.as_str()) {
                faraway_charset.get_or_insert(cs);
            }
        }
    }
    if let Some(cs) = bogus_charset {
        hits.push((
            "CHARSET_BOGUS",
            2.0,
            format!("Content-Type claims charset {cs:?}"),
        ));
    }
    if let Some(cs) = faraway_charset {
        hits.push((
            "CHARSET_FARAWAY",
            1.0,
            format!("Content-Type claims charset {cs:?}"),
        ));
    }
    if base64_text {
        hits.push((
            "MIME_BASE64_TEXT",
            0.5,
            "text body sent base64-encoded".into(),
        ));
    }
    if !html.is_empty() && !has_plain {
        let text_len = mail.text.trim().len();
        if text_len < 400 {
            hits.push((
                "HTML_ONLY_LITTLE_TEXT",
                2.0,
                format!("HTML-only body with {text_len} characters of text"),
            ));
        } else {
            hits.push(("HTML_ONLY", 1.0, "HTML-only body, no plain text".into()));
        }
    }
    let lower_html = html.to_ascii_lowercase();
    let images = lower_html.matches("<img").count();
    if images >= 3 && mail.text.trim().len() < 200 * images {
        hits.push((
            "HTML_IMAGES_LITTLE_TEXT",
            0.5,
            format!("{images} images with little text"),
        ));
    }
    if HTML_BIG_FONT.is_match(&lower_html) {
        hits.push(("HTML_BIG_FONT", 1.0, "HTML with big fonts".into()));
    }
    if HTML_RED_FONT.is_match(&lower_html) {
        hits.push(("HTML_RED_FONT", 1.5, "HTML with red fonts".into()));
    }
    if let Some(m) = MAILTO_REMOVE
        .find(&lower_html)
        .or_else(|| MAILTO_REMOVE.find(&mail.text))
    {
        hits.push((
            "MAILTO_REMOVE",
            1.5,
            format!("opt-out by mail: {}", clip(m.as_str(), 80)),
        ));
    }

    // Links.
    let mut mismatch: Option<(String, String)> = None;
    for c in ANCHOR.captures_iter(&lower_html) {
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
    for text in [mail.text.as_str(), html.as_str()] {
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

    // Sender and headers.
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
    let header_recipients = mail.message.to().map_or(0, |a| a.iter().count())
        + mail.message.cc().map_or(0, |a| a.iter().count());
    if header_recipients >= 50 {
        hits.push((
            "MANY_RECIPIENTS",
            2.5,
            format!("{header_recipients} addresses in To and Cc"),
        ));
    } else if header_recipients >= 15 {
        hits.push((
            "MANY_RECIPIENTS",
            1.5,
            format!("{header_recipients} addresses in To and Cc"),
        ));
    }
    if mail
        .header_text("To")
        .is_some_and(|to| to.to_ascii_lowercase().contains("undisclosed"))
    {
        hits.push(("TO_UNDISCLOSED", 1.5, "To: undisclosed recipients".into()));
    }
    let priority_high = mail
        .header_text("X-Priority")
        .is_some_and(|p| p.trim_start().starts_with('1'))
        || mail
            .header_text("X-MSMail-Priority")
            .is_some_and(|p| p.trim().eq_ignore_ascii_case("high"));
    if priority_high {
        hits.push((
            "PRIORITY_HIGH",
            1.0,
            "sent with the highest priority".into(),
        ));
    }
    hits
}

/// The share of capitals among the cased letters, when there are at least `min` of them.
fn caps_ratio(text: &str, min: usize) -> Option<f32> {
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

/// A recipient's local part or address in the subject (`zzzz, all new!`), as bulk mailers
/// personalise; only local parts of at least 4 characters count.
fn recipient_in_subject(mail: &Mail) -> Option<String> {
    let subject = mail.subject_lower();
    mail.recipients.iter().find_map(|r| {
        let local = r.split('@').next()?;
        if local.len() < 4 {
            return None;
        }
        if subject.contains(r.as_str()) {
            return Some(r.clone());
        }
        // The local part as a word at the start, followed by a comma.
        let rest = subject.trim_start().strip_prefix(local)?;
        rest.starts_with(',').then(|| local.to_string())
    })
}

/// The lower-cased host of an http(s) URL, without user info and port.
fn url_host(url: &str) -> Option<String> {
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
fn is_ip_host(host: &str) -> bool {
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
pub(crate) fn base_domain(host: &str) -> &str {
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

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

fn clip_bytes(s: &str, max: usize) -> &str {
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
    use crate::filter::Filter;
    use crate::model::Verdict;
    use crate::{Config, Mail};

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

    fn tags_of(raw: &str) -> Vec<&'static str> {
        let mail = Mail::parse(raw.as_bytes()).unwrap();
        heuristics(&mail).into_iter().map(|(t, _, _)| t).collect()
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
