//! linfa's learners against ours on the same hashed features and the same stratified
//! folds, for a spam corpus (DIR/ham, DIR/spam):
//!
//! `cargo run --release -p mailroom-learn --features linfa --example linfa_compare DIR [BITS]`
//!
//! linfa's learners take dense ndarray matrices, so the features are hashed into 2^BITS
//! buckets (12 by default: 4,096 columns; 2^16 would need 2 GB per matrix) and every
//! learner, ours included, sees those same columns. Prints, per learner, recall at 0.1%
//! and 1% false-positive rate over the pooled out-of-fold scores, ROC AUC and the
//! training time per fold. linfa-bayes 0.8.1 leaves a `dbg!` in its multinomial fit that
//! prints every class histogram to stderr: run with `2>/dev/null`.

use std::path::Path;
use std::time::Instant;

use linfa::prelude::*;
use linfa_bayes::NaiveBayes;
use mailroom_core::Mail;
use mailroom_learn::eval::{recall_at_fpr, roc_auc};
use mailroom_learn::folds::stratified_folds;
use mailroom_learn::{FeatureConfig, Learner, SparseVec, Task, TrainOptions, features, train};
use ndarray::{Array1, Array2};

const K: usize = 5;

fn read(dir: &Path, cfg: &FeatureConfig) -> (Vec<SparseVec>, Vec<usize>) {
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for (label, name) in ["ham", "spam"].iter().enumerate() {
        let mut paths: Vec<_> = std::fs::read_dir(dir.join(name))
            .unwrap_or_else(|e| panic!("{}/{name}: {e}", dir.display()))
            .flatten()
            .map(|e| e.path())
            .collect();
        paths.sort();
        for p in paths {
            let Ok(raw) = std::fs::read(&p) else { continue };
            let Ok(mail) = Mail::parse(&raw) else {
                continue;
            };
            x.push(features::extract(&mail, cfg));
            y.push(label);
        }
    }
    (x, y)
}

/// Rows `rows` of `x` as a dense matrix, each row L2-normalised (as our learners see them).
fn dense(x: &[SparseVec], rows: &[usize], dims: usize) -> Array2<f64> {
    let mut m = Array2::<f64>::zeros((rows.len(), dims));
    for (r, &i) in rows.iter().enumerate() {
        let norm = x[i]
            .iter()
            .map(|&(_, v)| v * v)
            .sum::<f32>()
            .sqrt()
            .max(1e-12);
        for &(b, v) in &x[i] {
            m[[r, b as usize]] = f64::from(v / norm);
        }
    }
    m
}

struct Scores {
    name: &'static str,
    /// Out-of-fold spam scores (monotone in P(spam)).
    z: Vec<f64>,
    train_secs: f64,
}

fn report(s: &Scores, y: &[usize]) {
    let (mut ham, mut spam) = (Vec::new(), Vec::new());
    for (&t, &z) in y.iter().zip(&s.z) {
        // Probabilities become log-odds-like scores for the shared metrics.
        let v = z as f32;
        if t == 1 { spam.push(v) } else { ham.push(v) }
    }
    println!(
        "{:<22} R@0.1%FPR {:>6.1}%  R@1%FPR {:>6.1}%  AUC {:.4}  train/fold {:>7.2}s",
        s.name,
        100.0 * recall_at_fpr(&ham, &spam, 0.001).recall,
        100.0 * recall_at_fpr(&ham, &spam, 0.01).recall,
        roc_auc(&ham, &spam),
        s.train_secs / K as f64
    );
}

fn logit(p: f64) -> f64 {
    let p = p.clamp(1e-15, 1.0 - 1e-15);
    (p / (1.0 - p)).ln()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("usage: linfa_compare DIR [BITS]");
    let bits: u8 = args.next().map_or(12, |b| b.parse().expect("BITS"));
    let cfg = FeatureConfig {
        bits,
        ..Task::Spam.features()
    };
    let started = Instant::now();
    let (x, y) = read(Path::new(&dir), &cfg);
    let dims = cfg.dims();
    println!(
        "{} messages ({} spam), 2^{bits} buckets, read in {:.1}s; {K}-fold stratified CV, one split for all",
        y.len(),
        y.iter().filter(|&&l| l == 1).count(),
        started.elapsed().as_secs_f64()
    );
    let folds = stratified_folds(&y, 2, K, 0x6d61_696c ^ 0x5eed);
    let labels = ["ham".to_string(), "spam".to_string()];
    let mut all: Vec<Scores> = Vec::new();
    let mut add = |name: &'static str| {
        all.push(Scores {
            name,
            z: vec![0.0; y.len()],
            train_secs: 0.0,
        });
        all.len() - 1
    };
    let ours_svm = add("mailroom svm");
    let ours_logreg = add("mailroom logreg");
    let ours_nb = add("mailroom nb");
    let l_logreg = add("linfa-logistic");
    let l_nb = add("linfa-bayes multinomial");
    let l_svm = add("linfa-svm (linear)");
    for f in 0..K {
        let train_rows: Vec<usize> = (0..y.len()).filter(|&i| folds[i] != f).collect();
        let test_rows: Vec<usize> = (0..y.len()).filter(|&i| folds[i] == f).collect();
        for (slot, learner) in [
            (ours_svm, Learner::Svm),
            (ours_logreg, Learner::LogReg),
            (ours_nb, Learner::NaiveBayes),
        ] {
            let t = Instant::now();
            let opts = TrainOptions::for_task(Task::Spam, learner);
            let model = train::train("cv", &labels, cfg, &x, &y, &train_rows, &opts);
            all[slot].train_secs += t.elapsed().as_secs_f64();
            for &i in &test_rows {
                all[slot].z[i] = f64::from(model.scores(&x[i])[0]);
            }
        }
        let xtr = dense(&x, &train_rows, dims);
        let xte = dense(&x, &test_rows, dims);
        let ytr: Array1<usize> = train_rows.iter().map(|&i| y[i]).collect();
        let ds = Dataset::new(xtr.clone(), ytr.clone());

        let t = Instant::now();
        let lr = linfa_logistic::LogisticRegression::default()
            .alpha(1e-3)
            .max_iterations(200)
            .fit(&ds)
            .expect("linfa-logistic fits");
        all[l_logreg].train_secs += t.elapsed().as_secs_f64();
        // The probability is of the class linfa labelled positive, whichever that is.
        let spam_is_pos = lr.labels().pos.class == 1;
        for (k, p) in lr.predict_probabilities(&xte).iter().enumerate() {
            let z = logit(*p);
            all[l_logreg].z[test_rows[k]] = if spam_is_pos { z } else { -z };
        }

        let t = Instant::now();
        let nb = linfa_bayes::MultinomialNb::params()
            .alpha(0.05)
            .fit(&ds)
            .expect("linfa-bayes fits");
        all[l_nb].train_secs += t.elapsed().as_secs_f64();
        let (proba, classes) = nb.predict_proba(xte.view());
        let spam_col = classes.iter().position(|c| **c == 1).expect("a spam class");
        for k in 0..test_rows.len() {
            all[l_nb].z[test_rows[k]] = logit(proba[[k, spam_col]]);
        }

        let t = Instant::now();
        let ybool: Array1<bool> = ytr.iter().map(|&l| l == 1).collect();
        let svm = linfa_svm::Svm::<f64, bool>::params()
            .pos_neg_weights(3.0, 3.0)
            .linear_kernel()
            .fit(&Dataset::new(xtr, ybool))
            .expect("linfa-svm fits");
        all[l_svm].train_secs += t.elapsed().as_secs_f64();
        for (k, row) in xte.rows().into_iter().enumerate() {
            all[l_svm].z[test_rows[k]] = svm.weighted_sum(&row);
        }
        println!("fold {} of {K} done", f + 1);
    }
    for s in &all {
        report(s, &y);
    }
}
