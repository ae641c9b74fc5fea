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
