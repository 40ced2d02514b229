//! The classify stage: category and priority, each with a confidence and what decided it,
//! plus the message language. Rules win; a trained model (the [`TextModel`] seam) decides
//! when no rule matches; the configured default comes last.

use crate::config::Config;
use crate::mail::Mail;
use crate::matcher::Facts;
use crate::model::{ClassifyResult, Conversation, DecidedBy, FilterResult, Priority};

/// A trained text classifier: returns a label and its probability.
pub trait TextModel: Send + Sync {
    fn name(&self) -> &str;
    fn predict(&self, mail: &Mail, language: Option<&str>) -> (String, f32);
}

/// How many bytes of the body language detection looks at, after the subject. Its cost
/// grows with the sample. On the 3,634 multilingual tickets, 300 gets 4 fewer right than
/// 600 (3,330 against 3,334) at about half the cost; 200 gets 29 fewer.
const LANGUAGE_SAMPLE: usize = 300;

/// The classify stage with its optional models, built once per process.
#[derive(Default)]
pub struct Classifier {
    pub category_model: Option<Box<dyn TextModel>>,
    pub priority_model: Option<Box<dyn TextModel>>,
}

impl Classifier {
    pub fn run(&self, mail: &Mail, filter: &FilterResult, config: &Config) -> ClassifyResult {
        self.run_in(mail, filter, config, None)
    }

    /// Classifies a message that may follow up a conversation: a follow-up keeps the
    /// conversation's category and priority, unless a rule with `follow_up = true` matches
    /// it, or the rule that decided them is not `sticky`.
    pub fn run_in(
        &self,
        mail: &Mail,
        filter: &FilterResult,
        config: &Config,
        follows: Option<&Conversation>,
    ) -> ClassifyResult {
        let cc = &config.classify;
        let language = detect_language(mail, &configured_languages(config));
        let mut facts = Facts {
            mail,
            verdict: filter.verdict,
            spam_score: filter.spam_score,
            category: None,
            priority: None,
            language: language.as_deref(),
            our_domains: &config.mailroom.domains,
            accepted_only_by_default: false,
            follow_up: follows.is_some(),
        };
        let rules = || cc.rules.iter().map(|r| r.get_ref());
        let kept_category = follows.and_then(|c| {
            let sticky = c
                .category_rule
                .as_ref()
                .is_none_or(|name| rules().find(|r| &r.name == name).is_none_or(|r| r.sticky));
            c.category.clone().filter(|_| sticky)
        });
        // While the conversation's category holds, only a rule for follow-ups overrides it.
        let rule = rules().find(|r| {
            (kept_category.is_none() || r.when.follow_up == Some(true)) && r.when.matches(&facts)
        });
        let follows_id =
            || DecidedBy::Conversation(follows.map(|c| c.follows.clone()).unwrap_or_default());

        let (category, category_confidence, category_by) = match (rule, kept_category) {
            (None, Some(category)) => (category, 1.0, follows_id()),
            (Some(rule), _) => (
                rule.category.clone(),
                rule.confidence,
                DecidedBy::Rule(rule.name.clone()),
            ),
            (None, None) => match &self.category_model {
                Some(model) => match model.predict(mail, language.as_deref()) {
                    (label, p) if p >= cc.category_min_confidence => {
                        (label, p, DecidedBy::Model(model.name().to_string()))
                    }
                    _ => (cc.default_category.clone(), 0.0, DecidedBy::Default),
                },
                None => (cc.default_category.clone(), 0.0, DecidedBy::Default),
            },
        };

        facts.category = Some(&category);
        let priority_rules = || cc.priority_rules.iter().map(|r| r.get_ref());
        let kept_priority = follows.and_then(|c| {
            let sticky = c.priority_rule.as_ref().is_none_or(|name| {
                priority_rules()
                    .find(|r| &r.name == name)
                    .is_none_or(|r| r.sticky)
            });
            c.priority.filter(|_| sticky)
        });
        let rule = priority_rules().find(|r| {
            (kept_priority.is_none() || r.when.follow_up == Some(true)) && r.when.matches(&facts)
        });
        let (priority, priority_confidence, priority_by) = if let Some(rule) = rule {
            (
                rule.priority,
                rule.confidence,
                DecidedBy::Rule(rule.name.clone()),
            )
        } else if let Some(p) = kept_priority {
            (p, 1.0, follows_id())
        } else if let Some(lang) = cc
            .urgent_words
            .first_language_in(&[mail.subject_lower(), mail.text_lower()])
        {
            (
                Priority::High,
                1.0,
                DecidedBy::Rule(format!("urgent_words.{lang}")),
            )
        } else if let Some(model) = &self.priority_model {
            let (label, p) = model.predict(mail, language.as_deref());
            match parse_priority(&label) {
                Some(priority) if p >= cc.priority_min_confidence => {
                    (priority, p, DecidedBy::Model(model.name().to_string()))
                }
                _ => (cc.default_priority, 0.0, DecidedBy::Default),
            }
        } else {
            (cc.default_priority, 0.0, DecidedBy::Default)
        };

        ClassifyResult {
            category,
            category_confidence,
            category_by,
            priority,
            priority_confidence,
            priority_by,
            language,
        }
    }

    /// The result for mail that could not be parsed: the defaults, decided by nothing.
    pub fn unparsed(config: &Config) -> ClassifyResult {
        ClassifyResult {
            category: config.classify.default_category.clone(),
            category_confidence: 0.0,
            category_by: DecidedBy::Default,
            priority: config.classify.default_priority,
            priority_confidence: 0.0,
            priority_by: DecidedBy::Default,
            language: None,
        }
    }
}

fn parse_priority(label: &str) -> Option<Priority> {
    match label.to_ascii_lowercase().as_str() {
        "low" => Some(Priority::Low),
        "medium" | "normal" => Some(Priority::Medium),
        "high" | "urgent" => Some(Priority::High),
        _ => None,
    }
}

/// Languages whatlang may answer with, by ISO 639-1 code.
const LANGUAGES: &[(whatlang::Lang, &str)] = {
    use whatlang::Lang::*;
    &[
        (Eng, "en"),
        (Deu, "de"),
        (Spa, "es"),
        (Fra, "fr"),
        (Por, "pt"),
        (Ita, "it"),
        (Nld, "nl"),
        (Swe, "sv"),
        (Dan, "da"),
        (Nob, "no"),
        (Fin, "fi"),
        (Pol, "pl"),
        (Ces, "cs"),
        (Slk, "sk"),
        (Hun, "hu"),
        (Ron, "ro"),
        (Rus, "ru"),
        (Ukr, "uk"),
        (Tur, "tr"),
        (Ell, "el"),
        (Jpn, "ja"),
        (Cmn, "zh"),
        (Kor, "ko"),
        (Ara, "ar"),
        (Heb, "he"),
        (Hin, "hi"),
    ]
};

/// The languages a config cares about: those of its templates, urgency words and rule
/// conditions, plus English. Detection among a few candidates is far more reliable on
/// short mail than among seventy.
pub fn configured_languages(config: &Config) -> Vec<whatlang::Lang> {
    let mut codes: Vec<&str> = vec!["en"];
    codes.extend(
        config
            .respond
            .templates
            .iter()
            .filter_map(|t| t.language.as_deref()),
    );
    codes.extend(config.classify.urgent_words.languages());
    let rule_langs = config
        .classify
        .rules
        .iter()
        .map(|r| &r.get_ref().when)
        .chain(
            config
                .classify
                .priority_rules
                .iter()
                .map(|r| &r.get_ref().when),
        )
        .chain(config.routes.iter().map(|r| &r.get_ref().when));
    for when in rule_langs {
        codes.extend(when.language.iter().map(String::as_str));
    }
    let mut langs: Vec<whatlang::Lang> = LANGUAGES
        .iter()
        .filter(|(_, code)| codes.iter().any(|c| c.eq_ignore_ascii_case(code)))
        .map(|(l, _)| *l)
        .collect();
    langs.dedup();
    langs
}

/// ISO 639-1 code of the subject and body language, when whatlang is confident, choosing
/// among `candidates` (all languages it knows when empty or only English).
pub fn detect_language(mail: &Mail, candidates: &[whatlang::Lang]) -> Option<String> {
    let mut sample = String::with_capacity(LANGUAGE_SAMPLE + mail.subject.len() + 1);
    sample.push_str(&mail.subject);
    sample.push('\n');
    let mut end = mail.text.len().min(LANGUAGE_SAMPLE);
    while !mail.text.is_char_boundary(end) {
        end -= 1;
    }
    sample.push_str(&mail.text[..end]);
    let info = if candidates.len() > 1 {
        whatlang::Detector::with_allowlist(candidates.to_vec()).detect(&sample)?
    } else {
        whatlang::detect(&sample)?
    };
    // whatlang calls many short texts unreliable that it still gets right at high
    // confidence; below that, a wrong language would pick the wrong template.
    if !info.is_reliable() && info.confidence() < 0.8 {
        return None;
    }
    LANGUAGES
        .iter()
        .find(|(l, _)| *l == info.lang())
        .map(|(_, code)| code.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Verdict;

    fn accepted() -> FilterResult {
        FilterResult {
            verdict: Verdict::Accept,
            spam_score: 0.0,
            reasons: vec![],
            scorer: "rules".into(),
            spam_probability: None,
        }
    }

    const CONFIG: &str = r#"
[mailroom]
domains = ["example.com"]

[classify]
default_category = "general"

[classify.urgent_words]
en = ["urgent", "asap"]
de = ["dringend"]

[[classify.rules]]
name = "billing-address"
category = "billing"
when = { recipient = "billing@" }

[[classify.rules]]
name = "invoice-words"
category = "billing"
confidence = 0.8
when = { keywords = ["invoice", "Rechnung"] }

[[classify.priority_rules]]
name = "vip"
priority = "high"
when = { domain = "bigcustomer.example" }

[[classify.priority_rules]]
name = "billing-low"
priority = "low"
when = { category = "billing" }
"#;

    fn classify(raw: &str) -> ClassifyResult {
        let config = Config::from_toml(CONFIG, "t.toml").unwrap();
        let mail = Mail::parse(raw.as_bytes()).unwrap();
        Classifier::default().run(&mail, &accepted(), &config)
    }

    #[test]
    fn recipient_rule_with_plus_address_decides_category() {
        let r = classify(
            "From: a@x.org\nTo: billing+eu@example.com\nSubject: question\n\nHello, a question about my account.\n",
        );
        assert_eq!(r.category, "billing");
        assert_eq!(r.category_by, DecidedBy::Rule("billing-address".into()));
        assert_eq!(r.priority, Priority::Low);
        assert_eq!(r.priority_by, DecidedBy::Rule("billing-low".into()));
    }

    #[test]
    fn keyword_rule_and_vip_priority() {
        let r = classify(
            "From: ceo@bigcustomer.example\nTo: help@example.com\nSubject: Rechnung 2024\n\nBitte senden Sie die Rechnung erneut.\n",
        );
        assert_eq!(
            (r.category.as_str(), r.category_confidence),
            ("billing", 0.8)
        );
        assert_eq!(r.priority_by, DecidedBy::Rule("vip".into()));
        assert_eq!(r.language.as_deref(), Some("de"));
    }

    #[test]
    fn urgency_words_in_any_language_and_default_category() {
        let r = classify(
            "From: a@x.org\nTo: help@example.com\nSubject: Server ausgefallen\n\nDas ist dringend, der Server antwortet nicht mehr seit heute morgen.\n",
        );
        assert_eq!(r.category, "general");
        assert_eq!(r.category_by, DecidedBy::Default);
        assert_eq!(r.priority, Priority::High);
        assert_eq!(r.priority_by, DecidedBy::Rule("urgent_words.de".into()));
    }
}
