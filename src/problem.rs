//! What can go wrong with one source: the vocabulary the stages (plan, compile, write) report
//! in, below all of them. It names only lower layers (the worker's failures, the marshal
//! parser, the root's path display), so that any stage can produce a [`FileError`] without
//! depending on the report that collects them.

use std::fmt;
use std::path::Path;

use serde::{Serialize, Serializer};

use crate::escape::plural;
use crate::fsroot::display_in_root;
use crate::worker::Failure;

/// `Problem::Io::what` when a source's `__pycache__` directory cannot be made or opened.
pub const PYCACHE_UNUSABLE: &str = "cannot use __pycache__/";

/// Why a source got no pycs.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// The interpreter refused it: SyntaxError, ValueError for NUL bytes, RecursionError...
    #[error("{exception}: {message}")]
    DoesNotCompile { exception: String, message: String },
    /// A compiler warning (the pycs were written).
    #[error("{category}: {message}")]
    Warning { category: String, message: String },
    /// Reading the source or writing its pycs failed.
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A FIFO, socket, device or directory named like a source.
    #[error("not a regular file; skipped")]
    NotRegular,
    /// The worker died, hung or broke the protocol, and the retry with a new worker failed.
    #[error("{}", worker_failure(.first, .retry))]
    Worker {
        first: Failure,
        /// What went wrong on the retry.
        retry: Retry,
    },
    /// The worker's marshalled code does not parse (so it cannot be normalized).
    #[error("the interpreter's marshal data for level {level} does not parse: {error}")]
    BadMarshal {
        level: u8,
        error: crate::python::marshal::Error,
    },
    /// Some of its pycs could not be put in place (the others were written): each one, as
    /// seen inside the root, and why.
    #[error("{}", write_failures(.0))]
    WritePycs(Vec<(String, std::io::Error)>),
    /// No worker could be started for it.
    #[error("cannot start a {program} worker: {failure}")]
    NoWorker { program: String, failure: Failure },
    /// A tree of a version pyclink does not compile holds sources (the path is the tree's).
    #[error(
        "{} not compiled: {why}. Compile them with their own tools, or leave them out: \
         -x '{exclude}' (or in the config file's exclude; in an RPM spec, \
         %global _pyclink_exclude {exclude})",
        plural(*.sources, "source")
    )]
    Unsupported {
        sources: u64,
        why: String,
        exclude: String,
    },
}

/// How the retry of a source whose worker failed went wrong.
#[derive(Debug)]
pub enum Retry {
    AlsoFailed(Failure),
    CannotStart { program: String, failure: Failure },
}

fn write_failures(failed: &[(String, std::io::Error)]) -> String {
    failed
        .iter()
        .map(|(pyc, e)| format!("cannot write {pyc}: {e}"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn worker_failure(first: &Failure, retry: &Retry) -> String {
    match retry {
        Retry::AlsoFailed(again) => format!("{again} (also on the retry with a new worker)"),
        Retry::CannotStart { program, failure } => {
            format!("{first} (and cannot start a {program} worker for the retry: {failure})")
        }
    }
}

impl Problem {
    /// A short machine-readable name, for the JSON.
    pub fn kind(&self) -> &'static str {
        match self {
            Problem::DoesNotCompile { .. } => "does-not-compile",
            Problem::Warning { .. } => "warning",
            Problem::Io { .. } | Problem::WritePycs(_) => "io",
            Problem::NotRegular => "not-regular",
            Problem::Unsupported { .. } => "unsupported-version",
            Problem::Worker { .. } | Problem::NoWorker { .. } | Problem::BadMarshal { .. } => {
                "worker"
            }
        }
    }
}

/// A source that could not be compiled or written, or a compiler warning about it.
#[derive(Debug)]
pub struct FileError {
    /// The path as seen inside the root (`/usr/lib/...`).
    pub path: String,
    pub line: Option<u32>,
    pub problem: Problem,
}

impl FileError {
    pub fn new(rel: &Path, line: Option<u32>, problem: Problem) -> FileError {
        FileError {
            path: display_in_root(rel),
            // CPython says line 0 where it has none.
            line: line.filter(|&l| l > 0),
            problem,
        }
    }
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.path, line, self.problem),
            None => write!(f, "{}: {}", self.path, self.problem),
        }
    }
}

impl Serialize for FileError {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("FileError", 4)?;
        st.serialize_field("path", &self.path)?;
        st.serialize_field("line", &self.line)?;
        st.serialize_field("kind", self.problem.kind())?;
        st.serialize_field("message", &self.problem.to_string())?;
        st.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_format() {
        let e = FileError::new(
            Path::new("usr/lib/python3.12/bad.py"),
            Some(3),
            Problem::DoesNotCompile {
                exception: "SyntaxError".into(),
                message: "invalid syntax".into(),
            },
        );
        assert_eq!(
            e.to_string(),
            "/usr/lib/python3.12/bad.py:3: SyntaxError: invalid syntax"
        );
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["kind"], "does-not-compile");
        assert_eq!(json["line"], 3);
        let e = FileError::new(
            Path::new("usr/x.py"),
            Some(0),
            Problem::Io {
                what: "cannot read",
                source: std::io::Error::from_raw_os_error(13),
            },
        );
        assert_eq!(
            e.to_string(),
            "/usr/x.py: cannot read: Permission denied (os error 13)"
        );
    }
}
