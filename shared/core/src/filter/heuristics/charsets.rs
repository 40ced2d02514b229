//! Charsets no mail program writes, and those of scripts far from the languages served.

use mail_parser::MimeHeaders;

use super::{Analysis, Hit};

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

pub(super) fn check(a: &Analysis, hits: &mut Vec<Hit>) {
    let mut bogus_charset: Option<String> = None;
    let mut faraway_charset: Option<String> = None;
    for part in &a.mail.message.parts {
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
}
