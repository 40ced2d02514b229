//! Quarantine digests: one mail per recipient listing the quarantined messages of the last
//! period (sender, subject, date, reason), each with signed links to release it or to
//! release it and always allow its sender for the digest's recipient (an entry in that
//! recipient's own allow list, never the config's `allow_senders`). The links' tokens are
//! checked by [`super::links`]; a digest goes out once per period and address, whatever
//! retries (its effect, `respond/digest/<hash>` of the run `digest-<n>`, names the address
//! by its keyed hash).

use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address;
use mail_builder::headers::date::Date;
use mail_builder::headers::raw::Raw;
use minijinja::{Environment, context};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::{MessageSummary, Operator, Query};
use crate::model::Stage;
use crate::pipeline::effects::{Effects, Ran, Repeat, effect_key};
use crate::pipeline::release::{OperatorError, Refusal, Releaser, releasable};
use crate::ports::OutgoingMail;
use crate::route::headers::clean_address;

/// The header every digest carries, so that a digest that comes back through the pipeline
/// is known for one.
pub const DIGEST_HEADER: &str = "X-Mailroom-Digest";

/// What a link does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkAction {
    /// Release the message from quarantine.
    Release,
    /// Release it and allow its sender for the token's recipient only: an entry in that
    /// recipient's own allow list (the state's, not `[filter] allow_senders`).
    Allow,
}

impl LinkAction {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkAction::Release => "release",
            LinkAction::Allow => "allow",
        }
    }
}

/// What a link's token says: signed, so that nobody can make one for another message,
/// action or recipient, or change its expiry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkToken {
    #[serde(rename = "m")]
    pub id: String,
    #[serde(rename = "a")]
    pub action: LinkAction,
    /// The address the digest went to: who acts when the link is used.
    #[serde(rename = "r")]
    pub recipient: String,
    /// Seconds since the epoch.
    #[serde(rename = "e")]
    pub expires: u64,
}

/// Why a token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the link is not one of ours (malformed)")]
    Malformed,
    #[error("the link's signature does not match (forged or altered)")]
    Forged,
    #[error("the link expired")]
    Expired(LinkToken),
}

const TOKEN_CONTEXT: &[u8] = b"mailroom-link-v1.";

/// The longest payload a token may have: its JSON (a message id, an address of at most
/// 254 characters, the action and expiry) in base64url is well under it.
pub const MAX_PAYLOAD: usize = 1024;
/// An HMAC-SHA256 in base64url without padding.
const SIGNATURE_CHARS: usize = 43;

fn mac(key: &[u8], payload: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(TOKEN_CONTEXT);
    mac.update(payload.as_bytes());
    mac
}

impl LinkToken {
    /// `PAYLOAD.SIGNATURE`, both base64url: safe in a URL and a form field as it is.
    pub fn sign(&self, key: &[u8]) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).expect("a token encodes"));
        let signature = URL_SAFE_NO_PAD.encode(mac(key, &payload).finalize().into_bytes());
        format!("{payload}.{signature}")
    }

    /// Whether `text` has the shape of a token (`PAYLOAD.SIGNATURE`, base64url, a
    /// signature of 32 bytes, a payload of at most [`MAX_PAYLOAD`] characters), without a
    /// key: what the link endpoint checks before it counts, reads or writes anything.
    pub fn well_formed(text: &str) -> bool {
        let b64url = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        match text.trim().split_once('.') {
            Some((payload, signature)) => {
                !payload.is_empty()
                    && payload.len() <= MAX_PAYLOAD
                    && signature.len() == SIGNATURE_CHARS
                    && b64url(payload)
                    && b64url(signature)
            }
            None => false,
        }
    }

    /// The token `text` says, when one of `keys` (the current key, then earlier ones while
    /// links signed with them may still be out) signed it and it has not expired at `now`.
    pub fn verify(text: &str, keys: &[Vec<u8>], now: u64) -> Result<LinkToken, TokenError> {
        if !LinkToken::well_formed(text) {
            return Err(TokenError::Malformed);
        }
        let (payload, signature) = text.trim().split_once('.').ok_or(TokenError::Malformed)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| TokenError::Malformed)?;
        // Checked before the payload is read: nothing unsigned is parsed.
        if !keys
            .iter()
            .any(|k| mac(k, payload).verify_slice(&signature).is_ok())
        {
            return Err(TokenError::Forged);
        }
        let token: LinkToken = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenError::Malformed)?;
        if token.expires <= now {
            return Err(TokenError::Expired(token));
        }
        Ok(token)
    }

    /// A short name of the token for effect keys and audit events (not the token itself).
    pub fn fingerprint(text: &str) -> String {
        use sha2::Digest;
        crate::secret::hex(&Sha256::digest(text.trim().as_bytes())[..8])
    }
}

/// The URL of a link: `base` with the token as its `t` parameter.
pub fn link_url(base: &str, token: &str) -> String {
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}t={token}")
}

/// One quarantined message in a digest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DigestEntry {
    pub summary: MessageSummary,
    /// The finding that keeps it from the digest's links (no links then).
    pub held_for: Option<String>,
    /// Held for a finding an operator may still release (a macro document), not for one
    /// that is never released.
    pub operator_only: bool,
}

/// One recipient's digest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Digest {
    pub to: String,
    pub entries: Vec<DigestEntry>,
}

/// What a digest run did for one address.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DigestSent {
    pub to: String,
    pub entries: usize,
    /// The provider's id (or the outbox file) now, or the note of the earlier send.
    pub note: String,
    /// Sent by an earlier run in the same period: not sent again.
    pub before: bool,
}

/// At most this many entries in one digest; the rest are counted in a closing line.
pub const MAX_ENTRIES: usize = 200;

/// The period's quarantined messages, grouped by the addresses `[digest]` sends them to.
/// The pipeline's own mail (a digest or auto-reply that came back) is left out.
pub async fn collect(op: &Operator, now: u64) -> Result<Vec<Digest>, OperatorError> {
    let config = op.engine().config();
    let ours = config.mailroom.from_address.trim().to_ascii_lowercase();
    let mut query = Query {
        quarantined_only: true,
        since: Some(now.saturating_sub(config.digest.period.0.as_secs())),
        until: Some(now),
        limit: 500,
        ..Query::default()
    };
    let mut digests: Vec<Digest> = Vec::new();
    loop {
        let page = op.list(&query).await?;
        for row in page.rows {
            if row.sender.as_deref() == Some(ours.as_str()) {
                continue;
            }
            // What a digest link may release, as the links function decides it.
            let refusal = releasable(
                &row.reasons,
                &Releaser::Digest {
                    recipient: String::new(),
                },
            )
            .err();
            let held_for = refusal.as_ref().map(|r| r.finding().to_string());
            let operator_only = matches!(refusal, Some(Refusal::NotFromDigest { .. }));
            let mut to: Vec<String> = Vec::new();
            for r in &row.recipients {
                for d in config.digest.destinations(r, &config.mailroom.domains) {
                    if !to.contains(&d) {
                        to.push(d);
                    }
                }
            }
            for address in to {
                let entry = DigestEntry {
                    summary: row.clone(),
                    held_for: held_for.clone(),
                    operator_only,
                };
                match digests.iter_mut().find(|d| d.to == address) {
                    Some(d) => d.entries.push(entry),
                    None => digests.push(Digest {
                        to: address,
                        entries: vec![entry],
                    }),
                }
            }
        }
        match page.next {
            Some(next) => query.before = Some(next),
            None => break,
        }
    }
    Ok(digests)
}

const TEXT: &str = "\
{{ count }} message{% if count != 1 %}s{% endif %} for you {% if count != 1 %}were{% else %}was{% endif %} held in quarantine in the last {{ period }}.
Each link opens a page that asks you to confirm; nothing happens until you do.
Links work until {{ expires }}.
{% for e in entries %}
* {{ e.subject }}
  From:   {{ e.sender }}
  Date:   {{ e.date }}
  Reason: {{ e.reasons }}
{%- if e.held_for and e.operator_only %}
  Held for {{ e.held_for }}: only your mail administrator can release it.
{%- elif e.held_for %}
  Held for {{ e.held_for }}: such mail is never released.
{%- else %}
  Release: {{ e.release }}
{%- if e.allow %}
  Release, and always allow this sender's mail to you: {{ e.allow }}
{%- endif %}
{%- endif %}
{% endfor %}
{%- if more %}
... and {{ more }} more: see the quarantine in the console.
{% endif %}";

const HTML: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>Quarantine digest</title></head>
<body style="font-family:sans-serif">
<p>{{ count }} message{% if count != 1 %}s{% endif %} for you {% if count != 1 %}were{% else %}was{% endif %} held in quarantine in the last {{ period }}.
Each link opens a page that asks you to confirm; nothing happens until you do. Links work until {{ expires }}.</p>
<table cellpadding="4" style="border-collapse:collapse">
<tr><th align="left">From</th><th align="left">Subject</th><th align="left">Date</th><th align="left">Reason</th><th></th></tr>
{% for e in entries %}<tr>
<td>{{ e.sender }}</td><td>{{ e.subject }}</td><td>{{ e.date }}</td><td>{{ e.reasons }}</td>
<td>{% if e.held_for %}held for {{ e.held_for }}{% if e.operator_only %} (only your mail administrator can release it){% endif %}{% else %}<a href="{{ e.release }}">Release</a>{% if e.allow %} · <a href="{{ e.allow }}">Not spam, always allow for me</a>{% endif %}{% endif %}</td>
</tr>
{% endfor %}</table>
{% if more %}<p>… and {{ more }} more: see the quarantine in the console.</p>{% endif %}
</body></html>
"#;

/// "day", "7 days", "12 hours".
/// The digest's two templates, compiled once per process.
static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.add_template("digest.txt", TEXT)
        .expect("the digest's text template parses");
    env.add_template("digest.html", HTML)
        .expect("the digest's HTML template parses");
    env
});

fn period_words(secs: u64) -> String {
    let (n, unit) = if secs.is_multiple_of(86_400) {
        (secs / 86_400, "day")
    } else {
        (secs.div_ceil(3600), "hour")
    };
    if n == 1 {
        unit.to_string()
    } else {
        format!("{n} {unit}s")
    }
}

fn day(secs: i64) -> String {
    humantime::format_rfc3339_seconds(
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64),
    )
    .to_string()
    .replace('T', " ")
    .replace('Z', " UTC")
}

/// A digest as mail from `from`: plain text and simple HTML (every value from a message
/// escaped), `Auto-Submitted: auto-generated`, with links under `link_base` signed with
/// `key`.
pub fn render(
    digest: &Digest,
    op: &Operator,
    from: &str,
    link_base: &str,
    key: &[u8],
    now: u64,
) -> Result<OutgoingMail, String> {
    let config = &op.engine().config().digest;
    let expires = now + config.link_expiry.0.as_secs();
    let link = |id: &str, action| {
        link_url(
            link_base,
            &LinkToken {
                id: id.to_string(),
                action,
                recipient: digest.to.clone(),
                expires,
            }
            .sign(key),
        )
    };
    let shown = digest.entries.iter().take(MAX_ENTRIES);
    let entries: Vec<minijinja::Value> = shown
        .map(|e| {
            let s = &e.summary;
            // One line each: a value from the mail never starts a line of its own.
            let line = |x: &str| x.replace(['\r', '\n'], " ");
            context! {
                subject => line(if s.subject.is_empty() { "(no subject)" } else { &s.subject }),
                sender => line(s.sender.as_deref().unwrap_or("(no sender)")),
                date => day(s.date.unwrap_or(s.at as i64)),
                reasons => if s.reasons.is_empty() { "quarantined".to_string() } else { s.reasons.join(", ") },
                held_for => e.held_for.clone(),
                operator_only => e.operator_only,
                release => link(&s.id, LinkAction::Release),
                // Only where the message was addressed to the digest's recipient: an entry
                // speaks for that recipient alone (an admin's or a domain's digest lists
                // other people's mail, which they cannot allow for them).
                allow => (s.sender.is_some() && s.recipients.contains(&digest.to))
                    .then(|| link(&s.id, LinkAction::Allow)),
            }
        })
        .collect();
    let count = digest.entries.len();
    let ctx = context! {
        count,
        entries,
        more => count.saturating_sub(MAX_ENTRIES),
        period => period_words(config.period.0.as_secs()),
        expires => day(expires as i64),
    };
    let render = |name: &str| {
        TEMPLATES
            .get_template(name)
            .and_then(|t| t.render(&ctx))
            .map_err(|e| format!("the digest for {}: {e}", digest.to))
    };
    let (text, html) = (render("digest.txt")?, render("digest.html")?);
    let to = clean_address(&digest.to)
        .ok_or_else(|| format!("the digest address {:?} is not usable", digest.to))?;
    let raw = MessageBuilder::new()
        .from(Address::from(from.to_string()))
        .to(Address::from(to.clone()))
        .subject(format!(
            "Quarantine digest: {count} held message{}",
            if count == 1 { "" } else { "s" }
        ))
        .date(Date::new(now as i64))
        .header("Auto-Submitted", Raw::new("auto-generated"))
        .header("X-Auto-Response-Suppress", Raw::new("All"))
        .header(DIGEST_HEADER, Raw::new("1"))
        .text_body(text)
        .html_body(html)
        .write_to_vec()
        .map_err(|e| format!("building the digest for {to}: {e}"))?;
    Ok(OutgoingMail {
        from: from.to_string(),
        to: vec![to],
        raw: raw.into(),
    })
}

/// Sends each digest of the period once: a run repeated within the same period (a retried
/// schedule, a second `mailroom digest`) finds them sent and sends nothing again.
pub async fn send(
    op: &Operator,
    link_base: &str,
    key: &[u8],
    now: u64,
) -> Result<Vec<DigestSent>, OperatorError> {
    let engine = op.engine();
    let config = engine.config();
    let from = config.mailroom.from_address.clone();
    let period = config.digest.period.0.as_secs().max(1);
    let run_id = format!("digest-{}", now / period);
    let effects = Effects {
        state: engine.ports().state.as_ref(),
        lease: crate::pipeline::EFFECT_LEASE,
    };
    // The effect names the address by its keyed hash: an erasure of it leaves nothing
    // behind in the digest runs' records.
    let hash_key = engine
        .ports()
        .state
        .subject_key()
        .await
        .map_err(|e| OperatorError::Store {
            id: run_id.clone(),
            detail: format!("the store's subject key: {e}"),
        })?;
    let mut out = Vec::new();
    for digest in collect(op, now).await? {
        let mail = render(&digest, op, &from, link_base, key, now).map_err(|detail| {
            OperatorError::Store {
                id: run_id.clone(),
                detail,
            }
        })?;
        let sender = engine.ports().sender.clone();
        let ran = effects
            .once(
                &run_id,
                Stage::Respond,
                &effect_key(
                    Stage::Respond,
                    "digest",
                    &crate::operate::subject_hash(&hash_key, &digest.to),
                ),
                Repeat::AtMostOnce,
                || async move { sender.send(mail).await },
            )
            .await?;
        let (note, before) = match ran {
            Ran::Now(n) | Ran::Unconfirmed(n) => (n, false),
            Ran::Before(n) => (n, true),
        };
        out.push(DigestSent {
            to: digest.to,
            entries: digest.entries.len(),
            note,
            before,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> LinkToken {
        LinkToken {
            id: "m1".into(),
            action: LinkAction::Release,
            recipient: "ann@corp.example".into(),
            expires: 2_000,
        }
    }

    #[test]
    fn tokens_verify_under_their_key_only_until_they_expire() {
        let (key, old, other) = (b"k1".to_vec(), b"k0".to_vec(), b"kx".to_vec());
        let signed = token().sign(&key);
        assert_eq!(
            LinkToken::verify(&signed, std::slice::from_ref(&key), 1_000),
            Ok(token())
        );
        // After a rotation the previous key still verifies the links it signed.
        assert_eq!(
            LinkToken::verify(&signed, &[other.clone(), key.clone()], 1_000),
            Ok(token())
        );
        assert_eq!(
            LinkToken::verify(&signed, &[other, old], 1_000),
            Err(TokenError::Forged)
        );
        assert_eq!(
            LinkToken::verify(&signed, std::slice::from_ref(&key), 2_000),
            Err(TokenError::Expired(token()))
        );
        // Another message, action or expiry under the same signature is refused.
        let (payload, signature) = signed.split_once('.').unwrap();
        let mut changed = token();
        changed.action = LinkAction::Allow;
        let forged_payload = changed.sign(&key);
        let forged = format!("{}.{signature}", forged_payload.split_once('.').unwrap().0);
        assert_eq!(
            LinkToken::verify(&forged, std::slice::from_ref(&key), 1_000),
            Err(TokenError::Forged)
        );
        assert_eq!(
            LinkToken::verify(payload, std::slice::from_ref(&key), 1_000),
            Err(TokenError::Malformed)
        );
        assert_eq!(
            LinkToken::verify("a.!!", &[key], 1_000),
            Err(TokenError::Malformed)
        );
        // The shape alone, before any key: what the endpoint checks before counting.
        assert!(LinkToken::well_formed(&signed));
        for not in [
            "",
            "favicon.ico",
            "a.!!",
            payload,
            &format!("{payload}.{signature}x"),
        ] {
            assert!(!LinkToken::well_formed(not), "{not:?}");
        }
        assert_eq!(link_url("https://x/", "T"), "https://x/?t=T");
        assert_eq!(link_url("https://x/?a=1", "T"), "https://x/?a=1&t=T");
    }
}
