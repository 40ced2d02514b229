//! What the corpus tests share.

use std::path::{Path, PathBuf};

/// The team's data kit beside the repository (`../shared/data`), which users who clone
/// the project don't have: then the caller skips, and says so.
pub fn data_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    if dir.is_dir() {
        Some(dir)
    } else {
        mailroom_core::skip::skipped("../shared/data is not present beside the repository");
        None
    }
}
