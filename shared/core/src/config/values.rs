//! Value types the config reads and checks by themselves (regexes, keyword lists, sizes,
//! durations), so that a bad one is reported at its line and column.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Deserializer};

/// A case-insensitive regular expression, compiled when the config is read.
#[derive(Clone)]
pub struct Pattern(pub Regex);

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.0.as_str())
    }
}

impl Pattern {
    pub fn is_match(&self, text: &str) -> bool {
        self.0.is_match(text)
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RegexBuilder::new(&s)
            .case_insensitive(true)
            .size_limit(1 << 20)
            .build()
            .map(Pattern)
            .map_err(|e| serde::de::Error::custom(format!("bad regex {s:?}: {e}")))
    }
}

/// Words or phrases matched as whole words, case-insensitively. They are compiled into one
/// automaton when the config is read, so a list of any length costs one pass over the text.
#[derive(Clone, Default)]
pub struct Keywords {
    pub words: Vec<String>,
    automaton: Option<aho_corasick::AhoCorasick>,
}

impl fmt::Debug for Keywords {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keywords({:?})", self.words)
    }
}

impl Keywords {
    /// Words as matched: trimmed, lower-cased, empty ones dropped.
    fn normalize(words: Vec<String>) -> Vec<String> {
        words
            .into_iter()
            .map(|w| w.trim().to_lowercase())
            .filter(|w| !w.is_empty())
            .collect()
    }

    pub fn new(words: Vec<String>) -> Result<Keywords, String> {
        let words = Keywords::normalize(words);
        if words.is_empty() {
            return Ok(Keywords::default());
        }
        let automaton = aho_corasick::AhoCorasick::new(&words)
            .map_err(|e| format!("bad keyword list {words:?}: {e}"))?;
        Ok(Keywords {
            words,
            automaton: Some(automaton),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The first keyword found as a whole word in `lower` (lower-cased text).
    pub fn find_in(&self, lower: &str) -> Option<&str> {
        self.indices_in(lower)
            .next()
            .map(|i| self.words[i].as_str())
    }

    /// The index in `words` of each whole-word occurrence in `lower`, in text order.
    fn indices_in<'s>(&'s self, lower: &'s str) -> impl Iterator<Item = usize> + 's {
        self.automaton
            .iter()
            .flat_map(move |a| a.find_overlapping_iter(lower))
            .filter(move |m| {
                let before = lower[..m.start()].chars().next_back();
                let after = lower[m.end()..].chars().next();
                !before.is_some_and(char::is_alphanumeric)
                    && !after.is_some_and(char::is_alphanumeric)
            })
            .map(|m| m.pattern().as_usize())
    }
}

/// Urgency words per language, compiled into one automaton with, for each word, the
/// languages that list it: a message is scanned once, not once per language.
#[derive(Debug, Clone, Default)]
pub struct UrgentWords {
    languages: Vec<String>,
    all: Keywords,
    /// For each of `all.words`, the positions in `languages` of the languages listing it,
    /// in increasing order.
    languages_of: Vec<Vec<usize>>,
}

impl UrgentWords {
    pub fn new(by_language: BTreeMap<String, Vec<String>>) -> Result<UrgentWords, String> {
        let mut languages: Vec<String> = Vec::new();
        let mut words: Vec<String> = Vec::new();
        let mut languages_of: Vec<Vec<usize>> = Vec::new();
        for (lang, list) in by_language {
            let lang_index = languages.len();
            languages.push(lang);
            for w in Keywords::normalize(list) {
                match words.iter().position(|x| *x == w) {
                    Some(i) => languages_of[i].push(lang_index),
                    None => {
                        words.push(w);
                        languages_of.push(vec![lang_index]);
                    }
                }
            }
        }
        Ok(UrgentWords {
            all: Keywords::new(words)?,
            languages,
            languages_of,
        })
    }

    /// The configured languages, in name order.
    pub fn languages(&self) -> impl Iterator<Item = &str> {
        self.languages.iter().map(String::as_str)
    }

    /// The first language, in name order, with one of its words in any of `lower_texts`
    /// (lower-cased), as a whole word.
    pub fn first_language_in(&self, lower_texts: &[&str]) -> Option<&str> {
        let first = lower_texts
            .iter()
            .flat_map(|text| self.all.indices_in(text))
            .filter_map(|word| self.languages_of[word].first().copied())
            .min()?;
        self.languages.get(first).map(String::as_str)
    }
}

impl<'de> Deserialize<'de> for UrgentWords {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let by_language = BTreeMap::<String, OneOrMany<String>>::deserialize(d)?
            .into_iter()
            .map(|(lang, words)| (lang, words.0))
            .collect();
        UrgentWords::new(by_language).map_err(serde::de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for Keywords {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Keywords::new(OneOrMany::<String>::deserialize(d)?.0).map_err(serde::de::Error::custom)
    }
}

/// A byte count given as a number or as `"40MB"`, `"512 KiB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => parse_byte_size(&s)
                .map(ByteSize)
                .map_err(serde::de::Error::custom),
        }
    }
}

fn parse_byte_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("bad size {s:?}: expected e.g. 40MB or 512KiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1000,
        "kib" => 1024,
        "mb" | "m" => 1000 * 1000,
        "mib" => 1024 * 1024,
        "gb" => 1000 * 1000 * 1000,
        "gib" => 1024 * 1024 * 1024,
        other => {
            return Err(format!(
                "bad size unit {other:?} in {s:?}: use B, KB, KiB, MB, MiB, GB or GiB"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// A duration given as `"7d"`, `"12h"`, `"1week"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map(HumanDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!("bad duration {s:?}: {e} (e.g. \"7d\", \"12h\")"))
            })
    }
}

/// A value or a list of values, so that `recipient = "a@x"` and `recipient = ["a@x", "b@x"]`
/// both read.
#[derive(Debug, Clone, PartialEq)]
pub struct OneOrMany<T>(pub Vec<T>);

impl<T> Default for OneOrMany<T> {
    fn default() -> Self {
        OneOrMany(Vec::new())
    }
}

impl<T> OneOrMany<T> {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.0.iter()
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw<T> {
            Many(Vec<T>),
            One(T),
        }
        Ok(match Raw::deserialize(d)? {
            Raw::Many(v) => OneOrMany(v),
            Raw::One(v) => OneOrMany(vec![v]),
        })
    }
}

/// A number between 0 and 1 (a probability threshold).
pub(super) fn probability<'de, D: Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
    let x = f32::deserialize(d)?;
    if (0.0..=1.0).contains(&x) {
        Ok(x)
    } else {
        Err(serde::de::Error::custom(format!(
            "{x} is not a probability between 0 and 1"
        )))
    }
}

pub(super) fn yes() -> bool {
    true
}
