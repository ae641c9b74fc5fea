//! Everything one run needs to know, after the command line and the config file are merged.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::version::PyVersion;

#[derive(Clone, Debug)]
pub struct Settings {
    /// The directory that stands for `/`.
    pub buildroot: PathBuf,
    /// Paths inside the root that restrict the run (root-relative, no `..`); empty = every tree.
    pub paths: Vec<PathBuf>,
    pub levels: Levels,
    pub jobs: usize,
    /// `--interpreter X.Y=PATH`.
    pub interpreters: BTreeMap<PyVersion, PathBuf>,
    /// `--interpreter PATH`: the version is asked of the interpreter when the run starts.
    pub unversioned_interpreters: Vec<PathBuf>,
    /// Versions for trees that name none (dist-packages, private directories).
    pub python_versions: Vec<PyVersion>,
    /// `None`: checked-hash when SOURCE_DATE_EPOCH is set, else timestamp (as py_compile).
    pub invalidation_mode: Option<InvalidationMode>,
    pub force: bool,
    /// Compile only the levels the source does not prove identical (see `predict`).
    pub predict: bool,
    pub excludes: Vec<String>,
    pub errors: ErrorPolicy,
    pub link: bool,
    pub summary_json: Option<PathBuf>,
    /// `--cache DIR`: reuse compiled results across runs.
    pub cache: Option<PathBuf>,
    pub cache_max_size: u64,
    /// How long one file may take in a worker before the worker is restarted.
    pub timeout: Duration,
    pub quiet: bool,
}

/// A set of optimization levels (bit L = level L).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Levels(u8);

impl Levels {
    pub const ALL: Levels = Levels(0b111);

    pub fn empty() -> Self {
        Levels(0)
    }

    /// Build from user input: each level must be 0, 1 or 2; duplicates are harmless.
    pub fn from_list(list: &[i64]) -> Result<Self, String> {
        let mut levels = Levels::empty();
        for &l in list {
            match l {
                0..=2 => levels.0 |= 1 << l,
                _ => {
                    return Err(format!(
                        "invalid optimization level {l}: the levels are 0 (plain .pyc), 1 (-O, .opt-1.pyc) \
                         and 2 (-OO, .opt-2.pyc)"
                    ))
                }
            }
        }
        if levels.0 == 0 {
            return Err("no optimization level given".into());
        }
        Ok(levels)
    }

    pub fn bits(self) -> u8 {
        self.0
    }

    pub fn contains(self, level: u8) -> bool {
        level < 3 && self.0 & (1 << level) != 0
    }

    pub fn iter(self) -> impl Iterator<Item = u8> {
        (0..3).filter(move |&l| self.contains(l))
    }

    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Debug for Levels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// PEP 552: how the pyc header ties the pyc to its source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum InvalidationMode {
    /// Source mtime and size in the header; import rechecks them.
    Timestamp,
    /// Source hash in the header; import rehashes the source and compares.
    CheckedHash,
    /// Source hash in the header; import never checks it.
    UncheckedHash,
}

impl InvalidationMode {
    /// What py_compile picks when nothing is said: reproducible builds set SOURCE_DATE_EPOCH.
    pub fn default_from_env() -> Self {
        match std::env::var_os("SOURCE_DATE_EPOCH") {
            Some(v) if !v.is_empty() => InvalidationMode::CheckedHash,
            _ => InvalidationMode::Timestamp,
        }
    }

    /// The PEP 552 flags word.
    pub fn flags(self) -> u32 {
        match self {
            InvalidationMode::Timestamp => 0,
            InvalidationMode::UncheckedHash => 0b01,
            InvalidationMode::CheckedHash => 0b11,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            InvalidationMode::Timestamp => "timestamp",
            InvalidationMode::CheckedHash => "checked-hash",
            InvalidationMode::UncheckedHash => "unchecked-hash",
        }
    }
}

/// What a source that cannot be compiled (or written) does to the exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorPolicy {
    /// Report every error and exit 1 (Fedora's default: a syntax error fails the build).
    Fail,
    /// Report every error, exit 0.
    Warn,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_dedupe_and_reject() {
        let l = Levels::from_list(&[1, 0, 1, 0]).unwrap();
        assert_eq!(l.iter().collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(l.len(), 2);
        assert!(Levels::from_list(&[-1, 0]).unwrap_err().contains("-1"));
        assert!(Levels::from_list(&[3]).is_err());
        assert!(Levels::from_list(&[]).is_err());
        assert_eq!(Levels::ALL.iter().collect::<Vec<_>>(), vec![0, 1, 2]);
    }

    #[test]
    fn pep552_flags() {
        assert_eq!(InvalidationMode::Timestamp.flags(), 0);
        assert_eq!(InvalidationMode::UncheckedHash.flags(), 1);
        assert_eq!(InvalidationMode::CheckedHash.flags(), 3);
    }
}
