//! Finds the messages in the inputs: `.eml` files, directories (recursively, which covers
//! Maildir's `cur/` and `new/`), and mbox files.

use std::fs;
use std::path::{Path, PathBuf};

/// One message to run, or an input that could not be read.
pub struct Input {
    /// The file, with `#N` for the Nth message of an mbox.
    pub source: String,
    pub raw: Result<Vec<u8>, String>,
}

/// Lists the files below the inputs in a stable order. Hidden files and Maildir `tmp/`
/// folders (messages still being written) are skipped.
pub fn files(inputs: &[PathBuf]) -> Vec<Result<PathBuf, (PathBuf, String)>> {
    let mut out = Vec::new();
    for input in inputs {
        walk(input, &mut out, true);
    }
    out
}

fn walk(path: &Path, out: &mut Vec<Result<PathBuf, (PathBuf, String)>>, top: bool) {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if !top && (name.starts_with('.') || name.ends_with(".failed")) {
        return;
    }
    match fs::metadata(path) {
        Err(e) => out.push(Err((path.to_path_buf(), format!("cannot read: {e}")))),
        Ok(m) if m.is_dir() => {
            if !top && name == "tmp" && path.parent().is_some_and(|p| p.join("cur").is_dir()) {
                return;
            }
            match fs::read_dir(path) {
                Err(e) => out.push(Err((
                    path.to_path_buf(),
                    format!("cannot list directory: {e}"),
                ))),
                Ok(entries) => {
                    let mut children: Vec<PathBuf> =
                        entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
                    children.sort();
                    for child in children {
                        walk(&child, out, false);
                    }
                }
            }
        }
        Ok(_) => out.push(Ok(path.to_path_buf())),
    }
}

/// The messages of one listed file; a file that could not be listed is one failed input.
pub fn messages(file: Result<PathBuf, (PathBuf, String)>) -> Vec<Input> {
    match file {
        Ok(path) => read(&path),
        Err((path, e)) => vec![Input {
            source: path.display().to_string(),
            raw: Err(e),
        }],
    }
}

/// Reads one file and splits it into messages when it is an mbox.
pub fn read(path: &Path) -> Vec<Input> {
    let source = path.display().to_string();
    match fs::read(path) {
        Err(e) => vec![Input {
            source,
            raw: Err(format!("cannot read: {e}")),
        }],
        Ok(bytes) => {
            let parts = split_mbox(&bytes);
            if parts.len() <= 1 {
                return vec![Input {
                    source,
                    raw: Ok(bytes),
                }];
            }
            parts
                .into_iter()
                .enumerate()
                .map(|(i, p)| Input {
                    source: format!("{source}#{}", i + 1),
                    raw: Ok(p.to_vec()),
                })
                .collect()
        }
    }
}

/// Splits an mbox at `From ` lines that start a message (at the start of the file or after
/// an empty line). A file that is not an mbox comes back whole.
pub fn split_mbox(bytes: &[u8]) -> Vec<&[u8]> {
    if !bytes.starts_with(b"From ") {
        return vec![bytes];
    }
    let mut starts = vec![0];
    let mut i = 0;
    while let Some(pos) = find(&bytes[i..], b"\n\nFrom ") {
        let start = i + pos + 2;
        if is_from_line(&bytes[start..]) {
            starts.push(start);
        }
        i = start;
    }
    let mut parts = Vec::with_capacity(starts.len());
    for (n, &s) in starts.iter().enumerate() {
        let e = starts.get(n + 1).copied().unwrap_or(bytes.len());
        parts.push(&bytes[s..e]);
    }
    parts
}

/// `From sender date`: a separator line has a sender and a date with a time, which body
/// text starting with "From " rarely has.
fn is_from_line(rest: &[u8]) -> bool {
    let line = &rest[..rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len())];
    let line = String::from_utf8_lossy(line);
    line.split_whitespace().count() >= 4
        && line.contains(':')
        && line
            .split_whitespace()
            .nth(1)
            .is_some_and(|s| !s.ends_with(','))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_mbox_at_from_lines_after_blank_lines() {
        let mbox = b"From a@x Mon Jan 1 00:00:00 2024\nSubject: one\n\nFrom here on, text.\n\nFrom the team, thanks\n\nFrom b@x Tue Jan 2 00:00:00 2024\nSubject: two\n\nbody\n";
        let parts = split_mbox(mbox);
        assert_eq!(parts.len(), 2);
        assert!(parts[0].ends_with(b"From the team, thanks\n\n"));
        assert!(parts[1].starts_with(b"From b@x"));
        assert_eq!(split_mbox(b"Subject: x\n\nbody").len(), 1);
    }
}
