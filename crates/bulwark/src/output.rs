//! The CLI's standard output. `println!` panics when the reader has gone away
//! (`bulwark events --follow | head -1`); a command whose output nobody reads any more has
//! nothing left to do, so it ends quietly with status 0, as `cat` or `grep` would.

use std::io::{ErrorKind, Write};

/// Writes one line to standard output; see the module doc for a closed pipe.
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
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
