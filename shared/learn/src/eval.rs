//! Measuring a classifier: accuracy, macro-F1, per-label precision and recall, the
//! confusion matrix, and for spam models the recall at a fixed false-positive rate with the
//! threshold that gives it; plus stratified k-fold cross-validation.

use serde::Serialize;

use crate::features::{FeatureConfig, SparseVec};
use crate::folds::stratified_folds;
use crate::train::{TrainOptions, train};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelStats {
    pub label: String,
    /// Messages with this label.
    pub support: usize,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

/// Recall at a false-positive rate: the lowest P(spam) threshold that lets at most
/// `fpr × ham` ham through, and the share of spam at or above it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecallAtFpr {
    /// The false-positive rate asked for.
    pub fpr: f64,
    /// Share of spam with P(spam) ≥ threshold.
    pub recall: f64,
    /// Use as `spam_threshold`: P(spam) ≥ this counts as spam.
    pub threshold: f64,
    /// The same threshold as log-odds (P(spam) saturates near 1).
    pub threshold_logit: f64,
    /// Ham at or above the threshold, and their share.
    pub false_positives: usize,
    pub actual_fpr: f64,
}

/// What a fixed `spam_threshold` does: the share of spam at or above it, and of ham.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AtThreshold {
    pub threshold: f64,
    pub recall: f64,
    pub fpr: f64,
    pub false_positives: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpamStats {
    pub roc_auc: f64,
    pub at_fpr: Vec<RecallAtFpr>,
    pub at_threshold: Vec<AtThreshold>,
}

/// The thresholds [`SpamStats::at_threshold`] reports.
pub const THRESHOLDS: [f64; 4] = [0.5, 0.8, 0.9, 0.99];

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    pub labels: Vec<String>,
    pub messages: usize,
    pub accuracy: f64,
    pub macro_f1: f64,
    pub per_label: Vec<LabelStats>,
    /// `confusion[truth][predicted]`.
    pub confusion: Vec<Vec<usize>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spam: Option<SpamStats>,
}

/// The figures for predictions against the truth. `spam` gives, for a spam model, the index
/// of the spam label and every message's log-odds of spam.
pub fn evaluate(
    labels: &[String],
    truth: &[usize],
    predicted: &[usize],
    spam: Option<(usize, &[f32])>,
) -> Evaluation {
    assert_eq!(truth.len(), predicted.len());
    let c = labels.len();
    let mut confusion = vec![vec![0usize; c]; c];
    for (&t, &p) in truth.iter().zip(predicted) {
        confusion[t][p] += 1;
    }
    let n = truth.len();
    let correct: usize = (0..c).map(|i| confusion[i][i]).sum();
    let per_label: Vec<LabelStats> = (0..c)
        .map(|i| {
            let tp = confusion[i][i] as f64;
            let support: usize = confusion[i].iter().sum();
            let predicted_i: usize = (0..c).map(|t| confusion[t][i]).sum();
            let precision = ratio(tp, predicted_i as f64);
            let recall = ratio(tp, support as f64);
            let f1 = ratio(2.0 * precision * recall, precision + recall);
            LabelStats {
                label: labels[i].clone(),
                support,
                precision,
                recall,
                f1,
            }
        })
        .collect();
    let present: Vec<&LabelStats> = per_label.iter().filter(|s| s.support > 0).collect();
    let macro_f1 = ratio(present.iter().map(|s| s.f1).sum(), present.len() as f64);
    let spam = spam.map(|(spam_label, logits)| {
        let (mut ham, mut sp) = (Vec::new(), Vec::new());
        for (&t, &z) in truth.iter().zip(logits) {
            if t == spam_label {
                sp.push(z);
            } else {
                ham.push(z);
            }
        }
        SpamStats {
            roc_auc: roc_auc(&ham, &sp),
            at_fpr: [0.001, 0.01]
                .iter()
                .map(|&f| recall_at_fpr(&ham, &sp, f))
                .collect(),
            at_threshold: THRESHOLDS
                .iter()
                .map(|&t| at_threshold(&ham, &sp, t))
                .collect(),
        }
    });
    Evaluation {
        labels: labels.to_vec(),
        messages: n,
        accuracy: ratio(correct as f64, n as f64),
        macro_f1,
        per_label,
        confusion,
        spam,
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

/// Recall of spam at a false-positive rate, from log-odds scores of ham and spam.
pub fn recall_at_fpr(ham: &[f32], spam: &[f32], fpr: f64) -> RecallAtFpr {
    let mut h: Vec<f32> = ham.to_vec();
    h.sort_by(|a, b| b.total_cmp(a));
    let allowed = (fpr * h.len() as f64 + 1e-9).floor() as usize;
    // The threshold lies just above the (allowed+1)-th highest ham score.
    let threshold = match h.get(allowed) {
        Some(&x) => x.next_up(),
        None => f32::NEG_INFINITY,
    };
    let false_positives = h.iter().filter(|&&x| x >= threshold).count();
    let caught = spam.iter().filter(|&&x| x >= threshold).count();
    RecallAtFpr {
        fpr,
        recall: ratio(caught as f64, spam.len() as f64),
        threshold: if threshold.is_finite() {
            f64::from(crate::model::sigmoid(threshold))
        } else {
            0.0
        },
        threshold_logit: f64::from(threshold),
        false_positives,
        actual_fpr: ratio(false_positives as f64, h.len() as f64),
    }
}

/// Recall and false-positive rate of `P(spam) ≥ threshold`, from log-odds scores.
pub fn at_threshold(ham: &[f32], spam: &[f32], threshold: f64) -> AtThreshold {
    let z = (threshold / (1.0 - threshold)).ln() as f32;
    let false_positives = ham.iter().filter(|&&x| x >= z).count();
    AtThreshold {
        threshold,
        recall: ratio(
            spam.iter().filter(|&&x| x >= z).count() as f64,
            spam.len() as f64,
        ),
        fpr: ratio(false_positives as f64, ham.len() as f64),
        false_positives,
    }
}

/// The area under the ROC curve (ties count half).
pub fn roc_auc(ham: &[f32], spam: &[f32]) -> f64 {
    if ham.is_empty() || spam.is_empty() {
        return 0.0;
    }
    let mut all: Vec<(f32, bool)> = ham
        .iter()
        .map(|&x| (x, false))
        .chain(spam.iter().map(|&x| (x, true)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Sum of spam ranks (1-based, ties averaged): Mann-Whitney U.
    let mut rank_sum = 0f64;
    let mut i = 0;
    while i < all.len() {
        let mut j = i + 1;
        while j < all.len() && all[j].0 == all[i].0 {
            j += 1;
        }
        let avg = (i + 1 + j) as f64 / 2.0;
        rank_sum += avg * all[i..j].iter().filter(|(_, s)| *s).count() as f64;
        i = j;
    }
    let (np, nn) = (spam.len() as f64, ham.len() as f64);
    (rank_sum - np * (np + 1.0) / 2.0) / (np * nn)
}

/// The out-of-fold predictions of a cross-validation.
pub struct OutOfFold {
    pub predicted: Vec<usize>,
    pub confidence: Vec<f32>,
    /// Log-odds of the second label, for two-label models.
    pub logit: Option<Vec<f32>>,
    /// Seconds spent training and predicting, over all folds.
    pub train_secs: f64,
    pub predict_secs: f64,
    /// Size of one fold model's weights, in bytes.
    pub weight_bytes: usize,
}

/// Stratified k-fold cross-validation: trains on k−1 folds, predicts the held-out one.
/// `on_fold` is told when each fold is done.
pub fn cross_validate(
    labels: &[String],
    features: FeatureConfig,
    x: &[SparseVec],
    y: &[usize],
    k: usize,
    opts: &TrainOptions,
    mut on_fold: impl FnMut(usize),
) -> OutOfFold {
    let folds = stratified_folds(y, labels.len(), k, opts.seed ^ 0x5eed);
    let mut out = OutOfFold {
        predicted: vec![0; y.len()],
        confidence: vec![0.0; y.len()],
        logit: (labels.len() == 2).then(|| vec![0.0; y.len()]),
        train_secs: 0.0,
        predict_secs: 0.0,
        weight_bytes: 0,
    };
    for f in 0..k {
        let train_rows: Vec<usize> = (0..y.len()).filter(|&i| folds[i] != f).collect();
        let started = std::time::Instant::now();
        let model = train("cv", labels, features, x, y, &train_rows, opts);
        out.train_secs += started.elapsed().as_secs_f64();
        out.weight_bytes = model.weight_bytes();
        let started = std::time::Instant::now();
        for i in (0..y.len()).filter(|&i| folds[i] == f) {
            let scores = model.scores(&x[i]);
            let (p, conf) = model.predict_features(&x[i]);
            out.predicted[i] = p;
            out.confidence[i] = conf;
            if let Some(l) = out.logit.as_mut() {
                l[i] = scores[0];
            }
        }
        out.predict_secs += started.elapsed().as_secs_f64();
        on_fold(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn metrics_on_a_known_confusion_matrix() {
        // truth a: 3 predicted a, 1 predicted b; truth b: 2 b; truth c: 1 a, 1 c.
        let truth = [0, 0, 0, 0, 1, 1, 2, 2];
        let pred = [0, 0, 0, 1, 1, 1, 0, 2];
        let e = evaluate(&labels(&["a", "b", "c"]), &truth, &pred, None);
        assert_eq!(
            e.confusion,
            vec![vec![3, 1, 0], vec![0, 2, 0], vec![1, 0, 1]]
        );
        assert!((e.accuracy - 6.0 / 8.0).abs() < 1e-12);
        let a = &e.per_label[0];
        assert!((a.precision - 0.75).abs() < 1e-12 && (a.recall - 0.75).abs() < 1e-12);
        let b = &e.per_label[1];
        assert!((b.precision - 2.0 / 3.0).abs() < 1e-12 && (b.recall - 1.0).abs() < 1e-12);
        assert!((b.f1 - 0.8).abs() < 1e-12);
        let c = &e.per_label[2];
        assert!((c.precision - 1.0).abs() < 1e-12 && (c.recall - 0.5).abs() < 1e-12);
        let macro_f1 = (0.75 + 0.8 + 2.0 / 3.0) / 3.0;
        assert!((e.macro_f1 - macro_f1).abs() < 1e-12, "{}", e.macro_f1);
        assert!(e.spam.is_none());
    }

    #[test]
    fn recall_at_fpr_picks_the_threshold_above_the_allowed_ham() {
        // 1000 ham at -10..-1 plus three high-scoring ham; spam spread over 0..10.
        let mut ham: Vec<f32> = (0..1000).map(|i| -10.0 + i as f32 * 0.009).collect();
        ham.extend([5.0, 7.0, 9.0]);
        let spam: Vec<f32> = (0..100).map(|i| i as f32 * 0.1).collect();
        // 0.1% of 1003 ham: one false positive allowed: threshold just above 7.0.
        let r = recall_at_fpr(&ham, &spam, 0.001);
        assert_eq!(r.false_positives, 1);
        assert!(r.threshold_logit > 7.0 && r.threshold_logit < 7.001);
        let caught = spam.iter().filter(|&&s| s > 7.0).count();
        assert!((r.recall - caught as f64 / 100.0).abs() < 1e-12);
        // 1%: ten false positives allowed, so the three outliers and seven of the rest.
        let r = recall_at_fpr(&ham, &spam, 0.01);
        assert_eq!(r.false_positives, 10);
        assert!(r.actual_fpr <= 0.01);
        // No ham at all above: every spam above the highest ham counts.
        let t = at_threshold(&ham, &spam, 0.5);
        assert_eq!(t.false_positives, 3);
        assert_eq!(t.recall, 1.0);
        let r = recall_at_fpr(&[-1.0, -2.0], &[0.0, 1.0], 0.001);
        assert_eq!((r.recall, r.false_positives), (1.0, 0));
        assert!(r.threshold > 0.26 && r.threshold < 0.27, "{}", r.threshold);
    }

    #[test]
    fn roc_auc_of_perfect_random_and_reversed_scores() {
        assert_eq!(roc_auc(&[0.0, 1.0], &[2.0, 3.0]), 1.0);
        assert_eq!(roc_auc(&[2.0, 3.0], &[0.0, 1.0]), 0.0);
        assert_eq!(roc_auc(&[1.0, 1.0], &[1.0, 1.0]), 0.5);
    }

    #[test]
    fn folds_are_stratified() {
        let y: Vec<usize> = (0..100).map(|i| usize::from(i % 4 == 0)).collect();
        let folds = stratified_folds(&y, 2, 5, 7);
        for f in 0..5 {
            let in_fold: Vec<usize> = (0..100).filter(|&i| folds[i] == f).collect();
            assert_eq!(in_fold.len(), 20);
            assert_eq!(in_fold.iter().filter(|&&i| y[i] == 1).count(), 5);
        }
    }
}
