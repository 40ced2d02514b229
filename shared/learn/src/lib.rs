//! Learned models for the filter and classify stages: hashed text and header features
//! ([`features`]), four linear learners ([`train`]), a compact versioned model file
//! ([`model`]) and the measurements that choose between them ([`eval`], on the splits of
//! [`folds`]).
//!
//! The core knows none of this: its filter takes any [`SpamScorer`] and its classifier any
//! [`TextModel`]. Running a model ([`model`], [`features`]) does not depend on the trainer.
//!
//! A model plugs in behind the existing seams: a spam model ([`ModelScorer`]) is a
//! [`SpamScorer`] that adds its points to the rule scorer's, a category or priority model is
//! a [`TextModel`]. Models are read from bytes ([`Model::from_bytes`], no I/O: the Lambda
//! fetches them from S3) or from the paths in the config ([`load_for_config`]).
//!
//! How the spam model scores: the rules run as before and add their points; then the model
//! computes P(spam), and when P(spam) ≥ `[filter] spam_threshold` it adds
//! `model_score_weight` points (default: `quarantine_score`, so that the model alone
//! quarantines and rules plus model can reach `reject_score`). Below the threshold it adds
//! nothing and notes the probability. A step rather than a scaled contribution: the
//! threshold is the number `mailroom eval` reports for a chosen false-positive rate, so the
//! measured trade-off is exactly what runs, and a low P(spam) never takes points away from
//! the rules.

pub mod eval;
pub mod features;
pub mod folds;
pub mod model;
pub mod retrain;
pub mod train;

use std::path::{Path, PathBuf};

pub use features::{FeatureConfig, SparseVec};
pub use model::{FORMAT_VERSION, Learner, Model, ModelError};
pub use train::{Task, TrainOptions};

use mailroom_core::Mail;
use mailroom_core::classify::{Classifier, TextModel};
use mailroom_core::config::{Config, FilterConfig};
use mailroom_core::filter::scorer::RuleScorer;
use mailroom_core::filter::{Filter, Findings, SpamScorer};
use mailroom_core::model::Stage;

impl TextModel for Model {
    fn name(&self) -> &str {
        &self.name
    }

    /// The model detects the language itself when it uses it (the same way as in
    /// training), so the stage's `language` is not needed.
    fn predict(&self, mail: &Mail, _language: Option<&str>) -> (String, f32) {
        let (label, p) = self.predict_mail(mail);
        (label.to_string(), p)
    }
}

/// The content scorer with a spam model: the rule scorer, then the model's points.
pub struct ModelScorer {
    model: Model,
    name: String,
}

impl ModelScorer {
    /// Fails unless the model's labels are a spam pair (`ham` and `spam`, say).
    pub fn new(model: Model) -> Result<ModelScorer, String> {
        if model.spam_label().is_none() {
            return Err(format!(
                "model {:?} has the labels {:?}; a spam model has two labels, one of them \"spam\" (train it on ham/ and spam/ folders)",
                model.name, model.labels
            ));
        }
        let name = format!("rules+model:{}", model.name);
        Ok(ModelScorer { model, name })
    }

    pub fn model(&self) -> &Model {
        &self.model
    }
}

impl SpamScorer for ModelScorer {
    fn name(&self) -> &str {
        &self.name
    }

    fn score(&self, mail: &Mail, config: &FilterConfig, findings: &mut Findings) {
        RuleScorer.score(mail, config, findings);
        let p = self.model.spam_probability(mail);
        findings.probability = Some(p);
        let check = format!("model:{}", self.model.name);
        if p >= config.spam_threshold {
            let points = config.model_score_weight.unwrap_or(config.quarantine_score);
            findings.add_score(
                &check,
                "MODEL_SPAM",
                format!(
                    "P(spam) = {p:.4}, at or above spam_threshold {}",
                    config.spam_threshold
                ),
                points,
            );
        } else {
            findings.note(
                &check,
                "MODEL_HAM",
                format!(
                    "P(spam) = {p:.4}, below spam_threshold {}",
                    config.spam_threshold
                ),
            );
        }
    }
}

/// The models a config names, loaded.
#[derive(Default)]
pub struct Models {
    pub spam: Option<Model>,
    pub category: Option<Model>,
    pub priority: Option<Model>,
}

/// Reads a model file. The error names the file.
pub fn load_path(path: &Path) -> Result<Model, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("{}: cannot read model: {e}", path.display()))?;
    Model::from_bytes(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

fn resolve(base_dir: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    }
}

fn is_priority(label: &str) -> bool {
    matches!(
        label.to_ascii_lowercase().as_str(),
        "low" | "medium" | "normal" | "high" | "urgent"
    )
}

/// The three places a model plugs in, each named by one config option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Spam,
    Category,
    Priority,
}

impl Slot {
    pub const ALL: [Slot; 3] = [Slot::Spam, Slot::Category, Slot::Priority];

    /// The config option, for error messages.
    pub fn option(self) -> &'static str {
        match self {
            Slot::Spam => "[filter] spam_model",
            Slot::Category => "[classify] category_model",
            Slot::Priority => "[classify] priority_model",
        }
    }

    /// The only stage that uses this model: a function loads just its own stage's models.
    pub fn stage(self) -> Stage {
        match self {
            Slot::Spam => Stage::Filter,
            Slot::Category | Slot::Priority => Stage::Classify,
        }
    }

    /// The path the config gives for this model, if any.
    pub fn path(self, config: &Config) -> Option<&str> {
        match self {
            Slot::Spam => config.filter.spam_model.as_deref(),
            Slot::Category => config.classify.category_model.as_deref(),
            Slot::Priority => config.classify.priority_model.as_deref(),
        }
    }
}

impl Models {
    /// Loads the models named by `[filter] spam_model`, `[classify] category_model` and
    /// `[classify] priority_model`; relative paths are relative to `base_dir` (the config
    /// file's directory). A missing, invalid or wrong-version file is an error naming the
    /// option and the file.
    pub fn load(config: &Config, base_dir: &Path) -> Result<Models, String> {
        let mut models = Models::default();
        for slot in Slot::ALL {
            if let Some(path) = slot.path(config) {
                let model = load_path(&resolve(base_dir, path))
                    .map_err(|e| format!("{}: {e}", slot.option()))?;
                models.set(slot, model);
            }
        }
        Ok(models)
    }

    pub fn set(&mut self, slot: Slot, model: Model) {
        let place = match slot {
            Slot::Spam => &mut self.spam,
            Slot::Category => &mut self.category,
            Slot::Priority => &mut self.priority,
        };
        *place = Some(model);
    }

    /// The filter and classify stages with these models plugged in. Fails when a model does
    /// not fit its place (a spam model without a spam label, a priority model whose labels
    /// are not priorities).
    pub fn into_stages(self) -> Result<(Filter, Classifier), String> {
        let filter = match self.spam {
            Some(m) => Filter::with_scorer(Box::new(
                ModelScorer::new(m).map_err(|e| format!("[filter] spam_model: {e}"))?,
            )),
            None => Filter::new(),
        };
        if let Some(m) = &self.priority
            && let Some(bad) = m.labels.iter().find(|l| !is_priority(l))
        {
            return Err(format!(
                "[classify] priority_model: model {:?} has the label {bad:?}; a priority model's labels are low, medium and high",
                m.name
            ));
        }
        let boxed = |m: Option<Model>| m.map(|m| Box::new(m) as Box<dyn TextModel>);
        Ok((
            filter,
            Classifier {
                category_model: boxed(self.category),
                priority_model: boxed(self.priority),
            },
        ))
    }
}

/// The filter and classify stages for a config, with the models it names loaded from
/// `base_dir`-relative paths. With no model configured this is `Filter::new()` and
/// `Classifier::default()`.
pub fn load_for_config(config: &Config, base_dir: &Path) -> Result<(Filter, Classifier), String> {
    Models::load(config, base_dir)?.into_stages()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailroom_core::model::{DecidedBy, Verdict};

    fn mail(subject: &str, body: &str) -> String {
        format!(
            "From: someone@sender.example\r\nTo: help@example.com\r\nSubject: {subject}\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\nMessage-ID: <{}@sender.example>\r\n\r\n{body}\r\n",
            subject.len() * 31 + body.len()
        )
    }

    /// A tiny synthetic corpus: billing, shipping and login problems in three languages.
    fn corpus() -> (Vec<String>, Vec<(String, usize)>) {
        let labels = vec!["billing".to_string(), "login".into(), "shipping".into()];
        let billing = [
            (
                "Invoice question",
                "I was charged twice on my invoice, please refund the payment.",
            ),
            (
                "Rechnung falsch",
                "Meine Rechnung ist falsch, bitte erstatten Sie die Zahlung.",
            ),
            (
                "Factura incorrecta",
                "Mi factura tiene un cargo doble, quiero un reembolso del pago.",
            ),
            (
                "Refund please",
                "Please refund the double payment on my credit card invoice.",
            ),
            (
                "Zahlung doppelt",
                "Die Zahlung wurde doppelt abgebucht, bitte Rechnung korrigieren.",
            ),
            (
                "Cobro doble",
                "Me cobraron dos veces, necesito la factura corregida y el reembolso.",
            ),
        ];
        let login = [
            (
                "Cannot log in",
                "I cannot log in, my password reset link does not work.",
            ),
            (
                "Passwort vergessen",
                "Ich kann mich nicht anmelden, das Passwort wird abgelehnt.",
            ),
            (
                "No puedo entrar",
                "No puedo iniciar sesión, la contraseña no funciona.",
            ),
            (
                "Account locked",
                "My account is locked after a password reset, I cannot sign in.",
            ),
            (
                "Anmeldung geht nicht",
                "Die Anmeldung schlägt fehl, Passwort zurücksetzen geht nicht.",
            ),
            (
                "Contraseña bloqueada",
                "Mi cuenta está bloqueada, no puedo iniciar sesión con mi contraseña.",
            ),
        ];
        let shipping = [
            (
                "Where is my parcel",
                "My parcel has not arrived, the tracking number shows no delivery.",
            ),
            (
                "Paket fehlt",
                "Mein Paket ist nicht angekommen, die Sendungsverfolgung zeigt nichts.",
            ),
            (
                "Paquete perdido",
                "Mi paquete no ha llegado, el número de seguimiento no cambia.",
            ),
            (
                "Delivery late",
                "The delivery is late and the parcel tracking has not moved for days.",
            ),
            (
                "Lieferung verspätet",
                "Die Lieferung ist verspätet, das Paket steckt im Versand fest.",
            ),
            (
                "Envío retrasado",
                "El envío está retrasado y el paquete sigue sin seguimiento.",
            ),
        ];
        let mut docs = Vec::new();
        for (k, set) in [billing, login, shipping].iter().enumerate() {
            for (s, b) in set {
                docs.push((mail(s, b), k));
            }
        }
        (labels, docs)
    }

    fn featurize(docs: &[(String, usize)], cfg: &FeatureConfig) -> (Vec<SparseVec>, Vec<usize>) {
        docs.iter()
            .map(|(raw, y)| {
                let m = Mail::parse(raw.as_bytes()).unwrap();
                (features::extract(&m, cfg), *y)
            })
            .unzip()
    }

    fn small() -> FeatureConfig {
        FeatureConfig {
            bits: 14,
            language: true,
            ..FeatureConfig::default()
        }
    }

    fn trained(learner: Learner) -> Model {
        let (labels, docs) = corpus();
        let (x, y) = featurize(&docs, &small());
        let rows: Vec<usize> = (0..x.len()).collect();
        train::train(
            "tickets",
            &labels,
            small(),
            &x,
            &y,
            &rows,
            &TrainOptions::for_learner(learner),
        )
    }

    #[test]
    fn every_learner_learns_the_synthetic_corpus() {
        let unseen = [
            (
                "Refund",
                "Please refund my payment, the invoice is wrong.",
                "billing",
            ),
            (
                "Passwort",
                "Ich kann mich nicht anmelden, Passwort abgelehnt.",
                "login",
            ),
            (
                "Paquete",
                "El paquete no ha llegado y no hay seguimiento.",
                "shipping",
            ),
        ];
        for learner in Learner::ALL {
            let model = trained(learner);
            for (s, b, want) in unseen {
                let raw = mail(s, b);
                let m = Mail::parse(raw.as_bytes()).unwrap();
                let (label, p) = model.predict_mail(&m);
                assert_eq!(label, want, "{learner:?} on {s:?}");
                assert!(p > 1.0 / 3.0 && p <= 1.0, "{learner:?}: {p}");
            }
        }
    }

    #[test]
    fn model_file_round_trips() {
        for learner in [Learner::LogReg, Learner::NaiveBayes] {
            let model = trained(learner);
            let bytes = model.to_bytes();
            assert_eq!(&bytes[..8], model::MAGIC);
            let back = Model::from_bytes(&bytes).unwrap();
            assert_eq!(back, model);
            // i8 weights: one byte per bucket and label, one for the idf, a small header.
            assert!(bytes.len() < (1 << 14) * 4 + 300, "{}", bytes.len());
        }
        // And unquantized.
        let (labels, docs) = corpus();
        let (x, y) = featurize(&docs, &small());
        let rows: Vec<usize> = (0..x.len()).collect();
        let opts = TrainOptions {
            quantize: false,
            ..TrainOptions::default()
        };
        let model = train::train("f32", &labels, small(), &x, &y, &rows, &opts);
        assert!(!model.is_quantized());
        assert_eq!(Model::from_bytes(&model.to_bytes()).unwrap(), model);
    }

    #[test]
    fn wrong_version_and_damaged_files_are_clear_errors() {
        let bytes = trained(Learner::LogReg).to_bytes();
        let mut v3 = bytes.clone();
        v3[8..10].copy_from_slice(&3u16.to_le_bytes());
        let e = Model::from_bytes(&v3).unwrap_err();
        assert_eq!(e, ModelError::Version { found: 3 });
        assert!(
            e.to_string().contains("version 3") && e.to_string().contains("versions 1 to 2"),
            "{e}"
        );
        assert_eq!(
            Model::from_bytes(b"PK\x03\x04 a zip file").unwrap_err(),
            ModelError::NotAModel
        );
        assert_eq!(
            Model::from_bytes(&bytes[..bytes.len() / 2]).unwrap_err(),
            ModelError::Truncated
        );
        let mut flipped = bytes.clone();
        let mid = bytes.len() / 2;
        flipped[mid] ^= 0x40;
        assert_eq!(
            Model::from_bytes(&flipped).unwrap_err(),
            ModelError::Checksum
        );
    }

    fn spam_model() -> Model {
        let ham = [
            (
                "Meeting notes",
                "Here are the notes from yesterday's meeting about the release.",
            ),
            (
                "Re: patch review",
                "Thanks for the patch, I left two comments on the diff.",
            ),
            (
                "Lunch on Friday?",
                "Shall we have lunch on Friday with the team?",
            ),
            (
                "Build failure",
                "The nightly build failed in the network tests, looking into it.",
            ),
        ];
        let spam = [
            (
                "WIN $1,000,000 NOW!!!",
                "Congratulations you won the lottery! Click here to claim your prize now!!!",
            ),
            (
                "Cheap pills online",
                "Buy cheap pills online, no prescription, click here, limited offer!",
            ),
            (
                "Make money fast",
                "Earn $5000 a week from home! Click here, act now, free money!",
            ),
            (
                "You are a winner",
                "You have been selected as our winner! Claim the free prize now!",
            ),
        ];
        let labels = vec!["ham".to_string(), "spam".into()];
        let docs: Vec<(String, usize)> = ham
            .iter()
            .map(|(s, b)| (mail(s, b), 0))
            .chain(spam.iter().map(|(s, b)| (mail(s, b), 1)))
            .collect();
        let (x, y) = featurize(&docs, &small());
        let rows: Vec<usize> = (0..x.len()).collect();
        train::train(
            "spam",
            &labels,
            small(),
            &x,
            &y,
            &rows,
            &TrainOptions::for_learner(Learner::LogReg),
        )
    }

    #[test]
    fn spam_model_adds_points_at_the_threshold_and_keeps_rule_points() {
        let config = Config::from_toml(
            "[filter]\nspam_threshold = 0.5\nmodel_score_weight = 6.0\n",
            "t.toml",
        )
        .unwrap();
        let filter = Filter::with_scorer(Box::new(ModelScorer::new(spam_model()).unwrap()));
        let raw = mail(
            "Claim your free prize now!!!",
            "You won! Click here to claim the prize, act now!",
        );
        let r = filter.run(&Mail::parse(raw.as_bytes()).unwrap(), &config);
        assert_eq!(r.scorer, "rules+model:spam");
        let model_reason = r.reasons.iter().find(|x| x.check == "model:spam").unwrap();
        assert_eq!(model_reason.tag, "MODEL_SPAM");
        assert_eq!(model_reason.score, 6.0);
        let rule_points: f32 = r
            .reasons
            .iter()
            .filter(|x| x.check == "rules")
            .map(|x| x.score)
            .sum();
        assert!(rule_points > 0.0);
        assert!((r.spam_score - (rule_points + 6.0)).abs() < 0.01);
        assert_ne!(r.verdict, Verdict::Accept);

        let raw = mail(
            "Re: release notes",
            "Thanks, the release notes look good to me.",
        );
        let r = filter.run(&Mail::parse(raw.as_bytes()).unwrap(), &config);
        let model_reason = r.reasons.iter().find(|x| x.check == "model:spam").unwrap();
        assert_eq!(
            (model_reason.tag.as_str(), model_reason.score),
            ("MODEL_HAM", 0.0)
        );
        assert_eq!(r.verdict, Verdict::Accept);
    }

    #[test]
    fn a_category_model_is_not_a_spam_model() {
        let e = ModelScorer::new(trained(Learner::LogReg)).err().unwrap();
        assert!(e.contains("spam"), "{e}");
    }

    #[test]
    fn config_loads_models_relative_to_its_directory() {
        let dir = std::env::temp_dir().join(format!("mailroom-learn-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("models")).unwrap();
        std::fs::write(
            dir.join("models/cat.mrm"),
            trained(Learner::LogReg).to_bytes(),
        )
        .unwrap();
        std::fs::write(dir.join("models/spam.mrm"), spam_model().to_bytes()).unwrap();
        let config = Config::from_toml(
            "[filter]\nspam_model = \"models/spam.mrm\"\n[classify]\ncategory_model = \"models/cat.mrm\"\ncategory_min_confidence = 0.0\n",
            "t.toml",
        )
        .unwrap();
        let (filter, classifier) = load_for_config(&config, &dir).unwrap();
        let raw = mail(
            "Paket fehlt",
            "Mein Paket ist nicht angekommen, keine Sendungsverfolgung.",
        );
        let m = Mail::parse(raw.as_bytes()).unwrap();
        let f = filter.run(&m, &config);
        assert_eq!(f.scorer, "rules+model:spam");
        let c = classifier.run(&m, &f, &config);
        assert_eq!(c.category, "shipping");
        assert_eq!(c.category_by, DecidedBy::Model("tickets".into()));
        assert!(c.category_confidence > 0.0);

        // Below min_confidence the default applies.
        let strict =
            Config::from_toml("[classify]\ncategory_min_confidence = 1.0\n", "t.toml").unwrap();
        let c = classifier.run(&m, &f, &strict);
        assert_eq!(
            (c.category.as_str(), &c.category_by),
            ("general", &DecidedBy::Default)
        );

        // A missing file, a wrong kind of model, a wrong version: errors naming the file.
        let missing =
            Config::from_toml("[classify]\npriority_model = \"models/nope.mrm\"\n", "t").unwrap();
        let e = load_for_config(&missing, &dir).err().unwrap();
        assert!(
            e.contains("priority_model") && e.contains("nope.mrm"),
            "{e}"
        );
        let wrong =
            Config::from_toml("[classify]\npriority_model = \"models/cat.mrm\"\n", "t").unwrap();
        let e = load_for_config(&wrong, &dir).err().unwrap();
        assert!(e.contains("priority"), "{e}");
        let mut old = trained(Learner::LogReg).to_bytes();
        old[8] = 9;
        std::fs::write(dir.join("models/old.mrm"), old).unwrap();
        let stale = Config::from_toml("[filter]\nspam_model = \"models/old.mrm\"\n", "t").unwrap();
        let e = load_for_config(&stale, &dir).err().unwrap();
        assert!(e.contains("old.mrm") && e.contains("version 9"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn thresholds_outside_zero_to_one_are_config_errors() {
        let e = Config::from_toml("[filter]\nspam_threshold = 1.5\n", "t.toml").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(e.message.contains("between 0 and 1"), "{e}");
    }
}
