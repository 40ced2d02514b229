//! The attachment policy: blocked extensions (also hidden behind a decoy such as
//! `invoice.pdf.exe`, or inside `x.exe.gz`), executables by magic bytes whatever their name,
//! macro-enabled Office documents (by extension, by the VBA storage of an OLE2 file, by a
//! `vbaProject.bin` entry of an OOXML zip) and zip archives holding any of these, nested
//! archives included. Each hit demands the configured `attachments.action`; the allow list
//! never lifts it.
//!
//! Zip archives are read with [`crate::filter::zip`]: from the central directory, checked
//! against the local headers, each entry's first bytes inflated for its magic numbers, and
//! nested archives and OLE2 files inflated whole, [`MAX_ARCHIVE_DEPTH`] archives deep. What
//! cannot be looked into fails closed: a malformed archive (`ARCHIVE_MALFORMED`), an
//! encrypted entry (`ARCHIVE_ENCRYPTED`), ZIP64 or a compression method other than stored
//! and deflate (`ARCHIVE_UNSCANNABLE`), and any cap reached — entries, name bytes, inflated
//! bytes, archive depth, attached-message depth (`SCAN_LIMIT`) — hold the message at least
//! in quarantine, whatever `attachments.action` says, and are never released.

use std::sync::LazyLock;

use regex::bytes::Regex;

use crate::config::{AttachmentPolicy, FilterConfig};
use crate::filter::zip::{self, Budget, Problem};
use crate::filter::{Check, Findings};
use crate::mail::{Attachment, Mail};
use crate::model::Verdict;

pub struct Attachments;

const NAME: &str = "attachments";

/// Extensions of macro-enabled Office documents.
const MACRO_EXTENSIONS: &[&str] = &[
    "docm", "dotm", "xlsm", "xltm", "xlam", "pptm", "potm", "ppsm", "ppam", "sldm",
];

/// Single-file compressors: `x.exe.gz` unpacks to `x.exe`, so the extension before them
/// counts as well.
const COMPRESSOR_EXTENSIONS: &[&str] = &["gz", "bz2", "xz", "z", "lz", "lzma", "zst", "br"];

/// Archives opened inside one another, at most: the attachment is the first. A zip in a zip
/// holding a `.docx` is three.
pub const MAX_ARCHIVE_DEPTH: usize = 4;

/// The findings that say part of a message could not be looked into; they demand at least
/// quarantine.
pub const UNSCANNABLE_TAGS: [&str; 4] = [
    "ARCHIVE_MALFORMED",
    "ARCHIVE_ENCRYPTED",
    "ARCHIVE_UNSCANNABLE",
    "SCAN_LIMIT",
];

const OLE2_MAGIC: &[u8] = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1";

impl Check for Attachments {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run(&self, mail: &Mail, config: &FilterConfig, findings: &mut Findings) {
        let policy = &config.attachments;
        if !mail.has_attachment() {
            return;
        }
        let blocked: Vec<String> = policy
            .blocked_extensions
            .iter()
            .map(|e| e.trim().trim_start_matches('.').to_lowercase())
            .filter(|e| !e.is_empty())
            .collect();
        let scan = mail.attachment_scan();
        let fail_closed = policy.action.verdict().max(Verdict::Quarantine);
        if let Some(first) = scan.unscanned.first() {
            let more = match scan.unscanned.len() {
                1 => String::new(),
                n => format!(" (and {} more)", n - 1),
            };
            findings.demand(NAME, "SCAN_LIMIT", format!("{first}{more}"), fail_closed);
        }
        let mut budget = Budget::default();
        for att in &scan.attachments {
            let mut inspection = Inspection {
                policy,
                blocked: &blocked,
                budget: &mut budget,
                label: att.name.unwrap_or("(unnamed)"),
                out: Vec::new(),
            };
            inspection.attachment(att);
            for (tag, detail) in inspection.out {
                let verdict = if UNSCANNABLE_TAGS.contains(&tag) {
                    fail_closed
                } else {
                    policy.action.verdict()
                };
                findings.demand(NAME, tag, detail, verdict);
            }
        }
    }
}

/// The findings for one attachment, at most one per tag.
struct Inspection<'a> {
    policy: &'a AttachmentPolicy,
    blocked: &'a [String],
    /// Inflated bytes left for the whole message.
    budget: &'a mut Budget,
    label: &'a str,
    out: Vec<(&'static str, String)>,
}

impl Inspection<'_> {
    fn add(&mut self, tag: &'static str, detail: String) {
        if !self.out.iter().any(|(t, _)| *t == tag) {
            let label = self.label;
            self.out
                .push((tag, format!("attachment {label:?}: {detail}")));
        }
    }

    fn problem(&mut self, problem: Problem, at: &str) {
        let (tag, what) = match problem {
            Problem::Malformed(d) => ("ARCHIVE_MALFORMED", d),
            Problem::Unscannable(d) => ("ARCHIVE_UNSCANNABLE", d),
            Problem::Limit(d) => ("SCAN_LIMIT", d),
        };
        self.add(tag, format!("{at}: {what}"));
    }

    fn attachment(&mut self, att: &Attachment) {
        for name in [att.name, att.other_name].into_iter().flatten() {
            let exts = extensions(name);
            if let Some(ext) = blocked_extension(&exts, self.blocked) {
                self.add("BLOCKED_EXTENSION", format!("blocked extension .{ext}"));
            }
            if self.policy.block_macros
                && let Some(ext) = exts
                    .last()
                    .filter(|e| MACRO_EXTENSIONS.contains(&e.as_str()))
            {
                self.add(
                    "MACRO_DOCUMENT",
                    format!("macro-enabled Office extension .{ext}"),
                );
            }
        }

        let c = att.contents;
        if self.policy.detect_executables
            && let Some(kind) = executable_kind(c)
        {
            self.add(
                "EXECUTABLE",
                format!("{kind} executable ({})", att.content_type),
            );
        }
        if self.policy.block_macros && c.starts_with(OLE2_MAGIC) && ole_has_vba(c) {
            self.add(
                "MACRO_DOCUMENT",
                "OLE2 document with a VBA macro project".into(),
            );
        }
        let named_zip = [att.name, att.other_name]
            .into_iter()
            .flatten()
            .any(|n| extensions(n).last().is_some_and(|e| e == "zip"))
            || matches!(
                att.content_type.as_str(),
                "application/zip" | "application/x-zip" | "application/x-zip-compressed"
            );
        if named_zip || zip::looks_like_zip(c) {
            self.archive(c, "", 1);
        }
    }

    /// One archive, `depth` archives deep (1: the attachment); `path` is where it is inside
    /// the attachment (empty for the attachment itself).
    fn archive(&mut self, c: &[u8], path: &str, depth: usize) {
        let at = if path.is_empty() {
            "zip".to_string()
        } else {
            format!("archive entry {path:?}")
        };
        if depth > MAX_ARCHIVE_DEPTH {
            self.add(
                "SCAN_LIMIT",
                format!("{at}: an archive nested deeper than {MAX_ARCHIVE_DEPTH} archives"),
            );
            return;
        }
        let archive = zip::read(c);
        for problem in archive.problems {
            self.problem(problem, &at);
        }
        for entry in &archive.entries {
            let full = if path.is_empty() {
                entry.name.clone()
            } else {
                format!("{path} > {}", entry.name)
            };
            for name in std::iter::once(&entry.name).chain(&entry.other_names) {
                self.entry_name(name, &full);
            }
            if entry.is_directory() {
                continue;
            }
            if entry.is_encrypted() {
                self.add(
                    "ARCHIVE_ENCRYPTED",
                    format!("archive entry {full:?} is encrypted and cannot be inspected"),
                );
                continue;
            }
            if entry.data.is_empty() && entry.size == 0 {
                continue;
            }
            let head = match zip::prefix(entry, self.budget) {
                Ok(head) => head,
                Err(p) => {
                    self.problem(p, &at);
                    continue;
                }
            };
            if self.policy.detect_executables
                && let Some(kind) = executable_kind(&head)
            {
                self.add(
                    "EXECUTABLE",
                    format!("archive entry {full:?} is a {kind} executable"),
                );
            }
            let ole = self.policy.block_macros && head.starts_with(OLE2_MAGIC);
            let nested = head.starts_with(b"PK\x03\x04")
                || head.starts_with(b"PK\x05\x06")
                || extensions(&entry.name).last().is_some_and(|e| e == "zip");
            if !ole && !nested {
                continue;
            }
            let whole = match zip::contents(entry, self.budget) {
                Ok(whole) => whole,
                Err(p) => {
                    self.problem(p, &at);
                    continue;
                }
            };
            if ole && ole_has_vba(&whole) {
                self.add(
                    "MACRO_DOCUMENT",
                    format!("archive entry {full:?} is an OLE2 document with a VBA macro project"),
                );
            }
            if nested {
                self.archive(&whole, &full, depth + 1);
            }
        }
    }

    /// The name checks for an archive entry `full` (its path through nested archives).
    fn entry_name(&mut self, name: &str, full: &str) {
        if name.ends_with('/') {
            return;
        }
        let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
        if self.policy.block_macros && base.eq_ignore_ascii_case("vbaProject.bin") {
            self.add(
                "MACRO_DOCUMENT",
                format!("Office document with a VBA macro project ({full})"),
            );
            return;
        }
        let exts = extensions(name);
        if let Some(ext) = blocked_extension(&exts, self.blocked) {
            self.add(
                "ARCHIVE_BLOCKED_ENTRY",
                format!("archive entry {full:?} has blocked extension .{ext}"),
            );
        } else if self.policy.block_macros
            && exts
                .last()
                .is_some_and(|e| MACRO_EXTENSIONS.contains(&e.as_str()))
        {
            self.add(
                "ARCHIVE_BLOCKED_ENTRY",
                format!("archive entry {full:?} is a macro-enabled Office document"),
            );
        }
    }
}

/// The extensions of a file name, lower-cased, outermost last: `Invoice.PDF.exe.` →
/// `["pdf", "exe"]`. Directory parts, invisible format characters (zero-width spaces,
/// bidirectional overrides such as the `gpj.exe` trick) and the trailing dots and spaces
/// Windows drops are removed first.
fn extensions(name: &str) -> Vec<String> {
    let cleaned: String = name
        .chars()
        .filter(|c| !is_invisible(*c))
        .collect::<String>()
        .to_lowercase();
    let base = cleaned.rsplit(['/', '\\']).next().unwrap_or_default();
    let base = base.trim_end_matches(|c: char| c == '.' || c.is_whitespace() || c == '\0');
    base.split('.')
        .skip(1)
        .map(|e| e.trim().to_string())
        .filter(|e| !e.is_empty())
        .collect()
}

fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{180E}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{206F}'
        | '\u{FEFF}')
}

/// The blocked extension of a name, if any: the outermost one, or the one under a
/// single-file compressor (`x.exe.gz`).
fn blocked_extension<'e>(exts: &'e [String], blocked: &[String]) -> Option<&'e str> {
    let last = exts.last()?;
    if blocked.contains(last) {
        return Some(last);
    }
    if COMPRESSOR_EXTENSIONS.contains(&last.as_str()) && exts.len() >= 2 {
        let inner = &exts[exts.len() - 2];
        if blocked.contains(inner) {
            return Some(inner);
        }
    }
    None
}

/// The kind of executable the bytes start with, if any.
fn executable_kind(c: &[u8]) -> Option<&'static str> {
    if c.starts_with(b"\x7fELF") {
        return Some("ELF");
    }
    if c.starts_with(b"\xfe\xed\xfa\xce")
        || c.starts_with(b"\xfe\xed\xfa\xcf")
        || c.starts_with(b"\xce\xfa\xed\xfe")
        || c.starts_with(b"\xcf\xfa\xed\xfe")
    {
        return Some("Mach-O");
    }
    if c.starts_with(b"\xca\xfe\xba\xbe") {
        // Also the magic of Java class files: executable code either way.
        return Some("Mach-O universal / Java class");
    }
    if c.starts_with(b"MZ") {
        // A PE file: `PE\0\0` where the DOS header's e_lfanew points.
        if let Some(off) = c.get(0x3c..0x40) {
            let off = u32::from_le_bytes([off[0], off[1], off[2], off[3]]) as usize;
            if c.get(off..off.saturating_add(4)) == Some(b"PE\0\0") {
                return Some("Windows PE");
            }
        }
        // A plain DOS executable has a binary header; text that happens to start with
        // `MZ` (a CSV row for Mozambique) has not.
        let head = &c[..c.len().min(64)];
        if head.iter().any(|&b| b < 0x09 || (0x0e..0x20).contains(&b)) {
            return Some("DOS/Windows MZ");
        }
    }
    None
}

/// Does an OLE2 compound file hold a VBA project? Looks for the directory entries named
/// `VBA` or `_VBA_PROJECT` (UTF-16LE, each entry 128 bytes, aligned on 128 bytes, with the
/// name length in bytes including the terminator at offset 64), or the ASCII name
/// `_VBA_PROJECT` that the VBA `dir` stream also carries.
fn ole_has_vba(c: &[u8]) -> bool {
    const NAMES: [&str; 2] = ["VBA", "_VBA_PROJECT"];
    let utf16: Vec<Vec<u8>> = NAMES
        .iter()
        .map(|n| {
            let mut v: Vec<u8> = n.encode_utf16().flat_map(u16::to_le_bytes).collect();
            v.extend_from_slice(&[0, 0]);
            v
        })
        .collect();
    let mut offset = 512;
    while offset + 128 <= c.len() {
        let entry = &c[offset..offset + 128];
        let len = u16::from_le_bytes([entry[64], entry[65]]) as usize;
        if utf16.iter().any(|n| n.len() == len && entry.starts_with(n)) {
            return true;
        }
        offset += 128;
    }
    static ASCII: LazyLock<Regex> =
        LazyLock::new(|| Regex::new("_VBA_PROJECT").expect("valid regex"));
    ASCII.is_match(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::checks::{run_check, tags};
    use crate::filter::zip::build;

    /// A message with one base64 attachment.
    fn message(name_params: &str, content_type: &str, bytes: &[u8]) -> String {
        format!(
            "From: a@example.org\r\nTo: b@example.com\r\nSubject: files\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n\
             --XX\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n\
             --XX\r\nContent-Type: {content_type}\r\nContent-Transfer-Encoding: base64\r\n{name_params}\r\n\r\n{}\r\n--XX--\r\n",
            base64(bytes)
        )
    }

    fn base64(data: &[u8]) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s = String::new();
        for chunk in data.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    s.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    s.push('=');
                }
            }
        }
        s
    }

    fn run_with(raw: &str, config: &FilterConfig) -> Findings {
        run_check(&Attachments, raw, config)
    }

    fn run(raw: &str) -> Findings {
        run_with(raw, &FilterConfig::default())
    }

    fn disposition(name: &str) -> String {
        format!("Content-Disposition: attachment; filename=\"{name}\"")
    }

    /// A zip of the given entry names (stored, empty contents).
    fn zip(names: &[&str]) -> Vec<u8> {
        build::zip(
            &names
                .iter()
                .map(|n| build::stored(n, b""))
                .collect::<Vec<_>>(),
        )
    }

    /// A minimal OLE2 file with one directory entry of the given name at offset 512.
    fn ole(entry_name: &str) -> Vec<u8> {
        let mut c = OLE2_MAGIC.to_vec();
        c.resize(512, 0);
        let mut entry = [0u8; 128];
        let name: Vec<u8> = entry_name
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        entry[..name.len()].copy_from_slice(&name);
        entry[64..66].copy_from_slice(&((name.len() + 2) as u16).to_le_bytes());
        c.extend_from_slice(&entry);
        c.resize(2048, 0);
        c
    }

    #[test]
    fn blocked_extensions_in_many_disguises() {
        for name in [
            "setup.exe",
            "Invoice.PDF.EXE",
            "invoice.pdf.exe.",
            "invoice.pdf.exe . ",
            "report.js",
            "photo\u{202E}gpj.scr",
            "x.e\u{200B}xe",
            "dir/sub\\tool.bat",
            "payload.exe.gz",
        ] {
            let f = run(&message(
                &disposition(name),
                "application/octet-stream",
                b"harmless",
            ));
            assert_eq!(tags(&f), ["BLOCKED_EXTENSION"], "{name}");
            assert_eq!(f.demanded_verdict(), Verdict::Quarantine, "{name}");
            assert!(f.reasons[0].detail.contains("attachment"));
        }
        for name in [
            "report.pdf",
            "notes.txt",
            "www.example.com.pdf",
            "exe",
            "a.tar.gz",
        ] {
            let f = run(&message(
                &disposition(name),
                "application/octet-stream",
                b"harmless",
            ));
            assert!(f.reasons.is_empty(), "{name}: {:?}", tags(&f));
        }
    }

    #[test]
    fn rfc2231_and_encoded_word_names_are_decoded() {
        let f = run(&message(
            "Content-Disposition: attachment; filename*=UTF-8''rechnung%20m%C3%A4rz.pdf.exe",
            "application/octet-stream",
            b"x",
        ));
        assert_eq!(tags(&f), ["BLOCKED_EXTENSION"]);
        let f = run(&message(
            "Content-Disposition: attachment; filename=\"=?UTF-8?B?aW52b2ljZS5wZGYudmJz?=\"",
            "application/octet-stream",
            b"x",
        ));
        assert_eq!(tags(&f), ["BLOCKED_EXTENSION"]);
    }

    #[test]
    fn content_type_name_counts_too() {
        let f = run(&message(
            "Content-Disposition: attachment; filename=\"invoice.pdf\"",
            "application/octet-stream; name=\"invoice.pdf.exe\"",
            b"x",
        ));
        assert_eq!(tags(&f), ["BLOCKED_EXTENSION"]);
    }

    #[test]
    fn executables_by_magic_whatever_the_name() {
        let mut pe = b"MZ".to_vec();
        pe.resize(0x80, 0);
        pe[0x3c] = 0x40;
        pe[0x40..0x44].copy_from_slice(b"PE\0\0");
        let samples: [&[u8]; 6] = [
            &pe,
            b"\x7fELF\x02\x01\x01\0\0\0",
            b"\xfe\xed\xfa\xcf\0\0\0\x07",
            b"\xcf\xfa\xed\xfe\x07\0\0\x01",
            b"\xca\xfe\xba\xbe\0\0\0\x02",
            b"MZ\x90\0\x03\0\0\0\x04\0",
        ];
        for bytes in samples {
            let f = run(&message(&disposition("holiday.jpg"), "image/jpeg", bytes));
            assert_eq!(tags(&f), ["EXECUTABLE"], "{bytes:?}");
            assert_eq!(f.demanded_verdict(), Verdict::Quarantine);
        }
        // Text that starts with MZ is not an executable.
        let f = run(&message(
            &disposition("countries.csv"),
            "text/csv",
            b"MZ,Mozambique,Maputo\nNA,Namibia,Windhoek\n",
        ));
        assert!(f.reasons.is_empty(), "{:?}", tags(&f));
        // Detection can be switched off.
        let c: FilterConfig = toml::from_str("attachments.detect_executables = false").unwrap();
        let f = run_with(&message(&disposition("a.jpg"), "image/jpeg", &pe), &c);
        assert!(f.reasons.is_empty());
    }

    #[test]
    fn macro_documents_by_extension_and_content() {
        for name in ["budget.XLSM", "letter.docm", "deck.ppsm", "addin.xlam"] {
            let f = run(&message(
                &disposition(name),
                "application/octet-stream",
                b"x",
            ));
            assert_eq!(tags(&f), ["MACRO_DOCUMENT"], "{name}");
        }
        let f = run(&message(
            &disposition("report.doc"),
            "application/msword",
            &ole("VBA"),
        ));
        assert_eq!(tags(&f), ["MACRO_DOCUMENT"]);
        let f = run(&message(
            &disposition("report.xls"),
            "application/vnd.ms-excel",
            &ole("_VBA_PROJECT"),
        ));
        assert_eq!(tags(&f), ["MACRO_DOCUMENT"]);
        let f = run(&message(
            &disposition("report.doc"),
            "application/msword",
            &ole("WordDocument"),
        ));
        assert!(f.reasons.is_empty(), "{:?}", tags(&f));
        let docx = zip(&[
            "[Content_Types].xml",
            "word/document.xml",
            "word/vbaProject.bin",
        ]);
        let f = run(&message(
            &disposition("report.docx"),
            "application/zip",
            &docx,
        ));
        assert_eq!(tags(&f), ["MACRO_DOCUMENT"]);
        let clean = zip(&["[Content_Types].xml", "word/document.xml"]);
        let f = run(&message(
            &disposition("report.docx"),
            "application/zip",
            &clean,
        ));
        assert!(f.reasons.is_empty());
        // Switched off.
        let c: FilterConfig = toml::from_str("attachments.block_macros = false").unwrap();
        let f = run_with(
            &message(&disposition("a.docm"), "application/zip", &docx),
            &c,
        );
        assert!(f.reasons.is_empty());
    }

    #[test]
    fn archives_with_blocked_entries() {
        let z = zip(&["docs/", "docs/readme.txt", "docs/Invoice.pdf.EXE"]);
        let f = run(&message(&disposition("docs.zip"), "application/zip", &z));
        assert_eq!(tags(&f), ["ARCHIVE_BLOCKED_ENTRY"]);
        assert!(f.reasons[0].detail.contains("Invoice.pdf.EXE"));
        assert!(f.reasons[0].detail.contains("docs.zip"));
        let z = zip(&["a/letter.docm"]);
        let f = run(&message(&disposition("docs.zip"), "application/zip", &z));
        assert_eq!(tags(&f), ["ARCHIVE_BLOCKED_ENTRY"]);
        let z = zip(&["a.txt", "b.pdf"]);
        let f = run(&message(&disposition("docs.zip"), "application/zip", &z));
        assert!(f.reasons.is_empty());
        // Truncated and garbage zips are findings, not passes.
        for bytes in [
            &b"PK\x03\x04"[..],
            b"PK\x03\x04\xff\xff",
            b"PK\x01\x02PK\x03\x04",
        ] {
            let f = run(&message(&disposition("x.zip"), "application/zip", bytes));
            assert_eq!(tags(&f), ["ARCHIVE_MALFORMED"]);
            assert_eq!(f.demanded_verdict(), Verdict::Quarantine);
        }
    }

    #[test]
    fn action_policy_and_allow_list() {
        let c: FilterConfig = toml::from_str("attachments.action = \"reject\"").unwrap();
        let mut f = run_with(
            &message(&disposition("a.exe"), "application/octet-stream", b"x"),
            &c,
        );
        f.allowlisted = true;
        assert_eq!(f.demanded_verdict(), Verdict::Reject);
        let c: FilterConfig =
            toml::from_str("attachments.blocked_extensions = [\".PDF\"]").unwrap();
        let f = run_with(&message(&disposition("a.pdf"), "application/pdf", b"x"), &c);
        assert_eq!(tags(&f), ["BLOCKED_EXTENSION"]);
        let f = run_with(&message(&disposition("a.exe"), "application/pdf", b"x"), &c);
        assert!(f.reasons.is_empty());
    }

    #[test]
    fn no_attachments_nothing() {
        let f = run("From: a@example.org\r\nSubject: x\r\n\r\nplain\r\n");
        assert!(f.reasons.is_empty());
    }

    #[test]
    fn nested_message_attachments_are_checked() {
        let inner = message(&disposition("evil.scr"), "application/octet-stream", b"x");
        let raw = format!(
            "From: a@example.org\r\nSubject: fwd\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=\"OUT\"\r\n\r\n\
             --OUT\r\nContent-Type: text/plain\r\n\r\nforwarded\r\n\
             --OUT\r\nContent-Type: message/rfc822\r\n\r\n{inner}\r\n--OUT--\r\n"
        );
        let f = run(&raw);
        assert_eq!(tags(&f), ["BLOCKED_EXTENSION"]);
    }

    fn pe() -> Vec<u8> {
        let mut pe = b"MZ".to_vec();
        pe.resize(0x200, 0);
        pe[0x3c] = 0x80;
        pe[0x80..0x84].copy_from_slice(b"PE\0\0");
        pe
    }

    fn zipped(name: &str, zip: &[u8]) -> Findings {
        run(&message(&disposition(name), "application/zip", zip))
    }

    #[test]
    fn executables_by_magic_inside_zip_entries() {
        for entry in [
            build::stored("holiday.jpg", &pe()),
            build::deflated("holiday.jpg", &pe()),
            build::deflated("notes.txt", b"\x7fELF\x02\x01\x01\0\0\0"),
        ] {
            let f = zipped(
                "photos.zip",
                &build::zip(&[build::stored("a.txt", b"hi"), entry]),
            );
            assert_eq!(tags(&f), ["EXECUTABLE"]);
            assert!(f.reasons[0].detail.contains("photos.zip"));
            assert!(f.reasons[0].detail.contains("archive entry"));
        }
        let c: FilterConfig = toml::from_str("attachments.detect_executables = false").unwrap();
        let z = build::zip(&[build::deflated("holiday.jpg", &pe())]);
        let f = run_with(&message(&disposition("a.zip"), "application/zip", &z), &c);
        assert!(f.reasons.is_empty());
    }

    #[test]
    fn central_directory_signatures_in_an_entry_hide_nothing() {
        let z = build::zip(&[
            build::stored("readme.txt", &b"PK\x01\x02".repeat(10_001)),
            build::stored("invoice.exe", b"x"),
        ]);
        let f = zipped("docs.zip", &z);
        assert_eq!(tags(&f), ["ARCHIVE_BLOCKED_ENTRY"]);
        assert!(f.reasons[0].detail.contains("invoice.exe"));
    }

    #[test]
    fn nested_archives_are_opened_to_a_depth() {
        let inner = build::zip(&[build::stored("setup.exe", b"x")]);
        let f = zipped(
            "a.zip",
            &build::zip(&[build::deflated("inner.zip", &inner)]),
        );
        assert_eq!(tags(&f), ["ARCHIVE_BLOCKED_ENTRY"]);
        assert!(
            f.reasons[0].detail.contains("inner.zip > setup.exe"),
            "{}",
            f.reasons[0].detail
        );
        // By magic bytes, under a harmless name, in an archive without a .zip name.
        let inner = build::zip(&[build::deflated("photo.jpg", &pe())]);
        let f = zipped("a.zip", &build::zip(&[build::stored("backup.dat", &inner)]));
        assert_eq!(tags(&f), ["EXECUTABLE"]);
        // A .docx holding a VBA project, in a zip in a zip.
        let docx = build::zip(&[
            build::deflated("[Content_Types].xml", b"<Types/>"),
            build::deflated("word/vbaProject.bin", b"\xd0\xcf\x11\xe0"),
        ]);
        let middle = build::zip(&[build::deflated("report.docx", &docx)]);
        let f = zipped(
            "a.zip",
            &build::zip(&[build::deflated("files.zip", &middle)]),
        );
        assert_eq!(tags(&f), ["MACRO_DOCUMENT"]);
        assert!(
            f.reasons[0]
                .detail
                .contains("files.zip > report.docx > word/vbaProject.bin")
        );
        // A .docm by name, and an OLE2 document with a VBA project, inside a zip.
        let f = zipped(
            "a.zip",
            &build::zip(&[build::deflated("letter.docm", &docx)]),
        );
        assert_eq!(tags(&f), ["ARCHIVE_BLOCKED_ENTRY", "MACRO_DOCUMENT"]);
        let f = zipped(
            "a.zip",
            &build::zip(&[build::deflated("report.doc", &ole("VBA"))]),
        );
        assert_eq!(tags(&f), ["MACRO_DOCUMENT"]);
        assert!(f.reasons[0].detail.contains("report.doc"));
        let f = zipped(
            "a.zip",
            &build::zip(&[build::deflated("report.doc", &ole("WordDocument"))]),
        );
        assert!(f.reasons.is_empty(), "{:?}", tags(&f));
        // Deeper than the limit: a finding, whatever is inside.
        let mut z = build::zip(&[build::stored("notes.txt", b"harmless")]);
        for i in 0..MAX_ARCHIVE_DEPTH {
            let f = zipped("a.zip", &z);
            assert!(f.reasons.is_empty(), "{i} deep: {:?}", tags(&f));
            z = build::zip(&[build::deflated(&format!("level{i}.zip"), &z)]);
        }
        let f = zipped("a.zip", &z);
        assert_eq!(tags(&f), ["SCAN_LIMIT"]);
        assert!(f.reasons[0].detail.contains("nested deeper"));
    }

    #[test]
    fn what_cannot_be_inspected_fails_closed_whatever_the_action() {
        let accept: FilterConfig = toml::from_str("attachments.action = \"accept\"").unwrap();
        let mut encrypted = build::stored("invoice.pdf", b"\x01\x02\x03 ciphertext");
        encrypted.flags = 1;
        let mut bzip2 = build::stored("a.txt", b"BZh91AY");
        bzip2.method = Some(12);
        let mut local = build::stored("invoice.pdf", b"%PDF");
        local.local_name = Some("invoice.exe".into());
        let mut zip64 = build::zip(&[build::stored("a.txt", b"x")]);
        let n = zip64.len();
        zip64[n - 6..n - 2].copy_from_slice(&u32::MAX.to_le_bytes());
        let many: Vec<build::E> = (0..=zip::MAX_ENTRIES)
            .map(|i| build::stored(&i.to_string(), b""))
            .collect();
        for (z, tag) in [
            (build::zip(&[encrypted]), "ARCHIVE_ENCRYPTED"),
            (build::zip(&[bzip2]), "ARCHIVE_UNSCANNABLE"),
            (zip64, "ARCHIVE_UNSCANNABLE"),
            (build::zip(&[local]), "ARCHIVE_MALFORMED"),
            (build::zip(&many), "SCAN_LIMIT"),
            (
                build::zip(&[build::deflated(
                    "bomb.zip",
                    &vec![0; zip::MAX_ENTRY_BYTES + 1],
                )]),
                "SCAN_LIMIT",
            ),
            (b"PK\x03\x04 truncated".to_vec(), "ARCHIVE_MALFORMED"),
        ] {
            for config in [FilterConfig::default(), accept.clone()] {
                let f = run_with(
                    &message(&disposition("a.zip"), "application/zip", &z),
                    &config,
                );
                assert_eq!(tags(&f), [tag]);
                assert_eq!(f.demanded_verdict(), Verdict::Quarantine, "{tag}");
                assert!(f.reasons[0].detail.starts_with("attachment \"a.zip\": "));
            }
        }
        // A file named .zip that is no zip at all.
        let f = zipped("a.zip", b"just text");
        assert_eq!(tags(&f), ["ARCHIVE_MALFORMED"]);
        // ... while a text file that is not called a zip is not read as one.
        let f = run(&message(&disposition("a.txt"), "text/plain", b"just text"));
        assert!(f.reasons.is_empty());
    }

    #[test]
    fn unicode_path_names_are_judged() {
        let mut e = build::stored("readme.txt", b"harmless");
        let name = b"invoice.exe";
        e.extra = [
            &[0x75, 0x70][..],
            &((5 + name.len()) as u16).to_le_bytes(),
            &[1, 0, 0, 0, 0],
            name,
        ]
        .concat();
        let f = zipped("a.zip", &build::zip(&[e]));
        assert_eq!(tags(&f), ["ARCHIVE_BLOCKED_ENTRY"]);
    }

    /// `inner` attached to a message as `message/rfc822`, base64-encoded or as it is.
    fn attach_message(inner: &str, base64_encoded: bool) -> String {
        let (cte, body) = if base64_encoded {
            (
                "Content-Transfer-Encoding: base64\r\n",
                base64(inner.as_bytes()),
            )
        } else {
            ("", inner.to_string())
        };
        format!(
            "From: a@example.org\r\nSubject: fwd\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=\"OUT\"\r\n\r\n\
             --OUT\r\nContent-Type: text/plain\r\n\r\nforwarded\r\n\
             --OUT\r\nContent-Type: message/rfc822\r\n{cte}\r\n{body}\r\n--OUT--\r\n"
        )
    }

    #[test]
    fn attached_messages_past_the_depth_limit_are_findings() {
        let exe = message(&disposition("evil.scr"), "application/octet-stream", b"x");
        let nest = |depth: usize, encoded: bool| {
            (0..depth).fold(exe.clone(), |m, _| attach_message(&m, encoded))
        };
        let f = run(&nest(crate::mail::MAX_MESSAGE_DEPTH, false));
        assert_eq!(tags(&f), ["BLOCKED_EXTENSION"]);
        let f = run(&nest(crate::mail::MAX_MESSAGE_DEPTH + 1, false));
        assert_eq!(tags(&f), ["SCAN_LIMIT"]);
        assert!(f.reasons[0].detail.contains("over the limit"));
        assert_eq!(f.demanded_verdict(), Verdict::Quarantine);
        // mail-parser opens base64 attached messages 3 levels deep, then leaves them as
        // bytes.
        let f = run(&nest(3, true));
        assert_eq!(tags(&f), ["BLOCKED_EXTENSION"]);
        let f = run(&nest(4, true));
        assert_eq!(tags(&f), ["SCAN_LIMIT"]);
        assert!(f.reasons[0].detail.contains("not parsed"));
    }

    #[test]
    fn mail_parser_has_no_part_header_or_multipart_depth_limit() {
        // Multiparts nested 2,000 deep: mail-parser keeps its own stack, no recursion.
        let depth = 2000;
        let mut raw = String::from("From: a@example.org\r\nSubject: deep\r\nMIME-Version: 1.0\r\n");
        for i in 0..depth {
            raw.push_str(&format!(
                "Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n"
            ));
        }
        raw.push_str("Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"setup.exe\"\r\n\r\nx\r\n");
        for i in (0..depth).rev() {
            raw.push_str(&format!("--b{i}--\r\n"));
        }
        assert_eq!(tags(&run(&raw)), ["BLOCKED_EXTENSION"]);
        // 20,000 parts, the executable last.
        let mut raw = String::from(
            "From: a@example.org\r\nSubject: parts\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n",
        );
        for i in 0..20_000 {
            raw.push_str(&format!(
                "--b\r\nContent-Type: text/plain; name=\"n{i}.txt\"\r\n\r\nx\r\n"
            ));
        }
        raw.push_str("--b\r\nContent-Type: application/octet-stream; name=\"setup.exe\"\r\n\r\nx\r\n--b--\r\n");
        let f = run(&raw);
        assert_eq!(tags(&f), ["BLOCKED_EXTENSION"]);
        // 50,000 header fields before the attachment's.
        let mut raw = String::from("From: a@example.org\r\nSubject: headers\r\n");
        for i in 0..50_000 {
            raw.push_str(&format!("X-Filler-{i}: {i}\r\n"));
        }
        raw.push_str("MIME-Version: 1.0\r\nContent-Type: application/octet-stream; name=\"setup.exe\"\r\nContent-Disposition: attachment\r\n\r\nx\r\n");
        let f = run(&raw);
        assert_eq!(tags(&f), ["BLOCKED_EXTENSION"]);
    }
}
