//! The learned models on the real mail in `../shared/data` (beside the repository, never in
//! it). Skips with a message where the data is absent, as it is for anyone who clones the
//! project.
//!
//! - `quick_cross_validation` (runs by default, a few seconds in debug): 2-fold stratified
//!   cross-validation of the default learner on a small stratified subsample of the spam
//!   corpus and of the ticket queues, with floors far below the measured figures so that
//!   only a broken learner fails.
//! - `full_cross_validation` (ignored: about 10 s in release, minutes in debug): 5-fold on
//!   every message, the figures the README reports:
//!   `cargo test --release -p mailroom-learn --test learn_corpus -- --ignored --nocapture`
//!   (`mailroom eval --folds 5 DIR` gives the same figures, with a table and JSON).

// The data kit's location, shared with the core's corpus tests.
#[path = "../../core/tests/common/mod.rs"]
mod common;

use common::data_dir;

use std::path::{Path, PathBuf};
use std::time::Instant;

use mailroom_core::Mail;
use mailroom_learn::eval::{cross_validate, evaluate};
use mailroom_learn::{FeatureConfig, Learner, SparseVec, Task, TrainOptions, features};

/// Labels (sorted folder names) and, per label, its files in a stable order.
fn labelled(dir: &Path) -> (Vec<String>, Vec<Vec<PathBuf>>) {
    let mut labels: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    labels.sort();
    let files = labels
        .iter()
        .map(|l| {
            let mut f: Vec<PathBuf> = std::fs::read_dir(dir.join(l))
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect();
            f.sort();
            f
        })
        .collect();
    (labels, files)
}

/// Every `step`-th file of each label (at most `per_label`), as features.
fn load(
    dir: &Path,
    cfg: &FeatureConfig,
    per_label: usize,
    step: usize,
) -> (Vec<String>, Vec<SparseVec>, Vec<usize>) {
    let (labels, files) = labelled(dir);
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for (label, files) in files.iter().enumerate() {
        for path in files.iter().step_by(step).take(per_label) {
            let raw = std::fs::read(path).unwrap();
            let Ok(mail) = Mail::parse(&raw) else {
                continue;
            };
            x.push(features::extract(&mail, cfg));
            y.push(label);
        }
    }
    (labels, x, y)
}

fn measure(dir: &Path, k: usize, per_label: usize, step: usize) -> (f64, f64, Option<f64>) {
    let names: Vec<String> = labelled(dir).0;
    let task = Task::of(&names);
    let cfg = task.features();
    let started = Instant::now();
    let (labels, x, y) = load(dir, &cfg, per_label, step);
    let read = started.elapsed();
    let opts = TrainOptions {
        calibrate: false,
        ..TrainOptions::for_task(task, Learner::Svm)
    };
    let started = Instant::now();
    let oof = cross_validate(&labels, cfg, &x, &y, k, &opts, |_| {});
    let spam = labels.iter().position(|l| l == "spam");
    let logits: Option<Vec<f32>> = oof.logit.as_ref().map(|l| {
        l.iter()
            .map(|z| if spam == Some(1) { *z } else { -z })
            .collect()
    });
    let e = evaluate(&labels, &y, &oof.predicted, spam.zip(logits.as_deref()));
    let recall = e.spam.as_ref().map(|s| s.at_fpr[1].recall);
    println!(
        "{}: {k}-fold on {} messages: accuracy {:.1}%, macro-F1 {:.3}{} (read {:.1}s, cross-validation {:.1}s)",
        dir.display(),
        y.len(),
        100.0 * e.accuracy,
        e.macro_f1,
        e.spam
            .as_ref()
            .map(|s| format!(
                ", recall {:.1}% at 0.1% FPR, {:.1}% at 1% FPR",
                100.0 * s.at_fpr[0].recall,
                100.0 * s.at_fpr[1].recall
            ))
            .unwrap_or_default(),
        read.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    (e.accuracy, e.macro_f1, recall)
}

/// The classify stage reads the copy filter makes without the attachments' contents
/// ([`Mail::without_attachment_contents`]): the models must see the same features in it as
/// in the message, bit for bit.
#[test]
fn copies_without_attachment_contents_give_the_same_features() {
    let Some(data) = data_dir() else {
        return;
    };
    let cfg = FeatureConfig::default();
    let mut n = 0;
    for dir in ["spam", "tickets/by-queue"] {
        let mut sizes = Vec::new();
        let (_, files) = labelled(&data.join(dir));
        // Every third message: the facts of every one are compared in the core's tests.
        for path in files.iter().flatten().step_by(3) {
            let raw = std::fs::read(path).unwrap();
            let Ok(whole) = Mail::parse(&raw) else {
                continue;
            };
            let copy = whole.without_attachment_contents(usize::MAX).unwrap();
            let part = Mail::parse_copy(&copy, None, whole.size()).unwrap();
            assert_eq!(
                features::extract(&part, &cfg),
                features::extract(&whole, &cfg),
                "{}",
                path.display()
            );
            assert_eq!(features::language(&part), features::language(&whole));
            sizes.push((copy.len(), raw.len()));
            n += 1;
        }
        sizes.sort_unstable();
        let copies: usize = sizes.iter().map(|s| s.0).sum();
        let whole: usize = sizes.iter().map(|s| s.1).sum();
        let limit = mailroom_core::model::CLASSIFY_COPY_MAX;
        let over = sizes.iter().filter(|s| s.0 > limit).count();
        println!(
            "{dir}: {} messages, the same features in their copies: median copy {} bytes, \
             {copies} bytes of copies for {whole} of mail, {over} over CLASSIFY_COPY_MAX",
            sizes.len(),
            sizes[sizes.len() / 2].0
        );
    }
    assert!(n > 1000, "{n} messages");
}

#[test]
fn quick_cross_validation() {
    let Some(data) = data_dir() else {
        return;
    };
    // 150 ham and 150 spam, spread over the corpus groups.
    let (accuracy, _, recall) = measure(&data.join("spam"), 2, 150, 9);
    assert!(accuracy > 0.90, "spam accuracy {accuracy}");
    assert!(recall.unwrap() > 0.6, "spam recall at 1% FPR {recall:?}");
    // 30 tickets of each of the 10 queues (fewer where a queue is small): chance is 10%.
    let (accuracy, macro_f1, _) = measure(&data.join("tickets/by-queue"), 2, 30, 1);
    assert!(accuracy > 0.2, "queue accuracy {accuracy}");
    assert!(macro_f1 > 0.15, "queue macro-F1 {macro_f1}");
}

#[test]
#[ignore = "the full 5-fold figures: run with --release -- --ignored --nocapture"]
fn full_cross_validation() {
    let Some(data) = data_dir() else {
        return;
    };
    let (accuracy, _, recall) = measure(&data.join("spam"), 5, usize::MAX, 1);
    assert!(accuracy > 0.985 && recall.unwrap() > 0.97);
    let (accuracy, macro_f1, _) = measure(&data.join("tickets/by-queue"), 5, usize::MAX, 1);
    assert!(accuracy > 0.42 && macro_f1 > 0.33);
    let (accuracy, macro_f1, _) = measure(&data.join("tickets/by-priority"), 5, usize::MAX, 1);
    assert!(accuracy > 0.45 && macro_f1 > 0.41);
}
