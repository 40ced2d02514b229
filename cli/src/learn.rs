//! `mailroom train` and `mailroom eval`: learn a text classifier from labelled folders
//! (`DIR/<label>/*`, each message an .eml file or an mbox per folder), measure it on held-out
//! mail or by stratified k-fold cross-validation.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use mailroom_core::Mail;
use mailroom_learn::eval::{self, Evaluation};
use mailroom_learn::retrain::{Origin, Weights};
use mailroom_learn::train::Idf;
use mailroom_learn::{FeatureConfig, Learner, Model, SparseVec, Task, TrainOptions, features};
use serde_json::{Value, json};

use crate::input;
use crate::target::{self, Target};

/// `train --feedback`: the corrections operators made, from the store the target names.
#[derive(Args)]
pub struct FeedbackArgs {
    /// Retrain a spam model with the operators' corrections (releases, `mailroom mark`,
    /// the console's buttons) kept in --state or on --stack. The new model replaces the
    /// file at --out only if, cross-validated, its recall at --fpr on DIR is not worse
    /// than without the corrections.
    #[arg(long)]
    feedback: bool,
    /// How many base messages an operator's correction counts as (`operator:NAME`: a
    /// release or mark from the CLI or the console).
    #[arg(long, default_value_t = mailroom_learn::retrain::DEFAULT_WEIGHT, requires = "feedback",
          value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u16).range(1..), usize::from))]
    feedback_weight: usize,
    /// How many base messages a digest recipient's release counts as (`digest:ADDRESS`):
    /// anyone a digest goes to can release from it, so by default one, below an operator's.
    #[arg(long, default_value_t = mailroom_learn::retrain::DEFAULT_DIGEST_WEIGHT, requires = "feedback",
          value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u16).range(1..), usize::from))]
    digest_feedback_weight: usize,
    /// The false-positive rate the gate compares recall at.
    #[arg(long, default_value_t = 0.001, requires = "feedback")]
    fpr: f64,
    /// Folds of the gate's cross-validation.
    #[arg(long, default_value_t = 5, requires = "feedback")]
    gate_folds: usize,
    #[command(flatten)]
    target: Target,
}

/// Feature and learner settings shared by `train` and `eval --folds`. Unset values take the
/// defaults of the task: a spam model when the labels are a pair with `spam`, else a text
/// classifier (`Task::features`, `TrainOptions::for_task`).
#[derive(Args, Clone)]
pub struct LearnArgs {
    /// nb | cnb | logreg | svm | ftrl. `eval --folds` also takes a comma-separated list or `all`
    /// to compare them on the same features.
    #[arg(long, default_value = "svm")]
    learner: String,
    /// Hash space: 2^BITS buckets per label, 10 to 24 (default 16 for spam, 18 otherwise).
    #[arg(long)]
    bits: Option<u8>,
    /// Word n-grams: 1 (unigrams) or 2 (unigrams and bigrams).
    #[arg(long, default_value_t = 2)]
    word_ngrams: u8,
    /// Character n-gram lengths as MIN-MAX, or 0 for none.
    #[arg(long, default_value = "3-4")]
    char_ngrams: String,
    /// Bytes of body text read for words (default 16384).
    #[arg(long)]
    text_limit: Option<u32>,
    /// Bytes of text read for character n-grams (default 4096).
    #[arg(long)]
    char_limit: Option<u32>,
    /// Scale of the character n-grams relative to the words (default 0.5 spam, 0.3 otherwise).
    #[arg(long)]
    char_weight: Option<f32>,
    /// Scale of the header, structure and language facts relative to the words (default 2
    /// spam, 0.5 otherwise).
    #[arg(long)]
    header_weight: Option<f32>,
    /// Leave out the header and structure features.
    #[arg(long)]
    no_headers: bool,
    /// Leave out the HTML and link facts (hidden text, images, links whose text names
    /// another domain, URL shapes).
    #[arg(long)]
    no_web: bool,
    /// Add the detected language as a feature (off by default: it did not help here).
    #[arg(long)]
    language: bool,
    /// SGD passes (logreg), or at most this many solver passes (svm).
    #[arg(long)]
    epochs: Option<u32>,
    /// L2 regularisation (logreg).
    #[arg(long)]
    lambda: Option<f32>,
    /// Initial SGD learning rate (logreg).
    #[arg(long)]
    eta0: Option<f32>,
    /// The SVM's cost C, larger: less regularisation (default 3 spam, 1 otherwise).
    #[arg(long)]
    c: Option<f32>,
    /// Inverse document frequency weighting (logreg, svm): off, folded (into the
    /// weights) or stored (a table in the model, as scikit-learn's TF-IDF). Default off
    /// for spam, stored otherwise.
    #[arg(long)]
    idf: Option<String>,
    /// Keep the raw temperature 1 instead of calibrating the probabilities.
    #[arg(long)]
    no_calibrate: bool,
    /// Smoothing (nb, cnb).
    #[arg(long)]
    alpha: Option<f32>,
    /// Weight labels inversely to their frequency, to this power: 0 not at all, 1 fully
    /// (better macro-F1 on skewed labels, at some cost in accuracy). Default 0 spam, 0.5
    /// otherwise.
    #[arg(long)]
    balance: Option<f32>,
    /// Keep f32 weights instead of i8 (4× larger).
    #[arg(long)]
    no_quantize: bool,
    /// eval: list up to this many misclassified messages (most confident first) on stderr.
    #[arg(long, default_value_t = 0)]
    errors: usize,
    /// eval --folds: repeat the cross-validation this many times with other folds and
    /// report mean ± sd.
    #[arg(long, default_value_t = 1)]
    repeats: usize,
    /// Seed for shuffling and folds.
    #[arg(long, default_value_t = 0x6d61_696c)]
    seed: u64,
}

impl LearnArgs {
    fn features(&self, task: Task) -> Result<FeatureConfig> {
        let (char_min, char_max) = match self.char_ngrams.trim() {
            "0" | "none" => (0, 0),
            s => {
                let (a, b) = s.split_once('-').unwrap_or((s, s));
                (
                    a.trim().parse().context("--char-ngrams: MIN-MAX or 0")?,
                    b.trim().parse().context("--char-ngrams: MIN-MAX or 0")?,
                )
            }
        };
        let d = task.features();
        let cfg = FeatureConfig {
            bits: self.bits.unwrap_or(d.bits),
            word_ngrams: self.word_ngrams,
            char_min,
            char_max,
            headers: !self.no_headers,
            web: !self.no_web && d.web,
            language: self.language || d.language,
            char_weight: self.char_weight.unwrap_or(d.char_weight),
            header_weight: self.header_weight.unwrap_or(d.header_weight),
            text_limit: self.text_limit.unwrap_or(d.text_limit),
            char_limit: self.char_limit.unwrap_or(d.char_limit),
        };
        cfg.validate().map_err(anyhow::Error::msg)?;
        Ok(cfg)
    }

    fn learners(&self) -> Result<Vec<Learner>> {
        if self.learner == "all" {
            return Ok(Learner::ALL.to_vec());
        }
        self.learner
            .split(',')
            .map(|s| {
                Learner::parse(s.trim()).with_context(|| {
                    format!("unknown learner {s:?}: expected nb, cnb, logreg, svm, ftrl or all")
                })
            })
            .collect()
    }

    fn options(&self, task: Task, learner: Learner) -> Result<TrainOptions> {
        let d = TrainOptions::for_task(task, learner);
        Ok(TrainOptions {
            learner,
            epochs: self.epochs.unwrap_or(d.epochs),
            lambda: self.lambda.unwrap_or(d.lambda),
            eta0: self.eta0.unwrap_or(d.eta0),
            c: self.c.unwrap_or(d.c),
            alpha: self.alpha.unwrap_or(d.alpha),
            balance: self.balance.unwrap_or(d.balance),
            idf: match self.idf.as_deref() {
                None => d.idf,
                Some("off") => Idf::Off,
                Some("folded") => Idf::Folded,
                Some("stored") => Idf::Stored,
                Some(other) => bail!("--idf {other:?}: off, folded or stored"),
            },
            calibrate: !self.no_calibrate,
            seed: self.seed,
            quantize: !self.no_quantize,
        })
    }
}

/// The task of the labelled folders in DIR.
fn task_of(dir: &Path) -> Result<Task> {
    let names: Vec<String> = label_dirs(dir)?.into_iter().map(|(n, _)| n).collect();
    Ok(Task::of(&names))
}

/// Labelled messages as feature vectors.
struct Corpus {
    labels: Vec<String>,
    x: Vec<SparseVec>,
    y: Vec<usize>,
    sources: Vec<String>,
    /// The raw messages, when kept for timing.
    raw: Vec<Vec<u8>>,
    skipped: Vec<(String, String)>,
    parse: Duration,
    extract: Duration,
}

/// The label folders of DIR: its subdirectories, sorted, hidden ones skipped.
pub(crate) fn label_dirs(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = e?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string();
        if path.is_dir() && !name.starts_with('.') {
            out.push((name, path));
        }
    }
    out.sort();
    if out.len() < 2 {
        bail!(
            "{}: needs at least two label folders (DIR/<label>/*), found {}",
            dir.display(),
            out.len()
        );
    }
    Ok(out)
}

fn bar(len: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(len);
    b.set_style(
        ProgressStyle::with_template(&format!(
            "{{bar:40}} {{pos}}/{{len}} {what} {{per_sec}} eta {{eta}}"
        ))
        .expect("valid template"),
    );
    b
}

/// Reads DIR/<label>/* into feature vectors. `known` maps folder names onto the labels of
/// an existing model (eval --model); without it the folders are the labels.
fn read_corpus(
    dir: &Path,
    cfg: &FeatureConfig,
    known: Option<&[String]>,
    keep_raw: bool,
) -> Result<Corpus> {
    let dirs = label_dirs(dir)?;
    let labels: Vec<String> = match known {
        Some(l) => l.to_vec(),
        None => dirs.iter().map(|(n, _)| n.clone()).collect(),
    };
    let mut files = Vec::new();
    for (name, path) in &dirs {
        let Some(y) = labels.iter().position(|l| l == name) else {
            bail!(
                "{}: folder {name:?} is not a label of the model ({})",
                dir.display(),
                labels.join(", ")
            );
        };
        for f in input::files(std::slice::from_ref(path)) {
            files.push((y, f));
        }
    }
    let progress = bar(files.len() as u64, "files");
    let mut corpus = Corpus {
        labels,
        x: Vec::new(),
        y: Vec::new(),
        sources: Vec::new(),
        raw: Vec::new(),
        skipped: Vec::new(),
        parse: Duration::ZERO,
        extract: Duration::ZERO,
    };
    for (y, file) in files {
        for msg in input::messages(file) {
            let raw = match msg.raw {
                Ok(r) => r,
                Err(e) => {
                    corpus.skipped.push((msg.source, e));
                    continue;
                }
            };
            let started = Instant::now();
            let mail = match Mail::parse(&raw) {
                Ok(m) => m,
                Err(e) => {
                    corpus.skipped.push((msg.source, e.to_string()));
                    continue;
                }
            };
            let parsed = Instant::now();
            corpus.x.push(features::extract(&mail, cfg));
            corpus.y.push(y);
            corpus.sources.push(msg.source);
            if keep_raw {
                corpus.raw.push(raw);
            }
            corpus.parse += parsed - started;
            corpus.extract += parsed.elapsed();
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
    for (label, count) in corpus.labels.iter().zip(label_counts(&corpus)) {
        if count == 0 && known.is_none() {
            bail!(
                "{}: label folder {label:?} holds no readable mail",
                dir.display()
            );
        }
    }
    say_skipped(&corpus.skipped);
    Ok(corpus)
}

/// One line for the inputs a measurement left out, naming the first and why: `(source,
/// error)` each.
pub fn say_skipped(skipped: &[(String, String)]) {
    if let Some((source, error)) = skipped.first() {
        eprintln!(
            "skipped {} inputs that are not readable mail (first: {source}: {error})",
            skipped.len()
        );
    }
}

fn label_counts(c: &Corpus) -> Vec<usize> {
    let mut n = vec![0; c.labels.len()];
    for &y in &c.y {
        n[y] += 1;
    }
    n
}

/// The running thread's CPU time where Linux tells it (`/proc/thread-self/schedstat`, in
/// nanoseconds), else the wall clock.
enum Clock {
    Cpu(u64),
    Wall(Instant),
}

impl Clock {
    fn now() -> Clock {
        std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .map_or_else(|| Clock::Wall(Instant::now()), Clock::Cpu)
    }

    fn since(&self, earlier: &Clock) -> Duration {
        match (self, earlier) {
            (Clock::Cpu(a), Clock::Cpu(b)) => Duration::from_nanos(a.saturating_sub(*b)),
            (Clock::Wall(a), Clock::Wall(b)) => a.duration_since(*b),
            _ => Duration::ZERO,
        }
    }
}

fn micros(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e6 / n.max(1) as f64
}

fn features_json(cfg: &FeatureConfig) -> Value {
    json!({
        "bits": cfg.bits,
        "buckets": cfg.dims(),
        "word_ngrams": cfg.word_ngrams,
        "char_ngrams": if cfg.char_max == 0 { "none".to_string() } else { format!("{}-{}", cfg.char_min, cfg.char_max) },
        "headers": cfg.headers,
        "language": cfg.language,
        "web": cfg.web,
        "text_limit": cfg.text_limit,
        "char_limit": cfg.char_limit,
        "char_weight": cfg.char_weight,
        "header_weight": cfg.header_weight,
    })
}

fn options_json(o: &TrainOptions) -> Value {
    json!({
        "learner": o.learner.as_str(),
        "epochs": o.epochs,
        "lambda": o.lambda,
        "eta0": o.eta0,
        "c": o.c,
        "idf": format!("{:?}", o.idf).to_lowercase(),
        "calibrated": o.calibrate,
        "alpha": o.alpha,
        "balance": o.balance,
        "quantized": o.quantize,
        "seed": o.seed,
    })
}

/// `mailroom train`.
pub fn train(
    out: &Path,
    name: Option<&str>,
    dir: &Path,
    args: &LearnArgs,
    feedback: &FeedbackArgs,
) -> Result<()> {
    let task = task_of(dir)?;
    let cfg = args.features(task)?;
    let learners = args.learners()?;
    let [learner] = learners[..] else {
        bail!("train takes one --learner");
    };
    let opts = args.options(task, learner)?;
    if feedback.feedback && task != Task::Spam {
        bail!(
            "--feedback retrains spam models: {} has no ham/ and spam/ folders",
            dir.display()
        );
    }
    if !(0.0..0.5).contains(&feedback.fpr) {
        bail!("--fpr {}: a rate between 0 and 0.5", feedback.fpr);
    }
    let started = Instant::now();
    let mut corpus = read_corpus(dir, &cfg, None, false)?;
    let read_secs = started.elapsed().as_secs_f64();
    let mut rows: Vec<usize> = (0..corpus.y.len()).collect();
    if feedback.feedback {
        match gate(out, &mut corpus, &cfg, &opts, feedback)? {
            Some(weighted) => rows = weighted,
            None => return Ok(()),
        }
    }
    let counts = label_counts(&corpus);
    eprintln!(
        "read {} messages in {:.1}s ({}), parse {:.0} µs and features {:.0} µs per message",
        corpus.y.len(),
        read_secs,
        corpus
            .labels
            .iter()
            .zip(&counts)
            .map(|(l, n)| format!("{l} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        micros(corpus.parse, corpus.y.len()),
        micros(corpus.extract, corpus.y.len()),
    );
    let name = name.map(str::to_string).unwrap_or_else(|| {
        out.file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("model")
            .to_string()
    });
    let spinner = if std::io::stderr().is_terminal() {
        ProgressBar::new_spinner().with_message(format!("training {}", learner.as_str()))
    } else {
        ProgressBar::hidden()
    };
    spinner.enable_steady_tick(Duration::from_millis(120));
    let t = Instant::now();
    let model = mailroom_learn::train::train(
        &name,
        &corpus.labels,
        cfg,
        &corpus.x,
        &corpus.y,
        &rows,
        &opts,
    );
    let train_secs = t.elapsed().as_secs_f64();
    spinner.finish_and_clear();
    let bytes = model.to_bytes();
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(out, &bytes).with_context(|| format!("cannot write {}", out.display()))?;

    // What inference costs: load the file as the pipeline does, score the training mail.
    let t = Instant::now();
    let loaded = mailroom_learn::load_path(out).map_err(anyhow::Error::msg)?;
    let load = t.elapsed();
    let t = Instant::now();
    let mut correct = 0usize;
    for (x, &y) in corpus.x.iter().zip(&corpus.y) {
        correct += usize::from(loaded.predict_features(x).0 == y);
    }
    let score = t.elapsed();
    eprintln!(
        "trained {} model {:?} on {} messages, {} labels in {:.2}s; training accuracy {:.1}%",
        learner.as_str(),
        name,
        corpus.y.len(),
        corpus.labels.len(),
        train_secs,
        100.0 * correct as f64 / corpus.y.len().max(1) as f64
    );
    eprintln!(
        "wrote {} ({:.1} KiB); load {:.2} ms; per message: features {:.1} µs + scoring {:.1} µs",
        out.display(),
        bytes.len() as f64 / 1024.0,
        load.as_secs_f64() * 1e3,
        micros(corpus.extract, corpus.y.len()),
        micros(score, corpus.y.len()),
    );
    if loaded.spam_label().is_some() {
        eprintln!(
            "spam model: set [filter] spam_model = {:?}; `mailroom eval --folds 5` reports the spam_threshold for a false-positive rate",
            out.display().to_string()
        );
    }
    Ok(())
}

/// `mailroom eval`: with `--model`, measures that model on DIR; with `--folds K`, trains and
/// measures by stratified k-fold cross-validation (every learner given, on the same
/// features). Prints the table on stderr and the JSON on stdout.
pub fn eval(
    model: Option<&Path>,
    folds: Option<usize>,
    dir: &Path,
    args: &LearnArgs,
) -> Result<()> {
    let report = match (model, folds) {
        (Some(path), None) => eval_model(path, dir, args)?,
        (None, Some(k)) => eval_folds(k, dir, args)?,
        (Some(_), Some(_)) => bail!("give --model or --folds, not both"),
        (None, None) => {
            bail!("give --model MODEL (measure it on DIR) or --folds K (cross-validate on DIR)")
        }
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

fn spam_logits(labels: &[String], logit_of_second: &[f32]) -> Option<(usize, Vec<f32>)> {
    if labels.len() != 2 {
        return None;
    }
    let spam = labels.iter().position(|l| l.eq_ignore_ascii_case("spam"))?;
    let sign = if spam == 1 { 1.0 } else { -1.0 };
    Some((spam, logit_of_second.iter().map(|z| z * sign).collect()))
}

fn eval_model(path: &Path, dir: &Path, args: &LearnArgs) -> Result<Value> {
    let t = Instant::now();
    let model = mailroom_learn::load_path(path).map_err(anyhow::Error::msg)?;
    let load = t.elapsed();
    let bytes = std::fs::read(path)?;
    // Loading from bytes already in memory, as the Lambda does with the S3 object: the
    // best of five.
    let from_bytes = (0..5)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(Model::from_bytes(&bytes).expect("loaded once already"));
            t.elapsed()
        })
        .min()
        .unwrap_or_default();
    let corpus = read_corpus(dir, &model.features, Some(&model.labels), true)?;
    let n = corpus.y.len();
    let mut predicted = Vec::with_capacity(n);
    let mut confidence = Vec::with_capacity(n);
    let mut logits = Vec::with_capacity(n);
    for x in &corpus.x {
        let (p, c) = model.predict_features(x);
        predicted.push(p);
        confidence.push(c);
        logits.push(model.scores(x)[0]);
    }
    let spam = spam_logits(&model.labels, &logits);
    let evaluation = eval::evaluate(
        &model.labels,
        &corpus.y,
        &predicted,
        spam.as_ref().map(|(i, l)| (*i, l.as_slice())),
    );
    eprintln!(
        "model {:?} ({}, {} labels) on {} messages in {}",
        model.name,
        model.learner.as_str(),
        model.labels.len(),
        n,
        dir.display()
    );
    eprint!("{}", render(&evaluation));
    list_errors(&corpus, &predicted, &confidence, args.errors);

    // Timing, the best of three passes (other work on the machine only ever adds): parsing
    // (the pipeline does it anyway), then classifying a parsed message as the stage does
    // (features, with language detection when the model uses it, and scores).
    // On Linux the clock is the thread's CPU time, so that other processes on a shared
    // machine do not count.
    let (mut parse, mut classify) = (Duration::MAX, Duration::MAX);
    for _ in 0..3 {
        let t = Clock::now();
        let mails: Vec<Mail> = corpus
            .raw
            .iter()
            .filter_map(|raw| Mail::parse(raw).ok())
            .collect();
        parse = parse.min(Clock::now().since(&t));
        let t = Clock::now();
        for mail in &mails {
            std::hint::black_box(model.predict_mail(mail));
        }
        classify = classify.min(Clock::now().since(&t));
    }
    eprintln!(
        "model file {:.1} KiB; load {:.2} ms from the file, {:.2} ms from bytes in memory; per message: parse {:.1} µs, classify {:.1} µs",
        bytes.len() as f64 / 1024.0,
        load.as_secs_f64() * 1e3,
        from_bytes.as_secs_f64() * 1e3,
        micros(parse, n),
        micros(classify, n),
    );
    Ok(json!({
        "mode": "model",
        "model": path.display().to_string(),
        "name": model.name,
        "learner": model.learner.as_str(),
        "features": features_json(&model.features),
        "dir": dir.display().to_string(),
        "skipped": corpus.skipped.len(),
        "evaluation": evaluation,
        "timing": {
            "model_bytes": bytes.len(),
            "load_file_ms": load.as_secs_f64() * 1e3,
            "load_bytes_ms": from_bytes.as_secs_f64() * 1e3,
            "parse_us_per_message": micros(parse, n),
            "classify_us_per_message": micros(classify, n),
        },
    }))
}

fn eval_folds(k: usize, dir: &Path, args: &LearnArgs) -> Result<Value> {
    if !(2..=50).contains(&k) {
        bail!("--folds {k}: between 2 and 50");
    }
    let task = task_of(dir)?;
    let cfg = args.features(task)?;
    let learners = args.learners()?;
    let started = Instant::now();
    let corpus = read_corpus(dir, &cfg, None, false)?;
    let read_secs = started.elapsed().as_secs_f64();
    let n = corpus.y.len();
    let counts = label_counts(&corpus);
    if let Some((l, c)) = corpus.labels.iter().zip(&counts).find(|(_, c)| **c < k) {
        eprintln!("warning: label {l:?} has {c} messages, fewer than {k} folds");
    }
    eprintln!(
        "{k}-fold stratified cross-validation on {n} messages, {} labels; read in {read_secs:.1}s (parse {:.0} µs, features {:.0} µs per message)",
        corpus.labels.len(),
        micros(corpus.parse, n),
        micros(corpus.extract, n),
    );
    let repeats = args.repeats.max(1);
    let progress = bar((k * learners.len() * repeats) as u64, "folds");
    let mut results = Vec::new();
    let mut rows = Vec::new();
    for &learner in &learners {
        let base = args.options(task, learner)?;
        progress.set_message(learner.as_str());
        let mut evaluations = Vec::new();
        let (mut train_secs, mut predict_secs, mut weight_bytes) = (0.0, 0.0, 0);
        for r in 0..repeats {
            let opts = TrainOptions {
                seed: base.seed.wrapping_add(r as u64),
                ..base
            };
            let oof =
                eval::cross_validate(&corpus.labels, cfg, &corpus.x, &corpus.y, k, &opts, |_| {
                    progress.inc(1)
                });
            let spam = oof
                .logit
                .as_ref()
                .and_then(|l| spam_logits(&corpus.labels, l));
            let evaluation = eval::evaluate(
                &corpus.labels,
                &corpus.y,
                &oof.predicted,
                spam.as_ref().map(|(i, l)| (*i, l.as_slice())),
            );
            if args.errors > 0 && r == 0 {
                eprintln!("{}:", learner.as_str());
                list_errors(&corpus, &oof.predicted, &oof.confidence, args.errors);
            }
            train_secs += oof.train_secs / (k * repeats) as f64;
            predict_secs += oof.predict_secs / repeats as f64;
            weight_bytes = oof.weight_bytes;
            evaluations.push(evaluation);
        }
        let summary = Summary::of(&evaluations);
        let scoring_us = predict_secs * 1e6 / n.max(1) as f64;
        results.push(json!({
            "learner": learner.as_str(),
            "options": options_json(&base),
            "summary": summary.json(),
            "evaluations": evaluations,
            "timing": {
                "train_secs_per_fold": train_secs,
                "features_us_per_message": micros(corpus.extract, n),
                "scoring_us_per_message": scoring_us,
                "classify_us_per_message": micros(corpus.extract, n) + scoring_us,
                "weight_bytes": weight_bytes,
            },
        }));
        rows.push((learner, summary, evaluations.swap_remove(0), train_secs));
    }
    progress.finish_and_clear();
    if rows.len() > 1 || repeats > 1 {
        eprint!("{}", render_comparison(&rows, repeats));
    }
    let best = rows
        .iter()
        .max_by(|a, b| a.1.macro_f1.0.total_cmp(&b.1.macro_f1.0))
        .expect("one learner at least");
    eprintln!(
        "\n{} (pooled out-of-fold predictions{}):",
        best.0.as_str(),
        if repeats > 1 { ", first repeat" } else { "" }
    );
    eprint!("{}", render(&best.2));
    Ok(json!({
        "mode": "cross-validation",
        "folds": k,
        "repeats": repeats,
        "dir": dir.display().to_string(),
        "messages": n,
        "skipped": corpus.skipped.len(),
        "features": features_json(&cfg),
        "read_secs": read_secs,
        "results": results,
    }))
}

/// Mean and standard deviation over repeats.
struct Summary {
    accuracy: (f64, f64),
    macro_f1: (f64, f64),
    recall_at_fpr: Option<[(f64, f64); 2]>,
}

fn mean_sd(xs: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let n = xs.clone().count().max(1) as f64;
    let mean = xs.clone().sum::<f64>() / n;
    let var = xs.map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, var.sqrt())
}

impl Summary {
    fn of(e: &[Evaluation]) -> Summary {
        let at = |i: usize| {
            mean_sd(
                e.iter()
                    .filter_map(move |x| x.spam.as_ref().map(|s| s.at_fpr[i].recall)),
            )
        };
        Summary {
            accuracy: mean_sd(e.iter().map(|x| x.accuracy)),
            macro_f1: mean_sd(e.iter().map(|x| x.macro_f1)),
            recall_at_fpr: e[0].spam.is_some().then(|| [at(0), at(1)]),
        }
    }

    fn json(&self) -> Value {
        let pair = |(m, s): (f64, f64)| json!({ "mean": m, "sd": s });
        let mut v = json!({
            "accuracy": pair(self.accuracy),
            "macro_f1": pair(self.macro_f1),
        });
        if let Some([a, b]) = self.recall_at_fpr {
            v["recall_at_fpr_0.1%"] = pair(a);
            v["recall_at_fpr_1%"] = pair(b);
        }
        v
    }
}

fn list_errors(corpus: &Corpus, predicted: &[usize], confidence: &[f32], max: usize) {
    let mut wrong: Vec<usize> = (0..corpus.y.len())
        .filter(|&i| predicted[i] != corpus.y[i])
        .collect();
    wrong.sort_by(|&a, &b| confidence[b].total_cmp(&confidence[a]));
    for &i in wrong.iter().take(max) {
        eprintln!(
            "  {} is {}, predicted {} ({:.3})",
            corpus.sources[i],
            corpus.labels[corpus.y[i]],
            corpus.labels[predicted[i]],
            confidence[i]
        );
    }
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

fn render_comparison(rows: &[(Learner, Summary, Evaluation, f64)], repeats: usize) -> String {
    let sd = repeats > 1;
    let cell = |(m, s): (f64, f64), percent: bool| -> String {
        match (percent, sd) {
            (true, true) => format!("{:.1}±{:.1}%", 100.0 * m, 100.0 * s),
            (true, false) => pct(m),
            (false, true) => format!("{m:.3}±{s:.3}"),
            (false, false) => format!("{m:.3}"),
        }
    };
    let mut s = format!(
        "\n{:<8} {:>12} {:>12} {:>12} {:>12} {:>8} {:>10}\n",
        "learner", "accuracy", "macro-F1", "R@0.1%FPR", "R@1%FPR", "AUC", "train/fold"
    );
    for (l, summary, e, secs) in rows {
        let (r01, r1, auc) = match (&summary.recall_at_fpr, &e.spam) {
            (Some([a, b]), Some(sp)) => {
                (cell(*a, true), cell(*b, true), format!("{:.4}", sp.roc_auc))
            }
            _ => ("-".into(), "-".into(), "-".into()),
        };
        s.push_str(&format!(
            "{:<8} {:>12} {:>12} {:>12} {:>12} {:>8} {:>9.2}s\n",
            l.as_str(),
            cell(summary.accuracy, true),
            cell(summary.macro_f1, false),
            r01,
            r1,
            auc,
            secs
        ));
    }
    if sd {
        s.push_str(&format!(
            "(mean ± sd over {repeats} repeats of the cross-validation with different folds)\n"
        ));
    }
    s
}

/// The evaluation as a table for people.
pub(crate) fn render(e: &Evaluation) -> String {
    let w = e.labels.iter().map(|l| l.len()).max().unwrap_or(5).max(5);
    let mut s = format!(
        "accuracy {}  macro-F1 {:.3}  ({} messages)\n\n{:<w$} {:>9} {:>7} {:>6} {:>7}\n",
        pct(e.accuracy),
        e.macro_f1,
        e.messages,
        "label",
        "precision",
        "recall",
        "F1",
        "support"
    );
    for l in &e.per_label {
        s.push_str(&format!(
            "{:<w$} {:>9} {:>7} {:>6.3} {:>7}\n",
            l.label,
            pct(l.precision),
            pct(l.recall),
            l.f1,
            l.support
        ));
    }
    s.push_str("\nconfusion (rows: true label, columns: predicted, in label order)\n");
    for (l, row) in e.labels.iter().zip(&e.confusion) {
        s.push_str(&format!("{l:<w$}"));
        for c in row {
            s.push_str(&format!(" {c:>5}"));
        }
        s.push('\n');
    }
    if let Some(sp) = &e.spam {
        s.push_str(&format!("\nROC AUC {:.4}\n", sp.roc_auc));
        for r in &sp.at_fpr {
            s.push_str(&format!(
                "recall {} at FPR {}: spam_threshold {:.6} (log-odds {:.2}), {} ham above it ({})\n",
                pct(r.recall),
                pct(r.fpr),
                r.threshold,
                r.threshold_logit,
                r.false_positives,
                pct(r.actual_fpr)
            ));
        }
        for t in &sp.at_threshold {
            s.push_str(&format!(
                "spam_threshold {:.2}: recall {}, FPR {:.2}% ({} ham)\n",
                t.threshold,
                pct(t.recall),
                100.0 * t.fpr,
                t.false_positives
            ));
        }
    }
    s
}

/// `train --feedback`: adds the store's corrections to `corpus` and cross-validates with
/// and without them (see `mailroom_learn::retrain`). Returns the rows to train on (the
/// corrections weighted), the base rows when the corrections were refused and there is no
/// model at `out` yet, or None when the model at `out` stays as it is.
fn gate(
    out: &Path,
    corpus: &mut Corpus,
    cfg: &FeatureConfig,
    opts: &TrainOptions,
    feedback: &FeedbackArgs,
) -> Result<Option<Vec<usize>>> {
    let runtime = target::runtime()?;
    let connected = feedback.target.connect(&runtime)?;
    let operator = connected.operator;
    let corrections = runtime.block_on(operator.corrections())?;
    let base = corpus.y.len();
    let spam = corpus
        .labels
        .iter()
        .position(|l| l.eq_ignore_ascii_case("spam"))
        .context("a spam model has a spam/ folder")?;
    let (mut missing, mut contradicting) = (Vec::new(), 0usize);
    let mut origins = vec![Origin::Base; base];
    for c in &corrections {
        let raw = match runtime.block_on(operator.engine().ports().raw.get_raw(&c.raw)) {
            Ok(raw) => raw,
            Err(e) => {
                missing.push(format!("{}: {e}", c.id));
                continue;
            }
        };
        let mail = match Mail::parse(&raw) {
            Ok(m) => m,
            Err(e) => {
                missing.push(format!("{}: {e}", c.id));
                continue;
            }
        };
        origins.push(Origin::of_correction(&c.by));
        corpus.x.push(features::extract(&mail, cfg));
        corpus.y.push(match c.label {
            mailroom_core::operate::Judgement::Spam => spam,
            mailroom_core::operate::Judgement::Ham => 1 - spam,
        });
        corpus
            .sources
            .push(format!("correction {} by {}", c.id, c.by));
        contradicting += usize::from(c.contradicts());
    }
    let used = corpus.y.len() - base;
    eprintln!(
        "{} corrections in {}: {used} read ({contradicting} against the pipeline's verdict), {} no longer readable",
        corrections.len(),
        operator.store(),
        missing.len()
    );
    for m in missing.iter().take(5) {
        eprintln!("  skipped {}", crate::operate::shown(m, 300));
    }
    let base_rows: Vec<usize> = (0..base).collect();
    if used == 0 {
        eprintln!("no correction to learn from: training on {base} base messages alone");
        return Ok(Some(base_rows));
    }
    let weights = Weights {
        operator: feedback.feedback_weight,
        digest: feedback.digest_feedback_weight,
    };
    // The threshold the filter runs with: the config given (or the stack's).
    let threshold = f64::from(operator.engine().config().filter.spam_threshold);
    let started = Instant::now();
    let cmp = mailroom_learn::retrain::compare(
        &corpus.labels,
        *cfg,
        &corpus.x,
        &corpus.y,
        &origins,
        weights,
        feedback.gate_folds,
        opts,
        feedback.fpr,
        threshold,
    )
    .map_err(anyhow::Error::msg)?;
    let fpr = pct(feedback.fpr);
    eprintln!(
        "{}-fold cross-validation in {:.1}s, corrections counted {}× (an operator's) and {}× (the {} from digest links): recall at {fpr} FPR on the {} base messages {} without the corrections, {} with them (allowed to fall {}); pooled with the corrections {} → {}; corrections labelled as the operator did {}/{used} → {}/{used}",
        cmp.folds,
        started.elapsed().as_secs_f64(),
        cmp.weights.operator,
        cmp.weights.digest,
        cmp.digest_corrections,
        cmp.base,
        pct(cmp.without.recall),
        pct(cmp.with.recall),
        pct(cmp.tolerance),
        pct(cmp.pooled_without.recall),
        pct(cmp.pooled_with.recall),
        cmp.corrections_agreed_without,
        cmp.corrections_agreed_with,
    );
    let at = operator.engine().config().filter.spam_threshold;
    let (was, now) = (&cmp.threshold_without, &cmp.threshold_with);
    eprintln!(
        "at spam_threshold {at}: recall {} → {} (allowed to fall {}), FPR {} → {} (allowed to rise {})",
        pct(was.recall),
        pct(now.recall),
        pct(cmp.threshold_tolerance.0),
        pct(was.fpr),
        pct(now.fpr),
        pct(cmp.threshold_tolerance.1),
    );
    if cmp.not_worse() {
        eprintln!(
            "accepted: the corrections go into the model (spam_threshold {:.6} gives {fpr} FPR on held-out folds)",
            cmp.with.threshold
        );
        let all = mailroom_learn::retrain::weighted(0..corpus.y.len(), &origins, weights);
        return Ok(Some(all));
    }
    if out.exists() {
        eprintln!(
            "refused: the model would be worse on the base messages with the corrections (figures above); {} stays as it is",
            out.display()
        );
        return Ok(None);
    }
    eprintln!(
        "refused: the model would be worse on the base messages with the corrections (figures above); {} is trained on the base messages alone",
        out.display()
    );
    corpus.x.truncate(base);
    corpus.y.truncate(base);
    corpus.sources.truncate(base);
    Ok(Some(base_rows))
}
