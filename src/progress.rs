//! The terminal: progress bars with an ETA for counted work, a spinner for the rest (hidden
//! when quiet: tests, logs, cron), and the one writer of standard output, which a closed pipe
//! does not turn into a failure ([`write_stdout`]).

use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `len` steps named `what`.
pub fn progress(len: u64, what: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {msg} (eta {eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_prefix(what.to_string());
    pb
}

/// A spinner named `what` for work of unknown length, described by `doing`.
pub(crate) fn spinner(what: &str, doing: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(0);
    pb.set_style(
        ProgressStyle::with_template(&format!("{{prefix:>10}} {{spinner}} {doing} ({{elapsed}})"))
            .expect("valid template"),
    );
    pb.set_prefix(what.to_string());
    pb.enable_steady_tick(std::time::Duration::from_millis(200));
    pb
}

/// Exit code when standard output cannot be written (BSD's EX_IOERR).
const EXIT_CANNOT_WRITE_STDOUT: i32 = 74;

/// Set once standard output's reader has gone.
static STDOUT_CLOSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Writes `text` on standard output. When the reader has gone (`gengbao ledger history … |
/// head -1`), output stops quietly and the command goes on to its normal end and exit code:
/// a closed pipe changes nothing gengbao does. Any other write error (a full disk behind a
/// redirection) ends the process with an error rather than leave a silently cut listing.
pub fn write_stdout(text: std::fmt::Arguments) {
    use std::io::Write;
    use std::sync::atomic::Ordering;
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    match out.write_fmt(text).and_then(|()| out.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
        }
        Err(e) => {
            eprintln!("error: cannot write to standard output: {e}\n  fix: free space or write access where the output is redirected, then run the command again");
            std::process::exit(EXIT_CANNOT_WRITE_STDOUT);
        }
    }
}
