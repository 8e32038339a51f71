//! `bulwark import`: a Docker Compose file, or Kubernetes Deployments and Services, as a
//! bulwark stack file, with a [`Note`] for every field that did not carry over as it was.
//!
//! Pure conversion: text in, stack-file text and notes out. The caller reads the files.
//! Each source field is either used or noted (see `fields.rs`), so nothing is dropped
//! silently; a file that is not YAML, or not the kind of file it should be, is an [`Error`].

#![forbid(unsafe_code)]

#[cfg(test)]
mod check;
mod command;
mod compose;
mod duration;
mod fields;
mod kubernetes;
mod note;
mod port;
mod stack;
mod yaml;

pub use note::{Note, NoteKind};

/// A converted stack file and what the conversion could not keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// The stack file (TOML), starting with a comment saying where it came from.
    pub stack: String,
    pub notes: Vec<Note>,
}

/// A source file: the name it is reported under, and its text.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub name: &'a str,
    pub text: &'a str,
}

/// Why a file cannot be imported at all.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("{file}:{line}:{column}: not valid YAML: {message}")]
    Yaml {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{file}: not a Compose file: {why}")]
    NotCompose { file: String, why: String },
    #[error("{file}: not a Kubernetes manifest: {why}")]
    NotKubernetes { file: String, why: String },
    #[error(
        "no Deployment in {files}: `bulwark import k8s` makes a service of each Deployment's containers"
    )]
    NoDeployment { files: String },
    /// Every service was left out; `notes` say why, and are worth printing with the error.
    #[error("{files}: no service can run on the host, so there is no stack file to write")]
    NothingToRun { files: String, notes: Vec<Note> },
    #[error("cannot write the stack file: {0}")]
    Toml(String),
}

impl Error {
    fn yaml(file: &str, e: yaml::YamlError) -> Error {
        Error::Yaml {
            file: file.to_owned(),
            line: e.line,
            column: e.column,
            message: e.message,
        }
    }
}

/// A Compose file (<https://compose-spec.io>) as a stack file. `name` is how notes and
/// errors name the file.
pub fn compose(name: &str, text: &str) -> Result<Imported, Error> {
    compose::import(name, text)
}

/// Kubernetes manifests (several files, each with any number of documents) as a stack
/// file: a service per Deployment container, exposed where a Service selects it.
pub fn kubernetes(sources: &[Source<'_>]) -> Result<Imported, Error> {
    kubernetes::import(sources)
}
