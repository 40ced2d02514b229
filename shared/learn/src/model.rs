//! A trained linear text classifier and its file format.
//!
//! Every learner here ends in the same form: per label a weight for every hash bucket and a
//! bias, so inference is one pass over the message's features. Two labels keep one column
//! (the difference of the two), more keep one per label, centred per bucket (softmax and
//! argmax do not change) so that the weights quantize well.
//!
//! # File format (version 2), little-endian
//!
//! ```text
//! magic        8 bytes  "MAILRMDL"
//! version      u16      FORMAT_VERSION
//! learner      u8       see Learner::code
//! weight type  u8       0 = f32, 1 = i8 with a scale per column
//! bits, word_ngrams, char_min, char_max   u8 each
//! flags        u8       1 = header features, 2 = language, 4 = L2-normalise, 8 = idf,
//!                       16 = HTML and link facts (version 2 on)
//! text_limit, char_limit   u32 each
//! char_weight, header_weight   f32 each
//! temperature  f32      scores are multiplied by it before softmax / sigmoid
//! name         u16 length + UTF-8
//! labels       u16 count, then u16 length + UTF-8 each
//! columns      u16      1 for two labels, else the label count
//! bias         f32 × columns
//! scale        f32 × columns
//! weights      2^bits × columns, bucket-major, as i8 or f32
//! idf          (flag 8) f32 step, then 2^bits u8: idf = 1 + q·step
//! checksum     u64      over every byte before it
//! ```
//!
//! Reading checks the magic first, then the version (one outside 1 to 2 is an error that
//! says so, before anything else is read), then sizes, then the checksum. A version 1
//! file reads as version 2 without the HTML and link facts, so its model extracts what
//! it was trained on.

use std::fmt;

use crate::features::{self, FeatureConfig, SparseVec};
use mailroom_core::Mail;

pub const MAGIC: &[u8; 8] = b"MAILRMDL";
pub const FORMAT_VERSION: u16 = 2;
/// The oldest version read: version 1 files predate the HTML and link facts (flag 16).
pub const OLDEST_VERSION: u16 = 1;

/// The learning algorithms; all produce a linear model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Learner {
    /// Multinomial naive Bayes.
    NaiveBayes,
    /// Complement naive Bayes (Rennie et al. 2003).
    ComplementNb,
    /// Logistic regression (softmax), SGD with L2.
    LogReg,
    /// Linear SVM (one-vs-rest, squared hinge loss), dual coordinate descent.
    Svm,
    /// Logistic regression (softmax) by FTRL-proximal, a learning rate per weight.
    Ftrl,
}

impl Learner {
    pub const ALL: [Learner; 5] = [
        Learner::NaiveBayes,
        Learner::ComplementNb,
        Learner::LogReg,
        Learner::Svm,
        Learner::Ftrl,
    ];

    pub fn code(self) -> u8 {
        match self {
            Learner::NaiveBayes => 1,
            Learner::ComplementNb => 2,
            Learner::LogReg => 3,
            Learner::Svm => 4,
            Learner::Ftrl => 5,
        }
    }

    pub fn from_code(c: u8) -> Option<Learner> {
        Learner::ALL.into_iter().find(|l| l.code() == c)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Learner::NaiveBayes => "nb",
            Learner::ComplementNb => "cnb",
            Learner::LogReg => "logreg",
            Learner::Svm => "svm",
            Learner::Ftrl => "ftrl",
        }
    }

    pub fn parse(s: &str) -> Option<Learner> {
        Learner::ALL.into_iter().find(|l| l.as_str() == s)
    }

    /// Whether the learner works on L2-normalised feature vectors.
    pub fn normalizes(self) -> bool {
        matches!(self, Learner::LogReg | Learner::Svm | Learner::Ftrl)
    }
}

/// Why bytes are not a model this build can use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelError {
    NotAModel,
    Version { found: u16 },
    Truncated,
    Checksum,
    Invalid(String),
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelError::NotAModel => write!(f, "not a mailroom model file (no MAILRMDL header)"),
            ModelError::Version { found } => write!(
                f,
                "model file format version {found}, but this mailroom reads versions {OLDEST_VERSION} to {FORMAT_VERSION}: retrain it with `mailroom train`"
            ),
            ModelError::Truncated => write!(f, "model file is truncated"),
            ModelError::Checksum => write!(f, "model file is corrupt (checksum mismatch)"),
            ModelError::Invalid(why) => write!(f, "invalid model file: {why}"),
        }
    }
}

impl std::error::Error for ModelError {}

#[derive(Debug, Clone, PartialEq)]
enum Weights {
    F32(Vec<f32>),
    I8(Vec<i8>),
}

/// A trained classifier.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub name: String,
    pub labels: Vec<String>,
    pub learner: Learner,
    pub features: FeatureConfig,
    pub normalize: bool,
    pub temperature: f32,
    columns: usize,
    bias: Vec<f32>,
    scale: Vec<f32>,
    weights: Weights,
    /// Inverse document frequencies the features are multiplied by (before the norm).
    idf: Option<IdfTable>,
}

/// Weights as a learner leaves them: `dims × labels`, bucket-major, and a bias per label.
pub struct Dense {
    pub labels: usize,
    pub weights: Vec<f32>,
    pub bias: Vec<f32>,
}

impl Model {
    /// Builds a model from trained weights: two labels become one column, more are
    /// centred per bucket; `quantize` stores them as i8 (4× smaller, same decisions on
    /// all but a handful of borderline messages).
    #[allow(clippy::too_many_arguments)]
    pub fn from_dense(
        name: &str,
        labels: Vec<String>,
        learner: Learner,
        features: FeatureConfig,
        normalize: bool,
        dense: Dense,
        temperature: f32,
        quantize: bool,
        idf: Option<IdfTable>,
    ) -> Model {
        let c = dense.labels;
        assert_eq!(c, labels.len());
        let dims = features.dims();
        let (columns, bias, w) = if c == 2 {
            let w: Vec<f32> = dense.weights.chunks_exact(2).map(|p| p[1] - p[0]).collect();
            (1, vec![dense.bias[1] - dense.bias[0]], w)
        } else {
            let mut w = dense.weights;
            for row in w.chunks_exact_mut(c) {
                let mean = row.iter().sum::<f32>() / c as f32;
                row.iter_mut().for_each(|x| *x -= mean);
            }
            let mean = dense.bias.iter().sum::<f32>() / c as f32;
            (c, dense.bias.iter().map(|b| b - mean).collect(), w)
        };
        debug_assert_eq!(w.len(), dims * columns);
        let (scale, weights) = if quantize {
            let mut scale = vec![0f32; columns];
            for row in w.chunks_exact(columns) {
                for (s, x) in scale.iter_mut().zip(row) {
                    *s = s.max(x.abs());
                }
            }
            scale.iter_mut().for_each(|s| {
                *s = if *s > 0.0 { *s / 127.0 } else { 1.0 };
            });
            let q = w
                .chunks_exact(columns)
                .flat_map(|row| {
                    row.iter()
                        .zip(&scale)
                        .map(|(x, s)| (x / s).round().clamp(-127.0, 127.0) as i8)
                })
                .collect();
            (scale, Weights::I8(q))
        } else {
            (vec![1.0; columns], Weights::F32(w))
        };
        Model {
            name: name.to_string(),
            labels,
            learner,
            features,
            normalize,
            temperature,
            columns,
            bias,
            scale,
            weights,
            idf,
        }
    }

    /// The raw scores (one per column) of a feature vector.
    pub fn scores(&self, x: &SparseVec) -> Vec<f32> {
        let k = self.columns;
        let idf: Option<Vec<f32>> = self.idf.as_ref().map(|t| {
            x.iter()
                .map(|&(b, _)| 1.0 + f32::from(t.q[b as usize]) * t.step)
                .collect()
        });
        let value = |i: usize, v: f32| match &idf {
            Some(f) => v * f[i],
            None => v,
        };
        let norm = if self.normalize {
            let n = x
                .iter()
                .enumerate()
                .map(|(i, &(_, v))| value(i, v).powi(2))
                .sum::<f32>()
                .sqrt();
            if n > 0.0 { 1.0 / n } else { 1.0 }
        } else {
            1.0
        };
        let mut acc = vec![0f32; k];
        match &self.weights {
            Weights::I8(w) => {
                for (i, &(b, v)) in x.iter().enumerate() {
                    let v = value(i, v);
                    let row = &w[b as usize * k..b as usize * k + k];
                    for (a, &q) in acc.iter_mut().zip(row) {
                        *a += v * f32::from(q);
                    }
                }
            }
            Weights::F32(w) => {
                for (i, &(b, v)) in x.iter().enumerate() {
                    let v = value(i, v);
                    let row = &w[b as usize * k..b as usize * k + k];
                    for (a, &q) in acc.iter_mut().zip(row) {
                        *a += v * q;
                    }
                }
            }
        }
        acc.iter()
            .zip(&self.scale)
            .zip(&self.bias)
            .map(|((a, s), b)| (a * s * norm + b) * self.temperature)
            .collect()
    }

    /// The probability of every label.
    pub fn probabilities(&self, x: &SparseVec) -> Vec<f32> {
        let s = self.scores(x);
        if self.columns == 1 {
            let p = sigmoid(s[0]);
            vec![1.0 - p, p]
        } else {
            softmax(&s)
        }
    }

    /// The most probable label (index) and its probability.
    pub fn predict_features(&self, x: &SparseVec) -> (usize, f32) {
        let p = self.probabilities(x);
        let (i, &best) = p
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .expect("a model has labels");
        (i, best)
    }

    /// The features of a message, as this model extracts them.
    pub fn extract(&self, mail: &Mail) -> SparseVec {
        features::extract(mail, &self.features)
    }

    /// The most probable label of a message and its probability.
    pub fn predict_mail(&self, mail: &Mail) -> (&str, f32) {
        let (i, p) = self.predict_features(&self.extract(mail));
        (&self.labels[i], p)
    }

    /// The index of the label `spam` when this is a spam model (two labels, one `spam`).
    pub fn spam_label(&self) -> Option<usize> {
        if self.labels.len() != 2 {
            return None;
        }
        self.labels
            .iter()
            .position(|l| l.eq_ignore_ascii_case("spam"))
    }

    /// P(spam) of a message. Panics if this is not a spam model ([`Model::spam_label`]).
    pub fn spam_probability(&self, mail: &Mail) -> f32 {
        let i = self.spam_label().expect("a spam model");
        self.probabilities(&self.extract(mail))[i]
    }

    /// The size of the weights in memory, in bytes.
    pub fn weight_bytes(&self) -> usize {
        let idf = self.idf.as_ref().map_or(0, |t| t.q.len());
        idf + match &self.weights {
            Weights::F32(w) => w.len() * 4,
            Weights::I8(w) => w.len(),
        }
    }

    pub fn is_quantized(&self) -> bool {
        matches!(self.weights, Weights::I8(_))
    }

    /// The model file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.weight_bytes() + 256);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.push(self.learner.code());
        out.push(u8::from(self.is_quantized()));
        let f = &self.features;
        out.extend_from_slice(&[f.bits, f.word_ngrams, f.char_min, f.char_max]);
        out.push(
            u8::from(f.headers)
                | (u8::from(f.language) << 1)
                | (u8::from(self.normalize) << 2)
                | (u8::from(self.idf.is_some()) << 3)
                | (u8::from(f.web) << 4),
        );
        out.extend_from_slice(&f.text_limit.to_le_bytes());
        out.extend_from_slice(&f.char_limit.to_le_bytes());
        out.extend_from_slice(&f.char_weight.to_le_bytes());
        out.extend_from_slice(&f.header_weight.to_le_bytes());
        out.extend_from_slice(&self.temperature.to_le_bytes());
        put_str(&mut out, &self.name);
        out.extend_from_slice(&(self.labels.len() as u16).to_le_bytes());
        for l in &self.labels {
            put_str(&mut out, l);
        }
        out.extend_from_slice(&(self.columns as u16).to_le_bytes());
        for x in self.bias.iter().chain(&self.scale) {
            out.extend_from_slice(&x.to_le_bytes());
        }
        match &self.weights {
            Weights::I8(w) => out.extend(w.iter().map(|&q| q as u8)),
            Weights::F32(w) => {
                for x in w {
                    out.extend_from_slice(&x.to_le_bytes());
                }
            }
        }
        if let Some(t) = &self.idf {
            out.extend_from_slice(&t.step.to_le_bytes());
            out.extend_from_slice(&t.q);
        }
        let sum = checksum(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    /// Reads a model file from memory (no I/O: the Lambda hands over the S3 object).
    pub fn from_bytes(bytes: &[u8]) -> Result<Model, ModelError> {
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(ModelError::NotAModel);
        }
        let mut r = Reader {
            bytes,
            at: MAGIC.len(),
        };
        let version = r.u16()?;
        if !(OLDEST_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(ModelError::Version { found: version });
        }
        if bytes.len() < 8 + MAGIC.len() {
            return Err(ModelError::Truncated);
        }
        let (body, sum) = bytes.split_at(bytes.len() - 8);
        let learner_code = r.u8()?;
        let learner = Learner::from_code(learner_code)
            .ok_or_else(|| ModelError::Invalid(format!("unknown learner {learner_code}")))?;
        let quantized = match r.u8()? {
            0 => false,
            1 => true,
            q => return Err(ModelError::Invalid(format!("unknown weight type {q}"))),
        };
        let [bits, word_ngrams, char_min, char_max] = r.take::<4>()?;
        let flags = r.u8()?;
        let text_limit = r.u32()?;
        let char_limit = r.u32()?;
        let char_weight = r.f32()?;
        let header_weight = r.f32()?;
        if version < 2 && flags & 16 != 0 {
            return Err(ModelError::Invalid("flag 16 in a version 1 file".into()));
        }
        let features = FeatureConfig {
            bits,
            word_ngrams,
            char_min,
            char_max,
            text_limit,
            char_limit,
            headers: flags & 1 != 0,
            language: flags & 2 != 0,
            web: flags & 16 != 0,
            char_weight,
            header_weight,
        };
        features.validate().map_err(ModelError::Invalid)?;
        let normalize = flags & 4 != 0;
        let temperature = r.f32()?;
        let name = r.string()?;
        let n_labels = r.u16()? as usize;
        if n_labels < 2 {
            return Err(ModelError::Invalid(format!(
                "{n_labels} labels (at least 2)"
            )));
        }
        let labels = (0..n_labels)
            .map(|_| r.string())
            .collect::<Result<Vec<_>, _>>()?;
        let columns = r.u16()? as usize;
        let want = if n_labels == 2 { 1 } else { n_labels };
        if columns != want {
            return Err(ModelError::Invalid(format!(
                "{columns} weight columns for {n_labels} labels"
            )));
        }
        let bias = (0..columns).map(|_| r.f32()).collect::<Result<_, _>>()?;
        let scale = (0..columns).map(|_| r.f32()).collect::<Result<_, _>>()?;
        let n = features.dims() * columns;
        let weights = if quantized {
            Weights::I8(r.slice(n)?.iter().map(|&b| b as i8).collect())
        } else {
            Weights::F32(
                r.slice(n * 4)?
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            )
        };
        let idf = if flags & 8 != 0 {
            let step = r.f32()?;
            Some(IdfTable {
                step,
                q: r.slice(features.dims())?.to_vec(),
            })
        } else {
            None
        };
        if r.at != body.len() {
            return Err(if r.at > body.len() {
                ModelError::Truncated
            } else {
                ModelError::Invalid(format!("{} bytes after the weights", body.len() - r.at))
            });
        }
        let want_sum = u64::from_le_bytes(sum.try_into().expect("8 bytes"));
        if checksum(body) != want_sum {
            return Err(ModelError::Checksum);
        }
        Ok(Model {
            name,
            labels,
            learner,
            features,
            normalize,
            temperature,
            columns,
            bias,
            scale,
            weights,
            idf,
        })
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let b = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(b.len() as u16).to_le_bytes());
    out.extend_from_slice(b);
}

/// A fast 64-bit checksum over 8-byte words (detects truncation and corruption, not
/// tampering).
fn checksum(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0x6d61_696c_726f_6f6d ^ bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        h = (h ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(31);
    }
    for &b in chunks.remainder() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^ (h >> 33)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn slice(&mut self, n: usize) -> Result<&'a [u8], ModelError> {
        let end = self.at.checked_add(n).ok_or(ModelError::Truncated)?;
        // The last 8 bytes are the checksum, never content.
        if end > self.bytes.len().saturating_sub(8) {
            return Err(ModelError::Truncated);
        }
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn take<const N: usize>(&mut self) -> Result<[u8; N], ModelError> {
        Ok(self.slice(N)?.try_into().expect("N bytes"))
    }
    fn u8(&mut self) -> Result<u8, ModelError> {
        Ok(self.take::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, ModelError> {
        Ok(u16::from_le_bytes(self.take()?))
    }
    fn u32(&mut self) -> Result<u32, ModelError> {
        Ok(u32::from_le_bytes(self.take()?))
    }
    fn f32(&mut self) -> Result<f32, ModelError> {
        let x = f32::from_le_bytes(self.take()?);
        if x.is_finite() {
            Ok(x)
        } else {
            Err(ModelError::Invalid("a number is not finite".into()))
        }
    }
    fn string(&mut self) -> Result<String, ModelError> {
        let n = self.u16()? as usize;
        String::from_utf8(self.slice(n)?.to_vec())
            .map_err(|_| ModelError::Invalid("a name is not UTF-8".into()))
    }
}

pub(crate) fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

pub(crate) fn softmax(s: &[f32]) -> Vec<f32> {
    let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = s.iter().map(|x| (x - max).exp()).collect();
    let sum: f32 = e.iter().sum();
    e.into_iter().map(|x| x / sum).collect()
}

/// Inverse document frequencies as stored: `1 + q·step`.
#[derive(Debug, Clone, PartialEq)]
pub struct IdfTable {
    pub q: Vec<u8>,
    pub step: f32,
}

impl IdfTable {
    pub fn values(&self) -> impl Iterator<Item = f32> + '_ {
        self.q.iter().map(|&q| 1.0 + f32::from(q) * self.step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(web: bool) -> Model {
        let features = FeatureConfig {
            bits: 10,
            web,
            ..FeatureConfig::default()
        };
        let dense = Dense {
            labels: 2,
            weights: (0..2 * 1024).map(|i| (i % 7) as f32 - 3.0).collect(),
            bias: vec![0.5, -0.5],
        };
        let labels = vec!["ham".to_string(), "spam".to_string()];
        Model::from_dense(
            "t",
            labels,
            Learner::Svm,
            features,
            true,
            dense,
            1.0,
            true,
            None,
        )
    }

    /// A version 1 file: version 2's bytes without the HTML and link facts, the version
    /// field set to 1 and the checksum made again.
    fn as_version_1(model: &Model) -> Vec<u8> {
        let mut bytes = model.to_bytes();
        bytes.truncate(bytes.len() - 8);
        bytes[8..10].copy_from_slice(&1u16.to_le_bytes());
        let sum = checksum(&bytes);
        bytes.extend_from_slice(&sum.to_le_bytes());
        bytes
    }

    #[test]
    fn version_1_files_read_without_the_html_and_link_facts() {
        let old = tiny(false);
        let back = Model::from_bytes(&as_version_1(&old)).unwrap();
        assert_eq!(back, old);
        assert!(!back.features.web);
        // A version 1 file cannot claim the facts it predates.
        let e = Model::from_bytes(&as_version_1(&tiny(true))).unwrap_err();
        assert!(
            matches!(e, ModelError::Invalid(ref w) if w.contains("flag 16")),
            "{e}"
        );
        // Version 2 keeps the flag.
        assert!(
            Model::from_bytes(&tiny(true).to_bytes())
                .unwrap()
                .features
                .web
        );
    }
}
