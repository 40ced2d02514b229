//! The one TOML configuration. Parsing validates everything a value can check by itself
//! (regexes, sizes, durations, unknown keys) so that errors carry the line and column toml
//! gives; [`Config::validate`] then checks what needs the whole file (template references,
//! unreachable rules).

mod assist;
mod classify;
mod digest;
mod edit;
mod filter;
mod respond;
mod retention;
mod routing;
mod validate;
mod values;

pub use assist::*;
pub use classify::*;
pub use digest::*;
pub use edit::{EditError, Edited, Removed, SenderList, add_sender, for_domain, remove_address};
pub use filter::*;
pub use respond::*;
pub use retention::*;
pub use routing::*;
pub use values::*;
use values::{probability, yes};

use serde::Deserialize;
use toml::Spanned;

/// A config problem, located in the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}:{line}:{column}: {message}")]
pub struct ConfigError {
    pub origin: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub mailroom: General,
    #[serde(default)]
    pub filter: FilterConfig,
    #[serde(default)]
    pub classify: ClassifyConfig,
    #[serde(default)]
    pub routing: RoutingConfig,
    #[serde(default, rename = "route")]
    pub routes: Vec<Spanned<RouteRule>>,
    #[serde(default)]
    pub respond: RespondConfig,
    #[serde(default)]
    pub retention: RetentionConfig,
    #[serde(default)]
    pub digest: DigestConfig,
    /// The optional language model; `None` (the default) never calls one.
    #[serde(default)]
    pub assist: Option<AssistConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct General {
    /// Domains we receive mail for. Mail from them never gets an auto-reply.
    #[serde(default)]
    pub domains: Vec<String>,
    /// Further addresses of ours (in other domains) that must never get an auto-reply.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// The SES-verified address forwards and replies are sent from.
    #[serde(default = "default_from")]
    pub from_address: String,
    /// Appended to the original display name in forwards: "Ann Example via mailroom".
    #[serde(default = "default_via")]
    pub forward_name_suffix: String,
}

fn default_from() -> String {
    "mailroom@example.com".into()
}
fn default_via() -> String {
    "via mailroom".into()
}

impl Default for General {
    fn default() -> Self {
        General {
            domains: Vec::new(),
            addresses: Vec::new(),
            from_address: default_from(),
            forward_name_suffix: default_via(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::time::Duration;

    #[test]
    fn urgent_words_pick_the_first_language_in_name_order_in_one_pass() {
        let words = |ws: &[&str]| ws.iter().map(|w| w.to_string()).collect::<Vec<_>>();
        let urgent = UrgentWords::new(BTreeMap::from([
            ("de".to_string(), words(&["Dringend", "sofort"])),
            ("en".to_string(), words(&["urgent", "asap"])),
            ("fr".to_string(), words(&["urgent", "panne"])),
        ]))
        .unwrap();
        assert_eq!(urgent.languages().collect::<Vec<_>>(), ["de", "en", "fr"]);
        // A word two languages list counts for the first of them.
        assert_eq!(urgent.first_language_in(&["re: urgent", ""]), Some("en"));
        assert_eq!(urgent.first_language_in(&["", "une panne"]), Some("fr"));
        // Whichever text it is in, the earlier language wins over the earlier match.
        assert_eq!(
            urgent.first_language_in(&["asap", "bitte sofort"]),
            Some("de")
        );
        // Whole words only, and lower-cased input against lower-cased words.
        assert_eq!(urgent.first_language_in(&["urgently", "dringender"]), None);
        assert_eq!(urgent.first_language_in(&["dringend!", ""]), Some("de"));
        assert_eq!(UrgentWords::default().first_language_in(&["urgent"]), None);
    }

    fn error(text: &str) -> ConfigError {
        Config::from_toml(text, "t.toml").expect_err("config should be refused")
    }

    #[test]
    fn empty_config_is_valid_with_defaults() {
        let c = Config::from_toml("", "t.toml").unwrap();
        assert_eq!(c.filter.max_message_size, ByteSize(40 * 1024 * 1024));
        assert_eq!(c.respond.period.0, Duration::from_secs(604800));
        assert!(
            c.filter
                .attachments
                .blocked_extensions
                .contains(&"exe".to_string())
        );
    }

    #[test]
    fn replies_need_an_authenticated_sender_unless_loosened_with_a_warning() {
        let c = Config::from_toml("", "t.toml").unwrap();
        assert!(c.respond.require_authenticated_sender);
        assert!(c.warnings().is_empty(), "{:?}", c.warnings());
        let c = Config::from_toml(
            "[respond]\nrequire_authenticated_sender = false\n",
            "t.toml",
        )
        .unwrap();
        assert!(!c.respond.require_authenticated_sender);
        let w = c.warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("require_authenticated_sender = false"),
            "{w:?}"
        );
        // With auto-replies off the switch loosens nothing.
        let c = Config::from_toml(
            "[respond]\nenabled = false\nrequire_authenticated_sender = false\n",
            "t.toml",
        )
        .unwrap();
        assert!(c.warnings().is_empty());
    }

    #[test]
    fn unknown_key_is_located() {
        let e = error("[filter]\nquarantine_score = 4.0\nspam_treshold = 3\n");
        assert_eq!((e.line, e.column), (3, 1), "{e}");
        assert!(e.message.contains("unknown field `spam_treshold`"), "{e}");
    }

    #[test]
    fn bad_regex_is_located() {
        let e = error(
            "[[classify.rules]]\nname = \"x\"\ncategory = \"billing\"\nwhen = { subject = \"(unclosed\" }\n",
        );
        assert_eq!(e.line, 4, "{e}");
        assert!(e.message.contains("bad regex"), "{e}");
    }

    #[test]
    fn missing_template_is_located() {
        let e = error("[[route]]\nname = \"r\"\nactions = [\"drop\"]\nreply_template = \"nope\"\n");
        assert_eq!(e.line, 4, "{e}");
        assert!(e.message.contains("\"nope\""), "{e}");
    }

    #[test]
    fn rule_after_catch_all_is_unreachable() {
        let e = error(
            "[[route]]\nname = \"all\"\nactions = [\"drop\"]\n\n[[route]]\nname = \"later\"\nwhen = { sender = \"a@b.c\" }\nactions = [\"quarantine\"]\n",
        );
        assert!(e.message.contains("\"later\" is unreachable"), "{e}");
        assert_eq!(e.line, 5, "{e}");
    }

    #[test]
    fn catch_all_that_continues_or_other_verdict_is_fine() {
        Config::from_toml(
            "[[route]]\nname = \"all\"\ncontinue = true\nactions = [{ tag = { header = \"X-A\", value = \"1\" } }]\n\n[[route]]\nname = \"later\"\nactions = [\"drop\"]\n\n[[route]]\nname = \"q\"\nwhen = { verdict = \"quarantine\" }\nactions = [\"quarantine\"]\n",
            "t.toml",
        )
        .unwrap();
    }

    #[test]
    fn storage_prefixes_stay_below_their_roots() {
        for bad in ["/etc/", "../x/", "a//b/", "billing", "a/./b/"] {
            let e = error(&format!(
                "[[route]]\nname = \"s\"\nactions = [{{ store = \"{bad}\" }}]\n"
            ));
            assert!(e.message.contains("route rule \"s\""), "{bad}: {e}");
        }
        Config::from_toml(
            "[[route]]\nname = \"s\"\nactions = [{ store = \"billing/2026/\" }]\n",
            "t",
        )
        .unwrap();
        let e = error("[routing]\ndefault_actions = [{ store = \"../up/\" }]\n");
        assert!(e.message.contains("default_actions"), "{e}");
        let e = error("[routing]\nquarantine_prefix = \"held/\"\n");
        assert!(e.message.contains("below \"quarantine/\""), "{e}");
        Config::from_toml("[routing]\nquarantine_prefix = \"quarantine/2026/\"\n", "t").unwrap();
    }

    #[test]
    fn sizes_and_durations_parse() {
        let c = Config::from_toml(
            "[filter]\nmax_message_size = \"10MiB\"\n[respond]\nperiod = \"12h\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.filter.max_message_size.0, 10 * 1024 * 1024);
        assert_eq!(c.respond.period.0, Duration::from_secs(43200));
        let e = error("[filter]\nmax_message_size = \"10 parsecs\"\n");
        assert!(e.message.contains("bad size unit"), "{e}");
    }
}
