//! The Python side of the vocabulary: versions and what pyclink knows of each ([`table`]),
//! optimization levels and invalidation modes, the pyc file format, and what a source's text
//! proves about its levels.

pub mod levels;
pub mod marshal;
pub mod predict;
pub mod pyc;
pub mod table;
pub mod version;

pub use levels::{InvalidationMode, Levels};
pub use version::{Implementation, PyVersion};

/// A source file's name: `NAME.py`, with a NAME (`.py` alone is a hidden file, not a module).
pub fn has_py_suffix(rel: &std::path::Path) -> bool {
    rel.file_name().is_some_and(|n| {
        let n = std::os::unix::ffi::OsStrExt::as_bytes(n);
        n.len() > 3 && n.ends_with(b".py")
    })
}
