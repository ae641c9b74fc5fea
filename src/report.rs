//! Step 5: what the build log keeps. One line per version, every error as `path:line: message`,
//! and the same figures as JSON for build systems.

use std::fmt;
use std::path::Path;

use serde::Serialize;

use crate::fsroot::display_in_root;
use crate::write::WriteStats;

/// A source that could not be compiled or written.
#[derive(Clone, Debug, Serialize)]
pub struct FileError {
    /// The path as seen inside the root (`/usr/lib/...`).
    pub path: String,
    pub line: Option<u32>,
    pub message: String,
}

impl FileError {
    pub fn new(rel: &Path, line: Option<u32>, message: String) -> FileError {
        FileError {
            path: display_in_root(rel),
            line,
            message,
        }
    }
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.path, line, self.message),
            None => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

/// The figures of one version.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VersionReport {
    pub version: String,
    pub interpreter: String,
    pub cache_tag: String,
    pub invalidation_mode: String,
    pub sources: u64,
    /// Sources whose pycs were all up to date and left alone.
    pub up_to_date_sources: u64,
    /// pyc names in place after the run (written + hardlinked + copied + up to date).
    pub pyc: u64,
    pub written: u64,
    pub hardlinked: u64,
    pub copied: u64,
    pub up_to_date: u64,
    pub errors: u64,
    /// Level compilations the interpreters did for the pycs written (the rest were predicted
    /// identical and never compiled).
    pub levels_compiled: u64,
    /// Sources deliberately not compiled (symlinks leaving the root).
    pub skipped: u64,
    pub warnings: u64,
    /// Bytes of the pycs this run wrote, counting every name...
    pub bytes_apparent: u64,
    /// ...and counting each inode once.
    pub bytes_stored: u64,
}

impl VersionReport {
    pub fn add_written(&mut self, s: WriteStats) {
        self.written += s.written;
        self.hardlinked += s.linked;
        self.copied += s.copied;
        self.pyc += s.written + s.linked + s.copied;
        self.bytes_apparent += s.apparent_bytes;
        self.bytes_stored += s.stored_bytes;
    }

    /// The build-log line.
    pub fn line(&self) -> String {
        let up_to_date = if self.up_to_date > 0 {
            format!(", {} up to date", self.up_to_date)
        } else {
            String::new()
        };
        format!(
            "pyclink: {}: {} sources, {} pyc ({} written, {} hardlinked, {} copied{}), {} error{}, {} -> {}",
            self.version,
            self.sources,
            self.pyc,
            self.written,
            self.hardlinked,
            self.copied,
            up_to_date,
            self.errors,
            if self.errors == 1 { "" } else { "s" },
            mib(self.bytes_apparent),
            mib(self.bytes_stored)
        )
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// The whole run, as written by `--summary-json`.
#[derive(Debug, Default, Serialize)]
pub struct RunReport {
    pub buildroot: String,
    pub levels: Vec<u8>,
    pub versions: Vec<VersionReport>,
    /// Every error as `path:line: message`.
    pub errors: Vec<String>,
    pub error_details: Vec<FileError>,
    /// Every compiler warning as `path:line: Category: message`.
    pub warnings: Vec<String>,
    pub skipped: Vec<String>,
    pub stale_temps_removed: usize,
    pub cache: Option<crate::cache::CacheStats>,
    pub exit_code: i32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_log_line() {
        let mut r = VersionReport {
            version: "python3.12".into(),
            sources: 688,
            ..Default::default()
        };
        r.add_written(WriteStats {
            written: 1212,
            linked: 852,
            copied: 0,
            apparent_bytes: 54_630_000,
            stored_bytes: 38_063_000,
        });
        assert_eq!(
            r.line(),
            "pyclink: python3.12: 688 sources, 2064 pyc (1212 written, 852 hardlinked, 0 copied), 0 errors, 52.1 MiB -> 36.3 MiB"
        );
        r.up_to_date = 3;
        r.pyc += 3;
        r.errors = 1;
        assert!(r.line().contains("0 copied, 3 up to date), 1 error, "));
    }

    #[test]
    fn error_format() {
        let e = FileError::new(
            Path::new("usr/lib/python3.12/bad.py"),
            Some(3),
            "SyntaxError: invalid syntax".into(),
        );
        assert_eq!(
            e.to_string(),
            "/usr/lib/python3.12/bad.py:3: SyntaxError: invalid syntax"
        );
        let e = FileError::new(
            Path::new("usr/x.py"),
            None,
            "cannot read: Permission denied".into(),
        );
        assert_eq!(e.to_string(), "/usr/x.py: cannot read: Permission denied");
    }
}
