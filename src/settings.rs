//! Everything one run needs to know, after the command line and the config file are merged.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::python::{InvalidationMode, Levels, PyVersion};

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
    /// Write the marshalled code in add-determinism's normal form (see `python::marshal`).
    pub normalize: bool,
    /// Only list what would be compiled.
    pub dry_run: bool,
    pub summary_json: Option<PathBuf>,
    /// `--cache DIR`: reuse compiled results across runs.
    pub cache: Option<PathBuf>,
    pub cache_max_size: u64,
    /// `--cache-shared`: accept a cache that other users can write (with a warning).
    pub cache_shared: bool,
    /// `--cache-read-only`: hits only; nothing stored, evicted or removed.
    pub cache_read_only: bool,
    /// How long one file may take in a worker before the worker is restarted.
    pub timeout: Duration,
    pub quiet: bool,
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
