//! The attachment policy: blocked extensions (also hidden behind a decoy such as
//! `invoice.pdf.exe`, or inside `x.exe.gz`), executables by magic bytes whatever their name,
//! macro-enabled Office documents (by extension, by the VBA storage of an OLE2 file, by a
//! `vbaProject.bin` entry of an OOXML zip) and zip archives holding blocked names. Each hit
//! demands the configured `attachments.action`; the allow list never lifts it.
//!
//! Attachment bytes are only read where a format needs them: the first bytes for the magic
//! numbers, the OLE2 directory entries of OLE2 files, the entry names of zip files. Nothing is
//! decompressed, so an archive nested in an archive, or a zip with encrypted names, is not
//! looked into.

use std::sync::LazyLock;

use regex::bytes::Regex;

use crate::config::{AttachmentPolicy, FilterConfig};
use crate::filter::{Check, Findings};
use crate::mail::{Attachment, Mail};

pub struct Attachments;

const NAME: &str = "attachments";

/// Extensions of macro-enabled Office documents.
const MACRO_EXTENSIONS: &[&str] = &[
    "docm", "dotm", "xlsm", "xltm", "xlam", "pptm", "potm", "ppsm", "ppam", "sldm",
];

/// Single-file compressors: `x.exe.gz` unpacks to `x.exe`, so the extension before them
/// counts as well.
const COMPRESSOR_EXTENSIONS: &[&str] = &["gz", "bz2", "xz", "z", "lz", "lzma", "zst", "br"];

/// How many zip headers are looked at in one attachment, at most.
const MAX_ZIP_ENTRIES: usize = 10_000;

const OLE2_MAGIC: &[u8] = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1";
const ZIP_LOCAL: &[u8] = b"PK\x03\x04";

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
        for att in mail.attachments() {
            for (tag, detail) in inspect(&att, policy, &blocked) {
                findings.demand(NAME, tag, detail, policy.action.verdict());
            }
        }
    }
}

/// The findings for one attachment: at most one per tag.
fn inspect(
    att: &Attachment,
    policy: &AttachmentPolicy,
    blocked: &[String],
) -> Vec<(&'static str, String)> {
    let label = att.name.unwrap_or("(unnamed)");
    let mut out: Vec<(&'static str, String)> = Vec::new();
    let mut add = |tag: &'static str, detail: String| {
        if !out.iter().any(|(t, _)| *t == tag) {
            out.push((tag, format!("attachment {label:?}: {detail}")));
        }
    };

    for name in [att.name, att.other_name].into_iter().flatten() {
        let exts = extensions(name);
        if let Some(ext) = blocked_extension(&exts, blocked) {
            add("BLOCKED_EXTENSION", format!("blocked extension .{ext}"));
        }
        if policy.block_macros
            && let Some(ext) = exts
                .last()
                .filter(|e| MACRO_EXTENSIONS.contains(&e.as_str()))
        {
            add(
                "MACRO_DOCUMENT",
                format!("macro-enabled Office extension .{ext}"),
            );
        }
    }

    let c = att.contents;
    if policy.detect_executables
        && let Some(kind) = executable_kind(c)
    {
        add(
            "EXECUTABLE",
            format!("{kind} executable ({})", att.content_type),
        );
    }
    if policy.block_macros && c.starts_with(OLE2_MAGIC) && ole_has_vba(c) {
        add(
            "MACRO_DOCUMENT",
            "OLE2 document with a VBA macro project".into(),
        );
    }
    if c.starts_with(ZIP_LOCAL) {
        for entry in zip_entry_names(c) {
            if entry.ends_with('/') {
                continue;
            }
            let base = entry.rsplit(['/', '\\']).next().unwrap_or(&entry);
            if policy.block_macros && base.eq_ignore_ascii_case("vbaProject.bin") {
                add(
                    "MACRO_DOCUMENT",
                    format!("Office document with a VBA macro project ({entry})"),
                );
                continue;
            }
            let exts = extensions(&entry);
            if let Some(ext) = blocked_extension(&exts, blocked) {
                add(
                    "ARCHIVE_BLOCKED_ENTRY",
                    format!("archive entry {entry:?} has blocked extension .{ext}"),
                );
            } else if policy.block_macros
                && exts
                    .last()
                    .is_some_and(|e| MACRO_EXTENSIONS.contains(&e.as_str()))
            {
                add(
                    "ARCHIVE_BLOCKED_ENTRY",
                    format!("archive entry {entry:?} is a macro-enabled Office document"),
                );
            }
        }
    }
    out
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

/// File names in the local file headers (`PK\3\4`, name length at 26, name at 30) and the
/// central directory (`PK\1\2`, name length at 28, name at 46) of a zip file. The names are
/// stored uncompressed, so nothing needs unpacking.
fn zip_entry_names(c: &[u8]) -> Vec<String> {
    static SIG: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"(?-u)PK\x03\x04|PK\x01\x02").expect("valid regex"));
    let mut out: Vec<String> = Vec::new();
    for m in SIG.find_iter(c).take(MAX_ZIP_ENTRIES) {
        let i = m.start();
        let (len_at, name_at) = if c[i + 2] == 3 { (26, 30) } else { (28, 46) };
        let Some(len) = c.get(i + len_at..i + len_at + 2) else {
            continue;
        };
        let len = u16::from_le_bytes([len[0], len[1]]) as usize;
        if len == 0 || len > 1024 {
            continue;
        }
        let Some(name) = c.get(i + name_at..i + name_at + len) else {
            continue;
        };
        let name = String::from_utf8_lossy(name).into_owned();
        if !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::checks::{run_check, tags};
    use crate::model::Verdict;

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

    /// A minimal zip with the given entry names (stored, empty contents).
    fn zip(names: &[&str]) -> Vec<u8> {
        let mut z = Vec::new();
        for n in names {
            z.extend_from_slice(b"PK\x03\x04");
            z.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // version .. mod date
            z.extend_from_slice(&[0; 12]); // crc, sizes
            z.extend_from_slice(&(n.len() as u16).to_le_bytes());
            z.extend_from_slice(&[0, 0]);
            z.extend_from_slice(n.as_bytes());
        }
        z.extend_from_slice(b"PK\x05\x06");
        z.extend_from_slice(&[0; 18]);
        z
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
        // Truncated and garbage zips do not panic.
        for bytes in [
            &b"PK\x03\x04"[..],
            b"PK\x03\x04\xff\xff",
            b"PK\x01\x02PK\x03\x04",
        ] {
            let f = run(&message(&disposition("x.zip"), "application/zip", bytes));
            assert!(f.reasons.is_empty());
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
}
