//! Shouting in the body: runs of `!!!`, `$$$`, mostly capitals.

use super::text::caps_ratio;
use super::{Analysis, Hit};

pub(super) fn check(a: &Analysis, hits: &mut Vec<Hit>) {
    let text = &a.mail.text;
    let exclaims = text.matches("!!!").count();
    if exclaims >= 3 {
        hits.push((
            "BODY_EXCLAIM",
            1.0,
            format!("{exclaims} runs of '!!!' in the body"),
        ));
    }
    let dollars = text.matches("$$$").count();
    if dollars >= 1 {
        hits.push(("BODY_DOLLARS", 1.0, "'$$$' in the body".into()));
    }
    if let Some(ratio) = caps_ratio(text, 200)
        && ratio >= 0.5
    {
        hits.push((
            "BODY_MOSTLY_CAPS",
            1.5,
            format!("body is {:.0}% capitals", ratio * 100.0),
        ));
    }
}
