//! Edits the config file in place for `mailroom allow` and `mailroom block`: the address
//! goes into `[filter] allow_senders` or `block_senders`, the file's comments and layout
//! stay as they were, and the result must pass the same validation as `mailroom check`.
//! `mailroom erase --from-config` takes an address off both lists the same way.

use super::{Config, ConfigError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenderList {
    Allow,
    Block,
}

impl SenderList {
    pub fn key(self) -> &'static str {
        match self {
            SenderList::Allow => "allow_senders",
            SenderList::Block => "block_senders",
        }
    }

    fn other(self) -> SenderList {
        match self {
            SenderList::Allow => SenderList::Block,
            SenderList::Block => SenderList::Allow,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// The sender, or the file's shape, does not allow the edit.
    #[error("{0}")]
    Edit(String),
    /// The file (before or after the edit) does not validate.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}

/// What an edit did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edited {
    /// The new file text (the old one when nothing changed).
    pub text: String,
    /// Whether the address was already on the list.
    pub already: bool,
    /// It was taken off the other list, where it contradicted this one.
    pub moved_from_other: bool,
}

/// A sender as the lists hold it: an address or `@domain`, lower-cased.
fn normalised(sender: &str) -> Result<String, String> {
    let s = sender.trim().to_ascii_lowercase();
    let ok = if let Some(domain) = s.strip_prefix('@') {
        !domain.is_empty() && domain.contains('.') && !domain.contains('@')
    } else {
        matches!(s.split_once('@'), Some((l, d)) if !l.is_empty() && d.contains('.') && !d.contains('@'))
    };
    if !ok
        || s.chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '"')
    {
        return Err(format!(
            "{sender:?} is not an address (ann@example.org) or a domain (@example.org)"
        ));
    }
    Ok(s)
}

/// Adds `sender` to `list` in the config `text` (from `origin`), and takes it off the
/// other list. The edited text is validated as a whole; an invalid result is an error and
/// nothing is to be written.
pub fn add_sender(
    text: &str,
    origin: &str,
    list: SenderList,
    sender: &str,
) -> Result<Edited, EditError> {
    let problem = |message: String| EditError::Edit(format!("{origin}: {message}"));
    let sender = normalised(sender).map_err(EditError::Edit)?;
    // The file as it is must be valid: an edit never hides an earlier problem.
    Config::from_toml(text, origin)?;
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| problem(e.to_string()))?;
    let filter = doc
        .entry("filter")
        .or_insert_with(|| toml_edit::Item::Table(toml_edit::Table::new()))
        .as_table_like_mut()
        .ok_or_else(|| problem("`filter` is not a table".into()))?;
    let mut moved_from_other = false;
    if let Some(other) = filter
        .get_mut(list.other().key())
        .and_then(|i| i.as_array_mut())
    {
        let before = other.len();
        other.retain(|v| v.as_str().is_none_or(|s| !s.eq_ignore_ascii_case(&sender)));
        moved_from_other = other.len() != before;
        // The new first entry keeps no space after `[`.
        if let Some(first) = other.get_mut(0) {
            first.decor_mut().set_prefix("");
        }
    }
    let entry = filter
        .entry(list.key())
        .or_insert(toml_edit::value(toml_edit::Array::new()));
    let array = entry
        .as_array_mut()
        .ok_or_else(|| problem(format!("`filter.{}` is not a list", list.key())))?;
    let already = array
        .iter()
        .any(|v| v.as_str().is_some_and(|s| s.eq_ignore_ascii_case(&sender)));
    if !already {
        array.push(sender.as_str());
    }
    let edited = doc.to_string();
    Config::from_toml(&edited, origin)?;
    Ok(Edited {
        text: edited,
        already,
        moved_from_other,
    })
}

/// What taking an address off the sender lists did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    /// The new file text (the old one when nothing changed).
    pub text: String,
    /// The lists it was on (`allow_senders`, `block_senders`).
    pub lists: Vec<&'static str>,
    /// The edited text still holds the address elsewhere (a route's forward, a digest
    /// address, a comment): the operator's to change.
    pub named_elsewhere: bool,
}

/// Takes `address` off `[filter] allow_senders` and `block_senders` of the config `text`
/// (from `origin`), keeping its comments and layout; the result is validated as a whole.
/// Entries are compared whole and case-blind: `@domain` entries are left alone.
pub fn remove_address(text: &str, origin: &str, address: &str) -> Result<Removed, EditError> {
    let problem = |message: String| EditError::Edit(format!("{origin}: {message}"));
    let address = normalised(address).map_err(EditError::Edit)?;
    Config::from_toml(text, origin)?;
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| problem(e.to_string()))?;
    let mut lists = Vec::new();
    if let Some(filter) = doc.get_mut("filter").and_then(|f| f.as_table_like_mut()) {
        for list in [SenderList::Allow, SenderList::Block] {
            let Some(array) = filter.get_mut(list.key()).and_then(|i| i.as_array_mut()) else {
                continue;
            };
            let before = array.len();
            array.retain(|v| {
                v.as_str()
                    .is_none_or(|s| !s.trim().eq_ignore_ascii_case(&address))
            });
            if array.len() != before {
                lists.push(list.key());
                if let Some(first) = array.get_mut(0) {
                    first.decor_mut().set_prefix("");
                }
            }
        }
    }
    let edited = if lists.is_empty() {
        text.to_string()
    } else {
        doc.to_string()
    };
    Config::from_toml(&edited, origin)?;
    let named_elsewhere = edited.to_ascii_lowercase().contains(&address);
    Ok(Removed {
        text: edited,
        lists,
        named_elsewhere,
    })
}

/// The config `text` (from `origin`, normally the bundled example) made for one stack:
/// `[mailroom] domains` is `domain`, `from_address` is `from` (which must be at `domain`,
/// as the template's IAM allows sending only as that identity) and `addresses` is emptied
/// (the example's are not yours). Comments and layout stay; the result is validated.
pub fn for_domain(text: &str, origin: &str, domain: &str, from: &str) -> Result<String, EditError> {
    let problem = |message: String| EditError::Edit(format!("{origin}: {message}"));
    let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    let labels_ok = domain.split('.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    });
    if !labels_ok || !domain.contains('.') || domain.len() > 253 {
        return Err(EditError::Edit(format!(
            "--domain {domain:?} is not a domain name such as example.com"
        )));
    }
    let from = normalised(from).map_err(|e| EditError::Edit(format!("--from: {e}")))?;
    if from.starts_with('@') || !from.ends_with(&format!("@{domain}")) {
        return Err(EditError::Edit(format!(
            "--from {from:?} must be an address at {domain} (the stack may send only as its \
             DomainName)"
        )));
    }
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| problem(e.to_string()))?;
    let mailroom = doc
        .entry("mailroom")
        .or_insert_with(|| toml_edit::Item::Table(toml_edit::Table::new()))
        .as_table_like_mut()
        .ok_or_else(|| problem("`mailroom` is not a table".into()))?;
    // In place, so the comments above a key and after its value stay.
    let keep_decor =
        |table: &mut dyn toml_edit::TableLike, key: &str, value: toml_edit::Value| match table
            .get_mut(key)
            .and_then(|i| i.as_value_mut())
        {
            Some(old) => {
                let decor = old.decor().clone();
                *old = value;
                *old.decor_mut() = decor;
            }
            None => {
                table.insert(key, toml_edit::Item::Value(value));
            }
        };
    keep_decor(
        mailroom,
        "domains",
        toml_edit::Value::Array(toml_edit::Array::from_iter([domain.as_str()])),
    );
    if mailroom.contains_key("addresses") {
        keep_decor(
            mailroom,
            "addresses",
            toml_edit::Value::Array(toml_edit::Array::new()),
        );
    }
    keep_decor(
        mailroom,
        "from_address",
        toml_edit::Value::from(from.as_str()),
    );
    let written = doc.to_string();
    Config::from_toml(&written, origin)?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# our config\n[filter]\n# partners\nallow_senders = [\"@partner.example\"]   # keep\nblock_senders = [\"x@bad.example\"]\n\n[routing]\n";

    #[test]
    fn adds_to_a_list_and_keeps_comments_and_layout() {
        let e = add_sender(FILE, "c.toml", SenderList::Allow, " Ann@Friend.Example ").unwrap();
        assert!(!e.already && !e.moved_from_other);
        assert!(e.text.contains("# our config\n[filter]\n# partners\n"));
        assert!(
            e.text.contains(
                "allow_senders = [\"@partner.example\", \"ann@friend.example\"]   # keep"
            )
        );
        let c = Config::from_toml(&e.text, "c.toml").unwrap();
        assert_eq!(c.filter.allow_senders.len(), 2);
        let again = add_sender(&e.text, "c.toml", SenderList::Allow, "ann@friend.example").unwrap();
        assert!(again.already);
        assert_eq!(again.text, e.text);
    }

    #[test]
    fn blocking_an_allowed_sender_moves_it() {
        let e = add_sender(FILE, "c.toml", SenderList::Block, "@PARTNER.example").unwrap();
        assert!(e.moved_from_other);
        assert!(e.text.contains("allow_senders = []"), "{}", e.text);
        let c = Config::from_toml(&e.text, "c.toml").unwrap();
        assert!(c.filter.allow_senders.is_empty());
        assert_eq!(
            c.filter.block_senders,
            ["x@bad.example", "@partner.example"]
        );
    }

    #[test]
    fn an_address_comes_off_both_lists_and_domains_and_comments_stay() {
        let file = "# ours\n[filter]\nallow_senders = [\"Ann@Friend.example\", \"@friend.example\"]  # keep\nblock_senders = [\"ann@friend.example\"]\n";
        let r = remove_address(file, "c.toml", " ANN@friend.example").unwrap();
        assert_eq!(r.lists, ["allow_senders", "block_senders"]);
        assert!(!r.named_elsewhere, "{}", r.text);
        assert!(
            r.text
                .contains("# ours\n[filter]\nallow_senders = [\"@friend.example\"]  # keep\n"),
            "{}",
            r.text
        );
        let c = Config::from_toml(&r.text, "c.toml").unwrap();
        assert!(c.filter.block_senders.is_empty());
        let again = remove_address(&r.text, "c.toml", "ann@friend.example").unwrap();
        assert!(again.lists.is_empty());
        assert_eq!(again.text, r.text);
        let routed = "[filter]\nallow_senders = [\"ann@friend.example\"]\n# ann@friend.example asked for this\n";
        assert!(
            remove_address(routed, "c.toml", "ann@friend.example")
                .unwrap()
                .named_elsewhere
        );
        assert!(remove_address(file, "c.toml", "nobody").is_err());
    }

    #[test]
    fn a_missing_table_is_made_and_bad_input_refused() {
        let e = add_sender("", "c.toml", SenderList::Block, "@junk.example").unwrap();
        assert_eq!(
            Config::from_toml(&e.text, "c.toml")
                .unwrap()
                .filter
                .block_senders,
            ["@junk.example"]
        );
        for bad in [
            "nobody",
            "@",
            "a@b@c.example",
            "a b@c.example",
            "\"@x.example",
        ] {
            assert!(
                add_sender(FILE, "c.toml", SenderList::Allow, bad).is_err(),
                "{bad}"
            );
        }
        let broken = add_sender(
            "[filter]\nnope = 1\n",
            "c.toml",
            SenderList::Allow,
            "a@b.example",
        )
        .unwrap_err();
        assert!(broken.to_string().contains("nope"), "{broken}");
    }

    #[test]
    fn the_example_is_made_for_a_stack_with_its_comments() {
        let example = include_str!("../../../../examples/mailroom.toml");
        let text = for_domain(
            example,
            "mailroom.toml",
            "Corp.Example",
            "Help@corp.example",
        )
        .unwrap();
        let c = Config::from_toml(&text, "mailroom.toml").unwrap();
        assert_eq!(c.mailroom.domains, ["corp.example"]);
        assert_eq!(c.mailroom.from_address, "help@corp.example");
        assert!(c.mailroom.addresses.is_empty());
        assert!(
            text.contains("# Domains we receive mail for."),
            "comments stay"
        );
        assert!(text.contains("domains = [\"corp.example\"]\n"), "{text}");
        assert_eq!(
            text.lines().count(),
            example.lines().count(),
            "only the three values change"
        );
        for (domain, from, says) in [
            (
                "corp.example",
                "help@other.example",
                "must be an address at corp.example",
            ),
            ("corp", "help@corp", "is not a domain name"),
            ("-corp.example", "a@-corp.example", "is not a domain name"),
            ("corp.example", "help\r\nBcc: x@corp.example", "--from"),
        ] {
            let err = for_domain(example, "m.toml", domain, from)
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{domain} {from}: {err}");
        }
    }
}
