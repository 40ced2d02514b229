//! Sent with the highest priority.

use super::{Analysis, Hit};

pub(super) fn check(a: &Analysis, hits: &mut Vec<Hit>) {
    let mail = a.mail;
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
}
