//! Finds the messages in the inputs: `.eml` files, directories (recursively, which covers
//! Maildir's `cur/` and `new/`), and mbox files. An SES receipt notification saved as
//! `NAME.json` beside `NAME.eml` goes with that message (its envelope recipients and
//! verdicts), as it does in AWS.

use std::fs;
use std::path::{Path, PathBuf};

use mailroom_core::model::Receipt;

/// One message to run, or an input that could not be read.
pub struct Input {
    /// The file, with `#N` for the Nth message of an mbox.
    pub source: String,
    pub raw: Result<Vec<u8>, String>,
    /// The receipt notification beside the message, when there is one.
    pub receipt: Option<Receipt>,
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
    if !top && (name.starts_with('.') || name.ends_with(".failed") || is_notification(path)) {
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

/// `NAME.json` beside `NAME.eml`: the message's receipt notification, not an input.
fn is_notification(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "json") && path.with_extension("eml").is_file()
}

/// The receipt notification beside `NAME.eml` (`NAME.json`, the notification itself or the
/// SNS envelope around it), if there is one.
fn receipt_beside(path: &Path) -> Result<Option<Receipt>, String> {
    if path.extension().is_none_or(|e| e != "eml") {
        return Ok(None);
    }
    let json = path.with_extension("json");
    let text = match fs::read_to_string(&json) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", json.display())),
    };
    let notification = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| {
            (v["Type"] == "Notification")
                .then(|| v["Message"].as_str().map(str::to_string))
                .flatten()
        })
        .unwrap_or(text);
    mailroom_core::receipt::receipt_from_notification(&notification)
        .map(Some)
        .map_err(|e| format!("{}: {e}", json.display()))
}

/// The messages of one listed file; a file that could not be listed is one failed input.
pub fn messages(file: Result<PathBuf, (PathBuf, String)>) -> Vec<Input> {
    match file {
        Ok(path) => read(&path),
        Err((path, e)) => vec![Input {
            source: path.display().to_string(),
            raw: Err(e),
            receipt: None,
        }],
    }
}

/// Reads one file and splits it into messages when it is an mbox.
pub fn read(path: &Path) -> Vec<Input> {
    let source = path.display().to_string();
    let receipt = match receipt_beside(path) {
        Ok(r) => r,
        Err(e) => {
            return vec![Input {
                source,
                raw: Err(e),
                receipt: None,
            }];
        }
    };
    match fs::read(path) {
        Err(e) => vec![Input {
            source,
            raw: Err(format!("cannot read: {e}")),
            receipt: None,
        }],
        Ok(bytes) => {
            let parts = split_mbox(&bytes);
            if parts.len() <= 1 {
                return vec![Input {
                    source,
                    raw: Ok(bytes),
                    receipt,
                }];
            }
            parts
                .into_iter()
                .enumerate()
                .map(|(i, p)| Input {
                    source: format!("{source}#{}", i + 1),
                    raw: Ok(p.to_vec()),
                    receipt: None,
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

/// Raw mail for the operator commands: the input file a summary names, with `#N` picking
/// the Nth message of an mbox, as `run` named it.
pub struct InputFiles;

#[async_trait::async_trait]
impl mailroom_core::ports::RawMailSource for InputFiles {
    async fn get_raw(
        &self,
        raw: &mailroom_core::model::RawRef,
    ) -> mailroom_core::ports::PortResult<Vec<u8>> {
        use mailroom_core::ports::PortError;
        let source = &raw.key;
        let file = match source.rsplit_once('#') {
            Some((file, n)) if n.chars().all(|c| c.is_ascii_digit()) => file,
            _ => source.as_str(),
        };
        read(Path::new(file))
            .into_iter()
            .find(|m| m.source == *source)
            .ok_or_else(|| PortError::Permanent(format!("{source} is no longer there")))?
            .raw
            .map_err(PortError::Permanent)
    }
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
