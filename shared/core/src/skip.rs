//! A test that cannot run here (no emulator, no browser, no data kit) says so: on stderr,
//! and as a line in the file `MAILROOM_SKIPPED` names, from which the test command prints
//! every skip in its summary. libtest would otherwise report such a test as `ok`.

use std::io::Write;

/// Says that the running test skipped, and why.
pub fn skipped(why: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    eprintln!("SKIPPED {test}: {why}");
    if let Some(path) = std::env::var_os("MAILROOM_SKIPPED") {
        // One short write per line with O_APPEND: test threads and binaries don't interleave.
        let line = format!("{test}: {why}\n");
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
    }
}
