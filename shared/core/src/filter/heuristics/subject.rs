//! The subject: bulk mailers' patterns, all capitals, the recipient's name in it.

use std::sync::LazyLock;

use regex::RegexSet;

use super::text::{caps_ratio, clip};
use super::{Analysis, Hit};
use crate::mail::Mail;

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

pub(super) fn check(a: &Analysis, hits: &mut Vec<Hit>) {
    let subject = a.mail.subject.as_str();
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
    if let Some(r) = recipient_in_subject(a.mail) {
        hits.push((
            "SUBJ_HAS_RECIPIENT",
            1.5,
            format!("subject names the recipient {r:?}"),
        ));
    }
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
