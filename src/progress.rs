//! The terminal: progress bars with an ETA for counted work, a spinner for the rest (hidden
//! when quiet: tests, logs, cron), the one writer of standard output, which a closed pipe
//! does not turn into a failure ([`write_stdout`]), and the libraries' own messages
//! ([`keep_library_messages`]).

use indicatif::{ProgressBar, ProgressStyle};
use std::sync::Mutex;

/// The libraries' own words (GDAL's errors and warnings, libtorch's traces), kept rather
/// than printed between gengbao's lines: what a user reads first is gengbao's message, which
/// names the file and the fix; these follow it on failure and go to the run log.
static LIBRARY_MESSAGES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// At most this many are kept between two reads (a damaged file can repeat one per block).
const MAX_LIBRARY_MESSAGES: usize = 100;

/// Routes GDAL's messages into [`library_message`] instead of GDAL's printing to stderr.
/// The command line calls it once; a program using the library keeps GDAL's own handler.
pub fn keep_library_messages() {
    gdal::config::set_error_handler(|class, number, message| {
        library_message(format!("GDAL {class:?} {number}: {message}"));
    });
}

/// Keeps a library's message for the run log and the end of a failure's report.
pub fn library_message(text: String) {
    let mut kept = LIBRARY_MESSAGES.lock().unwrap_or_else(|p| p.into_inner());
    if kept.len() < MAX_LIBRARY_MESSAGES {
        kept.push(text);
    }
}

/// The messages kept since the last [`take_library_messages`].
pub fn library_messages() -> Vec<String> {
    LIBRARY_MESSAGES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
}

/// The first lines of the messages kept, each once, at most `most` of them, and how many
/// more there were; forgotten from here on. What a failed command prints after its message.
pub fn take_library_message_heads(most: usize) -> (Vec<String>, usize) {
    let mut heads: Vec<String> = Vec::new();
    for m in take_library_messages() {
        let first = m.lines().next().unwrap_or("").trim_end().to_string();
        if !heads.contains(&first) {
            heads.push(first);
        }
    }
    let more = heads.len().saturating_sub(most);
    heads.truncate(most);
    (heads, more)
}

/// The messages kept, forgotten from here on.
pub fn take_library_messages() -> Vec<String> {
    std::mem::take(&mut *LIBRARY_MESSAGES.lock().unwrap_or_else(|p| p.into_inner()))
}

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
