//! `--config FILE`: the same settings as the command line, in TOML, under the flags' own names.
//! The command line wins; list settings (`exclude`, `interpreters`) are merged.
//!
//! ```toml
//! optimize = [0, 1]
//! jobs = 4                      # 0: one per CPU; at most 1024
//! invalidation-mode = "checked-hash"
//! exclude = ["*/tests/*", "/usr/lib/python3.12/test"]
//! errors = "warn"
//! no-link = false
//! no-normalize = false
//! compile-every-level = false
//! timeout = 300                # seconds, 0.001 to 86400
//! python-version = ["3.12"]
//! summary-json = "/tmp/pyclink.json"
//! cache = "/var/cache/pyclink"
//! cache-max-size = "2G"
//! cache-shared = false
//! cache-read-only = false
//! quiet = false
//! verbose = 1                  # 0 to 2
//!
//! [interpreters]
//! "3.12" = "/usr/bin/python3.12"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

use crate::python::InvalidationMode;
use crate::settings::ErrorPolicy;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConfigFile {
    pub buildroot: Option<PathBuf>,
    pub optimize: Option<Vec<i64>>,
    #[serde(default, deserialize_with = "jobs")]
    pub jobs: Option<usize>,
    pub interpreters: Option<BTreeMap<String, PathBuf>>,
    #[serde(alias = "python-versions")]
    pub python_version: Option<Vec<String>>,
    pub invalidation_mode: Option<InvalidationMode>,
    pub force: Option<bool>,
    pub compile_every_level: Option<bool>,
    /// The older spelling of `compile-every-level = false`.
    pub predict: Option<bool>,
    pub exclude: Option<Vec<String>>,
    pub errors: Option<ErrorPolicy>,
    pub no_link: Option<bool>,
    /// The older spelling of `no-link = false`.
    pub link: Option<bool>,
    pub no_normalize: Option<bool>,
    pub summary_json: Option<PathBuf>,
    pub cache: Option<PathBuf>,
    /// Bytes, or with K/M/G/T: "2G".
    pub cache_max_size: Option<String>,
    pub cache_shared: Option<bool>,
    pub cache_read_only: Option<bool>,
    /// Seconds.
    #[serde(default, deserialize_with = "seconds")]
    pub timeout: Option<f64>,
    pub quiet: Option<bool>,
    #[serde(default, deserialize_with = "verbosity")]
    pub verbose: Option<u8>,
}

/// A config file that cannot be used: unreadable, not TOML, or a key with a wrong value (the
/// message names the line and quotes it).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {}: {source}", crate::escape::shown(path))]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {}: {source}", crate::escape::shown(path))]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
}

/// The config file of a run, read once (the JSON's destination and the settings both come
/// from it), with the path its messages name. No `--config`: no path, every key unset.
#[derive(Debug, Default)]
pub struct Config {
    pub path: Option<PathBuf>,
    pub file: ConfigFile,
}

impl Config {
    pub fn read(path: Option<&Path>) -> Result<Config, ConfigError> {
        Ok(match path {
            Some(p) => Config {
                path: Some(p.to_path_buf()),
                file: ConfigFile::load(p)?,
            },
            None => Config::default(),
        })
    }
}

impl ConfigFile {
    pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// `compile-every-level`, or its older spelling `predict` (inverted).
    pub fn every_level(&self) -> Option<bool> {
        self.compile_every_level.or(self.predict.map(|p| !p))
    }

    /// `no-link`, or its older spelling `link` (inverted).
    pub fn no_link(&self) -> Option<bool> {
        self.no_link.or(self.link.map(|l| !l))
    }
}

/// The wording of serde's "expected usize" is for programmers; these say what the key means.
fn jobs<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged, expecting = "a number of workers (0: one per CPU)")]
    enum Jobs {
        N(usize),
    }
    Ok(Option::<Jobs>::deserialize(d)?.map(|Jobs::N(n)| n))
}

fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged, expecting = "a number of seconds, such as 300 or 2.5")]
    enum Seconds {
        Float(f64),
        Int(u32),
    }
    Ok(Option::<Seconds>::deserialize(d)?.map(|s| match s {
        Seconds::Float(f) => f,
        Seconds::Int(i) => f64::from(i),
    }))
}

fn verbosity<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u8>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged, expecting = "0, 1 (like -v) or 2 (like -vv)")]
    enum Verbose {
        N(u8),
    }
    Ok(Option::<Verbose>::deserialize(d)?.map(|Verbose::N(n)| n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_unknown_keys() {
        let c: ConfigFile = toml::from_str(
            "optimize = [0, 1]\ninvalidation-mode = \"checked-hash\"\nerrors = \"warn\"\njobs = 3\ntimeout = 2\nverbose = 1\n[interpreters]\n\"3.12\" = \"/x\"\n",
        )
        .unwrap();
        assert_eq!(c.optimize, Some(vec![0, 1]));
        assert_eq!(c.invalidation_mode, Some(InvalidationMode::CheckedHash));
        assert_eq!(c.errors, Some(ErrorPolicy::Warn));
        assert_eq!(
            (c.jobs, c.timeout, c.verbose),
            (Some(3), Some(2.0), Some(1))
        );
        let err = toml::from_str::<ConfigFile>("optimise = [1]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("optimise") && err.contains("line 1"), "{err}");
    }

    #[test]
    fn keys_are_the_flags_names_and_the_old_ones_still_work() {
        let c: ConfigFile = toml::from_str(
            "python-version = [\"3.12\"]\nno-link = true\ncompile-every-level = true\n",
        )
        .unwrap();
        assert_eq!(c.python_version, Some(vec!["3.12".to_string()]));
        assert_eq!((c.no_link(), c.every_level()), (Some(true), Some(true)));
        let old: ConfigFile =
            toml::from_str("python-versions = [\"3.12\"]\nlink = false\npredict = false\n")
                .unwrap();
        assert_eq!(old.python_version, Some(vec!["3.12".to_string()]));
        assert_eq!((old.no_link(), old.every_level()), (Some(true), Some(true)));
    }

    #[test]
    fn wrong_values_say_what_is_expected() {
        let err = toml::from_str::<ConfigFile>("jobs = -1\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("a number of workers (0: one per CPU)"),
            "{err}"
        );
        assert!(!err.contains("usize"), "{err}");
        let err = toml::from_str::<ConfigFile>("timeout = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("a number of seconds"), "{err}");
    }
}
