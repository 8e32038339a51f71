//! Notes: what an import did not carry over, or changed on the way.

use std::fmt;

/// One field of the source that did not make it into the stack file as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The source file, as the caller named it.
    pub file: String,
    /// Where in the file: `services.web.image`,
    /// `Deployment/web.spec.template.spec.containers[0].resources`.
    pub path: String,
    pub kind: NoteKind,
    /// Why, or what became of it.
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteKind {
    /// The field is not in the stack file at all.
    NotCarried,
    /// The field is there, but changed or with a different meaning.
    Changed,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Note {
            file,
            path,
            kind,
            message,
        } = self;
        match kind {
            NoteKind::NotCarried => write!(f, "{file}: {path}: not carried over: {message}"),
            NoteKind::Changed => write!(f, "{file}: {path}: {message}"),
        }
    }
}

/// The notes of one import, in the order they were found.
#[derive(Debug, Default)]
pub(crate) struct Notes {
    /// The file whose fields are being read.
    pub file: String,
    pub list: Vec<Note>,
}

impl Notes {
    pub fn new(file: &str) -> Notes {
        Notes {
            file: file.to_owned(),
            list: Vec::new(),
        }
    }

    pub fn not_carried(&mut self, path: impl Into<String>, why: impl Into<String>) {
        self.push(path.into(), NoteKind::NotCarried, why.into());
    }

    pub fn changed(&mut self, path: impl Into<String>, what: impl Into<String>) {
        self.push(path.into(), NoteKind::Changed, what.into());
    }

    fn push(&mut self, path: String, kind: NoteKind, message: String) {
        self.list.push(Note {
            file: self.file.clone(),
            path,
            kind,
            message,
        });
    }
}
