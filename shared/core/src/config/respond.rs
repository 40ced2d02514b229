//! The respond stage's settings: auto-reply templates and their limits.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::*;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RespondConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Reply only to an authenticated envelope sender: SPF passed for the reply address's
    /// domain, or DMARC passed for a `From` domain aligned with it. When false, an
    /// unauthenticated sender still gets a reply, but one that carries none of the original's
    /// text (a fixed subject; `subject` and `sender_name` are empty).
    #[serde(default = "yes")]
    pub require_authenticated_sender: bool,
    /// At most one reply per sender per template in this period.
    #[serde(default = "default_period")]
    pub period: HumanDuration,
    /// Prefix of the reference id given to the sender.
    #[serde(default = "default_reference_prefix")]
    pub reference_prefix: String,
    #[serde(default)]
    pub templates: Vec<Template>,
}

fn default_period() -> HumanDuration {
    HumanDuration(Duration::from_secs(7 * 24 * 3600))
}
fn default_reference_prefix() -> String {
    "MR-".into()
}

impl Default for RespondConfig {
    fn default() -> Self {
        toml::from_str("").expect("empty respond config")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    pub name: String,
    /// Categories this template answers; none means any category without a template of its own.
    #[serde(default)]
    pub category: OneOrMany<String>,
    /// ISO 639-1 code; a template with a language is preferred for mail in that language.
    pub language: Option<String>,
    /// minijinja templates; placeholders: subject, sender_name, sender, category, reference,
    /// authenticated.
    pub subject: Spanned<String>,
    pub body: Spanned<String>,
}
