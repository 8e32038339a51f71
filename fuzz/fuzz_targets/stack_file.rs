//! The stack-file loader on arbitrary bytes: it may refuse, never panic or hang.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(errors) = spec::parse(text, Path::new("stack.toml")) {
        // Rendering locates every problem in the source: exercise that too.
        let _ = errors.to_string();
    }
});
