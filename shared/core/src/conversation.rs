//! Conversations: whether a message follows up one mailroom has seen, as Zendesk and Zammad
//! thread mail. Two kinds of clue tie a message to an earlier one, both read through the
//! message index (no scan):
//!
//! - **a reference** mailroom issued (`MR-` and 10 base32 characters, 50 bits of a hash of
//!   the message id): in the subject, the In-Reply-To or References headers (an auto-reply's
//!   Message-ID starts with it), a `+ref` recipient address or the body text. It is
//!   unguessable, so it is enough on its own;
//! - **a Message-ID** named by In-Reply-To or References: of a message we received, or
//!   forwarded (a forward keeps the original's Message-ID). Headers are the sender's to
//!   write, so a forged References must not pull a stranger's mail into someone else's
//!   conversation: this clue holds only when the sender is a participant of the conversation
//!   (an address one of its messages names).
//!
//! Every cap here bounds work, not what passes: past a cap a clue is not looked up, and the
//! message is then classified and routed as a new one, filtered like any other.

use crate::mail::Mail;
use crate::model::Conversation;
use crate::operate::{MAX_INDEXED_MESSAGE_ID, MessageSummary, Query, bare_message_id};
use crate::ports::{MessageIndex, PortResult};
use crate::respond::BASE32;

/// References looked up per message, at most.
pub const MAX_REFERENCES: usize = 8;
/// Message-IDs looked up per message, at most: In-Reply-To, then References newest first.
pub const MAX_MESSAGE_IDS: usize = 20;
/// The bytes of body text searched for a reference (a reply quotes it near the top).
pub const BODY_SCAN: usize = 64 * 1024;
/// The follow-ups whose addresses count as the conversation's participants.
pub const MAX_PARTICIPANT_ROWS: usize = 100;
/// Rows read per Message-ID: the oldest message with that Message-ID is the one it names
/// (a later one reusing it cannot take its place).
const SAME_MESSAGE_ID: usize = 20;

/// What a message names that may tie it to a conversation.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Clues {
    /// References in the order found, upper-cased, each once.
    pub references: Vec<String>,
    /// Message-IDs without angle brackets: In-Reply-To, then References newest first.
    pub message_ids: Vec<String>,
}

impl Clues {
    pub fn is_empty(&self) -> bool {
        self.references.is_empty() && self.message_ids.is_empty()
    }
}

/// A lookup's outcome: the conversation the message joins, and notes for its audit record
/// (clues that named a conversation the sender is not part of).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Found {
    pub conversation: Option<Conversation>,
    pub notes: Vec<String>,
}

/// The references (`prefix` and 10 base32 characters, case-insensitive, standing as a
/// word) in `text`, appended to `out` until it holds [`MAX_REFERENCES`].
pub fn references_in(text: &str, prefix: &str, out: &mut Vec<String>) {
    if prefix.is_empty() {
        return;
    }
    let bytes = text.as_bytes();
    let p = prefix.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric();
    let mut i = 0;
    while i + p.len() + 10 <= bytes.len() && out.len() < MAX_REFERENCES {
        let at = &bytes[i..];
        if !at[..p.len()].eq_ignore_ascii_case(p) || (i > 0 && word(bytes[i - 1])) {
            i += 1;
            continue;
        }
        let code = &at[p.len()..p.len() + 10];
        let after = at.get(p.len() + 10).copied();
        if code
            .iter()
            .all(|c| BASE32.contains(&c.to_ascii_uppercase()))
            && !after.is_some_and(word)
        {
            let mut r = prefix.to_ascii_uppercase();
            r.extend(code.iter().map(|c| c.to_ascii_uppercase() as char));
            if !out.contains(&r) {
                out.push(r);
            }
            i += p.len() + 10;
        } else {
            i += 1;
        }
    }
}

/// Every clue of a message, for the reference `prefix` in force.
pub fn clues(mail: &Mail, prefix: &str) -> Clues {
    let mut c = Clues::default();
    let own = mail.message_id.as_deref().map(bare_message_id);
    let in_reply_to = header_ids(mail.message.in_reply_to());
    let references = header_ids(mail.message.references());
    let mut ids: Vec<&str> = Vec::new();
    for id in in_reply_to.iter().chain(references.iter().rev()) {
        let id = bare_message_id(id);
        if !id.is_empty()
            && id.len() <= MAX_INDEXED_MESSAGE_ID
            && Some(id) != own
            && !ids.contains(&id)
            && ids.len() < MAX_MESSAGE_IDS
        {
            ids.push(id);
        }
    }
    for r in &mail.recipients {
        if let Some((local, _)) = r.split_once('@')
            && let Some((_, tag)) = local.split_once('+')
        {
            references_in(tag, prefix, &mut c.references);
        }
    }
    references_in(&mail.subject, prefix, &mut c.references);
    for id in in_reply_to.iter().chain(&references) {
        references_in(id, prefix, &mut c.references);
    }
    let body = match mail.text.char_indices().nth(BODY_SCAN) {
        Some((end, _)) => &mail.text[..end],
        None => &mail.text,
    };
    references_in(body, prefix, &mut c.references);
    c.message_ids = ids.into_iter().map(str::to_string).collect();
    c
}

fn header_ids<'a>(value: &'a mail_parser::HeaderValue<'a>) -> Vec<&'a str> {
    match value {
        mail_parser::HeaderValue::Text(t) => vec![t.as_ref()],
        mail_parser::HeaderValue::TextList(list) => list.iter().map(|t| t.as_ref()).collect(),
        _ => Vec::new(),
    }
}

/// The conversation message `id` follows up, if any, by its `clues` (see [`clues`]): its
/// references first (the first that names a message wins), then its Message-IDs, each only
/// when the sender takes part.
pub async fn find(
    index: &dyn MessageIndex,
    id: &str,
    mail: &Mail<'_>,
    clues: &Clues,
) -> PortResult<Found> {
    let mut found = Found::default();
    for reference in &clues.references {
        let page = index
            .query(&Query {
                reference: Some(reference.clone()),
                limit: 2,
                ..Query::default()
            })
            .await?;
        if let Some(row) = page.rows.into_iter().find(|r| r.id != id) {
            found.conversation = Some(joined(&row, "reference"));
            return Ok(found);
        }
    }
    let Some(sender) = mail.from.as_deref() else {
        return Ok(found);
    };
    for message_id in &clues.message_ids {
        let page = index
            .query(&Query {
                message_id: Some(message_id.clone()),
                limit: SAME_MESSAGE_ID,
                ..Query::default()
            })
            .await?;
        let Some(row) = page.rows.into_iter().rev().find(|r| r.id != id) else {
            continue;
        };
        if takes_part(index, &row, sender).await? {
            found.conversation = Some(joined(&row, "message-id"));
            return Ok(found);
        }
        found.notes.push(format!(
            "its headers name message {} of conversation {}, which its sender is not part of: \
             treated as a new message",
            row.id,
            row.conversation_id()
        ));
    }
    Ok(found)
}

/// Whether `sender` is an address a message of `row`'s conversation names: `row`, the
/// conversation's first message, or one of its latest [`MAX_PARTICIPANT_ROWS`] follow-ups.
async fn takes_part(
    index: &dyn MessageIndex,
    row: &MessageSummary,
    sender: &str,
) -> PortResult<bool> {
    let names = |s: &MessageSummary| s.addresses.iter().any(|a| a == sender);
    if names(row) {
        return Ok(true);
    }
    let root = row.conversation_id();
    if root != row.id
        && let Some(first) = index.get(root).await?
        && names(&first)
    {
        return Ok(true);
    }
    let page = index
        .query(&Query {
            conversation: Some(root.to_string()),
            limit: MAX_PARTICIPANT_ROWS,
            ..Query::default()
        })
        .await?;
    Ok(page.rows.iter().any(names))
}

/// The conversation a follow-up of `row` joins, with what it decided.
fn joined(row: &MessageSummary, by: &str) -> Conversation {
    Conversation {
        id: row.conversation_id().to_string(),
        follows: row.id.clone(),
        by: by.to_string(),
        category: row.category.clone(),
        priority: row.priority,
        category_rule: row.category_rule.clone(),
        priority_rule: row.priority_rule.clone(),
        route_rules: row.route_rules.clone(),
    }
}

/// A conversation's messages, oldest first: its first message, then its follow-ups (the
/// latest `limit` of them).
pub async fn thread(
    index: &dyn MessageIndex,
    any: &MessageSummary,
    limit: usize,
) -> PortResult<Vec<MessageSummary>> {
    let root = any.conversation_id().to_string();
    let mut rows = index
        .query(&Query {
            conversation: Some(root.clone()),
            limit,
            ..Query::default()
        })
        .await?
        .rows;
    rows.reverse();
    if let Some(first) = index.get(&root).await? {
        rows.insert(0, first);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        references_in(text, "MR-", &mut out);
        out
    }

    #[test]
    fn references_stand_as_words_and_read_back_upper_case() {
        assert_eq!(refs("Re: your request [MR-0123456789]"), ["MR-0123456789"]);
        assert_eq!(refs("ref mr-abcdefghjk."), ["MR-ABCDEFGHJK"]);
        assert!(refs("XMR-0123456789").is_empty(), "inside a word");
        assert!(refs("MR-01234567890").is_empty(), "eleven characters");
        assert!(refs("MR-012345678").is_empty(), "nine characters");
        assert!(refs("MR-01234567IU").is_empty(), "not Crockford base32");
        assert_eq!(
            refs("MR-0123456789 and MR-0123456789, MR-ZZZZZZZZZZ"),
            ["MR-0123456789", "MR-ZZZZZZZZZZ"]
        );
        let many: String = (0..20).map(|i| format!("MR-00000000{i:02} ")).collect();
        assert_eq!(refs(&many).len(), MAX_REFERENCES);
        assert_eq!(refs("ünï MR-0123456789 ü"), ["MR-0123456789"]);
        assert!(
            refs("éMR-0123456789").len() == 1,
            "a non-ASCII letter is no word character"
        );
    }

    #[test]
    fn clues_come_from_headers_addresses_subject_and_body() {
        let raw = b"From: ann@customer.example\r\nTo: support+MR-AAAAAAAAAA@corp.example\r\n\
Subject: Re: Ticket MR-BBBBBBBBBB\r\nMessage-ID: <own@customer.example>\r\n\
In-Reply-To: <MR-CCCCCCCCCC.abc.1@corp.example>\r\n\
References: <first@customer.example> <own@customer.example> <MR-CCCCCCCCCC.abc.1@corp.example>\r\n\
\r\nThanks. Quoting MR-DDDDDDDDDD below.\r\n";
        let mail = Mail::parse(raw).unwrap();
        let c = clues(&mail, "MR-");
        assert_eq!(
            c.references,
            [
                "MR-AAAAAAAAAA",
                "MR-BBBBBBBBBB",
                "MR-CCCCCCCCCC",
                "MR-DDDDDDDDDD"
            ]
        );
        assert_eq!(
            c.message_ids,
            ["MR-CCCCCCCCCC.abc.1@corp.example", "first@customer.example"],
            "In-Reply-To first, its own Message-ID left out"
        );
    }

    #[test]
    fn a_flood_of_clues_is_cut_to_the_caps() {
        let ids: String = (0..5_000)
            .map(|i| format!(" <m{i}@flood.example>"))
            .collect();
        let tokens: String = (0..1_000).map(|i| format!("MR-{i:010} ")).collect();
        let raw =
            format!("From: a@b.example\r\nSubject: x\r\nReferences:{ids}\r\n\r\n{tokens}\r\n");
        let mail = Mail::parse(raw.as_bytes()).unwrap();
        let c = clues(&mail, "MR-");
        assert_eq!(c.message_ids.len(), MAX_MESSAGE_IDS);
        assert_eq!(c.message_ids[0], "m4999@flood.example", "the newest first");
        assert_eq!(c.references.len(), MAX_REFERENCES);
        let far = format!("{}MR-0000000001", "x ".repeat(BODY_SCAN));
        let raw = format!("From: a@b.example\r\nSubject: x\r\n\r\n{far}\r\n");
        let mail = Mail::parse(raw.as_bytes()).unwrap();
        assert!(mail.text.contains("MR-0000000001"), "the text holds it");
        assert!(
            clues(&mail, "MR-").references.is_empty(),
            "a reference past the scanned text is not looked up"
        );
    }
}
