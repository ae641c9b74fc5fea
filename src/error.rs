//! Why a run could not proceed at all (exit status 2). Problems with single sources are not
//! errors of the run: they are in the report (see `problem::Problem`).

use std::path::PathBuf;

use crate::python::{InvalidationMode, PyVersion};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    BuildRoot(#[from] crate::fsroot::OpenError),
    #[error(transparent)]
    Discover(#[from] crate::discover::Error),
    #[error(transparent)]
    Exclude(#[from] crate::plan::BadExclude),
    #[error(
        "{version} cannot read {} pycs (PEP 552 came with Python 3.7); use --invalidation-mode timestamp",
        mode.name()
    )]
    NoHashBasedPycs {
        version: PyVersion,
        mode: InvalidationMode,
    },
    #[error(
        "cannot use the cache directory {}: {source}",
        crate::escape::shown(dir)
    )]
    Cache {
        dir: PathBuf,
        #[source]
        source: crate::compile::cache::Refused,
    },
}
