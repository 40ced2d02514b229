//! The respond stage's pure part: whether and how to auto-reply. [`plan`] decides (guard,
//! address, template), [`reference_for`] gives the reference the sender can quote, and
//! [`render`] builds the reply. Rate limiting and sending are the caller's, through the ports.

pub mod guard;
pub mod reply;
pub mod sender;

use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::mail::Mail;
use crate::model::StageResults;
use crate::ports::OutgoingMail;

use reply::ReplyContext;

/// A decided auto-reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyPlan {
    /// The reply address, lower-cased.
    pub to: String,
    /// The template's name.
    pub template: String,
    /// One reply per sender and template per period: `{to}#{template}`.
    pub rate_limit_key: String,
    /// The reply address is authenticated (SPF or aligned DMARC passed; see [`sender`]).
    /// When not (only with `require_authenticated_sender = false`), the reply carries none
    /// of the original's text.
    pub authenticated: bool,
}

/// Decides whether to reply, to whom, with which template. `Err` carries the reason not to:
/// a [`guard::suppression_reason`], or the lack of a template.
pub fn plan(mail: &Mail, results: &StageResults, config: &Config) -> Result<ReplyPlan, String> {
    if let Some(reason) = guard::suppression_reason(mail, results, config) {
        return Err(reason);
    }
    let to = reply::reply_address(mail).ok_or("no reply address")?;
    // With the requirement on, the guard let only an authenticated sender through.
    let authenticated = config.respond.require_authenticated_sender
        || sender::SenderAuth::of(mail, &to).is_authenticated();
    let category = category(results, config);
    let language = results
        .classify
        .as_ref()
        .and_then(|c| c.language.as_deref());
    let chosen = results
        .route
        .as_ref()
        .and_then(|r| r.reply_template.as_deref());
    let template =
        reply::choose_template(&config.respond, category, language, chosen).ok_or_else(|| {
            match chosen {
                Some(name) => {
                    format!("route chose auto-reply template {name:?}, which is not defined")
                }
                None => format!("no auto-reply template for category {category}"),
            }
        })?;
    Ok(ReplyPlan {
        rate_limit_key: format!("{to}#{}", template.name),
        to,
        template: template.name.clone(),
        authenticated,
    })
}

fn category<'c>(results: &'c StageResults, config: &'c Config) -> &'c str {
    results
        .classify
        .as_ref()
        .map_or(config.classify.default_category.as_str(), |c| {
            c.category.as_str()
        })
}

/// Crockford's base32 alphabet: no I, L, O or U, so a reference reads back unambiguously.
pub const BASE32: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// The reference given to the sender: `prefix` plus 10 base32 characters (50 bits) of the
/// SHA-256 of the message id (angle brackets and surrounding whitespace ignored).
/// Deterministic, so that a retry quotes the same reference.
pub fn reference_for(message_id: &str, prefix: &str) -> String {
    let id = message_id
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>');
    let digest = Sha256::digest(id.as_bytes());
    let mut bits: u64 = 0;
    for b in &digest[..8] {
        bits = (bits << 8) | u64::from(*b);
    }
    let mut out = String::with_capacity(prefix.len() + 10);
    out.push_str(prefix);
    for i in 0..10 {
        let index = (bits >> (59 - 5 * i)) & 0x1f;
        out.push(BASE32[index as usize] as char);
    }
    out
}

/// Builds the planned reply. The category is the classified one, or the configured default.
pub fn render(
    mail: &Mail,
    plan: &ReplyPlan,
    results: &StageResults,
    config: &Config,
    reference: &str,
) -> Result<OutgoingMail, String> {
    let template = config
        .respond
        .templates
        .iter()
        .find(|t| t.name == plan.template)
        .ok_or_else(|| format!("auto-reply template {:?} is not defined", plan.template))?;
    let ctx = ReplyContext {
        category: category(results, config),
        reference,
        authenticated: plan.authenticated,
    };
    reply::build_reply(mail, template, &ctx, &config.mailroom, &plan.to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ClassifyResult, DecidedBy, FilterResult, Priority, RouteResult, Verdict};
    use mail_parser::MessageParser;

    const CONFIG: &str = r#"
[mailroom]
domains = ["example.com"]

[respond]
reference_prefix = "SUP-"

[[respond.templates]]
name = "billing"
category = "billing"
subject = "Your billing request {{ reference }}"
body = "Hello {{ sender_name }}, category {{ category }}, ref {{ reference }}."

[[respond.templates]]
name = "vip"
subject = "VIP {{ reference }}"
body = "VIP"
category = "vip-only"
"#;

    const MSG: &[u8] = b"Return-Path: <ann@example.org>\nAuthentication-Results: amazonses.com; spf=pass smtp.mailfrom=ann@example.org; dmarc=pass header.from=example.org\nFrom: Ann <ann@example.org>\nTo: billing@example.com\nSubject: Invoice\nMessage-ID: <m1@example.org>\n\nWhere is my invoice?\n";

    fn results(category: Option<&str>) -> StageResults {
        StageResults {
            filter: Some(FilterResult {
                verdict: Verdict::Accept,
                spam_score: 0.0,
                reasons: vec![],
                scorer: "rules".into(),
                spam_probability: None,
            }),
            classify: category.map(|c| ClassifyResult {
                category: c.into(),
                category_confidence: 1.0,
                category_by: DecidedBy::Default,
                priority: Priority::Medium,
                priority_confidence: 1.0,
                priority_by: DecidedBy::Default,
                language: None,
            }),
            ..StageResults::default()
        }
    }

    #[test]
    fn plans_and_renders_a_reply() {
        let config = Config::from_toml(CONFIG, "t.toml").unwrap();
        let mail = Mail::parse(MSG).unwrap();
        let r = results(Some("billing"));
        let plan = plan(&mail, &r, &config).unwrap();
        assert_eq!(
            plan,
            ReplyPlan {
                to: "ann@example.org".into(),
                template: "billing".into(),
                rate_limit_key: "ann@example.org#billing".into(),
                authenticated: true,
            }
        );
        let reference = reference_for(mail.message_id.as_deref().unwrap(), "SUP-");
        let out = render(&mail, &plan, &r, &config, &reference).unwrap();
        assert_eq!(out.to, ["ann@example.org"]);
        let raw = out.raw.to_vec();
        let p = MessageParser::default().parse(&raw[..]).unwrap();
        assert_eq!(
            p.subject(),
            Some(format!("Your billing request {reference}").as_str())
        );
        assert_eq!(
            p.body_text(0).unwrap().trim_end(),
            format!("Hello Ann, category billing, ref {reference}.")
        );
    }

    #[test]
    fn with_the_switch_off_an_unauthenticated_sender_gets_no_original_text() {
        let forged = b"Return-Path: <victim@third.example>\nAuthentication-Results: amazonses.com; spf=none smtp.mailfrom=third.example; dmarc=none\nFrom: \"Pills at spam.example\" <victim@third.example>\nTo: billing@example.com\nSubject: Cheap pills at spam.example\nMessage-ID: <f1@third.example>\n\nspam.example\n";
        let mail = Mail::parse(forged).unwrap();
        let r = results(Some("billing"));
        let strict = Config::from_toml(CONFIG, "t.toml").unwrap();
        assert_eq!(
            plan(&mail, &r, &strict).unwrap_err(),
            "envelope sender not authenticated: SPF none for third.example, DMARC none"
        );
        let loose = CONFIG.replace(
            "reference_prefix = \"SUP-\"",
            "reference_prefix = \"SUP-\"\nrequire_authenticated_sender = false",
        );
        let mut loose = Config::from_toml(&loose, "t.toml").unwrap();
        *loose.respond.templates[0].subject.get_mut() = "Re: {{ subject }}".into();
        let plan = plan(&mail, &r, &loose).unwrap();
        assert!(!plan.authenticated);
        let reference = reference_for("f1@third.example", "SUP-");
        let out = render(&mail, &plan, &r, &loose, &reference).unwrap();
        assert_eq!(out.to, ["victim@third.example"]);
        let raw = out.raw.to_vec();
        assert!(
            !String::from_utf8_lossy(&raw).contains("spam.example"),
            "{}",
            String::from_utf8_lossy(&raw)
        );
        let p = MessageParser::default().parse(&raw[..]).unwrap();
        assert_eq!(
            p.subject(),
            Some(format!("Automatic reply [{reference}]").as_str())
        );
        assert_eq!(
            p.body_text(0).unwrap().trim_end(),
            format!("Hello , category billing, ref {reference}.")
        );
    }

    #[test]
    fn missing_template_and_guard_reasons_are_errors() {
        let config = Config::from_toml(CONFIG, "t.toml").unwrap();
        let mail = Mail::parse(MSG).unwrap();
        assert_eq!(
            plan(&mail, &results(Some("sales")), &config).unwrap_err(),
            "no auto-reply template for category sales"
        );
        // No classify result: the default category "general" has no template either.
        assert_eq!(
            plan(&mail, &results(None), &config).unwrap_err(),
            "no auto-reply template for category general"
        );
        let mut r = results(Some("billing"));
        r.filter = None;
        assert!(
            plan(&mail, &r, &config)
                .unwrap_err()
                .contains("not accepted")
        );
    }

    #[test]
    fn route_override_wins() {
        let config = Config::from_toml(CONFIG, "t.toml").unwrap();
        let mail = Mail::parse(MSG).unwrap();
        let mut r = results(Some("billing"));
        r.route = Some(RouteResult {
            rules: vec!["vip".into()],
            actions: vec![],
            reply_template: Some("vip".into()),
            reply_suppressed_by: None,
        });
        assert_eq!(plan(&mail, &r, &config).unwrap().template, "vip");
        r.route.as_mut().unwrap().reply_template = Some("gone".into());
        assert!(plan(&mail, &r, &config).unwrap_err().contains("\"gone\""));
    }

    #[test]
    fn reference_is_deterministic_and_readable() {
        let a = reference_for("<m1@example.org>", "MR-");
        assert_eq!(a, reference_for("m1@example.org", "MR-"));
        assert_eq!(a, reference_for(" <m1@example.org> ", "MR-"));
        assert_ne!(a, reference_for("m2@example.org", "MR-"));
        let code = a.strip_prefix("MR-").unwrap();
        assert_eq!(code.len(), 10);
        assert!(code.bytes().all(|b| BASE32.contains(&b)));
        assert_eq!(code, code.to_ascii_uppercase());
    }
}
