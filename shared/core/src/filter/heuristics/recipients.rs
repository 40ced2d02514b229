//! Many recipients in To and Cc, or `undisclosed recipients`.

use super::{Analysis, Hit};

pub(super) fn check(a: &Analysis, hits: &mut Vec<Hit>) {
    let mail = a.mail;
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
}
