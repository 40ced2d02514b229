//! The rule scorer's built-in heuristics, one file each (as in Stalwart's spam filter). The
//! message is analysed once ([`Analysis`]: the lower-cased text, the HTML bodies, how the
//! body parts were sent); each heuristic reads it and adds its hits, in a fixed order, so
//! that the reasons of a message always come out the same. A new heuristic is a new file
//! and one line in [`all`].

mod analysis;
mod body;
mod charsets;
mod html;
mod links;
mod mime;
mod phrases;
mod priority;
mod recipients;
mod sender;
mod subject;
mod text;

pub(crate) use analysis::Analysis;
pub use text::base_domain;

use crate::mail::Mail;

/// A built-in heuristic that matched: tag, score, detail.
pub(crate) type Hit = (&'static str, f32, String);

/// Every built-in heuristic that matches a message, in their fixed order.
pub(crate) fn all(mail: &Mail) -> Vec<Hit> {
    let a = Analysis::of(mail);
    let mut hits = Vec::new();
    for heuristic in [
        subject::check,
        phrases::check,
        body::check,
        charsets::check,
        mime::check,
        html::check,
        links::check,
        sender::check,
        recipients::check,
        priority::check,
    ] {
        heuristic(&a, &mut hits);
    }
    hits
}
