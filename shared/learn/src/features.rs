//! Features from a parsed [`Mail`], hashed into `2^bits` buckets.
//!
//! - words of the subject and the text body (lower-cased, digits folded to `0`, a few
//!   symbols such as `$` and `!` kept as tokens), as unigrams and bigrams;
//! - subject words again in a namespace of their own;
//! - character n-grams (3 and 4 by default) of every word padded with spaces, which carry
//!   inflected and compound forms across en, de, es, fr and pt;
//! - chosen header facts: the From domain and its shape, the number and shape of the
//!   `Received` headers, `X-Mailer` / `User-Agent` presence and product, the content types,
//!   attachment types and extensions, the domains of the links, missing `Date` or
//!   `Message-ID`, `Reply-To` elsewhere, recipient count, subject shape;
//! - HTML and link facts: text hidden, tiny or white, images against text, links whose
//!   text names another domain than their target, URL queries, redirectors and path shapes;
//! - optionally the language, detected here (whatlang on the subject and the start of the
//!   text) the same way at training and at inference, whatever the classify stage reports.
//!
//! Headers written by upstream filters (`X-Spam-*`, `X-Spamd-*`, `X-Virus-*`,
//! `X-Microsoft-Antispam`, `X-SES-*`, …) are never read: only the headers named above are,
//! so a sender cannot vouch for its own mail and the model does not learn a previous
//! filter's verdict.
//!
//! The vector lists each bucket once, in a deterministic order (not sorted). Values are
//! sublinear term frequencies (`1 + ln tf`); the model L2-normalises them when
//! its learner wants it. The hash (FNV-1a with a final multiplicative mix) is written here
//! so that it never changes under a model: a model's buckets stay valid across builds.

use mail_parser::{MimeHeaders, PartType};

use mailroom_core::Mail;
use mailroom_core::filter::scorer::base_domain;

/// A sparse feature vector: `(bucket, value)`, each bucket once.
pub type SparseVec = Vec<(u32, f32)>;

/// What the extractor does; stored in the model file so that inference extracts exactly
/// what training did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FeatureConfig {
    /// The hash space has `2^bits` buckets (10 to 24).
    pub bits: u8,
    /// 1: word unigrams; 2: unigrams and bigrams.
    pub word_ngrams: u8,
    /// Character n-gram lengths; `char_max == 0` turns them off.
    pub char_min: u8,
    pub char_max: u8,
    /// Bytes of body text read for words.
    pub text_limit: u32,
    /// Bytes of body text read for character n-grams (the costliest feature).
    pub char_limit: u32,
    /// Header and structure facts.
    pub headers: bool,
    /// The detected language as a feature.
    pub language: bool,
    /// HTML and link facts (with the header facts): hidden, tiny or white text, images
    /// against text, links whose text names another domain, URL queries, redirectors and
    /// path shapes.
    pub web: bool,
    /// Scale of the character n-gram values relative to the words (there are several
    /// times more of them, so at 1 they dominate the normalised vector).
    pub char_weight: f32,
    /// Scale of the header, structure and language facts relative to the words.
    pub header_weight: f32,
}

impl Default for FeatureConfig {
    fn default() -> Self {
        FeatureConfig {
            bits: 18,
            word_ngrams: 2,
            char_min: 3,
            char_max: 4,
            text_limit: 16 * 1024,
            char_limit: 4 * 1024,
            headers: true,
            language: true,
            web: true,
            char_weight: 1.0,
            header_weight: 1.0,
        }
    }
}

impl FeatureConfig {
    pub fn dims(&self) -> usize {
        1usize << self.bits
    }

    pub fn validate(&self) -> Result<(), String> {
        if !(10..=24).contains(&self.bits) {
            return Err(format!("hash bits {} out of range 10..=24", self.bits));
        }
        if !(1..=2).contains(&self.word_ngrams) {
            return Err(format!("word n-grams {} not 1 or 2", self.word_ngrams));
        }
        if self.char_max != 0 && (self.char_min == 0 || self.char_min > self.char_max) {
            return Err(format!(
                "character n-grams {}-{} are not a range",
                self.char_min, self.char_max
            ));
        }
        for w in [self.char_weight, self.header_weight] {
            if !(w.is_finite() && w > 0.0 && w <= 16.0) {
                return Err(format!("feature group weight {w} outside (0, 16]"));
            }
        }
        if self.char_max > 8 {
            return Err(format!(
                "character n-grams up to {} (8 at most)",
                self.char_max
            ));
        }
        Ok(())
    }
}

// Namespaces: the first byte hashed, so equal strings in different roles do not collide
// on purpose.
const NS_WORD: u8 = b'w';
const NS_BIGRAM: u8 = b'b';
const NS_SUBJECT: u8 = b's';
const NS_CHAR: u8 = b'c';
const NS_HEADER: u8 = b'h';
const NS_LANG: u8 = b'l';

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

#[inline]
fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

#[inline]
fn seed(ns: u8) -> u64 {
    fnv(FNV_OFFSET, &[ns])
}

/// Longest token kept (bytes); longer runs are base64, hashes or URLs.
const MAX_TOKEN: usize = 24;

/// Sums per `u32` key: open addressing with linear probing, kept at most half full,
/// remembering the insertion order (so output order is deterministic without a sort).
struct Counter {
    /// `(key + 1, sum)`; key 0 marks an empty slot.
    slots: Vec<(u32, f32)>,
    order: Vec<u32>,
    mask: usize,
}

impl Counter {
    fn new() -> Counter {
        Counter::with_capacity(4096)
    }

    fn with_capacity(cap: usize) -> Counter {
        let cap = cap.next_power_of_two();
        Counter {
            slots: vec![(0, 0.0); cap],
            order: Vec::with_capacity(cap / 2),
            mask: cap - 1,
        }
    }

    /// Makes room for `n` keys without growing (only while empty).
    fn reserve(&mut self, n: usize) {
        if self.order.is_empty() && n * 2 > self.slots.len() {
            *self = Counter::with_capacity(n * 2);
        }
    }

    #[inline]
    fn add(&mut self, key: u32, v: f32) {
        if (self.order.len() + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let mut i = (key.wrapping_mul(0x9e37_79b1) as usize) & self.mask;
        loop {
            let slot = &mut self.slots[i];
            if slot.0 == key + 1 {
                slot.1 += v;
                return;
            }
            if slot.0 == 0 {
                *slot = (key + 1, v);
                self.order.push(i as u32);
                return;
            }
            i = (i + 1) & self.mask;
        }
    }

    fn grow(&mut self) {
        let entries: Vec<(u32, f32)> = self.drain().collect();
        *self = Counter::with_capacity(self.slots.len() * 2);
        for (k, v) in entries {
            self.add(k, v);
        }
    }

    /// The entries in insertion order; leaves the counter empty.
    fn drain(&mut self) -> impl Iterator<Item = (u32, f32)> + '_ {
        let Counter { slots, order, .. } = self;
        order.drain(..).map(move |i| {
            let (k, v) = std::mem::take(&mut slots[i as usize]);
            (k - 1, v)
        })
    }
}

/// Collects hashed features group by group (words, characters, facts), then merges them
/// into a [`SparseVec`].
struct Sink {
    shift: u32,
    group: Counter,
    merged: Counter,
    scratch: String,
}

impl Sink {
    fn new() -> Sink {
        Sink {
            shift: 64 - 18,
            group: Counter::new(),
            merged: Counter::new(),
            scratch: String::new(),
        }
    }

    #[inline]
    fn push_hash(&mut self, h: u64) {
        // The multiplicative mix spreads FNV's weak high bits over the bucket index.
        let mixed = (h ^ (h >> 29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.group.add((mixed >> self.shift) as u32, 1.0);
    }

    fn push(&mut self, ns: u8, bytes: &[u8]) {
        self.push_hash(fnv(seed(ns), bytes));
    }

    /// A header fact `key=value` (value lower-cased by the caller).
    fn fact(&mut self, key: &str, value: &str) {
        let mut s = std::mem::take(&mut self.scratch);
        s.clear();
        s.push_str(key);
        s.push('=');
        s.push_str(value);
        self.push(NS_HEADER, s.as_bytes());
        self.scratch = s;
    }

    /// Ends a group: its term frequencies become `weight · (1 + ln tf)`.
    fn seal(&mut self, weight: f32) {
        let Sink { group, merged, .. } = self;
        for (b, tf) in group.drain() {
            let v = if tf == 1.0 { 1.0 } else { 1.0 + tf.ln() };
            merged.add(b, weight * v);
        }
    }

    fn finish(&mut self) -> SparseVec {
        self.merged.drain().collect()
    }
}

/// Buffers reused from message to message on one thread: no allocation (and no zeroing of
/// fresh pages) per message.
struct Scratch {
    sink: Sink,
    tokens: Tokens,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Option<Scratch>> = const { std::cell::RefCell::new(None) };
}

/// How many bytes of text the language feature looks at.
const LANGUAGE_SAMPLE: usize = 600;

/// The language feature: whatlang's code for the subject and the start of the text, among
/// the languages mail is likely to come in, or `?` when whatlang is unsure.
pub fn language(mail: &Mail) -> &'static str {
    use whatlang::Lang::*;
    static DETECTOR: std::sync::LazyLock<whatlang::Detector> = std::sync::LazyLock::new(|| {
        whatlang::Detector::with_allowlist(vec![Eng, Deu, Spa, Fra, Por, Ita, Nld])
    });
    let mut end = mail.text.len().min(LANGUAGE_SAMPLE);
    while !mail.text.is_char_boundary(end) {
        end -= 1;
    }
    let sample = format!("{}\n{}", mail.subject, &mail.text[..end]);
    match DETECTOR.detect(&sample) {
        Some(info) if info.is_reliable() || info.confidence() >= 0.5 => info.lang().code(),
        _ => "?",
    }
}

/// Extracts the features of a message.
pub fn extract(mail: &Mail, cfg: &FeatureConfig) -> SparseVec {
    let mut scratch = SCRATCH
        .with(|s| s.borrow_mut().take())
        .unwrap_or_else(|| Scratch {
            sink: Sink::new(),
            tokens: Tokens::default(),
        });
    let out = extract_with(mail, cfg, &mut scratch);
    SCRATCH.with(|s| *s.borrow_mut() = Some(scratch));
    out
}

fn extract_with(mail: &Mail, cfg: &FeatureConfig, scratch: &mut Scratch) -> SparseVec {
    let Scratch { sink, tokens } = scratch;
    sink.shift = 64 - u32::from(cfg.bits);
    tokens.clear();

    // Subject, in a namespace of its own and as part of the text.
    tokens.scan(&mail.subject, usize::MAX);
    for t in tokens.iter() {
        sink.push(NS_SUBJECT, t.as_bytes());
    }
    tokens.brk();
    tokens.scan(&mail.text, cfg.text_limit as usize);
    let chars_expected = if cfg.char_max > 0 {
        tokens.buf.len().min(cfg.char_limit as usize) * usize::from(cfg.char_max - cfg.char_min + 1)
    } else {
        0
    };
    sink.group
        .reserve(tokens.spans.len() * usize::from(cfg.word_ngrams) + 64);
    words(tokens, cfg, sink);
    sink.merged
        .reserve(tokens.spans.len() * 2 + chars_expected + 256);
    sink.seal(1.0);
    if cfg.char_max > 0 {
        sink.group.reserve(chars_expected);
        chars(tokens, cfg, sink);
        sink.seal(cfg.char_weight);
    }
    if cfg.headers {
        headers(mail, cfg.web, sink);
        sink.fact("long_tokens", count_bucket(tokens.long));
    }
    if cfg.language {
        sink.push(NS_LANG, language(mail).as_bytes());
    }
    sink.seal(cfg.header_weight);
    sink.finish()
}

/// The tokens of a text: lower-cased words in one buffer, with breaks (subject and body
/// are not joined into a bigram).
#[derive(Default)]
struct Tokens {
    buf: String,
    /// `(start, end, alphabetic)`; `start == end` marks a break.
    spans: Vec<(u32, u32, bool)>,
    /// Runs longer than [`MAX_TOKEN`] that were dropped (gibberish, base64, hashes).
    long: usize,
}

impl Tokens {
    fn clear(&mut self) {
        self.buf.clear();
        self.spans.clear();
        self.long = 0;
    }

    fn brk(&mut self) {
        let at = self.buf.len() as u32;
        self.spans.push((at, at, false));
    }

    fn scan(&mut self, text: &str, limit: usize) {
        let mut end = text.len().min(limit);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let mut start = self.buf.len();
        let mut alphabetic = true;
        let close = |t: &mut Tokens, start: &mut usize, alphabetic: &mut bool| {
            let len = t.buf.len() - *start;
            if len > MAX_TOKEN {
                t.buf.truncate(*start);
                t.long += 1;
            } else if len > 0 {
                t.spans
                    .push((*start as u32, t.buf.len() as u32, *alphabetic));
            }
            *start = t.buf.len();
            *alphabetic = true;
        };
        for c in text[..end].chars() {
            if c.is_alphanumeric() {
                if c.is_numeric() {
                    self.buf.push('0');
                    alphabetic = false;
                } else if c.is_lowercase() || !c.is_uppercase() {
                    self.buf.push(c);
                } else {
                    self.buf.extend(c.to_lowercase());
                }
            } else {
                close(self, &mut start, &mut alphabetic);
                if matches!(c, '$' | '€' | '£' | '!' | '%') {
                    self.buf.push(c);
                    self.spans
                        .push((start as u32, self.buf.len() as u32, false));
                    start = self.buf.len();
                }
            }
        }
        close(self, &mut start, &mut alphabetic);
    }

    fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        self.spans
            .iter()
            .filter(|(s, e, _)| s != e)
            .map(|&(s, e, _)| &self.buf[s as usize..e as usize])
    }
}

fn words(tokens: &Tokens, cfg: &FeatureConfig, sink: &mut Sink) {
    let mut prev: Option<&str> = None;
    for &(s, e, _) in &tokens.spans {
        if s == e {
            prev = None;
            continue;
        }
        let t = &tokens.buf[s as usize..e as usize];
        sink.push(NS_WORD, t.as_bytes());
        if cfg.word_ngrams >= 2
            && let Some(p) = prev
        {
            let h = fnv(fnv(seed(NS_BIGRAM), p.as_bytes()), b" ");
            sink.push_hash(fnv(h, t.as_bytes()));
        }
        prev = Some(t);
    }
}

/// Character n-grams of each alphabetic word padded with spaces (`" word "`), over the
/// first `char_limit` bytes of the text.
fn chars(tokens: &Tokens, cfg: &FeatureConfig, sink: &mut Sink) {
    let (lo, hi) = (cfg.char_min as usize, cfg.char_max as usize);
    let mut offsets: Vec<usize> = Vec::with_capacity(MAX_TOKEN + 2);
    let mut padded: Vec<u8> = Vec::with_capacity(MAX_TOKEN + 2);
    let base = seed(NS_CHAR);
    let budget = cfg.char_limit as usize;
    let mut used = 0usize;
    for &(s, e, alphabetic) in &tokens.spans {
        if s == e || !alphabetic {
            continue;
        }
        let t = &tokens.buf[s as usize..e as usize];
        used += t.len() + 1;
        if used > budget {
            break;
        }
        padded.clear();
        padded.push(b' ');
        padded.extend_from_slice(t.as_bytes());
        padded.push(b' ');
        offsets.clear();
        offsets.push(0);
        offsets.extend(t.char_indices().map(|(i, _)| i + 1));
        offsets.push(t.len() + 1);
        offsets.push(t.len() + 2);
        // offsets[i] is where char i of the padded word starts; the last is the end.
        let nchars = offsets.len() - 1;
        for i in 0..nchars {
            if i + lo > nchars {
                break;
            }
            let mut h = fnv(base, &padded[offsets[i]..offsets[i + lo]]);
            sink.push_hash(h);
            for n in lo + 1..=hi {
                if i + n > nchars {
                    break;
                }
                h = fnv(h, &padded[offsets[i + n - 1]..offsets[i + n]]);
                sink.push_hash(h);
            }
        }
    }
}

/// A small count as a bucket label: 0, 1, 2, 3-4, 5-8, 9+.
fn count_bucket(n: usize) -> &'static str {
    match n {
        0 => "0",
        1 => "1",
        2 => "2",
        3..=4 => "3-4",
        5..=8 => "5-8",
        _ => "9+",
    }
}

/// The shape of a string: letters `a`, digits `0`, others kept, runs collapsed, at most
/// 12 characters (`jm123` → `a0`, `mail.example.com` → `a.a.a`).
fn shape(s: &str) -> String {
    shape_up_to(s, 12)
}

/// The shape of a longer string, up to 24 characters (dates, MIME boundaries).
fn long_shape(s: &str) -> String {
    shape_up_to(s, 24)
}

fn shape_up_to(s: &str, max: usize) -> String {
    let mut out = String::new();
    let mut last = '\0';
    for c in s.chars() {
        let k = if c.is_alphabetic() {
            'a'
        } else if c.is_numeric() {
            '0'
        } else {
            c
        };
        if k != last {
            out.push(k);
            last = k;
        }
        if out.len() >= max {
            break;
        }
    }
    out
}

/// The HTML elements used (each once): layout tags such as `font`, `table` or `center`
/// tell mass mailings from written mail.
fn html_tags(html: &str, sink: &mut Sink) {
    let mut seen: Vec<String> = Vec::new();
    let mut rest = html;
    while let Some(pos) = rest.find('<') {
        rest = &rest[pos + 1..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .take(12)
            .map(|c| c.to_ascii_lowercase())
            .collect();
        if !name.is_empty() && !seen.contains(&name) {
            if seen.len() >= 40 {
                break;
            }
            seen.push(name);
        }
    }
    for t in &seen {
        sink.fact("html_tag", t);
    }
}

fn product(s: &str) -> String {
    s.split(|c: char| !c.is_alphabetic())
        .find(|w| w.len() >= 2)
        .unwrap_or("")
        .to_lowercase()
}

fn headers(mail: &Mail, web: bool, sink: &mut Sink) {
    // Sender.
    match mail.from_domain() {
        Some(d) => {
            let d = d.trim_end_matches('.');
            sink.fact("from_domain", base_domain(d));
            sink.fact("from_tld", d.rsplit('.').next().unwrap_or(""));
            if let Some(local) = mail.from.as_deref().and_then(|f| f.split('@').next()) {
                sink.fact("from_local_shape", &shape(local));
            }
        }
        None => sink.fact("from", "none"),
    }
    sink.fact(
        "from_name",
        match mail.from_name.as_deref() {
            None => "none",
            Some(n) if n.contains('@') => "address",
            Some(_) => "yes",
        },
    );
    if let (Some(reply), Some(from)) = (
        mail.message
            .reply_to()
            .and_then(|a| a.first())
            .and_then(|a| a.address()),
        mail.from_domain(),
    ) {
        let rd = reply.rsplit('@').next().unwrap_or("").to_ascii_lowercase();
        let same = base_domain(&rd) == base_domain(from);
        sink.fact("reply_to", if same { "same" } else { "other" });
    }

    // Relays: how many, and how they were written.
    let mut received = 0usize;
    for r in mail.header_texts("Received") {
        received += 1;
        if received > 12 {
            continue;
        }
        let lower = r.to_ascii_lowercase();
        if let Some(w) = lower.split(" with ").nth(1) {
            sink.fact("received_with", &product(w));
        }
        if lower.contains("unknown") {
            sink.fact("received", "unknown");
        }
        if lower.contains("[") && lower.contains("]") {
            sink.fact("received", "ip_literal");
        }
        if !lower.contains(" by ") {
            sink.fact("received", "no_by");
        }
        if let Some(helo) = lower
            .strip_prefix("from ")
            .and_then(|r| r.split_whitespace().next())
        {
            let helo = helo.trim_matches(['[', ']', '(', ')']);
            let kind = if helo.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
                "helo_ip"
            } else if !helo.contains('.') {
                "helo_nodot"
            } else {
                "helo_name"
            };
            sink.fact("received", kind);
        }
    }
    sink.fact("received_count", count_bucket(received));

    for (name, key) in [("X-Mailer", "mailer"), ("User-Agent", "user_agent")] {
        match mail.header_text(name) {
            Some(v) => {
                sink.fact(key, &product(&v));
                sink.fact(&format!("{key}_shape"), &shape(v.trim()));
            }
            None => sink.fact(key, "none"),
        }
    }
    for name in ["Date", "Message-ID"] {
        if !mail.has_header(name) {
            sink.fact("missing", name);
        }
    }
    if let Some(date) = mail.header_text("Date") {
        sink.fact("date_shape", &long_shape(date.trim()));
    }
    if let Some(id) = mail.message_id.as_deref()
        && let Some((local, host)) = id.split_once('@')
    {
        sink.fact("message_id_shape", &shape(local));
        sink.fact("message_id_host", &shape(host));
    }
    let to = mail.message.to().map_or(0, |a| a.iter().count())
        + mail.message.cc().map_or(0, |a| a.iter().count());
    sink.fact("recipients", count_bucket(to));

    // Subject shape.
    let subject = mail.subject.trim();
    if subject.is_empty() {
        sink.fact("subject", "empty");
    } else {
        let letters = subject.chars().filter(|c| c.is_alphabetic()).count();
        let upper = subject.chars().filter(|c| c.is_uppercase()).count();
        if letters >= 8 && upper * 10 >= letters * 8 {
            sink.fact("subject", "caps");
        }
        if subject.contains("!!") {
            sink.fact("subject", "exclaims");
        }
        if subject.len() > 8 && subject.ends_with(|c: char| c.is_ascii_digit()) {
            sink.fact("subject", "ends_digits");
        }
        let lower = subject.to_lowercase();
        if lower.starts_with("re:") || lower.starts_with("aw:") || lower.starts_with("fw") {
            sink.fact("subject", "reply");
        }
    }

    // Structure: content types, charsets, attachments.
    let msg = &mail.message;
    if let Some(ct) = msg.content_type() {
        let t = match ct.subtype() {
            Some(s) => format!("{}/{}", ct.ctype(), s),
            None => ct.ctype().to_string(),
        };
        sink.fact("root_type", &t.to_ascii_lowercase());
        if let Some(b) = ct.attribute("boundary") {
            sink.fact("boundary_shape", &long_shape(b));
        }
    } else {
        sink.fact("root_type", "none");
    }
    sink.fact("parts", count_bucket(msg.parts.len()));
    let mut html = String::new();
    for (i, part) in msg.parts.iter().enumerate().take(32) {
        if let Some(ct) = part.content_type() {
            if i > 0 {
                let t = match ct.subtype() {
                    Some(s) => format!("{}/{}", ct.ctype(), s),
                    None => ct.ctype().to_string(),
                };
                sink.fact("part_type", &t.to_ascii_lowercase());
            }
            if let Some(cs) = ct.attribute("charset") {
                sink.fact("charset", &cs.trim().to_ascii_lowercase());
            }
        }
        if let Some(enc) = part.content_transfer_encoding() {
            sink.fact("encoding", &enc.trim().to_ascii_lowercase());
        }
        if let PartType::Html(h) = &part.body
            && html.len() < 64 * 1024
        {
            let mut cut = h.len().min(64 * 1024);
            while !h.is_char_boundary(cut) {
                cut -= 1;
            }
            html.push_str(&h[..cut]);
        }
    }
    html_tags(&html, sink);
    if msg.html_body.is_empty() {
        sink.fact("html", "none");
    } else if msg.text_body.iter().all(|id| msg.html_body.contains(id)) {
        sink.fact("html", "only");
    } else {
        sink.fact("html", "alternative");
    }
    for a in mail.attachments().iter().take(16) {
        sink.fact("attachment_type", &a.content_type);
        if let Some(ext) = a
            .name
            .and_then(|n| n.rsplit_once('.'))
            .map(|(_, e)| e.to_ascii_lowercase())
            .filter(|e| e.len() <= 5)
        {
            sink.fact("attachment_ext", &ext);
        }
    }

    // Link domains, in the text and in the HTML (hrefs).
    let mut links = 0usize;
    for text in [mail.text.as_str(), html.as_str()] {
        let mut end = text.len().min(64 * 1024);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let text = &text[..end];
        let mut rest = text;
        while let Some(pos) = rest.find("http") {
            let after = &rest[pos + 4..];
            let after = after.strip_prefix('s').unwrap_or(after);
            rest = after;
            let Some(after) = after.strip_prefix("://") else {
                continue;
            };
            let authority: &str = after
                .split(|c: char| {
                    matches!(c, '/' | '?' | '#' | '\\' | '"' | '\'' | '>' | '<' | ')')
                        || c.is_whitespace()
                })
                .next()
                .unwrap_or("");
            let host = authority.rsplit('@').next().unwrap_or("");
            let host = host.split(':').next().unwrap_or("").to_ascii_lowercase();
            let host = host.trim_end_matches('.');
            if host.is_empty() {
                continue;
            }
            links += 1;
            if links > 64 {
                break;
            }
            if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
                sink.fact("link_host", "ip");
            } else {
                sink.fact("link_domain", base_domain(host));
                sink.fact("link_tld", host.rsplit('.').next().unwrap_or(""));
            }
            if authority.contains('@') {
                sink.fact("link", "userinfo");
            }
        }
    }
    sink.fact("links", count_bucket(links));
    if web {
        web_facts(mail, &html, sink);
    }
}

/// HTML that hides or shrinks text, images against text, links whose text names another
/// domain than their target, and the shape of link URLs.
fn web_facts(mail: &Mail, html: &str, sink: &mut Sink) {
    let lower = html.to_ascii_lowercase();
    let squeezed: String = lower.chars().filter(|c| !c.is_whitespace()).collect();
    for (needle, fact) in [
        ("display:none", "hidden"),
        ("visibility:hidden", "hidden"),
        ("font-size:0", "tiny"),
        ("font-size:1px", "tiny"),
        ("font-size:2px", "tiny"),
        ("size=1>", "tiny"),
        ("size=\"1\"", "tiny"),
        ("color=#ffffff", "white"),
        ("color=\"#ffffff\"", "white"),
        ("color:#fff", "white"),
        ("color=white", "white"),
    ] {
        if squeezed.contains(needle) {
            sink.fact("html_style", fact);
        }
    }
    let images = lower.matches("<img").count();
    sink.fact("images", count_bucket(images));
    if let Some(per) = mail.text.trim().len().checked_div(images) {
        let bucket = match per {
            0..=99 => "<100",
            100..=499 => "<500",
            500..=1999 => "<2000",
            _ => "more",
        };
        sink.fact("text_per_image", bucket);
    }
    // <a href="URL">TEXT</a>: a TEXT that is itself a domain or URL other than the href's.
    let mut rest = lower.as_str();
    let mut anchors = 0;
    while let Some(at) = rest.find("<a ") {
        rest = &rest[at + 3..];
        anchors += 1;
        if anchors > 64 {
            break;
        }
        let Some(h) = rest.find("href=") else { break };
        let tag_end = rest.find('>').unwrap_or(rest.len());
        if h > tag_end {
            continue;
        }
        let href = rest[h + 5..tag_end].trim_start_matches(['"', '\'']);
        let href = href.split(['"', '\'', ' ']).next().unwrap_or("");
        let text_end = rest[tag_end..]
            .find("</a")
            .map_or(rest.len(), |e| tag_end + e);
        let text = rest[tag_end.min(rest.len())..text_end]
            .trim_start_matches('>')
            .trim();
        let host_of = |u: &str| {
            let u = u
                .trim_start_matches("http://")
                .trim_start_matches("https://");
            u.split(['/', '?', '#', ':'])
                .next()
                .unwrap_or("")
                .trim_start_matches("www.")
                .to_string()
        };
        let href_host = host_of(href);
        if href.starts_with("http") {
            if let Some(q) = href.find('?') {
                sink.fact("url", "query");
                let query = &href[q..];
                if query.contains("http") || query.contains("url=") || query.contains("redirect") {
                    sink.fact("url", "redirect");
                }
            }
            let path = href
                .trim_start_matches("http://")
                .trim_start_matches("https://");
            let path = path.split_once('/').map_or("", |(_, p)| p);
            sink.fact("url_path", &shape(path.split('?').next().unwrap_or("")));
        } else if href.starts_with("mailto:") {
            sink.fact("url", "mailto");
        }
        let text_host = host_of(text);
        if !text.contains(' ')
            && text_host.contains('.')
            && !href_host.is_empty()
            && base_domain(&text_host) != base_domain(&href_host)
        {
            sink.fact("link_text", "other_domain");
        }
    }
    sink.fact("anchors", count_bucket(anchors));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feats(raw: &str, cfg: &FeatureConfig) -> SparseVec {
        let mail = Mail::parse(raw.as_bytes()).unwrap();
        extract(&mail, cfg)
    }

    /// The bucket a header fact lands in at `bits`.
    fn fact_bucket(key: &str, value: &str, bits: u8) -> u32 {
        let mut sink = Sink::new();
        sink.shift = 64 - u32::from(bits);
        sink.fact(key, value);
        sink.seal(1.0);
        sink.finish()[0].0
    }

    #[test]
    fn html_and_link_facts_see_hidden_text_and_links_that_lie() {
        let raw = "From: a@x.test\nSubject: s\nContent-Type: text/html\n\n<p>Your account</p><div style=\"display: none\">lorem ipsum</div><a href=\"http://evil.example/login?url=http://x\">www.mybank.com</a>\n";
        let cfg = FeatureConfig::default();
        let with = feats(raw, &cfg);
        let without = feats(raw, &FeatureConfig { web: false, ..cfg });
        let has = |v: &SparseVec, key: &str, value: &str| {
            let b = fact_bucket(key, value, cfg.bits);
            v.iter().any(|&(i, _)| i == b)
        };
        for (key, value) in [
            ("html_style", "hidden"),
            ("link_text", "other_domain"),
            ("url", "query"),
            ("url", "redirect"),
        ] {
            assert!(has(&with, key, value), "{key}={value}");
            assert!(
                !has(&without, key, value),
                "{key}={value} without the facts"
            );
        }
        // A link whose text is its own domain is no lie.
        let honest = raw.replace("www.mybank.com", "evil.example");
        assert!(!has(&feats(&honest, &cfg), "link_text", "other_domain"));
    }

    #[test]
    fn tokens_fold_case_digits_and_keep_symbols() {
        let mut t = Tokens::default();
        t.scan("Win $1,000 NOW!! Straße ÉTÉ", usize::MAX);
        let got: Vec<&str> = t.iter().collect();
        assert_eq!(
            got,
            ["win", "$", "0", "000", "now", "!", "!", "straße", "été"]
        );
    }

    #[test]
    fn extraction_is_deterministic_and_unique() {
        let raw = "From: Ann <ann@mail.example.org>\nTo: b@example.com\nSubject: Hello there\nX-Mailer: Mutt 1.2\nX-Spam-Status: No, score=-100\n\nHello hello world, visit http://www.example.net/x now\n";
        let cfg = FeatureConfig::default();
        let a = feats(raw, &cfg);
        let b = feats(raw, &cfg);
        assert_eq!(a, b);
        let mut buckets: Vec<u32> = a.iter().map(|&(b, _)| b).collect();
        buckets.sort_unstable();
        buckets.dedup();
        assert_eq!(buckets.len(), a.len());
        assert!(
            a.iter()
                .all(|&(i, v)| (i as usize) < cfg.dims() && v >= 1.0)
        );
        // "hello" twice in the body (plus the subject): a larger value somewhere.
        assert!(a.iter().any(|&(_, v)| v > 1.0));
    }

    #[test]
    fn upstream_filter_headers_are_not_features() {
        let plain = "From: a@x.test\nSubject: s\n\nbody text here\n";
        let headed = "X-Spam-Status: Yes, score=99\nX-Spam-Flag: YES\nX-Spamd-Result: default: True\nX-Virus-Scanned: clean\nX-Microsoft-Antispam: BCL:9;\nX-SES-Spam-Verdict: FAIL\nFrom: a@x.test\nSubject: s\n\nbody text here\n";
        let cfg = FeatureConfig::default();
        assert_eq!(feats(plain, &cfg), feats(headed, &cfg));
    }

    #[test]
    fn config_switches_change_the_features() {
        let raw = "From: a@x.test\nSubject: Rechnungsadresse\n\nBitte ändern Sie meine Rechnungsadresse.\n";
        let full = feats(raw, &FeatureConfig::default());
        let words_only = feats(
            raw,
            &FeatureConfig {
                char_max: 0,
                headers: false,
                language: false,
                word_ngrams: 1,
                ..FeatureConfig::default()
            },
        );
        assert!(
            words_only.len() < full.len() / 4,
            "{} {}",
            words_only.len(),
            full.len()
        );
        assert!(
            FeatureConfig {
                bits: 30,
                ..FeatureConfig::default()
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn language_is_detected_here() {
        let de = Mail::parse(
            "From: a@x.test\nSubject: Rechnung\n\nBitte senden Sie mir die korrigierte Rechnung für den letzten Monat zu.\n"
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(language(&de), "deu");
        let empty = Mail::parse(b"From: a@x.test\nSubject: \n\n\n").unwrap();
        assert_eq!(language(&empty), "?");
    }

    #[test]
    fn helpers() {
        assert_eq!(shape("jm123"), "a0");
        assert_eq!(shape("mail.example.com"), "a.a.a");
        assert_eq!(base_domain("a.b.example.co.uk"), "example.co.uk");
        assert_eq!(product("Microsoft Outlook Express 6.00"), "microsoft");
        assert_eq!(count_bucket(7), "5-8");
    }
}
