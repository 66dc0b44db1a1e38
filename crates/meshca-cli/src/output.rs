//! Standard output and error that never panic. `println!` panics when the reader has gone
//! (`meshca status | head -c 10`: EPIPE), which would end a command half-way through its work.
//! Every line the binary prints goes through [`outln!`] / [`errln!`] instead: a write that
//! fails is dropped, and so is every later one to the same stream, and the command carries on
//! to its end and its exit code. A closed stdout is the reader's choice, not an error.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static STDOUT_GONE: AtomicBool = AtomicBool::new(false);
static STDERR_GONE: AtomicBool = AtomicBool::new(false);

fn write_to(gone: &AtomicBool, mut w: impl Write, args: std::fmt::Arguments<'_>) {
    if gone.load(Ordering::Relaxed) {
        return;
    }
    if w.write_fmt(args).and_then(|()| w.flush()).is_err() {
        gone.store(true, Ordering::Relaxed);
    }
}

/// Writes to stdout; after the first failed write, nothing more is written there.
pub(crate) fn stdout(args: std::fmt::Arguments<'_>) {
    write_to(&STDOUT_GONE, std::io::stdout().lock(), args);
}

/// Writes to stderr; after the first failed write, nothing more is written there.
pub(crate) fn stderr(args: std::fmt::Arguments<'_>) {
    write_to(&STDERR_GONE, std::io::stderr().lock(), args);
}

/// Raw bytes to stdout (a man page, completions), under the same rule.
pub(crate) fn stdout_bytes(bytes: &[u8]) {
    if STDOUT_GONE.load(Ordering::Relaxed) {
        return;
    }
    let mut w = std::io::stdout().lock();
    if w.write_all(bytes).and_then(|()| w.flush()).is_err() {
        STDOUT_GONE.store(true, Ordering::Relaxed);
    }
}

/// `print!` that never panics.
macro_rules! out {
    ($($arg:tt)*) => { $crate::output::stdout(format_args!($($arg)*)) };
}

/// `println!` that never panics.
macro_rules! outln {
    () => { $crate::output::stdout(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::output::stdout(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `eprintln!` that never panics.
macro_rules! errln {
    () => { $crate::output::stderr(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::output::stderr(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `eprint!` that never panics.
macro_rules! err {
    ($($arg:tt)*) => { $crate::output::stderr(format_args!($($arg)*)) };
}
