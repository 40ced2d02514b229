//! A bounded reader of zip archives for the attachment policy: the entries as the central
//! directory lists them, cross-checked with their local headers, and their contents
//! inflated under caps. Nothing here trusts a signature found by scanning: the directory is
//! found from the end-of-central-directory record at the end of the file, as extractors
//! find it, and every byte the entries, the directory and the end record do not account
//! for is searched for zip signatures, so that an entry an extractor might see but the
//! directory does not list is a [`Problem`] rather than a blind spot.
//!
//! Whatever cannot be read completely is a [`Problem`]: the caller turns each into a finding
//! that holds the message. ZIP64 and multi-volume archives are not read (an attachment is
//! at most the message size, far below what needs ZIP64).

use std::borrow::Cow;
use std::collections::HashSet;

use miniz_oxide::inflate::{TINFLStatus, decompress_to_vec_with_limit};

/// Entries in one archive, at most; an archive with more is not read.
pub const MAX_ENTRIES: usize = 10_000;
/// Bytes of entry names (the directory's and the Unicode-path extra fields') in one
/// archive, at most.
pub const MAX_NAME_BYTES: usize = 1 << 20;
/// Bytes inflated from one entry whose whole contents are needed (a nested archive, an
/// OLE2 document), at most.
pub const MAX_ENTRY_BYTES: usize = 8 << 20;
/// Bytes inflated for one message, over every entry of every archive, at most.
pub const MAX_INFLATED_BYTES: usize = 64 << 20;
/// Bytes of an entry read to recognise what it is (magic numbers, a PE header, a nested
/// archive or OLE2 file).
pub const PREFIX_BYTES: usize = 4096;

const LOCAL: &[u8; 4] = b"PK\x03\x04";
const CENTRAL: &[u8; 4] = b"PK\x01\x02";
const END: &[u8; 4] = b"PK\x05\x06";
const DESCRIPTOR: &[u8; 4] = b"PK\x07\x08";
const ZIP64_LOCATOR: &[u8; 4] = b"PK\x06\x07";
/// The end record's fixed part; a comment of up to 65,535 bytes follows it.
const END_LEN: usize = 22;

/// Why an archive, or an entry of it, could not be read completely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The structure is broken or self-contradictory: extractors may see other entries
    /// than this reader.
    Malformed(String),
    /// Valid, but in a form this reader does not open (ZIP64, several volumes, a compression
    /// method other than stored and deflate).
    Unscannable(String),
    /// A cap was reached.
    Limit(String),
}

/// One entry as the central directory lists it.
#[derive(Debug)]
pub struct Entry<'a> {
    /// The name (UTF-8, or read as UTF-8 with replacement characters).
    pub name: String,
    /// Names from Info-ZIP Unicode-path extra fields, which 7-Zip and Info-ZIP extract
    /// under instead of `name`.
    pub other_names: Vec<String>,
    pub flags: u16,
    pub method: u16,
    /// The stored (compressed) bytes.
    pub data: &'a [u8],
    /// The uncompressed size the directory declares.
    pub size: u64,
}

impl Entry<'_> {
    /// Encrypted: traditional PKWARE encryption, strong encryption, or WinZip AES.
    pub fn is_encrypted(&self) -> bool {
        self.flags & 0x0001 != 0 || self.flags & 0x0040 != 0 || self.method == 99
    }

    pub fn is_directory(&self) -> bool {
        self.name.ends_with('/') && self.data.is_empty() && self.size == 0
    }
}

/// An archive's entries and the problems met reading it (none for a well-formed archive).
#[derive(Debug, Default)]
pub struct Archive<'a> {
    pub entries: Vec<Entry<'a>>,
    pub problems: Vec<Problem>,
}

/// Bytes still to be inflated for one message.
#[derive(Debug)]
pub struct Budget {
    left: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            left: MAX_INFLATED_BYTES,
        }
    }
}

fn u16_at(c: &[u8], i: usize) -> Option<u16> {
    c.get(i..i.checked_add(2)?)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
}

fn u32_at(c: &[u8], i: usize) -> Option<u32> {
    c.get(i..i.checked_add(4)?)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Where the end record is: the last `PK\5\6` in the final 64 KiB whose comment ends the
/// file exactly. `Err` when there is none, saying whether a record was there at all.
fn find_end(c: &[u8]) -> Result<usize, Problem> {
    if c.len() < END_LEN {
        return Err(Problem::Malformed(format!(
            "{} bytes: too short for a zip archive",
            c.len()
        )));
    }
    let last = c.len() - END_LEN;
    let first = last.saturating_sub(u16::MAX as usize);
    let mut seen = false;
    for i in (first..=last).rev() {
        if &c[i..i + 4] == END {
            seen = true;
            if u16_at(c, i + 20).map(usize::from) == Some(c.len() - i - END_LEN) {
                return Ok(i);
            }
        }
    }
    Err(Problem::Malformed(if seen {
        "the end-of-central-directory record does not end the file (trailing bytes)".into()
    } else {
        "no end-of-central-directory record".into()
    }))
}

/// Does the content look like a zip archive: a zip signature at the start, or an end record
/// at the end whose central directory is where it says (an archive appended to other data,
/// as self-extracting and polyglot files are)?
pub fn looks_like_zip(c: &[u8]) -> bool {
    if c.starts_with(LOCAL) || c.starts_with(END) {
        return true;
    }
    let Ok(end) = find_end(c) else {
        return false;
    };
    let (Some(size), Some(offset)) = (u32_at(c, end + 12), u32_at(c, end + 16)) else {
        return false;
    };
    let (size, offset) = (size as usize, offset as usize);
    offset.checked_add(size) == Some(end) && c.get(offset..offset + 4) == Some(CENTRAL)
}

/// Names in the Info-ZIP Unicode-path extra fields (0x7075); `Err` for a ZIP64 field.
fn extra_names(extra: &[u8], names: &mut Vec<String>) -> Result<(), Problem> {
    let mut i = 0;
    while i + 4 <= extra.len() {
        let id = u16::from_le_bytes([extra[i], extra[i + 1]]);
        let len = usize::from(u16::from_le_bytes([extra[i + 2], extra[i + 3]]));
        let Some(data) = extra.get(i + 4..i + 4 + len) else {
            // A truncated extra field: extractors stop reading it as well.
            break;
        };
        match id {
            0x0001 => {
                return Err(Problem::Unscannable("a ZIP64 extra field".into()));
            }
            0x7075 if data.len() > 5 => {
                let name = String::from_utf8_lossy(&data[5..]).into_owned();
                if !names.contains(&name) {
                    names.push(name);
                }
            }
            _ => {}
        }
        i += 4 + len;
    }
    Ok(())
}

/// Every place in `range` of `c` where a zip signature starts: the central directory does
/// not account for those bytes, so a signature there is an entry or a directory that
/// another reader may take for the real one.
fn stray_signature(c: &[u8], start: usize, end: usize) -> Option<Problem> {
    let region = c.get(start..end.min(c.len()))?;
    let at = region.windows(4).position(|w| {
        w[0] == b'P'
            && w[1] == b'K'
            && matches!((w[2], w[3]), (1, 2) | (3, 4) | (5, 6) | (6, 6) | (6, 7))
    })?;
    let what = match region[at + 2] {
        3 => "a local file header the central directory does not list",
        1 => "a central-directory entry outside the central directory",
        _ => "a second end-of-central-directory record",
    };
    Some(Problem::Malformed(format!(
        "{what} at offset {}",
        start + at
    )))
}

/// Reads the archive: its central directory from the end record, each entry checked
/// against its local header. Problems are collected; entries read before a fatal one are
/// kept, so that their names are still judged.
pub fn read(c: &[u8]) -> Archive<'_> {
    let mut archive = Archive::default();
    if let Err(problem) = read_into(c, &mut archive) {
        archive.problems.push(problem);
    }
    archive
}

fn read_into<'a>(c: &'a [u8], archive: &mut Archive<'a>) -> Result<(), Problem> {
    let end = find_end(c)?;
    let field = |at: usize| u16_at(c, end + at).unwrap_or_default();
    let (disk, cd_disk, on_disk, total) = (field(4), field(6), field(8), field(10));
    let cd_size = u32_at(c, end + 12).unwrap_or_default();
    let cd_offset = u32_at(c, end + 16).unwrap_or_default();
    if total == u16::MAX
        || cd_size == u32::MAX
        || cd_offset == u32::MAX
        || (end >= 20 && &c[end - 20..end - 16] == ZIP64_LOCATOR)
    {
        return Err(Problem::Unscannable("a ZIP64 archive".into()));
    }
    if disk != 0 || cd_disk != 0 || on_disk != total {
        return Err(Problem::Unscannable("an archive of several volumes".into()));
    }
    let total = usize::from(total);
    if total > MAX_ENTRIES {
        return Err(Problem::Limit(format!(
            "{total} entries, over the limit of {MAX_ENTRIES}"
        )));
    }
    let (cd_start, cd_end) = (cd_offset as usize, cd_offset as usize + cd_size as usize);
    if cd_end > end {
        return Err(Problem::Malformed(format!(
            "the central directory ({cd_size} bytes at offset {cd_offset}) overlaps its end record"
        )));
    }

    // The central directory: exactly `total` entries filling exactly `cd_size` bytes.
    let mut locals: Vec<usize> = Vec::with_capacity(total);
    let mut sizes: Vec<usize> = Vec::with_capacity(total);
    let mut raw_names: Vec<&[u8]> = Vec::with_capacity(total);
    let mut name_bytes = 0usize;
    let mut pos = cd_start;
    for n in 0..total {
        let bad = || {
            Problem::Malformed(format!(
                "central-directory entry {} of {total} is truncated or missing",
                n + 1
            ))
        };
        if pos + 46 > cd_end || &c[pos..pos + 4] != CENTRAL {
            return Err(bad());
        }
        let h16 = |at: usize| u16_at(c, pos + at).unwrap_or_default();
        let h32 = |at: usize| u32_at(c, pos + at).unwrap_or_default();
        let (flags, method) = (h16(8), h16(10));
        let (csize, usize_, local) = (h32(20), h32(24), h32(42));
        let (name_len, extra_len, comment_len) = (
            usize::from(h16(28)),
            usize::from(h16(30)),
            usize::from(h16(32)),
        );
        let next = pos + 46 + name_len + extra_len + comment_len;
        if next > cd_end {
            return Err(bad());
        }
        let raw_name = &c[pos + 46..pos + 46 + name_len];
        let mut other_names = Vec::new();
        extra_names(
            &c[pos + 46 + name_len..pos + 46 + name_len + extra_len],
            &mut other_names,
        )?;
        name_bytes += name_len + other_names.iter().map(String::len).sum::<usize>();
        if name_bytes > MAX_NAME_BYTES {
            return Err(Problem::Limit(format!(
                "entry names of more than {MAX_NAME_BYTES} bytes in all"
            )));
        }
        if csize == u32::MAX || usize_ == u32::MAX || local == u32::MAX {
            return Err(Problem::Unscannable("a ZIP64 entry".into()));
        }
        if h16(34) != 0 {
            return Err(Problem::Unscannable("an archive of several volumes".into()));
        }
        archive.entries.push(Entry {
            name: String::from_utf8_lossy(raw_name).into_owned(),
            other_names,
            flags,
            method,
            data: &[],
            size: u64::from(usize_),
        });
        locals.push(local as usize);
        raw_names.push(raw_name);
        sizes.push(csize as usize);
        pos = next;
    }
    if pos != cd_end {
        return Err(Problem::Malformed(format!(
            "the central directory holds {} bytes more than its {total} entries",
            cd_end - pos
        )));
    }

    // Two entries of one name: extractors disagree on which one wins.
    let mut names: HashSet<&str> = HashSet::with_capacity(total);
    for e in &archive.entries {
        if !names.insert(e.name.as_str()) {
            archive.problems.push(Problem::Malformed(format!(
                "two entries named {:?}",
                e.name
            )));
            break;
        }
    }

    // Each entry's local header: where its data is, and the same name and method.
    let mut spans: Vec<(usize, usize, usize)> = Vec::with_capacity(total);
    for (i, entry) in archive.entries.iter_mut().enumerate() {
        let off = locals[i];
        let name = &entry.name;
        if off + 30 > cd_start || &c[off..off + 4] != LOCAL {
            return Err(Problem::Malformed(format!(
                "entry {name:?}: no local header at offset {off}"
            )));
        }
        let lflags = u16_at(c, off + 6).unwrap_or_default();
        let lmethod = u16_at(c, off + 8).unwrap_or_default();
        let lname_len = usize::from(u16_at(c, off + 26).unwrap_or_default());
        let lextra_len = usize::from(u16_at(c, off + 28).unwrap_or_default());
        let data_start = off + 30 + lname_len + lextra_len;
        let data_end = data_start + sizes[i];
        if data_end > cd_start {
            return Err(Problem::Malformed(format!(
                "entry {name:?}: its data runs past the start of the central directory"
            )));
        }
        let lname = &c[off + 30..off + 30 + lname_len];
        if lname != raw_names[i] {
            return Err(Problem::Malformed(format!(
                "entry {name:?}: its local header names it {:?}",
                String::from_utf8_lossy(lname)
            )));
        }
        if lmethod != entry.method || (lflags & 1) != (entry.flags & 1) {
            return Err(Problem::Malformed(format!(
                "entry {name:?}: its local header gives another compression method or encryption"
            )));
        }
        extra_names(&c[off + 30 + lname_len..data_start], &mut entry.other_names)?;
        entry.data = &c[data_start..data_end];
        let mut covered = data_end;
        if entry.flags & 0x0008 != 0 {
            let len = if c.get(data_end..data_end + 4) == Some(DESCRIPTOR) {
                16
            } else {
                12
            };
            if data_end + len <= cd_start {
                covered = data_end + len;
            }
        }
        spans.push((off, covered, i));
    }

    // No two entries share bytes (the overlapping-entries zip bomb), and whatever lies
    // between them, before them, and after the directory holds no zip signature.
    spans.sort_unstable();
    let mut at = 0;
    for w in spans.windows(2) {
        let ((_, end_a, a), (start_b, _, b)) = (w[0], w[1]);
        if start_b < end_a {
            return Err(Problem::Malformed(format!(
                "entries {:?} and {:?} overlap",
                archive.entries[a].name, archive.entries[b].name
            )));
        }
    }
    for &(start, covered, _) in &spans {
        if let Some(p) = stray_signature(c, at, start) {
            return Err(p);
        }
        at = covered;
    }
    for (from, to) in [(at, cd_start), (cd_end, end), (end + END_LEN, c.len())] {
        if let Some(p) = stray_signature(c, from, to) {
            return Err(p);
        }
    }
    Ok(())
}

/// Inflates at most `max` bytes of a deflated entry. `Ok((bytes, complete))`.
fn inflate(entry: &Entry, max: usize) -> Result<(Vec<u8>, bool), Problem> {
    match decompress_to_vec_with_limit(entry.data, max) {
        Ok(out) => Ok((out, true)),
        Err(e) if e.status == TINFLStatus::HasMoreOutput => Ok((e.output, false)),
        Err(e) => Err(Problem::Malformed(format!(
            "entry {:?}: its deflate data is corrupt ({:?})",
            entry.name, e.status
        ))),
    }
}

fn charge(budget: &mut Budget, n: usize) -> Result<(), Problem> {
    budget.left = budget.left.checked_sub(n).ok_or_else(|| {
        Problem::Limit(format!(
            "more than {MAX_INFLATED_BYTES} bytes to inflate in one message"
        ))
    })?;
    Ok(())
}

fn unsupported(entry: &Entry) -> Problem {
    let method = match entry.method {
        9 => "deflate64",
        12 => "bzip2",
        14 => "lzma",
        93 => "zstandard",
        95 => "xz",
        98 => "ppmd",
        _ => "another",
    };
    Problem::Unscannable(format!(
        "entry {:?}: compressed with {method} (method {}), which is not read",
        entry.name, entry.method
    ))
}

/// The first [`PREFIX_BYTES`] of an entry's contents (fewer for a shorter entry).
pub fn prefix<'a>(entry: &Entry<'a>, budget: &mut Budget) -> Result<Cow<'a, [u8]>, Problem> {
    match entry.method {
        0 => Ok(Cow::Borrowed(
            &entry.data[..entry.data.len().min(PREFIX_BYTES)],
        )),
        8 => {
            charge(budget, PREFIX_BYTES)?;
            let (out, _) = inflate(entry, PREFIX_BYTES)?;
            budget.left += PREFIX_BYTES - out.len();
            Ok(Cow::Owned(out))
        }
        _ => Err(unsupported(entry)),
    }
}

/// An entry's whole contents, inflated to at most [`MAX_ENTRY_BYTES`].
pub fn contents<'a>(entry: &Entry<'a>, budget: &mut Budget) -> Result<Cow<'a, [u8]>, Problem> {
    match entry.method {
        0 => {
            if entry.data.len() as u64 != entry.size {
                return Err(Problem::Malformed(format!(
                    "stored entry {:?} holds {} bytes, its directory entry says {}",
                    entry.name,
                    entry.data.len(),
                    entry.size
                )));
            }
            Ok(Cow::Borrowed(entry.data))
        }
        8 => {
            let max = MAX_ENTRY_BYTES.min(budget.left);
            let (out, complete) = inflate(entry, max)?;
            if !complete {
                return Err(Problem::Limit(if max == MAX_ENTRY_BYTES {
                    format!(
                        "entry {:?} inflates to more than {MAX_ENTRY_BYTES} bytes",
                        entry.name
                    )
                } else {
                    format!("more than {MAX_INFLATED_BYTES} bytes to inflate in one message")
                }));
            }
            charge(budget, out.len())?;
            if out.len() as u64 != entry.size {
                return Err(Problem::Malformed(format!(
                    "entry {:?} inflates to {} bytes, its directory entry says {}",
                    entry.name,
                    out.len(),
                    entry.size
                )));
            }
            Ok(Cow::Owned(out))
        }
        _ => Err(unsupported(entry)),
    }
}

/// Zip archives for the tests: well-formed, or damaged on purpose through the fields.
#[cfg(test)]
pub(crate) mod build {
    /// One entry to write.
    #[derive(Clone)]
    pub struct E {
        pub name: String,
        pub data: Vec<u8>,
        pub deflate: bool,
        pub flags: u16,
        /// The method written, when not the one `deflate` implies.
        pub method: Option<u16>,
        /// The name the local header gives, when not `name`.
        pub local_name: Option<String>,
        /// The extra field, in the local header and the directory.
        pub extra: Vec<u8>,
    }

    pub fn stored(name: &str, data: &[u8]) -> E {
        E {
            name: name.into(),
            data: data.to_vec(),
            deflate: false,
            flags: 0,
            method: None,
            local_name: None,
            extra: Vec::new(),
        }
    }

    pub fn deflated(name: &str, data: &[u8]) -> E {
        E {
            deflate: true,
            ..stored(name, data)
        }
    }

    pub fn zip(entries: &[E]) -> Vec<u8> {
        zip_with(entries, b"")
    }

    /// The archive with an end-record comment.
    pub fn zip_with(entries: &[E], comment: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut central = Vec::new();
        for e in entries {
            let body = if e.deflate {
                miniz_oxide::deflate::compress_to_vec(&e.data, 6)
            } else {
                e.data.clone()
            };
            let method = e.method.unwrap_or(if e.deflate { 8 } else { 0 });
            let offset = out.len() as u32;
            let local_name = e.local_name.as_deref().unwrap_or(&e.name);
            let common = |v: &mut Vec<u8>, name_len: usize| {
                v.extend_from_slice(&e.flags.to_le_bytes());
                v.extend_from_slice(&method.to_le_bytes());
                v.extend_from_slice(&[0; 4]); // time, date
                v.extend_from_slice(&[0; 4]); // crc
                v.extend_from_slice(&(body.len() as u32).to_le_bytes());
                v.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
                v.extend_from_slice(&(name_len as u16).to_le_bytes());
                v.extend_from_slice(&(e.extra.len() as u16).to_le_bytes());
            };
            out.extend_from_slice(b"PK\x03\x04\x14\x00");
            common(&mut out, local_name.len());
            out.extend_from_slice(local_name.as_bytes());
            out.extend_from_slice(&e.extra);
            out.extend_from_slice(&body);
            central.extend_from_slice(b"PK\x01\x02\x14\x00\x14\x00");
            common(&mut central, e.name.len());
            central.extend_from_slice(&[0; 8]); // comment length, disk, attributes
            central.extend_from_slice(&[0; 2]);
            central.extend_from_slice(&offset.to_le_bytes());
            central.extend_from_slice(e.name.as_bytes());
            central.extend_from_slice(&e.extra);
        }
        let cd_offset = out.len() as u32;
        out.extend_from_slice(&central);
        out.extend_from_slice(b"PK\x05\x06\0\0\0\0");
        let n = (entries.len() as u16).to_le_bytes();
        out.extend_from_slice(&n);
        out.extend_from_slice(&n);
        out.extend_from_slice(&(central.len() as u32).to_le_bytes());
        out.extend_from_slice(&cd_offset.to_le_bytes());
        out.extend_from_slice(&(comment.len() as u16).to_le_bytes());
        out.extend_from_slice(comment);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;

    fn problems(c: &[u8]) -> Vec<Problem> {
        read(c).problems
    }

    fn malformed(c: &[u8], part: &str) {
        let p = problems(c);
        assert!(
            p.iter()
                .any(|p| matches!(p, Problem::Malformed(d) if d.contains(part))),
            "expected a malformed archive ({part}): {p:?}"
        );
    }

    #[test]
    fn a_well_formed_archive_reads_completely() {
        let z = zip(&[
            stored("a.txt", b"hello"),
            deflated("dir/b.txt", &b"abc".repeat(1000)),
            stored("dir/", b""),
        ]);
        let a = read(&z);
        assert!(a.problems.is_empty(), "{:?}", a.problems);
        let names: Vec<&str> = a.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a.txt", "dir/b.txt", "dir/"]);
        assert!(a.entries[2].is_directory());
        let mut budget = Budget::default();
        assert_eq!(&*contents(&a.entries[0], &mut budget).unwrap(), b"hello");
        let b = contents(&a.entries[1], &mut budget).unwrap();
        assert_eq!(b.len(), 3000);
        assert_eq!(
            prefix(&a.entries[1], &mut budget).unwrap().len(),
            PREFIX_BYTES.min(3000)
        );
        assert!(looks_like_zip(&z));
        assert!(!looks_like_zip(b"%PDF-1.4\n"));
        assert!(problems(&zip(&[])).is_empty());
    }

    #[test]
    fn signatures_inside_entries_and_comments_do_not_matter() {
        let padding = b"PK\x01\x02".repeat(10_001);
        let z = zip_with(
            &[stored("readme.txt", &padding), stored("invoice.exe", b"x")],
            &b"PK\x01\x02".repeat(100),
        );
        let a = read(&z);
        assert_eq!(a.entries.len(), 2);
        assert_eq!(a.entries[1].name, "invoice.exe");
    }

    #[test]
    fn local_headers_must_agree_with_the_directory() {
        let mut e = stored("invoice.pdf", b"%PDF");
        e.local_name = Some("invoice.exe".into());
        malformed(&zip(&[e]), "local header names it");
        let mut e = stored("a.txt", b"abc");
        e.method = Some(0);
        let mut z = zip(&[e]);
        z[8] = 8; // the local header says deflate
        malformed(&z, "another compression method");
        // A local header no directory entry points at, between two entries.
        let a = zip(&[stored("a.txt", b"1")]);
        let local_a = &a[..30 + 5 + 1];
        let mut z = Vec::new();
        z.extend_from_slice(local_a);
        let extra = zip(&[stored("evil.exe", b"MZ")]);
        z.extend_from_slice(&extra[..30 + 8 + 2]);
        let cd = z.len() as u32;
        z.extend_from_slice(&a[36..a.len() - 22]);
        let cd_len = (a.len() - 22 - 36) as u32;
        z.extend_from_slice(b"PK\x05\x06\0\0\0\0\x01\0\x01\0");
        z.extend_from_slice(&cd_len.to_le_bytes());
        z.extend_from_slice(&cd.to_le_bytes());
        z.extend_from_slice(&[0, 0]);
        malformed(
            &z,
            "a local file header the central directory does not list",
        );
    }

    #[test]
    fn overlapping_and_duplicate_entries_are_malformed() {
        let z = zip(&[stored("a.txt", b"1"), stored("b.txt", b"2")]);
        let mut z2 = z.clone();
        // Point the second directory entry at the first local header.
        let cd = u32::from_le_bytes(z[z.len() - 6..z.len() - 2].try_into().unwrap()) as usize;
        let second = cd + 46 + 5;
        z2[second + 42..second + 46].copy_from_slice(&0u32.to_le_bytes());
        z2[second + 46..second + 51].copy_from_slice(b"a.txt");
        malformed(&z2, "overlap");
        malformed(
            &zip(&[stored("a.txt", b"1"), stored("a.txt", b"2")]),
            "two entries named",
        );
    }

    #[test]
    fn truncated_garbage_and_trailing_bytes_are_malformed() {
        let z = zip(&[stored("a.txt", b"hello")]);
        malformed(&z[..z.len() - 5], "end-of-central-directory");
        malformed(&z[10..], "");
        malformed(b"PK\x03\x04", "too short");
        malformed(
            b"PK\x03\x04garbage garbage garbage garbage",
            "no end-of-central-directory",
        );
        let mut trailing = z.clone();
        trailing.extend_from_slice(b"trailing");
        malformed(&trailing, "does not end the file");
        let mut wrong_count = z.clone();
        let n = wrong_count.len() - 12;
        wrong_count[n..n + 2].copy_from_slice(&2u16.to_le_bytes());
        wrong_count[n - 2..n].copy_from_slice(&2u16.to_le_bytes());
        malformed(&wrong_count, "truncated or missing");
        let mut e = deflated("a.txt", &[b'a'; 5000]);
        e.deflate = false;
        e.method = Some(8);
        e.data = b"\xff\xff\xff\xff not deflate".to_vec();
        let z = zip(&[e]);
        let a = read(&z);
        assert!(a.problems.is_empty());
        let err = contents(&a.entries[0], &mut Budget::default()).unwrap_err();
        assert!(matches!(err, Problem::Malformed(d) if d.contains("corrupt")));
    }

    #[test]
    fn zip64_several_volumes_and_other_methods_are_unscannable() {
        let z = zip(&[stored("a.txt", b"x")]);
        let mut z64 = z.clone();
        let n = z64.len();
        z64[n - 6..n - 2].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(&problems(&z64)[..], [Problem::Unscannable(d)] if d.contains("ZIP64")));
        let mut e = stored("a.txt", b"x");
        e.extra = vec![1, 0, 8, 0, 1, 0, 0, 0, 0, 0, 0, 0];
        assert!(
            matches!(&problems(&zip(&[e]))[..], [Problem::Unscannable(d)] if d.contains("ZIP64"))
        );
        let mut volumes = z.clone();
        volumes[n - 18] = 1;
        assert!(matches!(&problems(&volumes)[..], [Problem::Unscannable(_)]));
        let mut e = stored("a.txt", b"x");
        e.method = Some(12);
        let z = zip(&[e]);
        let a = read(&z);
        assert!(
            matches!(prefix(&a.entries[0], &mut Budget::default()), Err(Problem::Unscannable(d)) if d.contains("bzip2"))
        );
    }

    #[test]
    fn entry_and_name_limits() {
        let names: Vec<E> = (0..=MAX_ENTRIES)
            .map(|i| stored(&format!("{i}"), b""))
            .collect();
        assert!(
            matches!(&problems(&zip(&names))[..], [Problem::Limit(d)] if d.contains("entries"))
        );
        // 10,000 names of 1,024 bytes sharing a prefix: the name cap stops the reading
        // after 1 MiB of names.
        let long: Vec<E> = (0..2000)
            .map(|i| stored(&format!("{}{i:04}.txt", "a".repeat(1016)), b""))
            .collect();
        let z = zip(&long);
        let a = read(&z);
        assert!(matches!(&a.problems[..], [Problem::Limit(d)] if d.contains("names")));
        assert!(a.entries.len() < 1100);
        // Unicode-path names count too, and are read.
        let mut e = stored("readme.txt", b"x");
        let unicode = b"invoice.exe";
        e.extra = [
            &[0x75, 0x70],
            &((5 + unicode.len()) as u16).to_le_bytes()[..],
            &[1, 0, 0, 0, 0],
            unicode,
        ]
        .concat();
        let z = zip(&[e]);
        let a = read(&z);
        assert!(a.problems.is_empty(), "{:?}", a.problems);
        assert_eq!(a.entries[0].other_names, ["invoice.exe"]);
    }

    #[test]
    fn inflation_is_capped_per_entry_and_per_message() {
        let big = vec![0u8; MAX_ENTRY_BYTES + 1];
        let z = zip(&[deflated("bomb.bin", &big)]);
        let a = read(&z);
        let mut budget = Budget::default();
        assert!(
            matches!(contents(&a.entries[0], &mut budget), Err(Problem::Limit(d)) if d.contains("inflates to more than"))
        );
        assert_eq!(
            prefix(&a.entries[0], &mut budget).unwrap().len(),
            PREFIX_BYTES
        );
        let fits = vec![0u8; MAX_ENTRY_BYTES];
        let z = zip(&[deflated("a.bin", &fits)]);
        let a = read(&z);
        let mut budget = Budget::default();
        for _ in 0..MAX_INFLATED_BYTES / MAX_ENTRY_BYTES {
            contents(&a.entries[0], &mut budget).unwrap();
        }
        assert!(
            matches!(contents(&a.entries[0], &mut budget), Err(Problem::Limit(d)) if d.contains("in one message"))
        );
        assert!(matches!(
            prefix(&a.entries[0], &mut budget),
            Err(Problem::Limit(_))
        ));
    }
}
