//! The CLI's standard output. `println!` panics when the reader has gone away
//! (`bulwark events --follow | head -1`); a command whose output nobody reads any more has
//! nothing left to do, so it ends quietly with status 0, as `cat` or `grep` would.

use std::io::{ErrorKind, Write};

/// Writes one line to standard output; see the module doc for a closed pipe.
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    written(out.write_fmt(args).and_then(|()| out.write_all(b"\n")));
}

/// Writes a generated document (a completion script, a man page) to standard output as is;
/// see the module doc for a closed pipe.
pub fn bytes(document: &[u8]) {
    let mut out = std::io::stdout().lock();
    written(out.write_all(document).and_then(|()| out.flush()));
}

/// Ends the process if a write to standard output failed: 0 for a closed pipe, else 1.
fn written(result: std::io::Result<()>) {
    if let Err(e) = result {
        if e.kind() == ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("bulwark: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

/// `println!` for command output, through [`line`].
macro_rules! outln {
    () => {
        $crate::output::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))
    };
}
pub(crate) use outln;
