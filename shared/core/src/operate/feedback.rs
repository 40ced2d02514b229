//! Operators' corrections: what a person said a message is, kept so that the spam model can
//! learn from it (`mailroom train --feedback`, and the scheduled retrain on a stack).
//!
//! A release says "not spam"; marking a message says either. A correction names the raw
//! mail by its reference and never holds a copy of it: when the raw mail is gone (retention
//! or an erasure) the correction goes with it, or is skipped, and says so.

use serde::{Deserialize, Serialize};

use crate::model::{RawRef, Verdict};

/// What an operator says a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Judgement {
    Spam,
    Ham,
}

impl Judgement {
    /// The training label: the folder name a spam model is trained from.
    pub fn label(self) -> &'static str {
        match self {
            Judgement::Spam => "spam",
            Judgement::Ham => "ham",
        }
    }

    pub fn parse(s: &str) -> Option<Judgement> {
        match s.trim().to_ascii_lowercase().as_str() {
            "spam" => Some(Judgement::Spam),
            "ham" | "not-spam" | "notspam" | "good" => Some(Judgement::Ham),
            _ => None,
        }
    }
}

/// One correction, by message. A later correction of the same message replaces it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Correction {
    pub id: String,
    /// The raw mail, where the pipeline read it.
    pub raw: RawRef,
    pub label: Judgement,
    /// The pipeline's verdict, which the correction confirms or contradicts.
    pub verdict: Verdict,
    /// Who said so (`operator:NAME`, `digest:ADDRESS`).
    pub by: String,
    /// When (seconds since the epoch).
    pub at: u64,
    /// `release` or `mark`.
    pub via: String,
}

impl Correction {
    /// Whether the pipeline had decided otherwise: spam that was accepted, or ham that was
    /// held or refused.
    pub fn contradicts(&self) -> bool {
        match self.label {
            Judgement::Spam => self.verdict == Verdict::Accept,
            Judgement::Ham => self.verdict != Verdict::Accept,
        }
    }
}
