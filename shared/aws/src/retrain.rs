//! The retrain function, run on the template's EventBridge schedule (weekly by default):
//! retrains the spam model the config names from the training set the operator keeps in
//! the bucket (`training/ham/`, `training/spam/`) plus the operators' corrections
//! (`feedback/`), and writes it in place of the served model only when the gate of
//! `mailroom_learn::retrain` passes and the new file loads as `push-config` would load it.
//! A refused or failed run leaves the served model as it was; the functions reload a new
//! one by its ETag, like any model change.

use std::time::Instant;

use aws_sdk_s3::Client;
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use futures::StreamExt;
use mailroom_core::operate::Judgement;
use mailroom_core::ports::{FeedbackLog, RawMailSource};
use mailroom_core::{Config, Mail};
use mailroom_learn::retrain::{Comparison, Origin, Weights, compare, weighted};
use mailroom_learn::{Model, ModelScorer, SparseVec, Task, TrainOptions, features, train};
use serde::Serialize;

use crate::config_source::{fetch, model_key};
use crate::metrics::Metrics;
use crate::s3::S3Mail;
use crate::settings::{BUCKET, CONFIG_KEY, SettingsError, required};

/// Where the training set lives: one folder per label (`ham/`, `spam/`).
pub const TRAINING_PREFIX: &str = "MAILROOM_TRAINING_PREFIX";
/// The false-positive rate the gate compares recall at (default 0.001).
pub const RETRAIN_FPR: &str = "MAILROOM_RETRAIN_FPR";
/// A run reads at most this many training messages (newest keys are not preferred: the
/// listing order), so that one run fits the function's memory and time.
pub const MAX_TRAINING_MESSAGES: usize = 50_000;
/// S3 reads in flight at once (each holds one message in memory).
const READS_AT_ONCE: usize = 16;

#[derive(Debug, Clone, PartialEq)]
pub struct RetrainSettings {
    pub bucket: String,
    pub config_key: String,
    pub training_prefix: String,
    pub fpr: f64,
}

impl RetrainSettings {
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let name = "retrain";
        let mut training_prefix = required(name, &get, TRAINING_PREFIX)?;
        if !training_prefix.ends_with('/') {
            training_prefix.push('/');
        }
        let fpr = match get(RETRAIN_FPR).filter(|v| !v.trim().is_empty()) {
            None => 0.001,
            Some(v) => v
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|f| *f > 0.0 && *f < 0.5)
                .ok_or_else(|| SettingsError::Invalid {
                    name: RETRAIN_FPR,
                    why: format!("{v:?} is not a rate between 0 and 0.5"),
                })?,
        };
        Ok(RetrainSettings {
            bucket: required(name, &get, BUCKET)?,
            config_key: required(name, &get, CONFIG_KEY)?,
            training_prefix,
            fpr,
        })
    }
}

/// What a run did: the JSON the invocation returns and the log line.
#[derive(Debug, Serialize)]
pub struct Retrained {
    /// `replaced`, `refused` or `skipped`.
    pub outcome: &'static str,
    pub why: String,
    pub model_key: Option<String>,
    pub training: usize,
    pub corrections: usize,
    /// Corrections whose raw mail could not be read or parsed.
    pub unreadable: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comparison: Option<Comparison>,
}

impl Retrained {
    fn skipped(why: impl Into<String>) -> Retrained {
        Retrained {
            outcome: "skipped",
            why: why.into(),
            model_key: None,
            training: 0,
            corrections: 0,
            unreadable: 0,
            comparison: None,
        }
    }
}

pub struct Retrainer {
    settings: RetrainSettings,
    s3: Client,
    mail: S3Mail,
    metrics: Metrics,
}

impl Retrainer {
    pub fn new(settings: RetrainSettings, sdk: &aws_config::SdkConfig, metrics: Metrics) -> Self {
        let s3 = crate::app::s3_client(sdk);
        let mail = S3Mail {
            client: s3.clone(),
            bucket: settings.bucket.clone(),
        };
        Retrainer {
            settings,
            s3,
            mail,
            metrics,
        }
    }

    /// One run. An error (a read that failed, a model that would not load) changes nothing
    /// in the bucket.
    pub async fn run(&self) -> Result<Retrained, String> {
        let result = self.retrain().await;
        let outcome = match &result {
            Ok(r) => r.outcome,
            Err(_) => "failed",
        };
        self.metrics.count_by("Retrains", "Outcome", outcome);
        result
    }

    async fn retrain(&self) -> Result<Retrained, String> {
        let s = &self.settings;
        let (text, _) = self.get(&s.config_key, "config").await?;
        let origin = format!("s3://{}/{}", s.bucket, s.config_key);
        let text =
            String::from_utf8(text).map_err(|_| format!("the config {origin} is not UTF-8"))?;
        let config = Config::from_toml(&text, &origin).map_err(|e| e.to_string())?;
        let Some(path) = config.filter.spam_model.clone() else {
            return Ok(Retrained::skipped(format!(
                "{origin} names no [filter] spam_model: nothing to retrain"
            )));
        };
        let key = model_key(&s.config_key, &path)?;
        let (bytes, etag) = self.get(&key, "spam model").await?;
        let served =
            Model::from_bytes(&bytes).map_err(|e| format!("s3://{}/{key}: {e}", s.bucket))?;
        let labels = served.labels.clone();
        let spam = served
            .spam_label()
            .ok_or_else(|| format!("s3://{}/{key} is not a spam model", s.bucket))?;
        let cfg = served.features;

        let corrections = self.mail.corrections().await.map_err(|e| e.to_string())?;
        if corrections.is_empty() {
            return Ok(Retrained {
                model_key: Some(key),
                ..Retrained::skipped("no corrections under feedback/: nothing new to learn")
            });
        }
        let (mut x, mut y) = self.training_set(&labels, &cfg).await?;
        let training = y.len();
        if !(0..labels.len()).all(|l| y.contains(&l)) {
            return Ok(Retrained {
                model_key: Some(key),
                training,
                ..Retrained::skipped(format!(
                    "the training set s3://{}/{} needs messages under both {} (found {training})",
                    s.bucket,
                    s.training_prefix,
                    labels
                        .iter()
                        .map(|l| format!("{l}/"))
                        .collect::<Vec<_>>()
                        .join(" and ")
                ))
            });
        }
        // A few reads at a time, in order: S3 latency, not the parsing, is what takes long.
        let vectors: Vec<Option<SparseVec>> = futures::stream::iter(&corrections)
            .map(|c| async {
                let raw = self.mail.get_raw(&c.raw).await.ok()?;
                vectorise(&raw, &cfg)
            })
            .buffered(READS_AT_ONCE)
            .collect()
            .await;
        let mut unreadable = 0;
        // Each training message once; each correction as its maker's weight says.
        let mut origins = vec![Origin::Base; training];
        for (c, v) in corrections.iter().zip(vectors) {
            let Some(v) = v else {
                unreadable += 1;
                continue;
            };
            origins.push(Origin::of_correction(&c.by));
            x.push(v);
            y.push(match c.label {
                Judgement::Spam => spam,
                Judgement::Ham => 1 - spam,
            });
        }
        let used = y.len() - training;
        let opts = TrainOptions::for_task(Task::Spam, served.learner);
        let threshold = f64::from(config.filter.spam_threshold);
        let started = Instant::now();
        let comparison = compare(
            &labels,
            cfg,
            &x,
            &y,
            &origins,
            Weights::default(),
            5,
            &opts,
            s.fpr,
            threshold,
        )?;
        let mut report = Retrained {
            outcome: "refused",
            why: String::new(),
            model_key: Some(key.clone()),
            training,
            corrections: used,
            unreadable,
            comparison: None,
        };
        if !comparison.not_worse() {
            report.why = format!(
                "with the corrections the model would be worse on the training set (recall at {} FPR {:.4} → {:.4}; at spam_threshold {}: recall {:.4} → {:.4}, FPR {:.4} → {:.4}); the served model stays",
                s.fpr,
                comparison.without.recall,
                comparison.with.recall,
                config.filter.spam_threshold,
                comparison.threshold_without.recall,
                comparison.threshold_with.recall,
                comparison.threshold_without.fpr,
                comparison.threshold_with.fpr,
            );
            report.comparison = Some(comparison);
            return Ok(report);
        }
        let rows = weighted(0..y.len(), &origins, Weights::default());
        let model = train::train(&served.name, &labels, cfg, &x, &y, &rows, &opts);
        let bytes = model.to_bytes();
        // The checks push-config makes: the file reads back and fits the spam slot.
        let back = Model::from_bytes(&bytes).map_err(|e| format!("the retrained model: {e}"))?;
        ModelScorer::new(back).map_err(|e| format!("the retrained model: {e}"))?;
        self.put_if_unchanged(&key, bytes, etag.as_deref()).await?;
        report.outcome = "replaced";
        report.why = format!(
            "retrained on {training} training messages and {used} corrections in {:.1}s; recall at {} FPR on held-out training mail {:.4} → {:.4}",
            started.elapsed().as_secs_f64(),
            s.fpr,
            comparison.without.recall,
            comparison.with.recall
        );
        report.comparison = Some(comparison);
        Ok(report)
    }

    /// The training set's messages as feature vectors, labelled by their folder.
    async fn training_set(
        &self,
        labels: &[String],
        cfg: &mailroom_learn::FeatureConfig,
    ) -> Result<(Vec<SparseVec>, Vec<usize>), String> {
        let s = &self.settings;
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for (label, name) in labels.iter().enumerate() {
            let prefix = format!("{}{name}/", s.training_prefix);
            let mut keys = self.list(&prefix).await?;
            let room = MAX_TRAINING_MESSAGES.saturating_sub(x.len());
            if keys.len() > room {
                tracing::warn!(
                    limit = MAX_TRAINING_MESSAGES,
                    "training set cut at the limit"
                );
                keys.truncate(room);
            }
            let read: Vec<Result<(String, Vec<u8>), String>> = futures::stream::iter(keys)
                .map(|key| async move {
                    let (raw, _) = self.get(&key, "training message").await?;
                    Ok((key, raw))
                })
                .buffered(READS_AT_ONCE)
                .collect()
                .await;
            for r in read {
                let (key, raw) = r?;
                match vectorise(&raw, cfg) {
                    Some(v) => {
                        x.push(v);
                        y.push(label);
                    }
                    None => tracing::warn!(key = %key, "training message does not parse; skipped"),
                }
            }
        }
        Ok((x, y))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, String> {
        let bucket = &self.settings.bucket;
        let mut keys = Vec::new();
        let mut pages = self
            .s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                format!(
                    "listing s3://{bucket}/{prefix}: {}",
                    DisplayErrorContext(&e)
                )
            })?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key())
                    .filter(|k| !k.ends_with('/'))
                    .map(str::to_string),
            );
        }
        Ok(keys)
    }

    async fn get(&self, key: &str, what: &str) -> Result<(Vec<u8>, Option<String>), String> {
        fetch(&self.s3, &self.settings.bucket, key, what).await
    }

    /// Writes the new model only if the served one is still the one read (If-Match):
    /// a `push-config` meanwhile wins, and this run's model is dropped.
    async fn put_if_unchanged(
        &self,
        key: &str,
        bytes: Vec<u8>,
        etag: Option<&str>,
    ) -> Result<(), String> {
        let bucket = &self.settings.bucket;
        let mut put = self
            .s3
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type("application/octet-stream")
            .body(ByteStream::from(bytes));
        if let Some(etag) = etag {
            put = put.if_match(etag);
        }
        put.send().await.map_err(|e| {
            format!(
                "writing the retrained model to s3://{bucket}/{key}: {}",
                DisplayErrorContext(&e)
            )
        })?;
        Ok(())
    }
}

fn vectorise(raw: &[u8], cfg: &mailroom_learn::FeatureConfig) -> Option<SparseVec> {
    Mail::parse(raw).ok().map(|m| features::extract(&m, cfg))
}

/// The retrain function's `main`: one run per scheduled event.
pub async fn run_retrain() -> Result<(), lambda_runtime::Error> {
    crate::init_logging();
    let settings =
        RetrainSettings::from_lookup(|n| std::env::var(n).ok()).map_err(|e| e.to_string())?;
    let sdk = crate::app::function_sdk_config().await?;
    let retrainer = std::sync::Arc::new(Retrainer::new(settings, &sdk, Metrics::stdout()));
    lambda_runtime::run(lambda_runtime::service_fn(
        move |_: lambda_runtime::LambdaEvent<serde_json::Value>| {
            let retrainer = retrainer.clone();
            async move {
                let done = retrainer.run().await?;
                tracing::info!(outcome = done.outcome, why = %done.why, training = done.training, corrections = done.corrections, "retrain");
                Ok::<_, lambda_runtime::Error>(serde_json::to_value(&done)?)
            }
        },
    ))
    .await
}
