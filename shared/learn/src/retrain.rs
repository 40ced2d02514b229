//! Retraining a spam model with operators' corrections, and the gate a new model must pass.
//!
//! The corrections are messages an operator released or marked, or a digest's recipient
//! released from a link (see `mailroom_core::operate::feedback`). They join the base
//! training set, each counted several times, since one person's word on the mail this
//! company receives says more than one message of a public corpus: an operator's
//! [`Weights::operator`] times (3), a digest recipient's [`Weights::digest`] times (1).
//! Anyone a digest goes to can release from it, and every release is a "not spam"; the
//! gate below reads the base set, but what one recipient's releases can push the model
//! by is their weight, so theirs counts as one base message and an operator's, who looked
//! at the mail in the console or with `show`, as three.
//!
//! **Never silently worse.** [`compare`] cross-validates two recipes on the same folds of
//! base plus corrections: the base set alone, and the base set with the corrections. The
//! gate ([`Comparison::not_worse`]) reads the held-out *base* messages. With the
//! corrections:
//! - recall at the configured false-positive rate must not drop by more than its own
//!   standard error (at 0.1% FPR the threshold rests on the two or three highest ham
//!   scores, so a strict comparison would refuse harmless corrections at random);
//! - and at the `spam_threshold` in use, recall must not drop, nor the false-positive
//!   rate rise, by more than theirs. Recall at a rate ranks messages and picks a new
//!   threshold; the filter runs with a fixed one, and a model whose probabilities have
//!   all slid below it would pass the first test and let every spam through.
//!
//! Why the base messages: the base set is the one the operator curated, while corrections
//! also come from recipients' digest releases, and a release of spam someone liked must
//! not teach the model to let that spam through. How many corrections each recipe gets
//! right, and the recall over base and corrections pooled, are reported beside it; the
//! caller reports all of it either way.
//!
//! A correction's copies are always on one side of a split: folds are drawn per message,
//! and only the training rows are repeated.

use serde::Serialize;

use crate::eval::{AtThreshold, RecallAtFpr, at_threshold, recall_at_fpr};
use crate::features::{FeatureConfig, SparseVec};
use crate::folds::stratified_folds;
use crate::model::Model;
use crate::train::{TrainOptions, train};

/// How much an operator's correction counts against one base message, unless told
/// otherwise.
pub const DEFAULT_WEIGHT: usize = 3;
/// How much a digest recipient's release counts, unless told otherwise.
pub const DEFAULT_DIGEST_WEIGHT: usize = 1;

/// Where a row of the training set comes from, which says how much it counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The base set (the folders, or the bucket's `training/`).
    Base,
    /// A correction an operator made (`operator:NAME`).
    Operator,
    /// A release from a digest's link (`digest:ADDRESS`).
    Digest,
}

impl Origin {
    /// The origin of a correction made by `by`: `digest:ADDRESS` is a digest recipient's;
    /// anything else an operator's (`operator:NAME`, and the bare names corrections made
    /// before the prefix carry; a digest's release always had it).
    pub fn of_correction(by: &str) -> Origin {
        if by.starts_with("digest:") {
            Origin::Digest
        } else {
            Origin::Operator
        }
    }

    pub fn is_correction(self) -> bool {
        self != Origin::Base
    }
}

/// How many base messages a correction counts as, by who made it (each at least 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Weights {
    pub operator: usize,
    pub digest: usize,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            operator: DEFAULT_WEIGHT,
            digest: DEFAULT_DIGEST_WEIGHT,
        }
    }
}

impl Weights {
    /// How many times a row of `origin` is trained on.
    pub fn of(&self, origin: Origin) -> usize {
        match origin {
            Origin::Base => 1,
            Origin::Operator => self.operator.max(1),
            Origin::Digest => self.digest.max(1),
        }
    }
}

/// The recall at `fpr` of the base set alone and of the base set with the corrections,
/// on the same held-out folds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub folds: usize,
    pub weights: Weights,
    pub base: usize,
    pub corrections: usize,
    /// Of `corrections`, the digest recipients' releases.
    pub digest_corrections: usize,
    /// On the held-out base messages: what the gate reads.
    pub without: RecallAtFpr,
    pub with: RecallAtFpr,
    /// The standard error of `without.recall` over the base spam (at least one message's
    /// worth): how far `with.recall` may fall below it.
    pub tolerance: f64,
    /// On the held-out base messages at the `spam_threshold` in use.
    pub threshold_without: AtThreshold,
    pub threshold_with: AtThreshold,
    /// How far recall, and the false-positive rate, at that threshold may move.
    pub threshold_tolerance: (f64, f64),
    /// On every held-out message, corrections included.
    pub pooled_without: RecallAtFpr,
    pub pooled_with: RecallAtFpr,
    /// Corrections the held-out model labelled as the operator did, without and with them
    /// in training.
    pub corrections_agreed_without: usize,
    pub corrections_agreed_with: usize,
}

impl Comparison {
    /// Whether the corrections may go into the served model: recall at the configured
    /// false-positive rate is not lower with them.
    pub fn not_worse(&self) -> bool {
        let (recall, fpr) = self.threshold_tolerance;
        self.with.recall >= self.without.recall - self.tolerance
            && self.threshold_with.recall >= self.threshold_without.recall - recall
            && self.threshold_with.fpr <= self.threshold_without.fpr + fpr
    }
}

/// The training rows: `rows`, each correction among them as many times as `weights` says
/// for its origin.
pub fn weighted(
    rows: impl Iterator<Item = usize>,
    origins: &[Origin],
    weights: Weights,
) -> Vec<usize> {
    let mut out = Vec::new();
    for i in rows {
        out.extend(std::iter::repeat_n(i, weights.of(origins[i])));
    }
    out
}

/// Cross-validates the two recipes (see the module docs). `labels` must be a spam pair;
/// `origins[i]` says whether row `i` is a base message or whose correction it is;
/// `threshold` is the `spam_threshold` the filter runs with.
#[allow(clippy::too_many_arguments)]
pub fn compare(
    labels: &[String],
    features: FeatureConfig,
    x: &[SparseVec],
    y: &[usize],
    origins: &[Origin],
    weights: Weights,
    k: usize,
    opts: &TrainOptions,
    fpr: f64,
    threshold: f64,
) -> Result<Comparison, String> {
    let spam = spam_index(labels)?;
    let corrected: Vec<bool> = origins.iter().map(|o| o.is_correction()).collect();
    let folds = stratified_folds(y, labels.len(), k, opts.seed ^ 0x5eed);
    let mut without = vec![0.0f32; y.len()];
    let mut with = vec![0.0f32; y.len()];
    for f in 0..k {
        let train_base: Vec<usize> = (0..y.len())
            .filter(|&i| folds[i] != f && !corrected[i])
            .collect();
        let train_all = weighted((0..y.len()).filter(|&i| folds[i] != f), origins, weights);
        for (rows, out) in [(&train_base, &mut without), (&train_all, &mut with)] {
            let model = train("retrain", labels, features, x, y, rows, opts);
            for i in (0..y.len()).filter(|&i| folds[i] == f) {
                out[i] = spam_logit(&model, &x[i], spam);
            }
        }
    }
    let scores = |z: &[f32], base_only: bool| {
        let (mut ham, mut sp) = (Vec::new(), Vec::new());
        for i in (0..y.len()).filter(|&i| !(base_only && corrected[i])) {
            if y[i] == spam {
                sp.push(z[i])
            } else {
                ham.push(z[i])
            }
        }
        (ham, sp)
    };
    let split = |z: &[f32], base_only: bool| {
        let (ham, sp) = scores(z, base_only);
        recall_at_fpr(&ham, &sp, fpr)
    };
    let fixed = |z: &[f32]| {
        let (ham, sp) = scores(z, true);
        at_threshold(&ham, &sp, threshold)
    };
    let (n_ham, n_spam) = {
        let (ham, sp) = scores(&without, true);
        (ham.len().max(1) as f64, sp.len().max(1) as f64)
    };
    let base_without = split(&without, true);
    let r = base_without.recall;
    let threshold_without = fixed(&without);
    let agreed = |z: &[f32]| {
        (0..y.len())
            .filter(|&i| corrected[i] && ((z[i] > 0.0) == (y[i] == spam)))
            .count()
    };
    Ok(Comparison {
        folds: k,
        weights,
        base: corrected.iter().filter(|c| !**c).count(),
        corrections: corrected.iter().filter(|c| **c).count(),
        digest_corrections: origins.iter().filter(|o| **o == Origin::Digest).count(),
        tolerance: tolerance(r, n_spam),
        threshold_tolerance: (
            tolerance(threshold_without.recall, n_spam),
            tolerance(threshold_without.fpr, n_ham),
        ),
        threshold_with: fixed(&with),
        threshold_without,
        without: base_without,
        with: split(&with, true),
        pooled_without: split(&without, false),
        pooled_with: split(&with, false),
        corrections_agreed_without: agreed(&without),
        corrections_agreed_with: agreed(&with),
    })
}

/// The standard error of a recall `r` over `n` spam (Laplace-smoothed, so that 100% over a
/// few messages is not exact), and at least one message's worth.
fn tolerance(r: f64, n: f64) -> f64 {
    let p = (r * n + 1.0) / (n + 2.0);
    (p * (1.0 - p) / n).sqrt().max(1.0 / n)
}

fn spam_index(labels: &[String]) -> Result<usize, String> {
    match labels {
        [_, _] => labels
            .iter()
            .position(|l| l.eq_ignore_ascii_case("spam"))
            .ok_or_else(|| no_spam_pair(labels)),
        _ => Err(no_spam_pair(labels)),
    }
}

fn no_spam_pair(labels: &[String]) -> String {
    format!(
        "corrections retrain a spam model (labels ham and spam), not one with the labels {}",
        labels.join(", ")
    )
}

/// The log-odds of spam (a two-label model keeps the log-odds of its second label).
fn spam_logit(model: &Model, x: &SparseVec, spam: usize) -> f32 {
    let z = model.scores(x)[0];
    if spam == 1 { z } else { -z }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::folds::Rng;
    use crate::train::Task;
    use mailroom_core::Mail;

    fn msg(i: usize, subject: &str, body: &str) -> SparseVec {
        let raw = format!(
            "From: s{i}@sender{}.example\r\nTo: a@example.com\r\nSubject: {subject}\r\nMessage-ID: <{i}@x>\r\n\r\n{body}\r\n",
            i % 7
        );
        crate::features::extract(&Mail::parse(raw.as_bytes()).unwrap(), &cfg())
    }

    fn cfg() -> FeatureConfig {
        FeatureConfig {
            bits: 14,
            ..Task::Spam.features()
        }
    }

    const HAM: [&str; 12] = [
        "agenda", "release", "plan", "review", "budget", "design", "notes", "team", "patch",
        "deadline", "customer", "report",
    ];
    const SPAM: [&str; 12] = [
        "prize",
        "winner",
        "casino",
        "bonus",
        "free",
        "cash",
        "claim",
        "offer",
        "viagra",
        "loan",
        "click",
        "unsubscribe",
    ];
    const SCAM: [&str; 6] = [
        "wire",
        "transfer",
        "beneficiary",
        "barrister",
        "fund",
        "kindly",
    ];

    /// A message of 30 words drawn from `primary` with probability `p`, else from the other
    /// vocabulary: the two classes overlap, so recall at a low FPR is below 100%.
    fn drawn(rng: &mut Rng, i: usize, primary: &[&str], other: &[&str], p: u64) -> SparseVec {
        let mut words = Vec::new();
        for _ in 0..30 {
            let v = if rng.below(100) < p as usize {
                primary
            } else {
                other
            };
            words.push(v[rng.below(v.len())]);
        }
        msg(i, &words[..4].join(" "), &words[4..].join(" "))
    }

    /// 150 ham and 100 spam, overlapping.
    fn base(rng: &mut Rng) -> (Vec<String>, Vec<SparseVec>, Vec<usize>, Vec<Origin>) {
        let labels = vec!["ham".to_string(), "spam".into()];
        let (mut x, mut y, mut c) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..250 {
            let spam = i % 5 >= 3;
            x.push(if spam {
                drawn(rng, i, &SPAM, &HAM, 60)
            } else {
                drawn(rng, i, &HAM, &SPAM, 85)
            });
            y.push(usize::from(spam));
            c.push(Origin::Base);
        }
        (labels, x, y, c)
    }

    fn run(x: &[SparseVec], y: &[usize], c: &[Origin], labels: &[String]) -> Comparison {
        let opts = TrainOptions::for_task(Task::Spam, crate::Learner::Svm);
        compare(
            labels,
            cfg(),
            x,
            y,
            c,
            Weights::default(),
            4,
            &opts,
            0.02,
            0.9,
        )
        .unwrap()
    }

    #[test]
    fn corrections_that_teach_a_new_kind_of_spam_pass_the_gate() {
        let rng = &mut Rng::new(7);
        let (labels, mut x, mut y, mut c) = base(rng);
        for i in 0..24 {
            x.push(drawn(rng, 500 + i, &SCAM, &HAM, 70));
            y.push(1);
            c.push(Origin::Operator);
        }
        let r = run(&x, &y, &c, &labels);
        assert_eq!((r.base, r.corrections), (250, 24));
        assert!(
            r.corrections_agreed_with > r.corrections_agreed_without,
            "{r:?}"
        );
        assert!(r.pooled_with.recall > r.pooled_without.recall, "{r:?}");
        assert!(r.not_worse(), "{r:?}");
    }

    #[test]
    fn corrections_that_contradict_the_base_set_are_refused() {
        // Recipients release the prize mail they liked from their digests.
        let rng = &mut Rng::new(7);
        let (labels, mut x, mut y, mut c) = base(rng);
        for i in 0..40 {
            x.push(drawn(rng, 600 + i, &SPAM, &HAM, 60));
            y.push(0);
            c.push(Origin::Operator);
        }
        let r = run(&x, &y, &c, &labels);
        assert!(r.with.recall < r.without.recall - r.tolerance, "{r:?}");
        assert!(!r.not_worse());
    }

    #[test]
    fn a_digest_recipients_releases_push_the_model_less_than_an_operators() {
        // The base set knows wire-transfer scams for spam; someone releases 16 of them as
        // "not spam", once as an operator and once from digest links (3× against 1×).
        let rng = &mut Rng::new(11);
        let (labels, mut x, mut y, mut c) = base(rng);
        for i in 0..30 {
            x.push(drawn(rng, 700 + i, &SCAM, &HAM, 70));
            y.push(1);
            c.push(Origin::Base);
        }
        for i in 0..16 {
            x.push(drawn(rng, 800 + i, &SCAM, &HAM, 70));
            y.push(0);
            c.push(Origin::Operator);
        }
        let fresh: Vec<SparseVec> = (0..40)
            .map(|i| drawn(rng, 900 + i, &SCAM, &HAM, 70))
            .collect();
        let opts = TrainOptions::for_task(Task::Spam, crate::Learner::Svm);
        let mean_spam_logit = |c: &[Origin]| {
            let rows = weighted(0..y.len(), c, Weights::default());
            let model = train("retrain", &labels, cfg(), &x, &y, &rows, &opts);
            fresh.iter().map(|v| spam_logit(&model, v, 1)).sum::<f32>() / fresh.len() as f32
        };
        let by_operator = mean_spam_logit(&c);
        let by_operator_report = run(&x, &y, &c, &labels);
        let n = c.len();
        for o in &mut c[n - 16..] {
            *o = Origin::Digest;
        }
        let by_digest = mean_spam_logit(&c);
        let by_digest_report = run(&x, &y, &c, &labels);
        assert!(
            by_digest > by_operator,
            "fresh scams score {by_digest} (spam log-odds) after digest releases, {by_operator} after an operator's"
        );
        assert_eq!(
            (
                by_operator_report.digest_corrections,
                by_digest_report.digest_corrections,
                by_digest_report.corrections
            ),
            (0, 16, 16)
        );
        assert_eq!(by_digest_report.weights, Weights::default());
        // Only the corrections' weight differs: the base set's figures are the same folds.
        assert_eq!(by_operator_report.without, by_digest_report.without);
    }

    #[test]
    fn corrections_say_who_made_them() {
        assert_eq!(
            Origin::of_correction("digest:ann@corp.example"),
            Origin::Digest
        );
        assert_eq!(Origin::of_correction("operator:ops-ann"), Origin::Operator);
        // Corrections made before the prefix: an operator's bare name.
        assert_eq!(Origin::of_correction("ops-ann"), Origin::Operator);
        let w = Weights {
            operator: 0,
            digest: 0,
        };
        assert_eq!((w.of(Origin::Operator), w.of(Origin::Digest)), (1, 1));
    }

    #[test]
    fn only_spam_pairs_retrain() {
        let labels = vec!["billing".to_string(), "sales".into()];
        let e = compare(
            &labels,
            cfg(),
            &[],
            &[],
            &[],
            Weights::default(),
            2,
            &TrainOptions::default(),
            0.01,
            0.9,
        )
        .unwrap_err();
        assert!(e.contains("spam model"), "{e}");
    }

    #[test]
    fn weighted_rows_repeat_only_corrections() {
        let c = [Origin::Base, Origin::Operator, Origin::Base, Origin::Digest];
        let w = Weights::default();
        assert_eq!(weighted(0..4, &c, w), [0, 1, 1, 1, 2, 3]);
        assert_eq!(weighted([0, 2].into_iter(), &c, w), [0, 2]);
        let even = Weights {
            operator: 2,
            digest: 2,
        };
        assert_eq!(weighted(0..4, &c, even), [0, 1, 1, 2, 3, 3]);
    }
}
