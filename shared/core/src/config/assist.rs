//! `[assist]`: the optional language model that classifies the mail rules and models were
//! unsure of, and drafts replies (never sent by itself). Off unless the table is there.

use std::time::Duration;

use serde::Deserialize;

use super::values::HumanDuration;

/// Where the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AssistProvider {
    /// Amazon Bedrock's Converse API (a deployed stack; `AssistModelId` in the template).
    Bedrock,
    /// An OpenAI-compatible `/v1/chat/completions` endpoint over plain HTTP, such as a
    /// local llama.cpp or Ollama server (`mailroom run`).
    Openai,
}

/// What the assistant is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AssistTask {
    /// Category and priority for mail no rule decided and the model was unsure of.
    Classify,
    /// A draft reply for the categories in `draft_categories`.
    Draft,
    /// A second opinion on accepted mail the spam model was unsure of (its P(spam) in
    /// `spam_band`): "spam" quarantines it, "not spam" changes nothing.
    Spam,
}

impl AssistTask {
    pub fn as_str(self) -> &'static str {
        match self {
            AssistTask::Classify => "classify",
            AssistTask::Draft => "draft",
            AssistTask::Spam => "spam",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssistConfig {
    pub provider: AssistProvider,
    /// The model id: a Bedrock model or inference profile id, or the server's model name.
    pub model: String,
    /// The `openai` provider's base URL (`http://127.0.0.1:8080`); `/v1/chat/completions`
    /// is added.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// How long one call may take; past it the stage goes on without the answer.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Calls per UTC day, all tasks together; past it the stages go on without them.
    #[serde(default = "default_budget")]
    pub daily_budget: u64,
    #[serde(default = "default_tasks")]
    pub tasks: Vec<AssistTask>,
    /// The classify task runs only when no rule decided and the category's confidence is
    /// below this.
    #[serde(default = "default_below")]
    pub confidence_below: f32,
    /// The categories whose mail gets a draft reply.
    #[serde(default)]
    pub draft_categories: Vec<String>,
    /// The spam task runs only for accepted mail whose P(spam) (from the config's spam
    /// model) lies in `[low, high]`.
    #[serde(default = "default_band")]
    pub spam_band: [f32; 2],
    /// Mask addresses and long digit runs (card, account and phone numbers) before the
    /// message leaves for the model.
    #[serde(default = "yes")]
    pub redact: bool,
    /// The characters of subject and text the model sees, at most.
    #[serde(default = "default_chars")]
    pub max_chars: usize,
}

fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
fn default_budget() -> u64 {
    1_000
}
fn default_tasks() -> Vec<AssistTask> {
    vec![AssistTask::Classify]
}
fn default_below() -> f32 {
    0.6
}
fn default_band() -> [f32; 2] {
    [0.3, 0.7]
}
fn default_chars() -> usize {
    6_000
}
fn yes() -> bool {
    true
}

impl AssistConfig {
    pub fn does(&self, task: AssistTask) -> bool {
        self.tasks.contains(&task)
    }

    /// What is wrong with the table, if anything.
    pub(super) fn problem(&self) -> Option<String> {
        if self.model.trim().is_empty() {
            return Some("[assist] model is empty".into());
        }
        if !(0.0..=1.0).contains(&self.confidence_below) {
            return Some(format!(
                "[assist] confidence_below = {} is not a probability (0 to 1)",
                self.confidence_below
            ));
        }
        let [low, high] = self.spam_band;
        if !(0.0..=1.0).contains(&low) || !(0.0..=1.0).contains(&high) || low > high {
            return Some(format!(
                "[assist] spam_band = [{low}, {high}] is not a band of probabilities (0 <= low <= high <= 1)"
            ));
        }
        if self.timeout.0.is_zero() {
            return Some("[assist] timeout must be more than 0s".into());
        }
        if self.max_chars == 0 {
            return Some("[assist] max_chars must be more than 0".into());
        }
        match (self.provider, self.endpoint.as_deref()) {
            (AssistProvider::Openai, None) => {
                Some("[assist] provider = \"openai\" needs endpoint = \"http://HOST:PORT\"".into())
            }
            (AssistProvider::Openai, Some(e)) if !e.starts_with("http://") => Some(format!(
                "[assist] endpoint {e:?} is not an http:// URL (the openai provider speaks plain \
                 HTTP to a server on this machine or network)"
            )),
            (AssistProvider::Bedrock, Some(_)) => {
                Some("[assist] endpoint is for provider = \"openai\"; Bedrock takes none".into())
            }
            _ => None,
        }
    }
}
