//! The optimization levels and invalidation modes a pyc can be written for: the vocabulary of
//! PEP 488 (`.opt-1.pyc`) and PEP 552 (hash-based pycs).

use std::fmt;

use serde::Deserialize;

use super::PyVersion;

/// What `-o` accepts, for its error messages.
pub const LEVELS_ARE: &str =
    "the levels are 0 (plain .pyc), 1 (-O, .opt-1.pyc) and 2 (-OO, .opt-2.pyc)";

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
                _ => return Err(format!("invalid optimization level {l}: {LEVELS_ARE}")),
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

/// The invalidation mode for one version: as asked, else as py_compile would pick. Python 3.6
/// has no hash-based pycs: an explicit request cannot be met (`Err` with the mode asked), the
/// SOURCE_DATE_EPOCH default quietly stays with timestamps there.
pub fn invalidation_mode_for(
    asked: Option<InvalidationMode>,
    version: PyVersion,
    hash_ok: bool,
) -> Result<InvalidationMode, InvalidationMode> {
    let mode = asked.unwrap_or_else(InvalidationMode::default_from_env);
    if mode == InvalidationMode::Timestamp || hash_ok {
        return Ok(mode);
    }
    if asked.is_some() {
        return Err(mode);
    }
    log::info!(
        "{version}: no hash-based pycs before Python 3.7; using timestamps despite SOURCE_DATE_EPOCH"
    );
    Ok(InvalidationMode::Timestamp)
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

    #[test]
    fn python_36_has_no_hash_based_pycs() {
        let v36 = PyVersion::cpython(3, 6);
        let asked = Some(InvalidationMode::CheckedHash);
        assert_eq!(
            invalidation_mode_for(asked, v36, false),
            Err(InvalidationMode::CheckedHash)
        );
        assert_eq!(
            invalidation_mode_for(None, v36, false),
            Ok(InvalidationMode::Timestamp)
        );
        assert_eq!(
            invalidation_mode_for(asked, PyVersion::cpython(3, 7), true),
            Ok(InvalidationMode::CheckedHash)
        );
    }
}
