//! The classify stage's settings: category and priority rules and models.

use serde::Deserialize;
use toml::Spanned;

use crate::model::Priority;

use super::*;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifyConfig {
    #[serde(default = "default_category")]
    pub default_category: String,
    #[serde(default = "default_priority")]
    pub default_priority: Priority,
    /// Category rules, first match wins.
    #[serde(default)]
    pub rules: Vec<Spanned<ClassifyRule>>,
    /// Priority rules, first match wins; they may use the category just decided.
    #[serde(default)]
    pub priority_rules: Vec<Spanned<PriorityRule>>,
    /// Urgency words per language (`en = ["urgent", "asap"]`): a match in subject or body
    /// raises the priority to `high` when no priority rule matched.
    #[serde(default)]
    pub urgent_words: UrgentWords,
    /// A category model, relative to the config file's directory: decides when no rule
    /// matched, if its confidence reaches `category_min_confidence`.
    #[serde(default)]
    pub category_model: Option<String>,
    #[serde(default, deserialize_with = "probability")]
    pub category_min_confidence: f32,
    /// A priority model (labels low, medium, high): decides when no priority rule and no
    /// urgent word matched, if its confidence reaches `priority_min_confidence`.
    #[serde(default)]
    pub priority_model: Option<String>,
    #[serde(default, deserialize_with = "probability")]
    pub priority_min_confidence: f32,
}

fn default_category() -> String {
    "general".into()
}
fn default_priority() -> Priority {
    Priority::Medium
}

impl Default for ClassifyConfig {
    fn default() -> Self {
        toml::from_str("").expect("empty classify config")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifyRule {
    pub name: String,
    pub category: String,
    #[serde(default = "one")]
    pub confidence: f32,
    pub when: Match,
    /// Follow-ups of mail this rule decided keep its decision (unless a rule with
    /// `when = { follow_up = true }` matches them); `false` decides them afresh.
    #[serde(default = "yes")]
    pub sticky: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriorityRule {
    pub name: String,
    pub priority: Priority,
    #[serde(default = "one")]
    pub confidence: f32,
    pub when: Match,
    /// Follow-ups of mail this rule decided keep its decision (unless a rule with
    /// `when = { follow_up = true }` matches them); `false` decides them afresh.
    #[serde(default = "yes")]
    pub sticky: bool,
}

fn one() -> f32 {
    1.0
}

fn yes() -> bool {
    true
}
