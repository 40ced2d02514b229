//! Folder adapters for local runs: objects and queues as folders, and an outbox folder
//! holding every message the pipeline would send. (Raw mail comes from the input files;
//! the CLI reads them.)

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use crate::model::{Envelope, RawRef, Stage};
use crate::ports::{
    MailSender, ObjectStore, OutgoingMail, PortError, PortResult, QueueDelivery, StagePublisher,
};

fn io(what: String) -> impl Fn(std::io::Error) -> PortError {
    move |e| PortError::Permanent(format!("{what}: {e}"))
}

/// Joins a storage key below `root`, refusing keys that would climb out of it.
fn below(root: &Path, key: &str) -> PortResult<PathBuf> {
    let rel = Path::new(key);
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(PortError::Permanent(format!(
            "refusing storage key {key:?}: it must be a relative path without '..'"
        )));
    }
    Ok(root.join(rel))
}

fn append_line(path: &Path, line: &str) -> PortResult<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
    }
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io(format!("opening {}", path.display())))?;
    writeln!(f, "{line}").map_err(io(format!("writing {}", path.display())))
}

/// Objects (stored and quarantined mail) as files below a folder.
pub struct DirObjects {
    pub root: PathBuf,
}

#[async_trait]
impl ObjectStore for DirObjects {
    async fn put_object(&self, key: &str, bytes: Vec<u8>) -> PortResult<()> {
        let path = below(&self.root, key)?;
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
        }
        fs::write(&path, bytes).map_err(io(format!("writing {}", path.display())))
    }

    async fn delete_object(&self, key: &str) -> PortResult<()> {
        let path = below(&self.root, key)?;
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(io(format!("deleting {}", path.display()))(e))
            }
            _ => Ok(()),
        }
    }

    async fn get_object(&self, key: &str) -> PortResult<Vec<u8>> {
        let path = below(&self.root, key)?;
        fs::read(&path).map_err(io(format!("reading {}", path.display())))
    }

    fn object_ref(&self, key: &str) -> RawRef {
        RawRef {
            bucket: "local".into(),
            key: self.root.join(key).display().to_string(),
        }
    }
}

/// Named delivery queues as JSONL files below a folder, one line per delivered message.
pub struct DirQueues {
    pub root: PathBuf,
}

#[async_trait]
impl QueueDelivery for DirQueues {
    async fn deliver(&self, queue: &str, body: &str) -> PortResult<()> {
        append_line(&below(&self.root, &format!("{queue}.jsonl"))?, body)
    }
}

/// Every message the pipeline sends, written as `.eml` files, with `index.jsonl` listing the
/// envelope (from, to) of each.
pub struct Outbox {
    pub dir: PathBuf,
}

#[async_trait]
impl MailSender for Outbox {
    async fn send(&self, mail: OutgoingMail) -> PortResult<String> {
        fs::create_dir_all(&self.dir)
            .map_err(io(format!("creating outbox {}", self.dir.display())))?;
        let mut h = Sha256::new();
        h.update(mail.to.join(",").as_bytes());
        for chunk in mail.raw.chunks() {
            h.update(chunk);
        }
        let name = format!(
            "{}.eml",
            h.finalize()[..10]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        let path = self.dir.join(&name);
        write_chunks(&path, mail.raw.chunks())
            .map_err(io(format!("writing {}", path.display())))?;
        let line =
            serde_json::json!({ "file": name, "from": mail.from, "to": mail.to }).to_string();
        append_line(&self.dir.join("index.jsonl"), &line)?;
        Ok(format!("outbox:{name}"))
    }
}

fn write_chunks<'a>(path: &Path, chunks: impl Iterator<Item = &'a [u8]>) -> std::io::Result<()> {
    let mut file = fs::File::create(path)?;
    for chunk in chunks {
        file.write_all(chunk)?;
    }
    Ok(())
}

/// For in-process runs, where every stage runs in turn and nothing is published.
pub struct InProcess;

#[async_trait]
impl StagePublisher for InProcess {
    async fn publish(&self, _next: Stage, _envelope: &Envelope) -> PortResult<()> {
        Ok(())
    }
}
