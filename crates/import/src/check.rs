//! The unit tests' one helper: an import's stack file, checked by bulwark's own loader, and
//! its notes as lines, with assertions that print both when they fail.

use crate::Imported;

pub(crate) struct Out {
    /// The stack file without its header comment.
    pub stack: String,
    /// Each note as `bulwark import` prints it.
    pub notes: Vec<String>,
}

impl Out {
    /// Checks that `bulwark check` would accept the stack file.
    pub fn of(imported: Imported) -> Out {
        let stack = imported.stack;
        if let Err(e) = spec::parse(&stack, std::path::Path::new("stack.toml")) {
            panic!("the stack file does not load:\n{e}\n---\n{stack}");
        }
        let body: String = stack
            .lines()
            .skip_while(|l| l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        Out {
            stack: body.trim().to_owned(),
            notes: imported.notes.iter().map(ToString::to_string).collect(),
        }
    }

    /// The stack file holds `text` (lines in a row).
    pub fn has(&self, text: &str) -> &Out {
        assert!(
            self.stack.contains(text.trim()),
            "stack lacks:\n{}\n--- stack:\n{}\n--- notes:\n{}",
            text.trim(),
            self.stack,
            self.notes.join("\n")
        );
        self
    }

    /// The stack file does not hold `text`.
    pub fn lacks(&self, text: &str) -> &Out {
        assert!(
            !self.stack.contains(text.trim()),
            "stack has {:?}:\n{}",
            text.trim(),
            self.stack
        );
        self
    }

    /// A note is exactly `line`.
    pub fn note(&self, line: &str) -> &Out {
        assert!(
            self.notes.iter().any(|n| n == line),
            "no note\n{line}\n--- notes:\n{}\n--- stack:\n{}",
            self.notes.join("\n"),
            self.stack
        );
        self
    }

    /// No note mentions `text`.
    pub fn no_note(&self, text: &str) -> &Out {
        let found: Vec<&String> = self.notes.iter().filter(|n| n.contains(text)).collect();
        assert!(found.is_empty(), "unexpected notes: {found:#?}");
        self
    }
}
